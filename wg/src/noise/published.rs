//! The peer's sessions as the real-time path sees them without the peer's lock.
//!
//! The lock lends its waiter's priority to its holder (`pi`), but a holder that was
//! preempted on a CPU now inside a long system call of another thread (a route insert
//! that resizes a large FIB trie) does not run until that call ends on a kernel that does
//! not preempt: the real-time thread waited 6.9 and 9.3 ms so in the lab, longer than BFD's
//! detection time at 3 ms × 3. So when the lock is held, the real-time path seals on the
//! current session and opens on the current or previous one from here: their keys, the
//! send counter (an atomic) and the replay window (a lock of its own, held for one bit's
//! update) are shared with the peer's (`session::Keys`). What the peer would note under its
//! lock (traffic sent or heard, for its timers) is noted here in atomics and taken in at its
//! next `tick`, a quarter of a second at most later.
//!
//! A message on the responder's session that the initiator has not confirmed yet is
//! opened here too, and the peer promotes that session at its next call; a handshake
//! message is left to the locked path (rare, and not time-critical).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::data::{data_index, inner_header};
use super::session::{Keys, DATA_HEADER};
use super::{Error, Peer, Received, Session};

/// The sessions the real-time path may use (see the module's comment). `next` is the
/// responder's session the initiator has not confirmed yet: a message opened on it here
/// confirms it, and the peer promotes it at its next call (`Activity::confirmed`).
#[derive(Default)]
pub(super) struct Sessions {
    pub(super) current: Option<Arc<Keys>>,
    pub(super) previous: Option<Arc<Keys>>,
    pub(super) next: Option<Arc<Keys>>,
}

impl Sessions {
    fn same(&self, other: &Sessions) -> bool {
        let same = |a: &Option<Arc<Keys>>, b: &Option<Arc<Keys>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same(&self.current, &other.current)
            && same(&self.previous, &other.previous)
            && same(&self.next, &other.next)
    }
}

pub struct Published {
    sessions: ArcSwap<Sessions>,
    mtu: usize,
    /// What `stamp` counts from.
    epoch: Instant,
    /// When data was last sealed here, when an authentic message was last opened here,
    /// and when one carried data; 0 when nothing since the peer took them in (`take`).
    sent: AtomicU64,
    heard: AtomicU64,
    data: AtomicU64,
    /// The index of a `next` session a message opened here confirmed, with bit 32 set.
    confirmed: AtomicU64,
    /// A session sealed or opened on here wants a new handshake.
    rekey: AtomicBool,
    /// Anything above was set since the peer last looked (`news`).
    news: AtomicBool,
}

/// What the real-time path did since the peer last looked (see `Published::take`).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Activity {
    pub(super) sent: Option<Instant>,
    pub(super) heard: Option<Instant>,
    pub(super) data: Option<Instant>,
    pub(super) confirmed: Option<u32>,
    pub(super) rekey: bool,
}

impl Published {
    pub(super) fn new(mtu: usize, epoch: Instant) -> Published {
        Published {
            sessions: ArcSwap::from_pointee(Sessions::default()),
            mtu,
            epoch,
            sent: AtomicU64::new(0),
            heard: AtomicU64::new(0),
            data: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            rekey: AtomicBool::new(false),
            news: AtomicBool::new(false),
        }
    }

    /// Shows `sessions` to the real-time path unless they are the ones it sees; returns
    /// the snapshot they replace, for the caller to free (not the real-time thread, if
    /// the caller keeps it until its next change).
    pub(super) fn store(&self, sessions: Sessions) -> Option<Arc<Sessions>> {
        if self.sessions.load().same(&sessions) {
            return None;
        }
        Some(self.sessions.swap(Arc::new(sessions)))
    }

    /// Seals `packet` into `out` (which must hold its sealed length) on the current
    /// session; None without a usable one (the locked path then queues it and starts a
    /// handshake).
    pub fn seal(&self, packet: &[u8], out: &mut [u8], now: Instant) -> Option<usize> {
        let sessions = self.sessions.load();
        let keys = sessions.current.as_ref().filter(|k| k.usable(now))?;
        let len = keys.seal(packet, self.mtu, out)?;
        if keys.wants_rekey(now) {
            self.rekey.store(true, Ordering::Relaxed);
        }
        if !packet.is_empty() {
            self.sent.store(self.stamp(now), Ordering::Relaxed);
        }
        self.news.store(true, Ordering::Release);
        Some(len)
    }

