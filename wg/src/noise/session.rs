//! A session's transport keys (whitepaper §5.4.6): the data messages it seals and opens,
//! and the window that refuses replays (RFC 6479's ring of bitmap blocks).
//!
//! The cryptography runs outside the peer's lock: under it a sender reserves a run of
//! counters (`Sealer`), a receiver takes the key that opens a message (`Opener`) and,
//! once it authenticated, its counter (`Session::take`). The lock is then held for
//! bookkeeping only, never for a burst's encryption: a thread that waits for it (the
//! other direction, or the real-time path with a BFD packet) waits nanoseconds, not the
//! tens of microseconds a burst takes to seal, or the milliseconds a holder preempted in
//! the middle of one would cost.
//!
//! What sealing and opening need of a session (its keys, its send counter, an atomic, and
//! its replay window, behind a lock of its own held for one bit's update) lives apart from
//! the peer, in `Keys`: the real-time path uses it without the peer's lock when a data
//! thread holds that (see `Published`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::crypto::{AeadKey, Key, TAG};
use super::Error;
use crate::pi::Mutex;

/// Message type of transport data.
pub const DATA: u8 = 4;
/// Type, reserved, receiver index and counter.
pub const DATA_HEADER: usize = 16;
/// Whatever is sealed is padded to a multiple of this (§5.4.6).
pub const PADDING: usize = 16;

pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);

/// As wireguard-go: a window of 8,128 counters, for reordering across GSO runs and queues.
pub(crate) const BLOCKS: usize = 128;
/// How far behind the newest counter a message may arrive and still be taken.
const WINDOW: u64 = ((BLOCKS - 1) * 64) as u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// The greatest counter taken so far, plus one (0: none yet).
    next: u64,
    ring: [u64; BLOCKS],
}

impl Default for Replay {
    fn default() -> Replay {
        Replay {
            next: 0,
            ring: [0; BLOCKS],
        }
    }
}

impl Replay {
    /// Takes `counter` if it was never taken and is not too old. Call it only for a
    /// message that authenticated: a forged counter must not move the window.
    pub fn take(&mut self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        let block = counter / 64;
        if counter >= self.next {
            let newest = self.next.saturating_sub(1) / 64;
            let fresh = if self.next == 0 {
                BLOCKS as u64
            } else {
                (block - newest).min(BLOCKS as u64)
            };
            for i in 1..=fresh {
                self.ring[((newest + i) % BLOCKS as u64) as usize] = 0;
            }
            self.next = counter + 1;
        } else if self.next - 1 - counter > WINDOW {
            return false;
        }
        let word = &mut self.ring[(block % BLOCKS as u64) as usize];
        let bit = 1u64 << (counter % 64);
        if *word & bit != 0 {
            return false;
        }
        *word |= bit;
        true
    }

    pub(crate) fn parts(&self) -> (u64, &[u64; BLOCKS]) {
        (self.next, &self.ring)
    }

    pub(crate) fn from_parts(next: u64, ring: [u64; BLOCKS]) -> Replay {
        Replay { next, ring }
    }
}

pub struct Session {
    /// Ours: the peer addresses its data messages to it.
    pub local_index: u32,
    /// The peer's: our data messages carry it.
    pub remote_index: u32,
    pub(crate) keys: Arc<Keys>,
    pub created: Instant,
    /// Whether we sent the initiation: only the initiator rekeys on age (§6.2).
    pub initiator: bool,
}

/// What sealing and opening take of a session, shared by every thread that seals or opens
/// on it, with the peer's lock or without (see the module's comment).
///
/// Each direction is a block of its own, shared apart: the threads that send write the
/// counter and the reference count of `Sending` only, those that receive the window and
/// the count of `Receiving`, so the two never write to the same cache line.
pub(crate) struct Keys {
    pub(crate) local_index: u32,
    created: Instant,
    initiator: bool,
    send: Arc<Sending>,
    recv: Arc<Receiving>,
}

pub(crate) struct Sending {
    key: AeadKey,
    remote_index: u32,
    /// The next counter to send with.
    sent: AtomicU64,
}

pub(crate) struct Receiving {
    key: AeadKey,
    replay: Mutex<Replay>,
}

impl Sending {
    /// Up to `n` counters from the next, never past REJECT_AFTER_MESSAGES: the first and
    /// how many. None when none is left.
    fn reserve(&self, n: u64) -> Option<(u64, u64)> {
        let first = self
            .sent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sent| {
                (sent < REJECT_AFTER_MESSAGES).then(|| sent + n.min(REJECT_AFTER_MESSAGES - sent))
            })
            .ok()?;
        Some((first, n.min(REJECT_AFTER_MESSAGES - first)))
    }
}

