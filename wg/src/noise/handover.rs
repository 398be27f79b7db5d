//! A peer's sessions, written by a process that is about to stop and read by the one that
//! follows it (through systemd's file-descriptor store or across an exec), so the peer's
//! packets in flight, sealed for the old process, open in the new one.
//!
//! The format is private to one build and the next: a version byte, the two public keys
//! and a digest of the preshared key (a tunnel whose keys changed in between is not given
//! the old sessions), the timestamps, then each session. Ages are relative to the export; the reader adds the time it was away.
//! The sending counters continue exactly where the old process stopped: it must not seal
//! anything after the export, or a nonce would be used twice.

use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::session::{Replay, Session, BLOCKS};
use super::{Peer, Slot};

const VERSION: u8 = 2;
/// Room for three sessions and the header, so the buffer holding keys never reallocates
/// (leaving a copy behind in freed memory).
pub const MAX_LEN: usize = 256 + 3 * (1 + 4 + 4 + 32 + 32 + 8 + 8 + BLOCKS * 8 + 8 + 1);
const MAGIC: &[u8; 4] = b"XLWG";
const NONE: u64 = u64::MAX;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoverError {
    #[error("not a tunnel handover, or one from an incompatible version")]
    Format,
    #[error("the handover is for other keys (the tunnel's keys changed)")]
    OtherKeys,
}

struct Writer(Vec<u8>);

impl Writer {
    fn put(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], HandoverError> {
        if self.0.len() < N {
            return Err(HandoverError::Format);
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into().expect("N bytes"))
    }
    fn u64(&mut self) -> Result<u64, HandoverError> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, HandoverError> {
        self.take::<4>().map(u32::from_le_bytes)
    }
}

fn age(t: Option<Instant>, now: Instant) -> u64 {
    t.map_or(NONE, |t| {
        u64::try_from(now.saturating_duration_since(t).as_nanos()).unwrap_or(NONE - 1)
    })
}

fn instant(age: u64, away: Duration, now: Instant) -> Option<Instant> {
    if age == NONE {
        return None;
    }
    now.checked_sub(Duration::from_nanos(age) + away)
}

impl Peer {
    /// The sessions as a new process takes them up (`import`). The caller holds the
    /// key material it returns: erase it once written.
    pub fn export(&self, now: Instant) -> Zeroizing<Vec<u8>> {
        let mut w = Writer(Vec::with_capacity(MAX_LEN));
        w.put(MAGIC);
        w.put(&[VERSION]);
        w.put(&self.id.public);
        w.put(&self.id.peer);
        w.put(&self.id.psk_digest());
        w.put(&self.timestamp_sent);
        w.put(&self.timestamp_received);
        w.u64(age(self.last_handshake, now));
        let s = &self.sessions;
        for (slot, session) in [
            (Slot::Previous, &s.previous),
            (Slot::Current, &s.current),
            (Slot::Next, &s.next),
        ] {
            let Some(session) = session.as_ref().filter(|s| s.usable(now)) else {
                continue;
            };
            w.put(&[slot as u8 + 1]);
            w.put(&session.local_index.to_le_bytes());
            w.put(&session.remote_index.to_le_bytes());
            let (send, recv) = session.keys.key_bytes();
            w.put(send);
            w.put(recv);
            w.u64(session.sent());
            let replay = session.replay();
            let (next, ring) = replay.parts();
            w.u64(next);
            for word in ring {
                w.u64(*word);
            }
            w.u64(age(Some(session.created), now));
            w.put(&[u8::from(session.initiator)]);
        }
        w.put(&[0]);
        debug_assert!(w.0.len() <= MAX_LEN);
        Zeroizing::new(w.0)
    }

    /// Takes up the sessions a previous process exported `away` ago. Sessions that grew
    /// too old meanwhile are left out; the timers then handshake as usual.
    pub fn import(
        &mut self,
        bytes: &[u8],
        now: Instant,
        away: Duration,
    ) -> Result<(), HandoverError> {
        let mut r = Reader(bytes);
        if &r.take::<4>()? != MAGIC || r.take::<1>()? != [VERSION] {
            return Err(HandoverError::Format);
        }
        if r.take::<32>()? != self.id.public
            || r.take::<32>()? != self.id.peer
            || r.take::<32>()? != self.id.psk_digest()
        {
            return Err(HandoverError::OtherKeys);
        }
        let timestamp_sent = r.take::<12>()?;
        let timestamp_received = r.take::<12>()?;
        let last_handshake = instant(r.u64()?, away, now);
        let mut sessions = Vec::new();
        loop {
            let [tag] = r.take::<1>()?;
            let slot = match tag {
                0 => break,
                1 => Slot::Previous,
                2 => Slot::Current,
                3 => Slot::Next,
                _ => return Err(HandoverError::Format),
            };
            let local = r.u32()?;
            let remote = r.u32()?;
            let send = Zeroizing::new(r.take::<32>()?);
            let recv = Zeroizing::new(r.take::<32>()?);
            let sent = r.u64()?;
            let next = r.u64()?;
            let mut ring = [0u64; BLOCKS];
            for word in &mut ring {
                *word = r.u64()?;
            }
            let created = instant(r.u64()?, away, now);
            let [initiator] = r.take::<1>()?;
            let Some(created) = created else {
                continue;
            };
            let s = Session::restore(
                local,
                remote,
                (*send, *recv),
                created,
                initiator == 1,
                sent,
                Replay::from_parts(next, ring),
            );
            sessions.push((slot, s));
        }
        if !r.0.is_empty() {
            return Err(HandoverError::Format);
        }
        self.timestamp_sent = self.timestamp_sent.max(timestamp_sent);
        self.timestamp_received = self.timestamp_received.max(timestamp_received);
        self.last_handshake = last_handshake;
        for (slot, s) in sessions {
            if !s.usable(now) {
                continue;
            }
            let place = match slot {
                Slot::Previous => &mut self.sessions.previous,
                Slot::Current => &mut self.sessions.current,
                Slot::Next => &mut self.sessions.next,
            };
            *place = Some(s);
        }
        self.publish();
        Ok(())
    }
}
