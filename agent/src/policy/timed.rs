//! Timed operator tests (`failover line1 --for 5m`, `drain line1 --for 1h`), like a
//! cloud's BGP failover test: the traffic moves now and comes back by itself when the
//! time is up, also across agent restarts (the end is kept on disk as wall time).

use std::time::{Duration, Instant, SystemTime};

use super::{Operator, Path, Policy};
use crate::core::events::EventKind;

/// How long a test lasts, with the wall clock read together with the engine's `now`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timed {
    pub lasting: Duration,
    pub now_wall: SystemTime,
}

/// When a path's timed test ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Ends {
    pub at: Instant,
    /// `at` as Unix time, fixed when the test began: what is saved does not drift with
    /// the clocks' readings pass after pass.
    pub unix: f64,
}

impl Ends {
    pub fn after(now: Instant, t: Timed) -> Ends {
        let wall = t.now_wall + t.lasting;
        Ends {
            at: now + t.lasting,
            unix: unix(wall),
        }
    }

    /// A saved end, taken up at `now`: one that passed while the agent was away is due
    /// at once.
    pub fn resumed(now: Instant, now_wall: SystemTime, until: f64) -> Ends {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(until.max(0.0));
        let left = wall.duration_since(now_wall).unwrap_or(Duration::ZERO);
        Ends {
            at: now + left,
            unix: until,
        }
    }
}

fn unix(t: SystemTime) -> f64 {
    let s = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    // Whole milliseconds, rounded up: a test resumed after a restart never ends early.
    (s * 1000.0).ceil() / 1000.0
}

/// `5m`, `1h 30m`, as the CLI takes it.
pub fn span(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

/// What a command's answer adds for a timed test.
pub(super) fn said(path: &str, t: Option<Timed>, undo: &str) -> String {
    match t {
        None => String::new(),
        Some(t) => format!(
            "; it comes back by itself after {}, sooner with `{undo} {path}`",
            span(t.lasting)
        ),
    }
}

impl Policy {
    /// Ends `name`'s test when its time is up; the event says so.
    pub(super) fn end_if_due(&mut self, name: &str, now: Instant) {
        let Some(p) = self.paths.get_mut(name) else {
            return;
        };
        if p.ends.is_none_or(|e| now < e.at) {
            return;
        }
        let msg = ended(name, p);
        self.event(EventKind::Operator, name, msg);
    }
}

fn ended(name: &str, p: &mut Path) -> String {
    p.ends = None;
    let what = match std::mem::replace(&mut p.operator, Operator::Normal) {
        Operator::Failover => "failover lifted; it carries traffic again once healthy",
        Operator::Draining { .. } | Operator::Drained => {
            "undrained: announcements restored, it carries traffic again once healthy"
        }
        Operator::Normal => "nothing left to undo",
    };
    format!("{name}: the timed test is over, {what}")
}
