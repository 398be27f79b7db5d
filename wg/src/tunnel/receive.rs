//! The receiving half of a tunnel: UDP GRO runs, opened in place, what they carry
//! written to the TUN (behind a virtio-net header when the device has them).

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use super::{note_handshake, roam, tun_write, Shared, BUF};
use crate::noise::{self, Received};
use crate::offload;
use crate::shed::{self, Admit};

pub(super) async fn udp_to_tun(shared: Arc<Shared>, fd: Arc<AsyncFd<OwnedFd>>) -> io::Result<()> {
    let mut buf = vec![0u8; BUF];
    let mut out = vec![0u8; BUF];
    let mut shedder = shed::Shedder::default();
    let mut gro = offload::Coalescer::new();
    let mut tun = |header: &[u8], packet: &[u8]| tun_write(fd.get_ref(), Some(header), packet);
    loop {
        let r = match shared.udp.recv(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // Transient (an ICMP error queued on the socket) or lasting: either way
                // not a reason to spin on the CPU the data plane shares.
                tracing::debug!(error = %e, "UDP receive failed");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let c = &shared.counters;
        c.rx_bytes.fetch_add(r.bytes as u64, Ordering::Relaxed);
        let datagrams = buf[..r.bytes].chunks_mut(r.segment);
        c.rx_packets
            .fetch_add(datagrams.len() as u64, Ordering::Relaxed);
        let now = Instant::now();
        for datagram in datagrams {
            let admit = shedder.admit(now, r.waited, datagram.len());
            if admit == Admit::Shed {
                c.rx_shed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(inner) = receive(&shared, datagram, r.from, admit, false, &mut out).await
            else {
                continue;
            };
            if shared.vnet {
                // The run's segments of one flow leave as one write (see `offload::gro`).
                gro.push(&datagram[inner], &mut tun);
            } else {
                tun_write(fd.get_ref(), None, &datagram[inner]);
            }
        }
        gro.flush(&mut tun);
        // As in `tun_to_udp`: a busy socket always has the next run ready.
        tokio::task::yield_now().await;
    }
}

/// Decrypts one datagram from `from` in place; returns where in it the packet it carries
/// is, when that is for the TUN (a late one, `Admit::ControlOnly`, only if it is network
/// control). The `realtime` path never waits for the peer's lock (see `take_in`).
pub(super) async fn receive(
    shared: &Shared,
    datagram: &mut [u8],
    from: SocketAddr,
    admit: Admit,
    realtime: bool,
    out: &mut [u8],
) -> Option<Range<usize>> {
    let (received, queued) = take_in(shared, datagram, from, realtime, out);
    if queued && matches!(received, Ok(Received::Data { .. } | Received::Keepalive)) {
        // The peer's first message on the session we answered confirmed it: what waited
        // for a session goes now, ahead of what is sealed from here on.
        flush(shared, from, out).await;
    }
    match received {
        Ok(Received::Data { len, src }) => {
            roam(shared, from);
            if !shared.allowed(src) {
                shared
                    .counters
                    .rx_disallowed
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
            let inner = noise::DATA_OFFSET..noise::DATA_OFFSET + len;
            if admit == Admit::ControlOnly && !shed::is_network_control(&datagram[inner.clone()]) {
                shared.counters.rx_shed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            return Some(inner);
        }
        Ok(Received::Keepalive) => roam(shared, from),
        Ok(Received::Reply(len)) => {
            // A response answers an initiation that proved to be the peer's.
            if len == noise::RESPONSE_LEN {
                roam(shared, from);
                note_handshake(shared);
            }
            shared.send(&out[..len], from).await;
        }
        Ok(Received::Established) => {
            roam(shared, from);
            // Seen at once rather than at the next timer tick: after a restart, the first
            // handshake is what lets the agent route traffic back onto the tunnel.
            note_handshake(shared);
            flush(shared, from, out).await;
        }
        Ok(Received::Nothing) => {}
        Err(e) => tracing::trace!(error = %e, "WireGuard datagram not taken"),
    }
    None
}

/// Hands `datagram` to the peer: a data message is opened between two short holds of its
/// lock (see `noise::Opener`), anything else under it. Also whether packets wait for a
/// session. On the `realtime` path a message is taken whole under the lock when it is
/// free, and on the published sessions when it is not (`noise::Published`).
fn take_in(
    shared: &Shared,
    datagram: &mut [u8],
    from: SocketAddr,
    realtime: bool,
    out: &mut [u8],
) -> (Result<Received, noise::Error>, bool) {
    let now = Instant::now();
    if realtime {
        match shared.peer.try_lock() {
            Some(mut peer) => {
                let r = peer.decapsulate(datagram, from, out, now);
                return (r, peer.has_queued());
            }
            None => {
                if let Some(r) = shared.published.open(datagram, now) {
                    return (r, false);
                }
            }
        }
    }
    let opener = shared.peer.lock().opener(datagram, now);
    let opened = opener.map(|o| o.open(datagram));
    let mut peer = shared.peer.lock();
    let r = match opened {
        Some(Some(opened)) => peer.accept(datagram, opened, now),
        Some(None) => Err(noise::Error::Decrypt),
        None => peer.decapsulate(datagram, from, out, now),
    };
    (r, peer.has_queued())
}

/// Sends what waited for a session, then the keepalive a new session may owe.
pub(super) async fn flush(shared: &Shared, to: SocketAddr, out: &mut [u8]) {
    loop {
        let next = shared.peer.lock().flush(out, Instant::now());
        let Some(len) = next else { break };
        shared.send(&out[..len], to).await;
    }
}
