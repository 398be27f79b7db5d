//! A path's health from its signals: each signal (carrier, BFD with the line router, BGP,
//! end-to-end BFD, tunnel handshake) says up, down (with why), absent, unknown (nothing
//! measured it yet) or off (not run on this path); the path is down on the first signal
//! down, unknown while one is unknown, up when all are up. Two holds keep a path up
//! through downs that are not its fault: the agent's own stall (what timed out while it
//! did not run; never a lost carrier, which is the link's), and the far gateway going
//! quiet on every path at once (its restart: every path ends there).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Health of a signal or a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// No source of evidence has reported yet.
    Unknown,
    Up,
    Down,
    /// The interface does not exist on this host.
    Absent,
    /// Not run on this path by the configuration (a line whose BFD is turned off).
    Off,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
            Health::Absent => "absent",
            Health::Off => "off",
        }
    }

    fn is_down(self) -> bool {
        matches!(self, Health::Down | Health::Absent)
    }
}

/// The kinds of evidence about a path, in the order status shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignalKind {
    Carrier,
    /// Single-hop BFD with the line router.
    Bfd,
    Bgp,
    /// BFD with the remote gateway across the path.
    E2eBfd,
    /// The tunnel's WireGuard handshake.
    Handshake,
}

impl SignalKind {
    pub const ALL: [SignalKind; 5] = [
        SignalKind::Carrier,
        SignalKind::Bfd,
        SignalKind::Bgp,
        SignalKind::E2eBfd,
        SignalKind::Handshake,
    ];

    /// The name status, events and metric labels use.
    pub fn name(self) -> &'static str {
        match self {
            SignalKind::Carrier => "carrier",
            SignalKind::Bfd => "bfd",
            SignalKind::Bgp => "bgp",
            SignalKind::E2eBfd => "e2e-bfd",
            SignalKind::Handshake => "handshake",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub kind: SignalKind,
    pub health: Health,
    /// Why it is down (or absent), in words for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Signal {
    pub fn new(kind: SignalKind, health: Health) -> Signal {
        Signal {
            kind,
            health,
            why: None,
        }
    }

    pub fn down(kind: SignalKind, why: impl Into<String>) -> Signal {
        Signal {
            kind,
            health: Health::Down,
            why: Some(why.into()),
        }
    }
}

/// What holds a path up through signals that went down for reasons not its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holds {
    /// The agent did not run for `length` and its signals are excused for `grace` after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall: Option<StallHold>,
    /// A session of this path not Up, whose far gateway went quiet on every path at once
    /// (the signal computing it already counts it as up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub far_end: Option<FarEndHold>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StallHold {
    pub length: Duration,
    pub grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarEndHold {
    pub peer: String,
    pub quiet_for: Duration,
    pub grace: Duration,
}

/// A path's health, with the reason and the signal that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub health: Health,
    pub reason: String,
    /// The signal that took the path down (for the transition's reason label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<SignalKind>,
    /// Some signal beyond the carrier is up: evidence of life while the path is still
    /// unknown, not of health.
    pub evidence: bool,
}

