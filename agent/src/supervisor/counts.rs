//! What a pass counts and notes beside its decision: the paths that entered or left
//! service (by the policy's verdict), each signal-level down, and when each path's health
//! last changed. Run by the supervisor's task, inside the engine's pass.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::config::PathRef;
use crate::core::signals;
use crate::metrics::Reason;
use crate::policy::Verdict;
use crate::state::AgentState;

/// Counts the paths that entered or left service since the last pass (by the policy's
/// verdict, which is what moves traffic); returns why each that left did so, and the
/// counts.
pub(super) fn count_transitions(
    st: &AgentState,
    now: &BTreeMap<String, Verdict>,
) -> (BTreeMap<String, Reason>, Vec<crate::metrics::Count>) {
    let mut down = BTreeMap::new();
    let mut counts = Vec::new();
    for (path, verdict) in now {
        let view = &verdict.policy;
        let Some(before) = st.policy.get(path).map(|v| &v.policy) else {
            continue; // the first verdict after a start is no transition
        };
        // A path out of service that fails again (charged another flap penalty) leaves
        // service again as far as the counters go: flaps must reach the alerts.
        let failed_again = !view.admitted && view.flaps > before.flaps;
        if before.admitted == view.admitted && !failed_again {
            continue;
        }
        let reason = if view.admitted {
            "healthy"
        } else {
            down_reason(st, path, view)
        };
        let kind = match st.config().find_path(path) {
            Some(PathRef::Tunnel(_)) => "tunnel",
            _ => "line",
        };
        counts.push(crate::metrics::Count::Transition {
            path: path.clone(),
            kind,
            up: view.admitted,
            reason,
        });
        if !view.admitted {
            down.insert(path.clone(), reason);
        }
    }
    (down, counts)
}

/// Notes when each path's health last changed (a path new to the config, from now).
pub(super) fn note_health_changes(st: &mut AgentState, now: Instant) {
    let cfg = st.config();
    let healths: Vec<(String, signals::Health)> = cfg
        .lines
        .iter()
        .map(PathRef::Line)
        .chain(cfg.tunnels.iter().map(PathRef::Tunnel))
        .map(|p| (p.name().to_owned(), st.path_health(p).1.health))
        .collect();
    let mut since = BTreeMap::new();
    for (name, health) in healths {
        let was = st.path_since.get(&name).filter(|(h, _)| *h == health);
        since.insert(name, was.copied().unwrap_or((health, now)));
    }
    st.path_since = since;
}

/// A path's signals going down, counted with the signal that failed (`loss` when they
/// are up but the probes lose too much).
pub(super) fn signal_down(st: &AgentState, path: &str) -> crate::metrics::Count {
    let p = st.config().find_path(path);
    let kind = match p {
        Some(PathRef::Tunnel(_)) => "tunnel",
        _ => "line",
    };
    let reason = p
        .and_then(|p| st.path_health(p).1.failing)
        .map_or("loss", signals::SignalKind::name);
    crate::metrics::Count::Down {
        path: path.to_owned(),
        kind,
        reason,
    }
}

/// Why a path is out of service, as a bounded label: the operator's doing, the first of its
/// signals that is down, or its probe loss.
fn down_reason(st: &AgentState, path: &str, view: &crate::policy::PathPolicy) -> Reason {
    if view.operator != "none" {
        return "operator";
    }
    let signal = st
        .config()
        .find_path(path)
        .and_then(|p| st.path_health(p).1.failing)
        .map(signals::SignalKind::name);
    match signal {
        Some(s) => s,
        None if view.degraded => "loss",
        None => "other",
    }
}
