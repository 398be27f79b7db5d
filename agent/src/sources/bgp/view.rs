//! What the agent knows of each BGP session, and how the sessions' events change it (in
//! the supervisor).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Instant;

use bgp::driver::{self, Event};
use bgp::fsm::State;
use bgp::wire::Family;
use ipnet::IpNet;

use crate::core::events::EventKind;
use crate::state::AgentState;

/// What the agent knows of one BGP session.
#[derive(Debug, Clone)]
pub struct NeighborState {
    pub line: String,
    pub peer: IpAddr,
    /// False until the session first reported: its state is then unknown, not Idle.
    pub reported: bool,
    pub state: State,
    pub established_at: Option<Instant>,
    /// When routes last came or went: a table still streaming in is not re-learned yet.
    pub last_routes_at: Option<Instant>,
    pub last_error: Option<String>,
    /// The peer announced graceful restart, so it marks the end of its initial table of
    /// each family with End-of-RIB (RFC 4724 §2).
    pub sends_end_of_rib: bool,
    /// Families whose initial table the peer has finished sending, this session.
    pub synced: HashSet<Family>,
    /// While the peer restarts gracefully (RFC 4724), until when its routes are kept.
    pub restarting_until: Option<Instant>,
    pub rejected: u64,
    /// What the import filter refused, by reason.
    pub refused: crate::refused::Refused,
    pub advertised: usize,
    /// Routes learned from this neighbour: prefix -> next hop.
    pub learned: HashMap<IpNet, IpAddr>,
    /// Those of `learned` tagged GRACEFUL_SHUTDOWN (RFC 8326): the far side drains the line.
    pub graceful_shutdown: HashSet<IpNet>,
    /// The families the last session negotiated.
    pub families: Vec<Family>,
    /// When it last came up or went down (for status and metrics; the phases of
    /// connecting in between are no change an operator tracks).
    pub changed_at: Option<Instant>,
    /// Messages by type, as last polled.
    pub sent: driver::MessageCounts,
    pub received: driver::MessageCounts,
}

impl NeighborState {
    pub(crate) fn new(line: &str, peer: IpAddr) -> NeighborState {
        NeighborState {
            line: line.to_owned(),
            peer,
            reported: false,
            state: State::Idle,
            established_at: None,
            last_routes_at: None,
            last_error: None,
            sends_end_of_rib: false,
            synced: HashSet::new(),
            restarting_until: None,
            rejected: 0,
            refused: Default::default(),
            advertised: 0,
            learned: HashMap::new(),
            graceful_shutdown: HashSet::new(),
            families: Vec::new(),
            changed_at: None,
            sent: Default::default(),
            received: Default::default(),
        }
    }

    pub fn state_name(&self) -> &'static str {
        if self.reported {
            self.state.as_str()
        } else {
            "unknown"
        }
    }
}

/// A session about to start (in the supervisor).
pub(crate) fn neighbor(st: &mut AgentState, line: &str, peer: IpAddr) {
    st.bgp.insert(peer, NeighborState::new(line, peer));
}

/// A session a reload ended: its learned prefixes leave the sites' prefix sets.
pub(crate) fn gone(st: &mut AgentState, peer: IpAddr) {
    st.bgp.remove(&peer);
    st.routes_generation += 1;
    st.touch();
}

/// A session's polled counters and state (in the supervisor).
/// The session's own events say when it comes up or goes down: a poll taken just before
/// one may be applied after it (or come from the session a reload replaced), so a poll
/// only moves the state between the phases of connecting (which have no events), never
/// into or out of Established. A neighbour's view exists before its session runs, so its
/// Up always comes as an event.
pub(crate) fn polled(st: &mut AgentState, s: driver::Status) {
    if let Some(n) = st.bgp.get_mut(&s.peer) {
        let established = State::Established;
        if n.state != established && s.state != established {
            n.state = s.state;
        }
        n.reported = true;
        n.advertised = s.prefixes_advertised;
        n.rejected = s.prefixes_rejected;
        n.sent = s.sent;
        n.received = s.received;
        if s.last_error.is_some() {
            n.last_error = s.last_error;
        }
    }
}

