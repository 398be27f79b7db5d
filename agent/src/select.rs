//! Which paths carry a site's traffic, from each path's health right now: the best healthy
//! line tier, else every healthy tunnel by weight, else nothing new (the kernel keeps the
//! last group). Pure, so the rule is tested with plain values.
//!
//! This is the immediate rule only; the policy engine (hold-down, damping, loss, operator
//! commands) decides when a path counts as healthy again and sits in front of it.

/// A path as the selection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub kind: CandidateKind,
    pub healthy: bool,
    /// Not healthy, but nothing measured says it is down either: a tunnel whose handshake
    /// is done while its end-to-end BFD has not reported yet (right after a start).
    pub unproven: bool,
    /// A healthy line the far side asks to be left (why): it carries traffic only when no
    /// other line can (see `AgentState::far_side_draining`).
    pub draining: Option<String>,
    /// Why the path is not healthy (empty when it is).
    pub why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateKind {
    /// Lower priority wins; equal priorities share the traffic.
    Line {
        priority: u32,
    },
    Tunnel {
        weight: u16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On the dedicated line(s).
    Lines,
    /// On the tunnels: no line is healthy.
    Failover,
    /// Nothing is healthy: the last group stays in place.
    AllDown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub mode: Mode,
    /// The chosen paths and their weights (empty for `AllDown`).
    pub members: Vec<(String, u16)>,
    /// `AllDown` only: tunnels to use when the kernel has no group left to keep (a tunnel
    /// loses its routes with its carrier while the agent restarts).
    pub fallback: Vec<(String, u16)>,
    pub reason: String,
}

fn reasons<'a>(c: impl Iterator<Item = &'a Candidate>) -> String {
    c.map(|c| format!("{}: {}", c.name, c.why))
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn choose(paths: &[Candidate]) -> Choice {
    let lines = || lines_of(paths);
    // Healthy lines the far side does not drain first; those it drains before the tunnels.
    let best_tier = |drained: bool| {
        lines()
            .filter(|c| usable(c, drained))
            .filter_map(|c| match c.kind {
                CandidateKind::Line { priority } => Some(priority),
                CandidateKind::Tunnel { .. } => None,
            })
            .min()
    };
    let best = best_tier(false)
        .map(|t| (t, false))
        .or_else(|| best_tier(true).map(|t| (t, true)));
    if let Some((tier, drained)) = best {
        return on_lines(paths, tier, drained);
    }
    let tunnels: Vec<(String, u16)> = tunnels_of(paths, |c| c.healthy);
    let lines_why = if lines().next().is_none() {
        "the site has no line".to_owned()
    } else {
        format!("no line healthy ({})", reasons(lines()))
    };
    // A line not observed yet that shows signs of life (right after a start: its BFD has
    // not reported) is not left for the tunnels: the kernel's group stays until it has.
    // Otherwise every restart would fail over whenever a tunnel's probe came up first.
    let line_unproven = lines().any(|c| c.unproven);
    if !tunnels.is_empty() && !line_unproven {
        let names: Vec<String> = tunnels.iter().map(|(n, w)| format!("{n}×{w}")).collect();
        return Choice {
            mode: Mode::Failover,
            reason: format!("{lines_why}; over tunnel {}", names.join(", ")),
            members: tunnels,
            fallback: Vec::new(),
        };
    }
    all_down(paths, line_unproven)
}

fn lines_of(paths: &[Candidate]) -> impl Iterator<Item = &Candidate> {
    paths
        .iter()
        .filter(|c| matches!(c.kind, CandidateKind::Line { .. }))
}

/// A healthy line, drained by the far side (`drained`) or not.
fn usable(c: &Candidate, drained: bool) -> bool {
    c.healthy && c.draining.is_some() == drained
}

/// The site's tunnels that `keep` says, with their weights.
fn tunnels_of(paths: &[Candidate], keep: impl Fn(&Candidate) -> bool) -> Vec<(String, u16)> {
    paths
        .iter()
        .filter(|c| keep(c))
        .filter_map(|c| match c.kind {
            CandidateKind::Tunnel { weight } => Some((c.name.clone(), weight)),
            CandidateKind::Line { .. } => None,
        })
        .collect()
}

/// The usable lines of priority `tier`, and why.
fn on_lines(paths: &[Candidate], tier: u32, drained: bool) -> Choice {
    let lines = || lines_of(paths);
    let members: Vec<(String, u16)> = lines()
        .filter(|c| usable(c, drained) && c.kind == CandidateKind::Line { priority: tier })
        .map(|c| (c.name.clone(), 1))
        .collect();
    let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
    let better_down: Vec<&Candidate> = lines()
        .filter(|c| !c.healthy)
        .filter(|c| matches!(c.kind, CandidateKind::Line { priority } if priority < tier))
        .collect();
    let mut reason = format!("line {} healthy (priority {tier})", names.join(", "));
    if !better_down.is_empty() {
        reason += &format!(
            "; preferred line down: {}",
            reasons(better_down.into_iter())
        );
    }
    let left: Vec<String> = lines()
        .filter(|c| c.healthy && !drained)
        .filter_map(|c| Some(format!("{}: {}", c.name, c.draining.as_ref()?)))
        .collect();
    if drained {
        reason += ", though the far side drains it: no other line is healthy";
    } else if !left.is_empty() {
        reason += &format!("; left for the far side: {}", left.join("; "));
    }
    Choice {
        mode: Mode::Lines,
        members,
        fallback: Vec::new(),
        reason,
    }
}

/// Nothing to move to: the kernel keeps its group; where none is left, the tunnels that
/// may carry.
fn all_down(paths: &[Candidate], line_unproven: bool) -> Choice {
    let fallback = tunnels_of(paths, |c| c.unproven || c.healthy);
    let otherwise = if fallback.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = fallback.iter().map(|(n, _)| n.as_str()).collect();
        format!(
            " (where none are left, over tunnel {} until the paths report)",
            names.join(", ")
        )
    };
    Choice {
        mode: Mode::AllDown,
        members: Vec::new(),
        fallback,
        reason: format!(
            "{}, keeping the last routes{otherwise}: {}",
            if line_unproven {
                "a line not observed yet"
            } else {
                "no path healthy"
            },
            reasons(paths.iter())
        ),
    }
}

