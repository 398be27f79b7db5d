//! What the event log records, as a closed set: the operator's `crosslink events`, the
//! journal and the alerts read these names, so a new kind is a decision, not a typo.

use serde::{Deserialize, Serialize};

macro_rules! kinds {
    ($($variant:ident => $name:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum EventKind {
            $(#[serde(rename = $name)] $variant,)*
        }

        impl EventKind {
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            /// The name the log, the CLI and the alerts use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }
        }
    };
}

kinds! {
    AgentStarted => "agent-started",
    AgentStalled => "agent-stalled",
    ReexecFailed => "reexec-failed",
    Reload => "reload",
    ReloadRefused => "reload-refused",
    FibError => "fib-error",
    FibRepaired => "fib-repaired",
    // What carries a site's traffic.
    PathChange => "path-change",
    Failover => "failover",
    Return => "return",
    AllPathsDown => "all-paths-down",
    // The policy's verdicts on a path.
    PathDown => "path-down",
    PathReturn => "path-return",
    PathDegraded => "path-degraded",
    PathSuppressed => "path-suppressed",
    Drained => "drained",
    Operator => "operator",
    // The sources.
    BgpUp => "bgp-up",
    BgpDown => "bgp-down",
    BgpError => "bgp-error",
    BgpExport => "bgp-export",
    BgpFollowsBfd => "bgp-follows-bfd",
    PrefixRefused => "prefix-refused",
    BfdUp => "bfd-up",
    BfdDown => "bfd-down",
    BfdUnanswered => "bfd-unanswered",
    FarEndQuiet => "far-end-quiet",
    TunnelUp => "tunnel-up",
    TunnelDown => "tunnel-down",
    TunnelError => "tunnel-error",
    TunnelStarted => "tunnel-started",
}

/// One entry of the event log, as the state keeps it (the control socket writes it out
/// as its `LogEntry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Numbered from 1 by the agent's run: `events --follow` asks for those after one.
    pub seq: u64,
    pub at: std::time::SystemTime,
    pub kind: EventKind,
    pub path: Option<String>,
    pub message: String,
    /// Who asked, for an operator's command or a reload (see `caller`).
    pub by: Option<String>,
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_the_same_on_the_wire() {
        let mut names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
        for k in EventKind::ALL {
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), *k);
        }
    }
}
