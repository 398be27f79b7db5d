//! An operator's command, judged by the supervisor against the state of the moment (the
//! guard reads the same verdicts the command would change, so two commands in a row are
//! judged one after the other) before the policy takes it.

use super::input::OperatorRequest;
use crate::config::PathRef;
use crate::core::events::EventKind;
use crate::core::signals::Health;
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

/// Every command, accepted or refused, with who asked: an event, a journal record with
/// fields of its own (`command`, `user`, `result`; `CROSSLINK_*` in the journal) and a
/// count in `crosslink_operator_commands_total`.
pub(super) fn audit(st: &mut AgentState, r: &OperatorRequest, answer: &Result<String, String>) {
    let command = r.command.as_str();
    let force = if r.force { " --force" } else { "" };
    let (result, said) = match answer {
        Ok(msg) => ("accepted", msg),
        Err(why) => ("refused", why),
    };
    let message = format!("{command} {}{force} by {}: {said}", r.path, r.by);
    tracing::info!(
        target: "crosslink::audit",
        command,
        path = %r.path,
        user = %r.by.user,
        uid = r.by.uid,
        pid = r.by.pid,
        result,
        "{message}"
    );
    st.record_by(
        EventKind::Operator,
        Some(&r.path),
        message,
        Some(&r.by.user),
    );
    st.counts.push(crate::metrics::Count::Command {
        command,
        user: r.by.user.clone(),
        result,
    });
}

/// Whether the request may go to the policy: a path the config has and, without `force`,
/// one that is safe to take out.
pub(super) fn judge(st: &AgentState, r: &OperatorRequest) -> Result<(), String> {
    known_path(st, &r.path)?;
    if r.force {
        return Ok(());
    }
    match unsafe_to_take_out(&sites(st), &r.path, r.command) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// A path as the guard sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Guarded {
    pub name: String,
    pub line: bool,
    /// Healthy, admitted by the policy and not marked by an operator: it carries the
    /// site's traffic or stands by.
    pub in_service: bool,
}

/// Every site with its paths, as the guard sees them now.
fn sites(st: &AgentState) -> Vec<(String, Vec<Guarded>)> {
    let cfg = st.config();
    cfg.sites
        .iter()
        .map(|s| {
            let site = s.name.get_ref();
            let paths = cfg
                .paths_of(site)
                .map(|p| {
                    let name = p.name();
                    let up = st.path_health(p).1.health == Health::Up;
                    let verdict = st.policy.get(name).map(|v| &v.policy);
                    let admitted = verdict.is_none_or(|v| v.admitted);
                    // A line draining still carries until its delay ends, but it is on
                    // its way out: a second drain must not count on it.
                    let marked = verdict.is_some_and(|v| v.operator != "none");
                    Guarded {
                        name: name.to_owned(),
                        line: matches!(p, PathRef::Line(_)),
                        in_service: up && admitted && !marked,
                    }
                })
                .collect();
            (site.clone(), paths)
        })
        .collect()
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
pub(super) fn unsafe_to_take_out(
    sites: &[(String, Vec<Guarded>)],
    path: &str,
    command: Command,
) -> Option<String> {
    let verb = match command {
        Command::Drain => "draining",
        Command::Failover => "failing over",
        Command::Restore | Command::Undrain => return None,
    };
    for (site, paths) in sites {
        let Some(me) = paths.iter().find(|p| p.name == path) else {
            continue;
        };
        if !me.in_service {
            continue;
        }
        let others: Vec<&Guarded> = paths
            .iter()
            .filter(|p| p.name != path && p.in_service)
            .collect();
        if others.is_empty() {
            return Some(format!(
                "{verb} {path} would leave site {site} with no healthy path in service, and its traffic with nowhere to go; add --force to do it anyway"
            ));
        }
        let lines_left = others.iter().any(|p| p.line);
        if command == Command::Drain && me.line && !lines_left {
            let names: Vec<&str> = others.iter().map(|p| p.name.as_str()).collect();
            return Some(format!(
                "{path} is the last healthy line to site {site}; draining it moves all of the site's traffic onto the tunnels ({}); add --force to do it anyway",
                names.join(", ")
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A site with two lines and a tunnel; `up` lists the paths up, `drained` those of
    /// them the policy does not admit.
    fn status(up: &[&str], drained: &[&str]) -> Vec<(String, Vec<Guarded>)> {
        let path = |name: &str, line: bool| Guarded {
            name: name.to_owned(),
            line,
            in_service: up.contains(&name) && !drained.contains(&name),
        };
        let paths = vec![
            path("line1", true),
            path("line2", true),
            path("inet1", false),
        ];
        vec![("cloud-b".to_owned(), paths)]
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