impl Receiving {
    /// Takes `counter` of a message that authenticated: false for a replay.
    fn take(&self, counter: u64) -> bool {
        self.replay.lock().take(counter)
    }
}

impl Keys {
    /// Whether it may still carry messages either way.
    pub(crate) fn usable(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) < REJECT_AFTER_TIME
            && self.sent() < REJECT_AFTER_MESSAGES
    }

    pub(crate) fn sent(&self) -> u64 {
        self.send.sent.load(Ordering::Relaxed)
    }

    /// Whether a new handshake is due when we send with it (§6.2).
    pub(crate) fn wants_rekey(&self, now: Instant) -> bool {
        self.sent() >= REKEY_AFTER_MESSAGES
            || (self.initiator && now.saturating_duration_since(self.created) >= REKEY_AFTER_TIME)
    }

    /// Whether, as the current session, receiving on it should start a new handshake:
    /// the initiator's session nears REJECT_AFTER_TIME (§6.2, as `Peer::accept`).
    pub(crate) fn stale(&self, now: Instant) -> bool {
        self.initiator
            && now.saturating_duration_since(self.created)
                >= REJECT_AFTER_TIME - super::KEEPALIVE_TIMEOUT - super::REKEY_TIMEOUT
    }

    /// Seals `packet` with the next counter; None when none is left.
    pub(crate) fn seal(&self, packet: &[u8], mtu: usize, out: &mut [u8]) -> Option<usize> {
        let (counter, _) = self.send.reserve(1)?;
        let s = &self.send;
        Some(seal(&s.key, s.remote_index, counter, packet, mtu, out))
    }

    /// Authenticates and decrypts the data message `buf` in place and takes its counter
    /// (see `Opener::open`, `Session::take`).
    pub(crate) fn open(&self, buf: &mut [u8]) -> Result<Opened, Error> {
        let opened = open(&self.recv.key, buf).ok_or(Error::Decrypt)?;
        if !self.recv.take(opened.counter) {
            return Err(Error::Replay);
        }
        Ok(opened)
    }

    /// The send and receive keys, for a successor (see `handover`).
    pub(crate) fn key_bytes(&self) -> (&[u8; 32], &[u8; 32]) {
        (self.send.key.bytes(), self.recv.key.bytes())
    }
}

impl Session {
    pub fn new(
        local_index: u32,
        remote_index: u32,
        send: Key,
        recv: Key,
        created: Instant,
        initiator: bool,
    ) -> Session {
        Session::restore(
            local_index,
            remote_index,
            (send, recv),
            created,
            initiator,
            0,
            Replay::default(),
        )
    }

    /// A session as a previous run left it (see `handover`).
    pub(crate) fn restore(
        local_index: u32,
        remote_index: u32,
        (send, recv): (Key, Key),
        created: Instant,
        initiator: bool,
        sent: u64,
        replay: Replay,
    ) -> Session {
        Session {
            local_index,
            remote_index,
            keys: Arc::new(Keys {
                local_index,
                created,
                initiator,
                send: Arc::new(Sending {
                    key: AeadKey::new(send),
                    remote_index,
                    sent: AtomicU64::new(sent),
                }),
                recv: Arc::new(Receiving {
                    key: AeadKey::new(recv),
                    replay: Mutex::new(replay),
                }),
            }),
            created,
            initiator,
        }
    }

    /// Whether it may still carry messages either way.
    pub fn usable(&self, now: Instant) -> bool {
        self.keys.usable(now)
    }

    /// The next counter to send with.
    pub fn sent(&self) -> u64 {
        self.keys.sent()
    }

    /// The replay window as it stands (see `handover`).
    pub(crate) fn replay(&self) -> Replay {
        self.keys.recv.replay.lock().clone()
    }

    /// Whether a new handshake is due when we send with it (§6.2).
    pub fn wants_rekey(&self, now: Instant) -> bool {
        self.keys.wants_rekey(now)
    }

    /// Length of a data message carrying `plain` bytes: padded to a multiple of 16, but
    /// never past the tunnel's MTU `mtu`, as wireguard-go does (the padding must not make
    /// a packet that fits the tunnel too large for the uplink).
    pub fn sealed_len(plain: usize, mtu: usize) -> usize {
        DATA_HEADER + plain.next_multiple_of(PADDING).min(plain.max(mtu)) + TAG
    }

