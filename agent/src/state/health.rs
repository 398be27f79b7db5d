//! A path's health from the state's evidence (carrier, BFD, BGP, tunnel handshake): each
//! source's view made a signal, and the signals judged (`core::signals::judge`).

use std::time::{Duration, Instant};

use bgp::wire::Family;
use ipnet::IpNet;

use super::{AgentState, BFD_STARTUP_GRACE};
use crate::config::PathRef;
use crate::core::signals::{
    self, FarEndHold, Health, Holds, Signal, SignalKind, StallHold, Verdict,
};
use crate::sources::bfd::BfdView;
use crate::sources::bgp::NeighborState;
use crate::sources::tunnels::{handshake_age, HANDSHAKE_STALE};

/// How long a line router's session has, once established, to send the site's routes
/// before announcing none of them counts as a withdrawal.
pub(super) const ROUTES_SETTLE: Duration = Duration::from_secs(1);
/// The longest a router that sends End-of-RIB is waited for before its table is judged
/// anyway (a router that announces the capability and never sends the marker).
pub(super) const EOR_WAIT: Duration = Duration::from_secs(10);

/// How long an end-to-end session stays counted as up after the far gateway went quiet
/// on every path at once or restarted: long enough for its agent to come back (the
/// line routers keep its routes meanwhile, by graceful restart); short enough that a
/// far side that never returns is reported down. There is no better path meanwhile:
/// every path ends at that gateway.
pub const FAR_END_GRACE: Duration = Duration::from_secs(30);

/// The far gateway went quiet or restarted less than `FAR_END_GRACE` ago. The mark stays
/// after the session is back: the far gateway's announcements are still settling at the
/// line routers (a withdrawal then is its restart, not the line failing).
fn far_end_restarting(v: &BfdView, now: Instant) -> bool {
    v.far_end_quiet
        .is_some_and(|(_, since)| now.saturating_duration_since(since) < FAR_END_GRACE)
}

/// Whether a session that is not Up is held as up (see `FAR_END_GRACE`).
fn held(v: &BfdView, now: Instant) -> bool {
    v.state != Some(probes::wire::State::Up) && far_end_restarting(v, now)
}

/// The loss of a path: its worst session's. A session whose far end is restarting is left
/// out: its window holds the far gateway's silence, which is no fault of the path (every
/// path ends at that gateway), and the window (seconds) ages out within the grace.
pub fn path_loss<'a>(views: impl IntoIterator<Item = &'a BfdView>, now: Instant) -> Option<f64> {
    views
        .into_iter()
        .filter(|v| !far_end_restarting(v, now))
        .filter_map(|v| v.detail.as_ref().and_then(|d| d.loss))
        .reduce(f64::max)
}

impl AgentState {
    /// A path's signals, in their order, and what they make of its health
    /// (`core::signals::judge`).
    pub(crate) fn path_health(&self, path: PathRef<'_>) -> (Vec<Signal>, Verdict) {
        let name = path.name();
        let iface = path.interface();
        let bgp: Vec<&NeighborState> = self.bgp.values().filter(|n| n.line == name).collect();
        let bfd: Vec<&BfdView> = self.bfd.values().filter(|v| v.line == name).collect();
        let now = self.now.mono;
        let young = self.now.since(self.started) < BFD_STARTUP_GRACE;
        let mut signals = vec![self.carrier(iface)];
        match path {
            PathRef::Line(l) => {
                signals.push(if *l.bfd.enabled.get_ref() {
                    bfd_signal(
                        SignalKind::Bfd,
                        bfd.iter().filter(|v| !v.end_to_end),
                        young,
                        now,
                    )
                } else {
                    Signal::new(SignalKind::Bfd, Health::Off)
                });
                let mut b = bgp_signal(&bgp, now);
                if b.health == Health::Up && !bfd.iter().any(|v| far_end_restarting(v, now)) {
                    if let Some(why) = self.routes_withdrawn(path, &bgp) {
                        b = Signal::down(SignalKind::Bgp, why);
                    }
                }
                signals.push(b);
            }
            PathRef::Tunnel(_) => signals.push(self.handshake_signal(name)),
        }
        if bfd.iter().any(|v| v.end_to_end) {
            signals.push(bfd_signal(
                SignalKind::E2eBfd,
                bfd.iter().filter(|v| v.end_to_end),
                young,
                now,
            ));
        }
        // Right after the agent's own stall, what timed out while it did not run is its
        // failure, not the path's.
        let holds = Holds {
            stall: self.stall.filter(|s| s.excuses(now)).map(|s| StallHold {
                length: s.length,
                grace: crate::stall::GRACE,
            }),
            far_end: bfd.iter().find(|v| held(v, now)).map(|v| FarEndHold {
                peer: v.peer.to_string(),
                quiet_for: v
                    .far_end_quiet
                    .map_or(Duration::ZERO, |(_, t)| self.now.since(t)),
                grace: FAR_END_GRACE,
            }),
        };
        let verdict = signals::judge(&signals, &holds);
        (signals, verdict)
    }

