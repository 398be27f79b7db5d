//! The sending half of a tunnel: TUN reads, cut into packets where the kernel handed over
//! a super-packet, sealed and sent as UDP GSO runs.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{Shared, BUF};
use crate::noise;
use crate::offload;
use crate::shed;
use crate::udp;

/// Packets read from the TUN in one burst before they are encrypted and sent.
const BURST: usize = udp::MAX_SEGMENTS;
/// Room left for one more TUN read: a packet can be as large as the largest MTU, whatever
/// the configured one (someone may raise it with `ip link`), or a super-packet of that
/// size behind its virtio-net header; a short buffer truncates.
const READ_ROOM: usize = 65_536 + offload::vnet::LEN;
/// WireGuard's data message overhead (header and tag) plus the padding to 16 bytes.
const SEAL_OVERHEAD: usize = noise::overhead();
/// Largest packet sent as control: what the far end steers to its real-time path (see
/// `udp_steer`). BFD is 52 to 100 bytes; larger control (a BGP update) goes with the bulk.
const CONTROL_PACKET: usize = crate::udp_steer::CONTROL_MAX as usize - 32;
/// Room for one sealed control packet, or the handshake initiation sent instead when
/// there is no session to seal it with.
const CONTROL_ROOM: usize = 256;

/// Reads packets from a TUN queue into `plain` after `used` until the burst is full, the
/// room for one more is gone, or the queue is empty (`Ok(true)`).
fn read_burst(
    fd: &OwnedFd,
    plain: &mut [u8],
    used: &mut usize,
    packets: &mut Vec<(usize, usize)>,
) -> nix::Result<bool> {
    while packets.len() < BURST && plain.len() - *used >= READ_ROOM {
        match nix::unistd::read(fd, &mut plain[*used..]) {
            Ok(n) => {
                packets.push((*used, n));
                *used += n;
            }
            Err(nix::errno::Errno::EAGAIN) => return Ok(true),
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Reads one queue of the TUN, encrypts and sends. A data queue's task first takes what
/// waits in the control queue, before each burst: under a saturating flow the data queue
/// is never empty, and control packets must not wait behind it (see `steer`). With the
/// TUN's offloads a read may be a super-packet of a whole flow burst: it is cut into the
/// packets it stands for (`offload::Splitter`) only to be sealed, one at a time.
pub(super) async fn tun_to_udp(
    shared: Arc<Shared>,
    fd: Arc<AsyncFd<OwnedFd>>,
    control: Option<Arc<AsyncFd<OwnedFd>>>,
) -> io::Result<()> {
    let slot = usize::from(shared.cfg.mtu).max(1280);
    let mut plain = vec![0u8; READ_ROOM + BURST * slot];
    let mut out = Sealed {
        buf: vec![0u8; BURST * (slot + SEAL_OVERHEAD) + BUF],
        end: 0,
        lens: Vec::with_capacity(BURST),
    };
    let mut packets: Vec<(usize, usize)> = Vec::with_capacity(BURST);
    let mut splitter = offload::Splitter::new();
    loop {
        // A queue whose device is gone (the interface deleted) polls as an error only, never
        // readable: waited for too, its read then fails and the task ends for the tunnel's
        // owner to see (`Tunnel::broken`), instead of waiting forever.
        let mut guard = fd.ready(Interest::READABLE | Interest::ERROR).await?;
        // Everything queued, a burst at a time, then back to waiting.
        let mut drained = false;
        while !drained {
            // Read a burst: few locks for its encryption, and GSO runs for its sending.
            packets.clear();
            let mut used = 0;
            if let Some(c) = &control {
                // Empty, or broken: the control queue's own task reports that.
                let _ = read_burst(c.get_ref(), &mut plain, &mut used, &mut packets);
            }
            match read_burst(fd.get_ref(), &mut plain, &mut used, &mut packets) {
                Ok(true) => {
                    guard.clear_ready();
                    drained = true;
                }
                Ok(false) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::Error::from(e).kind(),
                        format!("TUN read: {e}"),
                    ))
                }
            }
            for &(at, n) in &packets {
                let read = &mut plain[at..at + n];
                let (hdr, packet) = if shared.vnet {
                    match offload::VnetHdr::decode(read) {
                        Ok(h) => (h, &mut read[offload::vnet::LEN..]),
                        Err(_) => continue,
                    }
                } else {
                    (offload::VnetHdr::default(), read)
                };
                match splitter.split(&hdr, packet) {
                    Ok(segments) => seal_all(&shared, segments, &mut out).await,
                    Err(e) => {
                        shared.counters.tx_malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(interface = %shared.cfg.interface, error = %e, "a TUN read the offload rules refuse, dropped");
                    }
                }
            }
            out.send(&shared).await;
            // A saturated queue is never drained: let the other tunnels' tasks on this
            // worker run between bursts rather than after tokio's budget (~8,000 packets).
            tokio::task::yield_now().await;
        }
    }
}