    /// Opens the data message `datagram` in place and takes its counter, as the peer's
    /// `decapsulate` would. None when it is not a data message (a handshake message is
    /// the locked path's).
    pub fn open(&self, datagram: &mut [u8], now: Instant) -> Option<Result<Received, Error>> {
        let index = data_index(datagram)?;
        let sessions = self.sessions.load();
        let found = [
            (&sessions.current, Slot::Current),
            (&sessions.previous, Slot::Previous),
            (&sessions.next, Slot::Next),
        ]
        .into_iter()
        .find_map(|(k, slot)| {
            k.as_ref()
                .filter(|k| k.local_index == index)
                .map(|k| (k, slot))
        });
        let Some((keys, slot)) = found else {
            return Some(Err(Error::UnknownIndex));
        };
        if !keys.usable(now) {
            // As the locked path: a session too old to use refuses as a replay would.
            return Some(Err(Error::Replay));
        }
        let opened = match keys.open(datagram) {
            Ok(opened) => opened,
            Err(e) => return Some(Err(e)),
        };
        match slot {
            Slot::Next => self
                .confirmed
                .store(u64::from(index) | 1 << 32, Ordering::Relaxed),
            Slot::Current if keys.stale(now) => self.rekey.store(true, Ordering::Relaxed),
            _ => {}
        }
        let at = self.stamp(now);
        self.heard.store(at, Ordering::Relaxed);
        if opened.len > 0 {
            self.data.store(at, Ordering::Relaxed);
        }
        self.news.store(true, Ordering::Release);
        if opened.len == 0 {
            return Some(Ok(Received::Keepalive));
        }
        let inner = &datagram[DATA_HEADER..DATA_HEADER + opened.len];
        Some(match inner_header(inner) {
            Some((total, src)) if (20..=opened.len).contains(&total) => {
                Ok(Received::Data { len: total, src })
            }
            _ => Err(Error::BadInner),
        })
    }

    /// Whether this path did anything since the peer last looked: one load, for the
    /// peer's hot paths to call before `take`.
    pub(super) fn news(&self) -> bool {
        self.news.load(Ordering::Relaxed)
    }

    /// What this path did since the last call, for the peer's bookkeeping.
    pub(super) fn take(&self) -> Activity {
        // Pairs with the Release of the stores above: what was noted before the news it
        // announced is seen here (what comes after waits for the next look).
        self.news.swap(false, Ordering::Acquire);
        let at = |a: &AtomicU64| match a.swap(0, Ordering::Relaxed) {
            0 => None,
            n => Some(self.epoch + Duration::from_nanos(n - 1)),
        };
        let confirmed = self.confirmed.swap(0, Ordering::Relaxed);
        Activity {
            sent: at(&self.sent),
            heard: at(&self.heard),
            data: at(&self.data),
            confirmed: (confirmed != 0).then_some(confirmed as u32),
            rekey: self.rekey.swap(false, Ordering::Relaxed),
        }
    }

    /// `now` as a nonzero count from the epoch.
    fn stamp(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX - 1) + 1
    }
}

/// How the peer shows its sessions to the real-time path and takes in what that did.
impl Peer {
    /// Shows the real-time path the sessions as they are now: after every change of them.
    pub(super) fn publish(&mut self) {
        let keys = |s: &Option<Session>| s.as_ref().map(|s| s.keys.clone());
        let replaced = self.published.store(Sessions {
            current: keys(&self.sessions.current),
            previous: keys(&self.sessions.previous),
            next: keys(&self.sessions.next),
        });
        if replaced.is_some() {
            self.retired = replaced;
        }
    }

    /// `note_published` if the real-time path did anything: one load otherwise, for the
    /// calls of the data path.
    pub(super) fn catch_up(&mut self, now: Instant) {
        if self.published.news() {
            self.note_published(now);
        }
    }

    /// Takes in what the real-time path sealed and opened without the lock, as
    /// `note_sent` and `accept` would have noted it, in order with what the locked path
    /// noted meanwhile.
    pub(super) fn note_published(&mut self, now: Instant) {
        let a = self.published.take();
        if let Some(heard) = a.heard {
            self.last_traffic = self.last_traffic.max(Some(heard));
            self.last_heard = self.last_heard.max(Some(heard));
            if self.unanswered_since.is_some_and(|t| t <= heard) {
                self.unanswered_since = None;
            }
        }
        if let Some(data) = a.data {
            // Owed unless something went out after it.
            if self.last_sent.max(a.sent).is_none_or(|s| s < data) {
                self.keepalive_owed.get_or_insert(data);
            }
        }
        if let Some(sent) = a.sent {
            self.last_traffic = self.last_traffic.max(Some(sent));
            self.last_sent = self.last_sent.max(Some(sent));
            if self.keepalive_owed.is_some_and(|k| k <= sent) {
                self.keepalive_owed = None;
            }
            if self.last_handshake.is_some_and(|h| h <= sent) {
                self.confirm_owed = false;
            }
            if self.last_heard.is_none_or(|h| h < sent) {
                self.unanswered_since.get_or_insert(sent);
            }
        }
        if a.rekey && self.attempt_since.is_none() {
            self.rekey_wanted = true;
        }
        let confirmed = a.confirmed.and_then(|i| {
            let next = self.sessions.next.as_ref()?;
            (next.local_index == i).then_some(())
        });
        if confirmed.is_some() {
            self.confirm_next(a.heard.unwrap_or(now));
        }
    }

    /// The initiator used the responder's new session: it is confirmed (§5.4.6), a
    /// handshake of ours under way is no longer needed (a late response to it still
    /// completes), and what waited can go (`flush`).
    pub(super) fn confirm_next(&mut self, now: Instant) {
        let s = &mut self.sessions;
        s.previous = s.current.take();
        s.current = s.next.take();
        self.publish();
        self.last_handshake = Some(now);
        self.attempt_since = None;
        self.rekey_wanted = false;
    }
}

#[derive(Clone, Copy)]
enum Slot {
    Current,
    Previous,
    Next,
}

#[cfg(test)]
#[path = "published_tests.rs"]
mod tests;
