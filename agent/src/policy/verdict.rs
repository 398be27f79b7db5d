//! The verdict on one tracked path: whether it may carry traffic now, and why not.

use std::time::{Duration, Instant};

use super::{secs, Observation, Operator, Path, Settings};

/// Whether a tracked path may carry traffic at `now`; Err says why not.
pub(super) fn verdict(
    s: &Settings,
    p: &mut Path,
    now: Instant,
    o: &Observation,
) -> Result<(), String> {
    match p.operator {
        Operator::Failover => return Err("failed over by the operator".into()),
        Operator::Drained => return Err("drained by the operator".into()),
        Operator::Normal | Operator::Draining { .. } => {}
    }
    if !o.up {
        return Err(o.why.clone());
    }
    if p.degraded {
        return Err(format!(
            "degraded: {:.0} % probe loss",
            o.loss.unwrap_or(0.0) * 100.0
        ));
    }
    if p.penalty.suppressed(&s.damping, now) {
        let left = p
            .penalty
            .reuse_at(&s.damping, now)
            .map_or(Duration::ZERO, |t| t - now);
        return Err(format!(
            "suppressed by flap damping (penalty {:.0}), reusable in {}",
            p.penalty.value(&s.damping, now),
            secs(left)
        ));
    }
    if p.held && !p.admitted {
        let since = p.up_since.unwrap_or(now);
        let left = (since + s.hold_down).saturating_duration_since(now);
        if !left.is_zero() {
            return Err(format!("up again, hold-down {} left", secs(left)));
        }
    }
    // On a return only: at a first start there is no alternative worth waiting on.
    if p.held && !o.relearned && !p.admitted {
        return Err("up again, waiting for its prefixes to be re-learned".into());
    }
    Ok(())
}
