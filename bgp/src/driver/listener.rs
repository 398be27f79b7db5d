//! The passive side: one listening socket per address family, handing each accepted
//! connection to the session of the neighbour it came from. Connections from anyone else
//! are closed at once.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

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

type Peers = Arc<RwLock<HashMap<IpAddr, Peer>>>;

/// Accept loops; they stop when this is dropped.
pub struct Listener {
    tasks: Vec<JoinHandle<()>>,
    local: Vec<SocketAddr>,
    sockets: Vec<Arc<TcpListener>>,
    peers: Peers,
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
        let mut sockets = Vec::new();
        let shared: Peers = Arc::new(RwLock::new(HashMap::new()));
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
            let listener = Arc::new(sock.listen(64)?);
            local.push(listener.local_addr()?);
            tasks.push(tokio::spawn(accept_loop(listener.clone(), shared.clone())));
            sockets.push(listener);
        }
        *write(&shared) = peers;
        Ok(Listener {
            tasks,
            local,
            sockets,
            peers: shared,
        })
    }

    /// Replaces the neighbours (a reload added, removed or re-keyed some): their TCP-MD5
    /// keys on the listening sockets first, then whom connections are handed to. The
    /// sockets stay open, so the neighbours that did not change notice nothing.
    pub fn set_peers(&self, peers: HashMap<IpAddr, Peer>) -> io::Result<()> {
        let old = read(&self.peers).clone();
        let key =
            |m: &HashMap<IpAddr, Peer>, ip: &IpAddr| m.get(ip).and_then(|p| p.md5_key.clone());
        let mut result = Ok(());
        for sock in &self.sockets {
            let v6 = sock.local_addr().is_ok_and(|a| a.is_ipv6());
            let ips = old
                .keys()
                .chain(peers.keys())
                .filter(|ip| ip.is_ipv6() == v6);
            for ip in ips {
                let (was, is) = (key(&old, ip), key(&peers, ip));
                if was == is {
                    continue;
                }
                // An empty key removes the peer's key from the socket.
                if let Err(e) = set_md5(sock.as_ref(), *ip, is.as_deref().unwrap_or_default()) {
                    result = Err(e);
                }
            }
        }
        *write(&self.peers) = peers;
        result
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }
}

fn read(p: &Peers) -> std::sync::RwLockReadGuard<'_, HashMap<IpAddr, Peer>> {
    p.read().unwrap_or_else(|e| e.into_inner())
}

fn write(p: &Peers) -> std::sync::RwLockWriteGuard<'_, HashMap<IpAddr, Peer>> {
    p.write().unwrap_or_else(|e| e.into_inner())
}

async fn accept_loop(listener: Arc<TcpListener>, peers: Peers) {
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
        let peer = read(&peers).get(&ip).cloned();
        let Some(peer) = peer else {
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