/// Judges a path by its signals, in their order: the first one down decides.
pub fn judge(signals: &[Signal], holds: &Holds) -> Verdict {
    // While the agent's own stall excuses them, only a lost carrier counts.
    let stall = holds.stall.as_ref();
    let down = signals
        .iter()
        .find(|s| s.health.is_down() && (stall.is_none() || s.kind == SignalKind::Carrier));
    let excused = signals
        .iter()
        .find(|s| s.health == Health::Down)
        .filter(|_| down.is_none());
    let unknown: Vec<&str> = signals
        .iter()
        .filter(|s| s.health == Health::Unknown)
        .map(|s| s.kind.name())
        .collect();
    let evidence = signals
        .iter()
        .any(|s| s.kind != SignalKind::Carrier && s.health == Health::Up);
    let (health, reason, failing) = match (down, excused, stall) {
        (Some(s), _, _) => (Health::Down, s.why.clone().unwrap_or_default(), Some(s.kind)),
        (None, Some(s), Some(hold)) => (
            Health::Up,
            format!(
                "held: the agent itself did not run for {:.1} s; {} counts as up for up to {} s while it comes back",
                hold.length.as_secs_f64(),
                s.why.as_deref().unwrap_or("a signal down"),
                hold.grace.as_secs()
            ),
            None,
        ),
        _ if unknown.is_empty() => match &holds.far_end {
            Some(h) => (
                Health::Up,
                format!(
                    "held: the far gateway went quiet on every path {} s ago; end-to-end BFD with {} counts as up for {} s",
                    h.quiet_for.as_secs(),
                    h.peer,
                    h.grace.as_secs()
                ),
                None,
            ),
            None => (Health::Up, "every signal is up".to_owned(), None),
        },
        _ => (
            Health::Unknown,
            format!("not observed: {}", unknown.join(", ")),
            None,
        ),
    };
    Verdict {
        health,
        reason,
        failing,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(bfd: Health, bgp: Health, e2e: Health) -> Vec<Signal> {
        vec![
            Signal::new(SignalKind::Carrier, Health::Up),
            Signal::new(SignalKind::Bfd, bfd),
            Signal::new(SignalKind::Bgp, bgp),
            Signal::new(SignalKind::E2eBfd, e2e),
        ]
    }

    #[test]
    fn the_first_signal_down_decides_with_its_reason() {
        let mut s = line(Health::Up, Health::Up, Health::Up);
        assert_eq!(judge(&s, &Holds::default()).reason, "every signal is up");
        s[3] = Signal::down(SignalKind::E2eBfd, "end-to-end BFD is Down");
        s[2] = Signal::down(SignalKind::Bgp, "BGP is Idle");
        let v = judge(&s, &Holds::default());
        assert_eq!(
            (v.health, v.reason.as_str(), v.failing),
            (Health::Down, "BGP is Idle", Some(SignalKind::Bgp))
        );
    }

    #[test]
    fn unknown_until_every_signal_has_reported_and_evidence_beyond_the_carrier() {
        let v = judge(
            &line(Health::Unknown, Health::Up, Health::Unknown),
            &Holds::default(),
        );
        assert_eq!(v.health, Health::Unknown);
        assert_eq!(v.reason, "not observed: bfd, e2e-bfd");
        assert!(v.evidence, "BGP is up");
        let only_carrier = judge(
            &line(Health::Unknown, Health::Unknown, Health::Unknown),
            &Holds::default(),
        );
        assert!(!only_carrier.evidence);
        // Off is neither: a line without BFD is judged by the rest.
        assert_eq!(
            judge(
                &line(Health::Off, Health::Up, Health::Up),
                &Holds::default()
            )
            .health,
            Health::Up
        );
    }

    #[test]
    fn a_stall_excuses_what_timed_out_but_not_a_lost_carrier() {
        let holds = Holds {
            stall: Some(StallHold {
                length: Duration::from_millis(2500),
                grace: Duration::from_secs(30),
            }),
            far_end: None,
        };
        let mut s = line(Health::Up, Health::Up, Health::Up);
        s[1] = Signal::down(SignalKind::Bfd, "BFD with 192.0.2.1 is Down");
        let v = judge(&s, &holds);
        assert_eq!(v.health, Health::Up);
        assert!(v.reason.starts_with("held: the agent itself did not run for 2.5 s; BFD with 192.0.2.1 is Down counts as up"), "{}", v.reason);
        s[0] = Signal {
            kind: SignalKind::Carrier,
            health: Health::Absent,
            why: Some("interface line1 does not exist".into()),
        };
        let v = judge(&s, &holds);
        assert_eq!(
            (v.health, v.failing),
            (Health::Down, Some(SignalKind::Carrier))
        );
    }

    #[test]
    fn a_quiet_far_end_is_named_when_it_holds_the_path() {
        let holds = Holds {
            stall: None,
            far_end: Some(FarEndHold {
                peer: "198.19.12.1".into(),
                quiet_for: Duration::from_secs(4),
                grace: Duration::from_secs(30),
            }),
        };
        let v = judge(&line(Health::Up, Health::Up, Health::Up), &holds);
        assert_eq!(v.health, Health::Up);
        assert!(
            v.reason.contains("went quiet on every path 4 s ago"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn inputs_and_verdicts_replay_as_json() {
        let s = vec![Signal::down(
            SignalKind::Handshake,
            "last handshake 200 s ago",
        )];
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"[{"kind":"handshake","health":"down","why":"last handshake 200 s ago"}]"#
        );
        let back: Vec<Signal> = serde_json::from_str(&json).unwrap();
        let v = judge(&back, &Holds::default());
        let again: Verdict = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(again, v);
    }
}
