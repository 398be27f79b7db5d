//! A session's transport keys (whitepaper §5.4.6): the data messages it seals and opens,
//! and the window that refuses replays (RFC 6479's ring of bitmap blocks).

use std::time::{Duration, Instant};

use super::crypto::{AeadKey, Key, TAG};

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
    pub(crate) send: AeadKey,
    pub(crate) recv: AeadKey,
    /// The next counter to send with.
    pub(crate) sent: u64,
    pub(crate) replay: Replay,
    pub created: Instant,
    /// Whether we sent the initiation: only the initiator rekeys on age (§6.2).
    pub initiator: bool,
}

pub enum Open {
    /// The plaintext is `buf[DATA_HEADER..DATA_HEADER + len]` (0: a keepalive).
    Data(usize),
    /// Not authentic, a replay, or too old.
    Refused,
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
        Session {
            local_index,
            remote_index,
            send: AeadKey::new(send),
            recv: AeadKey::new(recv),
            sent: 0,
            replay: Replay::default(),
            created,
            initiator,
        }
    }

    /// Whether it may still carry messages either way.
    pub fn usable(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) < REJECT_AFTER_TIME
            && self.sent < REJECT_AFTER_MESSAGES
    }

    /// Whether a new handshake is due when we send with it (§6.2).
    pub fn wants_rekey(&self, now: Instant) -> bool {
        self.sent >= REKEY_AFTER_MESSAGES
            || (self.initiator && now.saturating_duration_since(self.created) >= REKEY_AFTER_TIME)
    }

    /// Length of a data message carrying `plain` bytes: padded to a multiple of 16, but
    /// never past the tunnel's MTU `mtu`, as wireguard-go does (the padding must not make
    /// a packet that fits the tunnel too large for the uplink).
    pub fn sealed_len(plain: usize, mtu: usize) -> usize {
        DATA_HEADER + plain.next_multiple_of(PADDING).min(plain.max(mtu)) + TAG
    }

    /// Seals `packet` as a data message into `out`, which must hold `sealed_len` bytes.
    pub fn seal(&mut self, packet: &[u8], mtu: usize, out: &mut [u8]) -> usize {
        let len = Session::sealed_len(packet.len(), mtu);
        let out = &mut out[..len];
        let counter = self.sent;
        self.sent += 1;
        out[..4].copy_from_slice(&[DATA, 0, 0, 0]);
        out[4..8].copy_from_slice(&self.remote_index.to_le_bytes());
        out[8..16].copy_from_slice(&counter.to_le_bytes());
        let body = &mut out[DATA_HEADER..];
        body[..packet.len()].copy_from_slice(packet);
        body[packet.len()..len - DATA_HEADER - TAG].fill(0);
        self.send.seal(counter, &[], body);
        len
    }

    /// Opens the data message `buf` in place.
    pub fn open(&mut self, buf: &mut [u8], now: Instant) -> Open {
        if buf.len() < DATA_HEADER + TAG || !self.usable(now) {
            return Open::Refused;
        }
        let counter = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
        let body = &mut buf[DATA_HEADER..];
        let len = body.len() - TAG;
        if !self.recv.open(counter, &[], body) || !self.replay.take(counter) {
            return Open::Refused;
        }
        Open::Data(len)
    }
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
        let mut a = Session::new(1, 2, [1; 32], [2; 32], t, true);
        let mut b = Session::new(2, 1, [2; 32], [1; 32], t, false);
        let mut out = [0u8; 128];
        let n = a.seal(b"hello", 1420, &mut out);
        assert_eq!(n, 16 + 16 + 16);
        assert_eq!(out[4..8], 2u32.to_le_bytes());
        match b.open(&mut out[..n], t) {
            Open::Data(len) => assert_eq!(&out[16..16 + 5], b"hello", "{len}"),
            Open::Refused => panic!("refused"),
        }
        let n = a.seal(b"again", 1420, &mut out);
        let copy = out;
        assert!(matches!(b.open(&mut out[..n], t), Open::Data(16)));
        let mut replayed = copy;
        assert!(matches!(b.open(&mut replayed[..n], t), Open::Refused));
        let n = a.seal(&[], 1420, &mut out);
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
        assert!(matches!(
            b.open(&mut out[..n], t + REJECT_AFTER_TIME),
            Open::Refused
        ));
    }
}