    /// Seals `packet` as a data message into `out`, which must hold `sealed_len` bytes;
    /// None when the session has no counter left (it is then no longer usable).
    pub fn seal(&self, packet: &[u8], mtu: usize, out: &mut [u8]) -> Option<usize> {
        self.keys.seal(packet, mtu, out)
    }

    /// Reserves up to `n` counters for packets sealed outside the peer's lock; None when
    /// the session has no counter left (it is then no longer usable).
    pub fn reserve(&self, n: usize, mtu: usize) -> Option<Sealer> {
        let (next, n) = self.keys.send.reserve(n as u64).filter(|&(_, n)| n > 0)?;
        Some(Sealer {
            keys: self.keys.send.clone(),
            next,
            end: next + n,
            mtu,
        })
    }

    /// The key for a data message to this session, to open it outside the peer's lock.
    pub fn opener(&self, now: Instant) -> Option<Opener> {
        self.usable(now).then(|| Opener(self.keys.recv.clone()))
    }

    /// Takes the counter of a message `Opener::open` authenticated: false if it was
    /// taken before or is too old (a replay).
    pub fn take(&self, opened: &Opened) -> bool {
        self.keys.recv.take(opened.counter)
    }
}

/// A run of counters reserved on a session (`Session::reserve`): seals that many packets
/// without the peer's lock. Counters it leaves unused are a gap the receiver's window
/// takes as it takes loss.
pub struct Sealer {
    keys: Arc<Sending>,
    next: u64,
    end: u64,
    mtu: usize,
}

impl Sealer {
    /// Seals `packet` into `out` (which must hold `sealed_len` bytes) with the next
    /// counter reserved; None when all are used.
    pub fn seal(&mut self, packet: &[u8], out: &mut [u8]) -> Option<usize> {
        if self.next == self.end {
            return None;
        }
        let counter = self.next;
        self.next += 1;
        Some(seal(
            &self.keys.key,
            self.keys.remote_index,
            counter,
            packet,
            self.mtu,
            out,
        ))
    }
}

/// The key that opens data messages to one session (`Session::opener`).
pub struct Opener(Arc<Receiving>);

impl Opener {
    /// Authenticates and decrypts the data message `buf` in place; None if it is not
    /// authentic. Its counter is not taken yet (`Session::take` must follow).
    pub fn open(&self, buf: &mut [u8]) -> Option<Opened> {
        open(&self.0.key, buf)
    }
}

/// `buf` authenticated and decrypted in place by `key`, its counter not taken yet.
fn open(key: &AeadKey, buf: &mut [u8]) -> Option<Opened> {
    if buf.len() < DATA_HEADER + TAG {
        return None;
    }
    let index = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let counter = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
    let body = &mut buf[DATA_HEADER..];
    let len = body.len() - TAG;
    key.open(counter, &[], body).then_some(Opened {
        index,
        counter,
        len,
    })
}

/// A data message that authenticated (`Opener::open`): its plaintext is
/// `buf[DATA_HEADER..DATA_HEADER + len]` (0: a keepalive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub(super) index: u32,
    counter: u64,
    pub(super) len: usize,
}