/// Sealed datagrams waiting to leave as GSO runs.
struct Sealed {
    buf: Vec<u8>,
    end: usize,
    lens: Vec<usize>,
}

impl Sealed {
    /// Room for one more: a sealed `len`-byte packet, or a handshake initiation when
    /// there is no session to seal with.
    fn has_room(&self, len: usize) -> bool {
        self.lens.len() < BURST
            && self.buf.len() - self.end >= (len + SEAL_OVERHEAD).max(noise::INITIATION_LEN)
    }

    fn push(&mut self, len: usize) {
        self.lens.push(len);
        self.end += len;
    }

    async fn send(&mut self, shared: &Shared) {
        if let Some(to) = shared.endpoint() {
            let (mut at, mut i) = (0, 0);
            for (count, segment) in udp::runs(&self.lens) {
                let bytes = self.lens[i..i + count].iter().sum::<usize>();
                let run = &self.buf[at..at + bytes];
                let (sent, sent_bytes) = shared.udp.send_run(run, segment, to).await;
                shared.count_tx(sent_bytes, sent);
                (at, i) = (at + bytes, i + count);
            }
        }
        self.end = 0;
        self.lens.clear();
    }
}

/// Seals `segments` into `out`, sending what is sealed whenever it is full. The
/// encryption runs outside the peer's lock, on counters reserved under it for as many
/// packets as fit (see `noise::Sealer`). Network control (BFD) is sealed and sent on its
/// own at once, marked with its DSCP outside too, ahead of the bulk sealed before it (see
/// `udp_steer`).
async fn seal_all<'a>(shared: &Shared, segments: impl Iterator<Item = &'a [u8]>, out: &mut Sealed) {
    let mut segments = segments.peekable();
    while let Some(&next) = segments.peek() {
        if let Some(tos) = urgent(next) {
            segments.next();
            send_control(shared, next, tos).await;
            continue;
        }
        if !out.has_room(next.len()) {
            out.send(shared).await;
            continue;
        }
        let want = segments.size_hint().0.min(BURST - out.lens.len());
        let sealer = shared.peer.lock().sealer(want, Instant::now());
        let Some(mut sealer) = sealer else {
            // No session: each packet waits for the handshake its sealing starts.
            let mut peer = shared.peer.lock();
            let now = Instant::now();
            while let Some(seg) = segments.next_if(|s| out.has_room(s.len()) && urgent(s).is_none())
            {
                if let Some(len) = peer.encapsulate(seg, &mut out.buf[out.end..], now) {
                    out.push(len);
                }
            }
            continue;
        };
        while let Some(&seg) = segments.peek() {
            if !out.has_room(seg.len()) || urgent(seg).is_some() {
                break;
            }
            let Some(len) = sealer.seal(seg, &mut out.buf[out.end..]) else {
                break;
            };
            segments.next();
            out.push(len);
        }
    }
}

/// The outer TOS for `packet` if it is control to send ahead (see `CONTROL_PACKET`).
fn urgent(packet: &[u8]) -> Option<u8> {
    if packet.len() > CONTROL_PACKET {
        return None;
    }
    shed::network_control_tos(packet)
}

/// Seals one control packet and sends it with `tos` in the outer header: under the peer's
/// lock when it is free, else on the published session (`noise::Published`), so that a
/// BFD packet never waits for a data thread; only without a session at all does it wait
/// for the lock, to queue behind the handshake it starts.
async fn send_control(shared: &Shared, packet: &[u8], tos: u8) {
    let mut buf = [0u8; CONTROL_ROOM];
    let now = Instant::now();
    let sealed = match shared.peer.try_lock() {
        Some(mut peer) => peer.encapsulate(packet, &mut buf, now),
        None => shared
            .published
            .seal(packet, &mut buf, now)
            .or_else(|| shared.peer.lock().encapsulate(packet, &mut buf, now)),
    };
    let (Some(len), Some(to)) = (sealed, shared.endpoint()) else {
        return;
    };
    if shared.udp.send_marked(&buf[..len], to, tos).await.is_ok() {
        shared.count_tx(len, 1);
    }
}