/// Applies one session event to the agent state and the event log (in the supervisor).
pub fn apply(st: &mut AgentState, ev: Event) {
    let now = st.now().mono;
    let (peer, record) = match ev {
        Event::Up { peer, negotiated } => {
            let Some(n) = st.bgp.get_mut(&peer) else {
                return;
            };
            n.reported = true;
            n.state = State::Established;
            n.established_at = Some(now);
            n.changed_at = Some(now);
            n.sends_end_of_rib = negotiated.graceful_restart.is_some();
            n.synced.clear();
            n.last_error = None;
            n.restarting_until = None;
            n.families.clone_from(&negotiated.families);
            let msg = format!(
                "BGP session with {peer} (AS{}) established: hold {} s, families {:?}",
                negotiated.peer_asn, negotiated.hold_time, negotiated.families
            );
            (peer, Some((EventKind::BgpUp, msg)))
        }
        Event::Down {
            peer,
            reason,
            graceful,
        } => {
            let Some(n) = st.bgp.get_mut(&peer) else {
                return;
            };
            n.reported = true;
            n.state = State::Idle;
            n.established_at = None;
            n.changed_at = Some(now);
            n.synced.clear();
            n.last_error = Some(reason.clone());
            n.restarting_until = graceful.map(|d| now + d);
            let reason = match graceful {
                Some(d) => format!(
                    "{reason}; the peer restarts gracefully, its routes are kept for {} s",
                    d.as_secs()
                ),
                None => reason,
            };
            (
                peer,
                Some((
                    EventKind::BgpDown,
                    format!("BGP session with {peer} down: {reason}"),
                )),
            )
        }
        Event::EndOfRib { peer, family } => {
            if let Some(n) = st.bgp.get_mut(&peer) {
                n.synced.insert(family);
                // A table judged withdrawn may be judged now.
                st.touch();
            }
            return;
        }
        Event::Routes { peer, delta } => {
            if !routes(st, peer, &delta) {
                return;
            }
            (peer, None)
        }
    };
    st.touch();
    if let Some((kind, msg)) = record {
        let line = st.bgp.get(&peer).map(|n| n.line.clone());
        st.record(kind, line.as_deref(), msg);
    }
}

/// A session's route delta: its learned routes and what its import refused. False when
/// the session is not known (its events are then dropped).
fn routes(st: &mut AgentState, peer: IpAddr, delta: &bgp::rib::RibDelta) -> bool {
    let now = st.now().mono;
    let Some(n) = st.bgp.get_mut(&peer) else {
        return false;
    };
    for p in &delta.withdrawn {
        n.learned.remove(p);
        n.graceful_shutdown.remove(p);
    }
    for (p, _) in &delta.added {
        n.graceful_shutdown.remove(p);
    }
    n.learned.extend(delta.added.iter().copied());
    n.graceful_shutdown
        .extend(delta.graceful_shutdown.iter().copied());
    n.rejected += delta.rejected.len() as u64;
    let refused = n.refused.note(&delta.rejected);
    let line = n.line.clone();
    n.last_routes_at = Some(now);
    st.routes_generation += 1;
    st.routes_changed_at = n.last_routes_at;
    tell_refused(st, peer, &line, refused);
    true
}

/// Logs each newly refused prefix; the first are events too, and so is each power of ten
/// the count passes (see `refused`).
fn tell_refused(st: &mut AgentState, peer: IpAddr, line: &str, tell: crate::refused::Tell) {
    for (p, why) in &tell.log {
        tracing::warn!(%peer, path = %line, prefix = %p, reason = why.label(), "prefix refused: {why}");
    }
    for (p, why) in tell.events {
        st.record(
            EventKind::PrefixRefused,
            Some(line),
            format!("{p} from {peer} refused ({}): {why}", why.label()),
        );
    }
    if let Some(total) = tell.milestone {
        let by = st
            .bgp
            .get(&peer)
            .map(|n| n.refused.summary())
            .unwrap_or_default();
        st.record(
            EventKind::PrefixRefused,
            Some(line),
            format!("{total} prefixes from {peer} refused so far ({by})"),
        );
    }
}