    /// A line whose routers announce nothing of its site in a family while another line of
    /// the site does: the line router has withdrawn the far side (it lost its own path
    /// there, e.g. its link to the far gateway), so the line carries nothing of that family
    /// whatever its sessions say. Judged per family because the families' withdrawals come
    /// over their own sessions, often hundreds of µs apart, and the first one already tells.
    /// Only families the line has a neighbour of (the only ones routed over it); sites
    /// whose lines announce nothing at all (static configurations) are left to the other
    /// signals.
    fn routes_withdrawn(&self, path: PathRef<'_>, own: &[&NeighborState]) -> Option<String> {
        let PathRef::Line(line) = path else {
            return None;
        };
        let site = line.site.get_ref();
        let is_v6 = |p: &IpNet| matches!(p, IpNet::V6(_));
        let announces = |n: &NeighborState, v6: bool| n.learned.keys().any(|p| is_v6(p) == v6);
        let others: Vec<&str> = self
            .config
            .lines
            .iter()
            .filter(|l| l.site.get_ref() == site && l.name.get_ref() != line.name.get_ref())
            .map(|l| l.name.get_ref().as_str())
            .collect();
        // Only a session that is up and has sent its table speaks for its router: one just
        // established has not sent it yet (a router coming back brings up its sessions
        // before it has the routes to send), one that is down (a graceful restart, excused
        // by the BGP signal) has sent nothing to this agent yet. A router that marks the
        // end of its table (End-of-RIB) is waited for, up to EOR_WAIT; one that does not
        // is given ROUTES_SETTLE.
        let settled = |v6: bool| {
            let family = if v6 { Family::Ipv6 } else { Family::Ipv4 };
            own.iter().filter(|n| n.peer.is_ipv6() == v6).all(|n| {
                let up_for = n
                    .established_at
                    .map_or(Duration::MAX, |t| self.now.since(t));
                n.state == bgp::fsm::State::Established
                    && (n.synced.contains(&family)
                        || up_for >= EOR_WAIT
                        || (!n.sends_end_of_rib && up_for >= ROUTES_SETTLE))
            })
        };
        let withdrawn = [false, true].into_iter().find(|&v6| {
            line.neighbors.get_ref().iter().any(|a| a.is_ipv6() == v6)
                && settled(v6)
                && !own.iter().any(|n| announces(n, v6))
                && self.bgp.values().any(|n| {
                    others.contains(&n.line.as_str())
                        && n.state == bgp::fsm::State::Established
                        && announces(n, v6)
                })
        })?;
        let family = if withdrawn { "IPv6" } else { "IPv4" };
        Some(format!(
            "the line router announces no {family} route of site {site} (another line does)"
        ))
    }

    /// A line whose router tags every route of the site it announces with
    /// GRACEFUL_SHUTDOWN (RFC 8326) while another line of the site announces the site
    /// untagged: the far side is taking the line out of service and asks to be left first.
    /// Such a line is not down (no penalty, no hold-down): it is used only when no other
    /// line is, as the RFC's LOCAL_PREF 0 would have it.
    pub(crate) fn far_side_draining(&self, line: &crate::config::Line) -> Option<String> {
        let name = line.name.get_ref();
        let site = line.site.get_ref();
        // The tagged routes are a subset of the learned ones (see `bgp::apply`): counting
        // them tells, whatever the size of the table.
        let untagged = |n: &NeighborState| n.learned.len() > n.graceful_shutdown.len();
        let own: Vec<&NeighborState> = self.bgp.values().filter(|n| &n.line == name).collect();
        let announced = own.iter().any(|n| !n.learned.is_empty());
        let all_tagged = !own.iter().any(|n| untagged(n));
        if !announced || !all_tagged {
            return None;
        }
        let other_untagged = self.config.lines.iter().any(|l| {
            l.site.get_ref() == site
                && l.name.get_ref() != name
                && self.bgp.values().any(|n| {
                    &n.line == l.name.get_ref()
                        && n.state == bgp::fsm::State::Established
                        && untagged(n)
                })
        });
        other_untagged.then(|| {
            "its router's routes carry GRACEFUL_SHUTDOWN (RFC 8326): the far side drains it"
                .to_owned()
        })
    }

