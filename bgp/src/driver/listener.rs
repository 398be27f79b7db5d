//! The passive side: one listening socket per address family, handing each accepted
//! connection to the session of the neighbour it came from. Connections from anyone else
//! are closed at once.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

use super::socket::{set_gtsm, set_md5, set_v6only};
use super::Handle;

/// What the listener needs to know of each neighbour.
#[derive(Clone)]
pub struct Peer {
    pub handle: Handle,
    pub md5_key: Option<Vec<u8>>,
    pub gtsm: bool,
}

/// Accept loops; they stop when this is dropped.
pub struct Listener {
    tasks: Vec<JoinHandle<()>>,
    local: Vec<SocketAddr>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Listener {
    /// Listens on each of `addrs` (e.g. `0.0.0.0:179` and `[::]:179`) for `peers`.
    pub fn bind(addrs: &[SocketAddr], peers: HashMap<IpAddr, Peer>) -> io::Result<Listener> {
        let mut tasks = Vec::new();
        let mut local = Vec::new();
        for addr in addrs {
            let sock = if addr.is_ipv6() {
                TcpSocket::new_v6()?
            } else {
                TcpSocket::new_v4()?
            };
            sock.set_reuseaddr(true)?;
            if addr.is_ipv6() {
                set_v6only(&sock)?;
            }
            // The kernel checks TCP-MD5 on the SYN already: the listener must know each key.
            for (ip, p) in &peers {
                if let Some(key) = &p.md5_key {
                    if ip.is_ipv6() == addr.is_ipv6() {
                        set_md5(&sock, *ip, key)?;
                    }
                }
            }
            sock.bind(*addr)?;
            let listener = sock.listen(64)?;
            local.push(listener.local_addr()?);
            tasks.push(tokio::spawn(accept_loop(listener, peers.clone())));
        }
        Ok(Listener { tasks, local })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }
}

async fn accept_loop(listener: TcpListener, peers: HashMap<IpAddr, Peer>) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "BGP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = match from.ip() {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
            v4 => v4,
        };
        let Some(peer) = peers.get(&ip) else {
            tracing::info!(%from, "BGP connection from an unknown address refused");
            continue;
        };
        if peer.gtsm {
            if let Err(e) = set_gtsm(&stream, ip.is_ipv6()) {
                tracing::warn!(%from, error = %e, "cannot set GTSM on an accepted connection");
                continue;
            }
        }
        peer.handle.accepted(stream).await;
    }
}
