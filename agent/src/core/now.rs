//! The time, as an input: the supervisor reads both clocks once per turn and tells the
//! state; nothing that decides reads a clock of its own. A replay in virtual time then
//! decides as the live run did, and a test sets the time it means.

use std::time::{Duration, Instant, SystemTime};

/// One reading of both clocks: the monotonic one for every interval (hold-downs, grace
/// periods, detection), the wall clock for what is compared with other hosts' times (a
/// WireGuard handshake's time) or shown (event timestamps). Read together, never derived
/// from each other: the wall clock may be stepped (NTP) while the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Now {
    /// Both clocks now (at the edges: the supervisor's turn, a test's start).
    pub fn read() -> Now {
        Now {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// `d` later on both clocks (virtual time in tests and replays).
    pub fn after(self, d: Duration) -> Now {
        Now {
            mono: self.mono + d,
            wall: self.wall + d,
        }
    }

    /// Time since `t`, none when `t` is later (an input stamped after this reading).
    pub fn since(self, t: Instant) -> Duration {
        self.mono.saturating_duration_since(t)
    }
}