/// A data message carrying `packet` into `out`: header, padded plaintext, tag.
fn seal(
    key: &AeadKey,
    remote_index: u32,
    counter: u64,
    packet: &[u8],
    mtu: usize,
    out: &mut [u8],
) -> usize {
    let len = Session::sealed_len(packet.len(), mtu);
    let out = &mut out[..len];
    out[..4].copy_from_slice(&[DATA, 0, 0, 0]);
    out[4..8].copy_from_slice(&remote_index.to_le_bytes());
    out[8..16].copy_from_slice(&counter.to_le_bytes());
    let body = &mut out[DATA_HEADER..];
    body[..packet.len()].copy_from_slice(packet);
    body[packet.len()..len - DATA_HEADER - TAG].fill(0);
    key.seal(counter, &[], body);
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window_takes_each_counter_once() {
        let mut r = Replay::default();
        assert!(r.take(0));
        assert!(!r.take(0));
        assert!(r.take(5));
        assert!(r.take(3), "late but inside the window");
        assert!(!r.take(3));
        assert!(r.take(10_000));
        assert!(!r.take(10_000 - WINDOW - 1), "too old");
        assert!(r.take(10_000 - WINDOW), "oldest still taken");
        assert!(!r.take(5));
        assert!(!r.take(REJECT_AFTER_MESSAGES));
    }

    #[test]
    fn replay_window_forgets_what_it_slid_past() {
        let mut r = Replay::default();
        for c in 0..64 * (BLOCKS as u64 + 8) {
            assert!(r.take(c), "{c}");
        }
        // A jump far ahead clears every block, so counters near it are new.
        assert!(r.take(1_000_000));
        assert!(r.take(1_000_000 - 1));
        assert!(r.take(1_000_000 - 64 * 3));
        assert!(!r.take(64 * (BLOCKS as u64 + 7)));
    }

    #[test]
    fn sealed_and_opened_with_padding() {
        let t = Instant::now();
        let a = Session::new(1, 2, [1; 32], [2; 32], t, true);
        let mut b = Session::new(2, 1, [2; 32], [1; 32], t, false);
        let mut out = [0u8; 128];
        let n = a.seal(b"hello", 1420, &mut out).unwrap();
        assert_eq!(n, 16 + 16 + 16);
        assert_eq!(out[4..8], 2u32.to_le_bytes());
        assert_eq!(open(&mut b, &mut out[..n], t), Some(16));
        assert_eq!(&out[16..16 + 5], b"hello");
        let n = a.seal(b"again", 1420, &mut out).unwrap();
        let copy = out;
        assert_eq!(open(&mut b, &mut out[..n], t), Some(16));
        let mut replayed = copy;
        assert_eq!(open(&mut b, &mut replayed[..n], t), None, "a replay");
        let mut forged = copy;
        forged[20] ^= 1;
        assert_eq!(open(&mut b, &mut forged[..n], t), None, "a flipped bit");
        let n = a.seal(&[], 1420, &mut out).unwrap();
        assert_eq!(n, 32, "a keepalive");
        assert_eq!(
            Session::sealed_len(1420, 1420),
            16 + 1420 + 16,
            "no padding past the MTU"
        );
        assert_eq!(Session::sealed_len(1419, 1420), 16 + 1420 + 16);
        assert_eq!(
            Session::sealed_len(1500, 1420),
            16 + 1500 + 16,
            "larger than the MTU"
        );
        assert_eq!(open(&mut b, &mut out[..n], t + REJECT_AFTER_TIME), None);
    }

    /// Opens `buf` and takes its counter, as the peer does; the plaintext's length.
    fn open(s: &mut Session, buf: &mut [u8], now: Instant) -> Option<usize> {
        let opened = s.opener(now)?.open(buf)?;
        s.take(&opened).then_some(opened.len)
    }

    #[test]
    fn a_sealer_uses_the_counters_it_reserved_and_no_more() {
        let t = Instant::now();
        let a = Session::new(1, 2, [1; 32], [2; 32], t, true);
        let mut b = Session::new(2, 1, [2; 32], [1; 32], t, false);
        let mut sealer = a.reserve(3, 1420).expect("counters");
        let mut again = a.reserve(2, 1420).expect("counters after");
        let mut out = [0u8; 64];
        let mut sealed = Vec::new();
        while let Some(n) = sealer.seal(b"x", &mut out) {
            sealed.push(out[..n].to_vec());
        }
        assert_eq!(sealed.len(), 3);
        let n = again.seal(b"y", &mut out).expect("its own");
        let counter = |d: &[u8]| u64::from_le_bytes(d[8..16].try_into().unwrap());
        assert_eq!(
            sealed.iter().map(|d| counter(d)).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(
            counter(&out[..n]),
            3,
            "the second run starts after the first"
        );
        assert_eq!(a.seal(b"z", 1420, &mut [0u8; 64]), Some(48));
        assert_eq!(a.sent(), 6, "the unused counter is a gap, never reused");
        // Opened in any order, each once.
        assert_eq!(open(&mut b, &mut out[..n], t), Some(16));
        for d in sealed.iter_mut().rev() {
            assert_eq!(open(&mut b, d, t), Some(16));
            assert_eq!(open(&mut b, d, t), None);
        }
        a.keys
            .send
            .sent
            .store(REJECT_AFTER_MESSAGES - 1, Ordering::Relaxed);
        let mut last = a.reserve(10, 1420).expect("one left");
        assert!(last.seal(b"w", &mut out).is_some());
        assert!(last.seal(b"w", &mut out).is_none(), "only one was left");
        assert!(a.reserve(1, 1420).is_none(), "none left");
    }
}
