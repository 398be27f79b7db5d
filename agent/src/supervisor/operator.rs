//! An operator's command, judged by the supervisor against the state of the moment (the
//! guard reads the same verdicts the command would change, so two commands in a row are
//! judged one after the other) before the policy takes it.

use super::input::OperatorRequest;
use crate::control::proto::{Health, PathKind, PathStatus, Status};
use crate::policy::Command;
use crate::state::AgentState;

/// A command the policy took: a path failed over or drained is out of service for the
/// guard from now on, before the pass that follows says so.
pub(super) fn taken_out(st: &mut AgentState, r: &OperatorRequest) {
    if matches!(r.command, Command::Failover | Command::Drain) {
        if let Some(v) = st.policy.get_mut(&r.path) {
            v.policy.admitted = false;
        }
    }
}

/// Whether the request may go to the policy: a path the config has and, without `force`,
/// one that is safe to take out.
pub(super) fn judge(st: &AgentState, r: &OperatorRequest) -> Result<(), String> {
    known_path(st, &r.path)?;
    if r.force {
        return Ok(());
    }
    match unsafe_to_take_out(&st.status(), &r.path, r.command) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

fn known_path(st: &AgentState, path: &str) -> Result<(), String> {
    if st.config().find_path(path).is_some() {
        return Ok(());
    }
    let cfg = st.config();
    let lines = cfg.lines.iter().map(|l| l.name.get_ref().as_str());
    let tunnels = cfg.tunnels.iter().map(|t| t.name.get_ref().as_str());
    let known: Vec<&str> = lines.chain(tunnels).collect();
    Err(format!(
        "no line or tunnel named `{path}` (paths: {})",
        known.join(", ")
    ))
}

/// Why taking `path` out of service now would be unsafe, if it would: when nothing else to
/// a site it serves is up and in service (its traffic would have nowhere to go), and, for a
/// drain, when it is the site's last healthy line (a drain is planned work; moving a whole
/// site onto the backup should be a deliberate choice). A failover onto the tunnels is
/// what `failover` is for. A path that is not carrying anything is never refused.
pub fn unsafe_to_take_out(status: &Status, path: &str, command: Command) -> Option<String> {
    let verb = match command {
        Command::Drain => "draining",
        Command::Failover => "failing over",
        Command::Restore | Command::Undrain => return None,
    };
    let in_service =
        |p: &PathStatus| p.state == Health::Up && p.policy.as_ref().is_none_or(|v| v.admitted);
    for site in &status.sites {
        let Some(me) = site.paths.iter().find(|p| p.name == path) else {
            continue;
        };
        if !in_service(me) {
            continue;
        }
        let others: Vec<&PathStatus> = site
            .paths
            .iter()
            .filter(|p| p.name != path && in_service(p))
            .collect();
        if others.is_empty() {
            return Some(format!(
                "refused: {verb} {path} would leave site {} with no healthy path in service, and its traffic with nowhere to go; add --force to do it anyway",
                site.name
            ));
        }
        let lines_left = others.iter().any(|p| p.kind == PathKind::Line);
        if command == Command::Drain && me.kind == PathKind::Line && !lines_left {
            let names: Vec<&str> = others.iter().map(|p| p.name.as_str()).collect();
            return Some(format!(
                "refused: {path} is the last healthy line to site {}; draining it moves all of the site's traffic onto the tunnels ({}); add --force to do it anyway",
                site.name,
                names.join(", ")
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A site with two lines and a tunnel; `up` lists the paths up and in service.
    fn status(up: &[&str], drained: &[&str]) -> Status {
        let path = |name: &str, kind: &str| {
            let admitted = up.contains(&name) && !drained.contains(&name);
            serde_json::json!({
                "name": name, "kind": kind, "interface": "x",
                "state": if up.contains(&name) { "up" } else { "down" },
                "reason": "", "signals": [],
                "policy": {"admitted": admitted, "penalty": 0.0, "degraded": false,
                           "operator": if drained.contains(&name) { "drained" } else { "none" }}
            })
        };
        serde_json::from_value(serde_json::json!({
            "schema": 1, "version": "0", "started_at": "", "uptime_seconds": 0,
            "config_file": "",
            "gateway": {"name": "gwa", "asn": 1, "router_id": "192.0.2.1"},
            "sites": [{
                "name": "cloud-b", "prefixes": [], "active_path": null, "active_reason": "",
                "learned_prefixes": 0,
                "paths": [path("line1", "line"), path("line2", "line"), path("inet1", "tunnel")]
            }]
        }))
        .unwrap()
    }

    #[test]
    fn the_last_healthy_line_is_drained_only_with_force() {
        let all = status(&["line1", "line2", "inet1"], &[]);
        assert_eq!(unsafe_to_take_out(&all, "line1", Command::Drain), None);
        let one_line = status(&["line1", "inet1"], &[]);
        let why = unsafe_to_take_out(&one_line, "line1", Command::Drain).unwrap();
        assert!(why.contains("last healthy line to site cloud-b"), "{why}");
        assert!(why.contains("(inet1)") && why.contains("--force"), "{why}");
        // A failover onto the tunnels is what failover is for.
        assert_eq!(
            unsafe_to_take_out(&one_line, "line1", Command::Failover),
            None
        );
        // line2 is up but drained: it does not count as a way out.
        let other_drained = status(&["line1", "line2", "inet1"], &["line2"]);
        assert!(unsafe_to_take_out(&other_drained, "line1", Command::Drain).is_some());
    }

    #[test]
    fn nothing_is_taken_out_that_leaves_a_site_without_a_path() {
        let alone = status(&["line1"], &[]);
        for c in [Command::Drain, Command::Failover] {
            let why = unsafe_to_take_out(&alone, "line1", c).unwrap();
            assert!(why.contains("no healthy path in service"), "{why}");
        }
        let tunnel_only = status(&["inet1"], &[]);
        assert!(unsafe_to_take_out(&tunnel_only, "inet1", Command::Drain).is_some());
        // A path carrying nothing can always be taken out; undoing is always safe.
        assert_eq!(unsafe_to_take_out(&alone, "line2", Command::Drain), None);
        assert_eq!(unsafe_to_take_out(&alone, "line1", Command::Restore), None);
        assert_eq!(unsafe_to_take_out(&alone, "line1", Command::Undrain), None);
    }
}
