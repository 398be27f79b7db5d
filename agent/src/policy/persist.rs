//! What of the policy survives a restart: the operator's marks, each path's standing
//! (in service or failed, with its penalty), and what the kernel still routes over.

use std::time::{Duration, Instant, SystemTime};

use super::{damping, Operator, Policy};
use crate::core::events::EventKind;
use crate::operator_state::{Mark, Marked, Standing, Standings};

impl Policy {
    /// On start, with what the kernel still routes over (adopted from a previous run):
    /// the other `lines` were not carrying traffic, so their return waits for the
    /// hold-down as if they had just come back. Without this, a restart in the middle of
    /// a failover would move traffic back to a line that had not proven itself.
    pub fn adopt(&mut self, now: Instant, carrying: &[String], lines: &[String]) {
        for l in lines {
            let p = self.path(l, now);
            // A standing saved by the previous run knows better than the kernel whether
            // the line had failed or was a healthy standby.
            if !carrying.contains(l) && !p.restored {
                p.held = true;
            }
        }
    }

    /// What the operator has asked of each path, for keeping across a restart.
    pub fn marks(&self) -> crate::operator_state::Marks {
        self.paths
            .iter()
            .filter_map(|(name, p)| {
                let marked = crate::operator_state::Marked {
                    mark: p.operator.mark()?,
                    until: p.ends.map(|e| e.unix),
                };
                Some((name.clone(), marked))
            })
            .collect()
    }

    /// Each path's standing, for keeping across a restart; `now_wall` is the wall clock
    /// read with `now` (penalties are saved against it, so they decay while the agent is
    /// away).
    pub fn standings(&self, now: Instant, now_wall: SystemTime) -> Standings {
        self.paths
            .iter()
            .map(|(name, p)| {
                let (value, at) = p.penalty.raw();
                let at_wall = now_wall
                    .checked_sub(now.saturating_duration_since(at))
                    .unwrap_or(now_wall);
                let unix = at_wall
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                (
                    name.clone(),
                    Standing {
                        in_service: p.admitted,
                        held: p.held && !p.admitted,
                        penalty: value,
                        // Whole milliseconds: the same standing saves the same file.
                        penalty_at: (unix * 1000.0).round() / 1000.0,
                        suppressed: p.penalty.is_suppressed(),
                    },
                )
            })
            .collect()
    }

    /// Takes up a path's standing from before a restart: a path that was in service (or
    /// a healthy standby) carries traffic again as soon as its signals are up, with no
    /// hold-down, since it did not fail; so does one only the operator had taken out. The
    /// flap penalty and a suppression are kept, the penalty decayed over the time the
    /// agent was away. One that had failed is left to `adopt`, which holds it when the
    /// kernel shows it not carrying: a rollback that restarts the agent with the config
    /// before a broken one must not keep lines out that only the broken config had
    /// failed.
    pub fn restore(&mut self, now: Instant, now_wall: SystemTime, path: &str, s: Standing) {
        let half_life = self.settings.damping.half_life.as_secs_f64().max(1e-3);
        let saved = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s.penalty_at.max(0.0));
        let away = now_wall
            .duration_since(saved)
            .map_or(0.0, |d| d.as_secs_f64());
        let value = s.penalty * 0.5f64.powf(away / half_life);
        let p = self.path(path, now);
        p.penalty = damping::Penalty::restored(value, s.suppressed, now);
        // Out of service but not failed (the operator's failover, a drain): it proved
        // nothing wrong either, so it returns without a hold-down when the operator, or a
        // timed test, lets it.
        if s.in_service || !s.held {
            p.held = false;
            p.restored = true;
        }
    }

    /// Takes up what the operator had asked before a restart. An interrupted drain starts
    /// its delay over: the far side has been told, but we do not know for how long. A
    /// timed test ends when it was to, or at once if that passed meanwhile.
    pub fn resume(&mut self, now: Instant, now_wall: SystemTime, path: &str, marked: Marked) {
        let delay = self.settings.drain_delay;
        let mark = marked.mark;
        let p = self.path(path, now);
        p.ends = marked
            .until
            .map(|u| super::timed::Ends::resumed(now, now_wall, u));
        p.operator = match mark {
            Mark::Failover => Operator::Failover,
            Mark::Draining => Operator::Draining { until: now + delay },
            Mark::Drained => Operator::Drained,
        };
        let left = match p.ends {
            Some(e) => format!(
                " (a timed test, {} left)",
                super::span(e.at.saturating_duration_since(now))
            ),
            None => String::new(),
        };
        self.event(
            EventKind::Operator,
            path,
            format!(
                "{path}: {} by the operator before the restart, kept{left}",
                mark.as_str()
            ),
        );
    }
}