/// Where the traffic goes when every path `primary` chose loses its link at once: the
/// choice among the other paths (the next line tier, else the tunnels). The kernel then
/// deletes the main group with its routes and the site's fallback routes take over until
/// the agent has put them back. `AllDown` when no other path is healthy.
pub fn fallback(paths: &[Candidate], primary: &Choice) -> Choice {
    let rest: Vec<Candidate> = paths
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if primary.members.iter().any(|(n, _)| *n == c.name) {
                c.healthy = false;
                c.unproven = false;
                c.why = "carries the traffic".into();
            }
            c
        })
        .collect();
    choose(&rest)
}

#[cfg(test)]
impl Choice {
    /// `members` at weight 1, for tests.
    pub(crate) fn of(mode: Mode, members: &[&str]) -> Choice {
        Choice {
            mode,
            members: members.iter().map(|m| ((*m).to_owned(), 1)).collect(),
            fallback: Vec::new(),
            reason: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, priority: u32, healthy: bool) -> Candidate {
        Candidate {
            name: name.into(),
            kind: CandidateKind::Line { priority },
            healthy,
            unproven: false,
            draining: None,
            why: if healthy { "" } else { "BFD Down" }.into(),
        }
    }

    fn tunnel(name: &str, weight: u16, healthy: bool) -> Candidate {
        Candidate {
            name: name.into(),
            kind: CandidateKind::Tunnel { weight },
            healthy,
            unproven: false,
            draining: None,
            why: if healthy { "" } else { "no handshake" }.into(),
        }
    }

    fn members(c: &Choice) -> Vec<(&str, u16)> {
        c.members.iter().map(|(n, w)| (n.as_str(), *w)).collect()
    }

    #[test]
    fn the_best_healthy_line_tier_wins_and_equal_priorities_share() {
        let paths = [
            line("l1", 10, true),
            line("l2", 10, true),
            line("l3", 20, true),
            tunnel("t1", 1, true),
        ];
        let c = choose(&paths);
        assert_eq!(c.mode, Mode::Lines);
        assert_eq!(members(&c), [("l1", 1), ("l2", 1)]);
        let paths = [
            line("l1", 10, false),
            line("l2", 20, true),
            tunnel("t1", 1, true),
        ];
        let c = choose(&paths);
        assert_eq!(members(&c), [("l2", 1)]);
        assert_eq!(
            c.reason,
            "line l2 healthy (priority 20); preferred line down: l1: BFD Down"
        );
    }

    #[test]
    fn no_line_means_every_healthy_tunnel_by_weight() {
        let paths = [
            line("l1", 10, false),
            tunnel("t1", 1, true),
            tunnel("t2", 3, true),
            tunnel("t3", 1, false),
        ];
        let c = choose(&paths);
        assert_eq!(c.mode, Mode::Failover);
        assert_eq!(members(&c), [("t1", 1), ("t2", 3)]);
        assert_eq!(
            c.reason,
            "no line healthy (l1: BFD Down); over tunnel t1×1, t2×3"
        );
        let c = choose(&[tunnel("t1", 2, true)]);
        assert_eq!(c.reason, "the site has no line; over tunnel t1×2");
    }

    #[test]
    fn nothing_healthy_chooses_nothing_and_says_why() {
        let c = choose(&[line("l1", 10, false), tunnel("t1", 1, false)]);
        assert_eq!(c.mode, Mode::AllDown);
        assert!(c.members.is_empty() && c.fallback.is_empty());
        assert_eq!(
            c.reason,
            "no path healthy, keeping the last routes: l1: BFD Down; t1: no handshake"
        );
    }

    #[test]
    fn a_tunnel_with_a_handshake_but_no_bfd_yet_is_only_a_fallback() {
        let mut t1 = tunnel("t1", 2, false);
        t1.unproven = true;
        t1.why = "not observed: e2e-bfd".into();
        let mut l1 = line("l1", 10, false);
        l1.unproven = true;
        let c = choose(&[l1, t1.clone(), tunnel("t2", 1, false)]);
        assert_eq!(c.mode, Mode::AllDown);
        assert!(c.members.is_empty());
        assert_eq!(c.fallback, [("t1".to_owned(), 2)], "tunnels only");
        assert!(c.reason.starts_with("a line not observed yet, keeping the last routes (where none are left, over tunnel t1 until the paths report)"), "{}", c.reason);
        // Once anything is healthy the fallback is moot.
        let c = choose(&[line("l1", 10, true), t1]);
        assert_eq!(c.mode, Mode::Lines);
        assert!(c.fallback.is_empty());
    }

    #[test]
    fn a_healthy_tunnel_does_not_win_over_a_line_not_observed_yet() {
        // Right after a restart the tunnel's probe came up before the line router's.
        let mut l1 = line("l1", 10, false);
        l1.unproven = true;
        l1.why = "not observed: bfd".into();
        let c = choose(&[l1.clone(), tunnel("t1", 1, true)]);
        assert_eq!(c.mode, Mode::AllDown, "{}", c.reason);
        assert_eq!(
            c.fallback,
            [("t1".to_owned(), 1)],
            "if the kernel kept nothing"
        );
        assert!(
            c.reason.starts_with("a line not observed yet"),
            "{}",
            c.reason
        );
        // Known down: the tunnel carries.
        let c = choose(&[line("l1", 10, false), tunnel("t1", 1, true)]);
        assert_eq!(c.mode, Mode::Failover);
        // Another line healthy: it carries, observed or not.
        let c = choose(&[l1, line("l2", 20, true), tunnel("t1", 1, true)]);
        assert_eq!(c.mode, Mode::Lines);
        assert_eq!(c.members, [("l2".to_owned(), 1)]);
    }

    #[test]
    fn the_fallback_is_the_choice_without_the_chosen_paths() {
        let paths = [
            line("l1", 10, true),
            line("l2", 20, true),
            tunnel("t1", 1, true),
            tunnel("t2", 3, true),
        ];
        let primary = choose(&paths);
        let f = fallback(&paths, &primary);
        assert_eq!(f.mode, Mode::Lines, "the next tier: {}", f.reason);
        assert_eq!(members(&f), [("l2", 1)]);
        // With the next tier down, the tunnels by weight.
        let paths = [
            line("l1", 10, true),
            line("l2", 20, false),
            tunnel("t1", 1, true),
            tunnel("t2", 3, true),
        ];
        let f = fallback(&paths, &choose(&paths));
        assert_eq!(f.mode, Mode::Failover);
        assert_eq!(members(&f), [("t1", 1), ("t2", 3)]);
        // On the tunnels already: nothing else is healthy, the kernel's group stays.
        let paths = [line("l1", 10, false), tunnel("t1", 1, true)];
        let f = fallback(&paths, &choose(&paths));
        assert_eq!(f.mode, Mode::AllDown);
        assert!(f.members.is_empty() && f.fallback.is_empty());
    }

    fn drained(mut c: Candidate) -> Candidate {
        c.draining = Some("GRACEFUL_SHUTDOWN".into());
        c
    }

    #[test]
    fn a_line_the_far_side_drains_is_left_for_the_next_line_then_the_tunnels() {
        let paths = [
            drained(line("l1", 10, true)),
            line("l2", 20, true),
            tunnel("t1", 1, true),
        ];
        let c = choose(&paths);
        assert_eq!(members(&c), [("l2", 1)]);
        assert!(
            c.reason.contains("left for the far side: l1"),
            "{}",
            c.reason
        );
        assert!(!c.reason.contains("preferred line down"), "{}", c.reason);
        // Should l2 lose its link, the drained line still beats the tunnels.
        assert_eq!(members(&fallback(&paths, &c)), [("l1", 1)]);
        // With no other line it carries the traffic, and says so.
        let paths = [
            drained(line("l1", 10, true)),
            line("l2", 20, false),
            tunnel("t1", 1, true),
        ];
        let c = choose(&paths);
        assert_eq!((c.mode, members(&c)), (Mode::Lines, vec![("l1", 1)]));
        assert!(
            c.reason.contains("though the far side drains it"),
            "{}",
            c.reason
        );
    }
}
