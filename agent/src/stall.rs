//! Notices when the agent itself did not run: stopped (SIGSTOP) or its host paused (a
//! VM). Every session times out at once then though no path failed: the BFD thread's
//! detection timers expire on resume, and the line routers may have given up on us. Those
//! downs are the agent's, not the paths': they are charged no penalty and move nothing
//! while the signals get `GRACE` to come back (see `state::health`).
//!
//! A plain thread beats every `BEAT`; a beat more than `STALL` late means the process did
//! not run at all (load does not keep a sleeping thread from its CPU that long: wake-up
//! latencies here stay under 10 ms). A reader that finds the last beat older than `STALL`
//! knows the same before the watcher has run again, so the first decision after a resume
//! already knows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BEAT: Duration = Duration::from_millis(100);
/// A gap this long without a beat is a stall of the whole process.
pub const STALL: Duration = Duration::from_secs(1);
/// After a stall, how long the paths' signals have to come back before their downs count.
pub const GRACE: Duration = Duration::from_secs(30);

/// A stretch of time the agent did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// The last beat before it.
    pub since: Instant,
    pub length: Duration,
}

impl Stall {
    /// While its downs are excused.
    pub fn excuses(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since + self.length) < GRACE
    }
}

/// The gap between two beats, if it is a stall.
fn judge(last: Instant, now: Instant) -> Option<Stall> {
    let length = now.saturating_duration_since(last);
    (length > STALL).then_some(Stall {
        since: last,
        length,
    })
}

pub struct StallWatch {
    origin: Instant,
    /// The last beat, in ns since `origin`.
    beat: AtomicU64,
    last: Mutex<Option<Stall>>,
}

impl StallWatch {
    /// Starts the watcher thread; it runs as long as the process.
    pub fn start() -> std::io::Result<Arc<StallWatch>> {
        let origin = Instant::now();
        let watch = Arc::new(StallWatch {
            origin,
            beat: AtomicU64::new(0),
            last: Mutex::new(None),
        });
        let w = watch.clone();
        std::thread::Builder::new()
            .name("stall-watch".into())
            .spawn(move || loop {
                std::thread::sleep(BEAT);
                w.beat(Instant::now());
            })?;
        Ok(watch)
    }

    fn last_beat(&self) -> Instant {
        self.origin + Duration::from_nanos(self.beat.load(Ordering::Relaxed))
    }

    fn beat(&self, now: Instant) {
        if let Some(s) = judge(self.last_beat(), now) {
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
        }
        let ns = u64::try_from(now.saturating_duration_since(self.origin).as_nanos());
        self.beat.store(ns.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The latest stall: one the watcher saw, or the one going on as far as `now` can tell
    /// (no beat for longer than `STALL`: the process has only just resumed).
    pub fn latest(&self, now: Instant) -> Option<Stall> {
        judge(self.last_beat(), now).or(*self.last.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(origin: Instant) -> StallWatch {
        StallWatch {
            origin,
            beat: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    #[test]
    fn beats_on_time_are_no_stall() {
        let t0 = Instant::now();
        let w = watch(t0);
        for i in 1..50u32 {
            w.beat(t0 + BEAT * i);
        }
        assert_eq!(w.latest(t0 + BEAT * 50), None);
    }

    #[test]
    fn a_stopped_process_is_seen_before_and_after_the_watcher_runs_again() {
        let t0 = Instant::now();
        let w = watch(t0);
        w.beat(t0 + BEAT);
        // Resumed after 5 s: a reader that runs first already knows.
        let resumed = t0 + BEAT + Duration::from_secs(5);
        let s = w.latest(resumed).expect("a stall");
        assert_eq!(s.length, Duration::from_secs(5));
        // The watcher runs: it records the same stall, and beats go on.
        w.beat(resumed);
        w.beat(resumed + BEAT);
        let s = w.latest(resumed + BEAT).expect("remembered");
        assert_eq!((s.since, s.length), (t0 + BEAT, Duration::from_secs(5)));
        assert!(s.excuses(resumed + GRACE - BEAT));
        assert!(!s.excuses(resumed + GRACE));
    }
}