    /// Up while the last handshake is fresh; down with the reason otherwise.
    fn handshake_signal(&self, tunnel: &str) -> Signal {
        const K: SignalKind = SignalKind::Handshake;
        let Some(v) = self.tunnels.get(tunnel) else {
            return Signal::new(K, Health::Unknown);
        };
        if let Some(e) = &v.error {
            return Signal::down(K, format!("tunnel not running: {e}"));
        }
        let Some(stats) = &v.stats else {
            return Signal::new(K, Health::Unknown);
        };
        match handshake_age(stats, self.now.wall) {
            Some(a) if a < HANDSHAKE_STALE => Signal::new(K, Health::Up),
            Some(a) => Signal::down(K, format!("last handshake {} s ago", a.as_secs())),
            None => Signal::down(K, "no handshake with the peer yet"),
        }
    }

    /// The carrier as the links source last told it (see `links`); unknown before its
    /// first table.
    fn carrier(&self, iface: &str) -> Signal {
        const K: SignalKind = SignalKind::Carrier;
        let Some(table) = &self.links else {
            return Signal::new(K, Health::Unknown);
        };
        let known = table.get(iface).map(|l| l.up);
        match known {
            None => Signal {
                kind: K,
                health: Health::Absent,
                why: Some(format!("interface {iface} does not exist")),
            },
            Some(true) => Signal::new(K, Health::Up),
            Some(false) => Signal::down(K, format!("interface {iface} has no carrier")),
        }
    }
}

/// A line's BGP signal: up when every session is Established or its peer is restarting
/// gracefully, down when one is neither. A graceful restart (RFC 4724) means the router
/// keeps forwarding while its control plane comes back; it is what a router's BFD going
/// down and up does in BIRD (`bfd graceful`), and what an agent restart makes the routers
/// do. Whether the line forwards is BFD's to say: it stays a signal of its own.
fn bgp_signal(sessions: &[&NeighborState], now: Instant) -> Signal {
    if sessions.is_empty() || sessions.iter().all(|n| !n.reported) {
        return Signal::new(SignalKind::Bgp, Health::Unknown);
    }
    match sessions.iter().find(|n| {
        n.state != bgp::fsm::State::Established && n.restarting_until.is_none_or(|t| t <= now)
    }) {
        None => Signal::new(SignalKind::Bgp, Health::Up),
        Some(n) => {
            let why = n.last_error.as_deref().unwrap_or("not established yet");
            Signal::down(
                SignalKind::Bgp,
                format!("BGP session with {} is {}: {why}", n.peer, n.state_name()),
            )
        }
    }
}

/// A BFD signal: up when every session is Up, down when one that runs is not.
pub(super) fn bfd_signal<'a>(
    name: SignalKind,
    sessions: impl Iterator<Item = &'a &'a BfdView>,
    young: bool,
    now: Instant,
) -> Signal {
    let sessions: Vec<&BfdView> = sessions.copied().collect();
    // Right after the agent starts, a session that has not come up yet (Down or Init, no
    // diagnostic) has measured nothing: that alone is no evidence against the path.
    let starting = |v: &BfdView| {
        young
            && v.state != Some(probes::wire::State::Up)
            && ((v.waiting_for_bgp && v.last_up_at.is_none())
                || v.local_diag.is_none_or(|d| d == probes::wire::Diag::None))
    };
    let down = sessions
        .iter()
        .find(|v| v.state != Some(probes::wire::State::Up) && !starting(v) && !held(v, now));
    if down.is_none() && (sessions.is_empty() || sessions.iter().any(|v| starting(v))) {
        return Signal::new(name, Health::Unknown);
    }
    match down {
        None => Signal::new(name, Health::Up),
        Some(v) if v.unanswered() => Signal::down(name, v.unanswered_why()),
        Some(v) if v.waiting_for_bgp => Signal::down(
            name,
            if v.last_up_at.is_some() {
                format!(
                    "BFD with {} went down; it waits for the BGP session with it to come back",
                    v.peer
                )
            } else {
                format!(
                    "BFD with {} waits for the BGP session with it (it starts once BGP is up)",
                    v.peer
                )
            },
        ),
        Some(v) => {
            let state = v.state.map_or("not started", |s| s.as_str());
            let diag = v
                .local_diag
                .filter(|d| *d != probes::wire::Diag::None)
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            let what = if v.end_to_end {
                "end-to-end BFD"
            } else {
                "BFD"
            };
            Signal::down(name, format!("{what} with {} is {state}{diag}", v.peer))
        }
    }
}
