//! The scenarios' world: the paths' signals as the scenario sets them, sent to the engine
//! as the sources would, and what the engine decides, as the FIB programmer and the
//! sessions would take it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use probes::driver::{FarEnd, SessionId, SessionStatus};
use probes::wire::{Diag, State};
use tokio::sync::oneshot;

use super::super::engine::Engine;
use super::super::input::{Input, OperatorRequest};
use crate::config::{Config, PathRef};
use crate::core::signals::SignalKind;
use crate::policy::Command;
use crate::routing::{Adopted, Programmed};
use crate::sources::bfd::Key;
use crate::sources::links::LinkTable;
use crate::state::{AgentState, Now};
use crate::supervisor::record::Recorder;

mod start;

/// The sources' polls: BFD counters and loss, tunnel handshakes.
const POLL: Duration = Duration::from_millis(500);
/// A table streaming in: an UPDATE this often.
const UPDATES: Duration = Duration::from_millis(100);
const WARM_UP: Duration = Duration::from_secs(10);
pub(super) const SITE: &str = "198.18.2.0/24";

/// A path's signals as the world has them, and how each reaches the agent.
pub(super) struct World {
    engine: Engine,
    cfg: Config,
    pub(super) t0: Now,
    now: Now,
    /// Every interface, as the kernel has it.
    links: LinkTable,
    /// The BFD driver's last session id.
    sessions: u32,
    /// Each running BFD session: its driver id and state.
    bfd: BTreeMap<Key, (SessionId, State)>,
    /// Each line's BGP session (by router): whether the world lets it be up, and whether
    /// it is.
    bgp: BTreeMap<IpAddr, (bool, bool)>,
    handshakes: BTreeMap<String, SystemTime>,
    fresh: BTreeSet<String>,
    loss: BTreeMap<String, f64>,
    streaming: BTreeSet<String>,
    /// The far gateway answers no path (the driver's fate group says so).
    far_end_quiet: bool,
    /// Sessions the agent closed (Cease/BFD Down), coming back a second later.
    reconnect: Vec<(Now, IpAddr)>,
    last_poll: Now,
    last_update: Now,
    last_decision: Now,
    group: Option<String>,
    pub(super) changes: Vec<(u64, String)>,
    /// Signal-level downs counted for the metrics, by path.
    pub(super) downs: BTreeMap<String, u64>,
    events_seen: u64,
    pub(super) events: Vec<(u64, String, String)>,
    pub(super) asked: VecDeque<(bool, String)>,
    waiting: Vec<oneshot::Receiver<Result<String, String>>>,
    record: Option<Recorder>,
    /// What the engine handed out to be kept on disk, in order.
    pub(super) persisted: Vec<crate::supervisor::Persist>,
    _dir: tempfile::TempDir,
}

impl World {
    /// A world whose engine's inputs and outputs are recorded to `record` (see
    /// `supervisor::record`).
    pub(super) fn recorded(record: Option<&Path>) -> World {
        let dir = tempfile::tempdir().unwrap();
        let cfg = super::config(dir.path(), &super::Shape::default());
        let start = Now::read();
        let st = AgentState::new(cfg.clone(), Path::new("gw.toml"), start);
        let record = record.map(|p| Recorder::start(p, &st, true, true).unwrap());
        let mut w = World {
            engine: Engine::new(st, true, true),
            record,
            persisted: Vec::new(),
            cfg,
            t0: start.after(WARM_UP),
            now: start,
            links: LinkTable::new(),
            sessions: 0,
            bfd: BTreeMap::new(),
            bgp: BTreeMap::new(),
            handshakes: BTreeMap::new(),
            fresh: BTreeSet::new(),
            loss: BTreeMap::new(),
            streaming: BTreeSet::new(),
            far_end_quiet: false,
            reconnect: Vec::new(),
            last_poll: start,
            last_update: start,
            last_decision: start,
            group: None,
            changes: Vec::new(),
            downs: BTreeMap::new(),
            events_seen: 0,
            events: Vec::new(),
            asked: VecDeque::new(),
            waiting: Vec::new(),
            _dir: dir,
        };
        w.start(Adopted::default());
        w.run_until(w.t0);
        assert_eq!(
            w.group.as_deref(),
            Some("line1"),
            "the warm-up ends on line1"
        );
        w.changes.clear();
        w.events.clear();
        w
    }

    fn apply(&mut self, input: Input) {
        self.set_now();
        let input = match &mut self.record {
            Some(r) => r.input(input),
            None => input,
        };
        self.engine.apply(input);
    }

    fn set_now(&mut self) {
        let now = match &mut self.record {
            Some(r) => r.now(self.now),
            None => self.now,
        };
        self.engine.set_now(now);
    }

    fn bgp_up(&mut self, peer: IpAddr) {
        let (allowed, up) = self.bgp[&peer];
        if !allowed || up {
            return;
        }
        self.bgp.insert(peer, (true, true));
        let negotiated = bgp::fsm::Negotiated {
            peer_asn: 65101,
            peer_id: std::net::Ipv4Addr::new(192, 0, 2, 254),
            hold_time: 90,
            ctx: Default::default(),
            families: vec![bgp::wire::Family::Ipv4],
            route_refresh: true,
            graceful_restart: None,
        };
        self.apply(Input::Bgp(bgp::driver::Event::Up { peer, negotiated }));
        self.announce(peer);
    }

    /// The router's table: the site's prefix.
    fn announce(&mut self, peer: IpAddr) {
        let delta = bgp::rib::RibDelta {
            added: vec![(SITE.parse().unwrap(), peer)],
            ..Default::default()
        };
        self.apply(Input::Bgp(bgp::driver::Event::Routes { peer, delta }));
    }

    /// A session that ends without graceful restart: its routes go with it.
    fn bgp_down(&mut self, peer: IpAddr, allowed: bool, reason: &str) {
        let (_, up) = self.bgp[&peer];
        self.bgp.insert(peer, (allowed, false));
        if !up {
            return;
        }
        let reason = reason.to_owned();
        self.apply(Input::Bgp(bgp::driver::Event::Down {
            peer,
            reason,
            graceful: None,
        }));
        let delta = bgp::rib::RibDelta {
            withdrawn: vec![SITE.parse().unwrap()],
            ..Default::default()
        };
        self.apply(Input::Bgp(bgp::driver::Event::Routes { peer, delta }));
    }

    fn bfd_to(&mut self, key: &Key, up: bool) {
        let (id, from) = self.bfd[key];
        let to = if up { State::Up } else { State::Down };
        if from == to {
            return;
        }
        self.bfd.insert(key.clone(), (id, to));
        self.apply(Input::Bfd(probes::driver::Event {
            id,
            name: key.0.clone(),
            peer: key.1,
            from,
            to,
            diag: if up {
                Diag::None
            } else {
                Diag::ControlDetectionTimeExpired
            },
            remote_diag: None,
            remote_state: Some(from),
            last_up_rx: (!up).then_some(self.now.mono),
            // Whether the far gateway still answers over the other paths.
            far_end: match (up || !key.2, self.far_end_quiet) {
                (true, _) => FarEnd::Unjudged,
                (false, true) => FarEnd::Silent,
                (false, false) => FarEnd::Alive,
            },
        }));
    }

    fn path(&self, name: &str) -> PathRef<'_> {
        self.cfg
            .find_path(name)
            .unwrap_or_else(|| panic!("no path {name}"))
    }

    pub(super) fn signal(&mut self, path: &str, kind: SignalKind, up: bool) {
        let iface = self.path(path).interface().to_owned();
        let routers: Vec<IpAddr> = match self.path(path) {
            PathRef::Line(l) => l.neighbors.get_ref().clone(),
            PathRef::Tunnel(_) => Vec::new(),
        };
        let sessions = |e2e: bool| -> Vec<Key> {
            self.bfd
                .keys()
                .filter(|k| k.0 == path && k.2 == e2e)
                .cloned()
                .collect()
        };
        match kind {
            SignalKind::Carrier => {
                let link = self.links.get_mut(&iface).expect("a path's interface");
                link.up = up;
                let link = Some(*link);
                self.apply(Input::Link { iface, link })
            }
            SignalKind::Bfd | SignalKind::E2eBfd => {
                for k in sessions(kind == SignalKind::E2eBfd) {
                    self.bfd_to(&k, up);
                }
            }
            SignalKind::Bgp => {
                for peer in routers {
                    match up {
                        true => {
                            self.bgp.insert(peer, (true, self.bgp[&peer].1));
                            self.bgp_up(peer);
                        }
                        false => self.bgp_down(peer, false, "Hold Timer Expired"),
                    }
                }
            }
            SignalKind::Handshake => {
                // Down: the last handshake is long past (as after a peer that stopped
                // answering for HANDSHAKE_STALE).
                match up {
                    true => self.fresh.insert(path.to_owned()),
                    false => self.fresh.remove(path),
                };
                let long_ago = self.now.wall - Duration::from_secs(600);
                self.handshakes.insert(path.to_owned(), long_ago);
                self.poll();
            }
        }
    }

    /// Every signal of a path, in the order a failure shows them (the carrier first) or a
    /// repair brings them back (BGP before BFD, as the coupling has it).
    pub(super) fn cut(&mut self, path: &str, down: bool) {
        let kinds: &[SignalKind] = match (self.path(path), down) {
            (PathRef::Line(_), true) => &[
                SignalKind::Carrier,
                SignalKind::Bfd,
                SignalKind::E2eBfd,
                SignalKind::Bgp,
            ],
            (PathRef::Line(_), false) => &[
                SignalKind::Carrier,
                SignalKind::Bgp,
                SignalKind::Bfd,
                SignalKind::E2eBfd,
            ],
            (PathRef::Tunnel(_), _) => &[
                SignalKind::Carrier,
                SignalKind::Handshake,
                SignalKind::E2eBfd,
            ],
        };
        for k in kinds {
            self.signal(path, *k, !down);
        }
    }

    /// The sources' periodic reports: BFD counters and loss, tunnel handshakes.
    fn poll(&mut self) {
        self.last_poll = self.now;
        let stats = self
            .cfg
            .tunnels
            .iter()
            .map(|t| {
                let name = t.name.get_ref().clone();
                let last = match self.fresh.contains(&name) {
                    true => self.now.wall,
                    false => self.handshakes[&name],
                };
                self.handshakes.insert(name.clone(), last);
                let s = wg::TunnelStats {
                    last_handshake: Some(last),
                    ..Default::default()
                };
                (name, s)
            })
            .collect();
        self.apply(Input::TunnelStats(stats));
        let sessions = self
            .bfd
            .iter()
            .map(|((name, peer, multihop), (id, state))| SessionStatus {
                id: *id,
                name: name.clone(),
                peer: *peer,
                multihop: *multihop,
                state: *state,
                remote_state: Some(*state),
                local_diag: Diag::None,
                remote_diag: None,
                detection_time: Duration::from_millis(300),
                tx_interval: Duration::from_millis(100),
                rtt: None,
                loss: Some(if *multihop {
                    self.loss.get(name).copied().unwrap_or(0.0)
                } else {
                    0.0
                }),
                up_for: None,
                tx_packets: 100,
                rx_packets: 100,
                discarded: 0,
                tx_gap_p99: None,
                tx_gap_max: None,
                stall_graces: 0,
            })
            .collect();
        self.apply(Input::BfdPolled(sessions));
    }

    pub(super) fn ms(&self) -> u64 {
        self.now
            .mono
            .saturating_duration_since(self.t0.mono)
            .as_millis() as u64
    }

    /// Ends a turn as the supervisor does: decides when something changed or a deadline
    /// is due, hands the wants to the FIB programmer (which switches at once), and does
    /// what the engine asks of the sessions.
    pub(super) fn turn(&mut self) {
        self.set_now();
        let due = self.decision_due();
        let out = self.engine.turn(self.now.mono >= due);
        if let Some(r) = &mut self.record {
            r.turn(self.now.mono >= due, &out, self.engine.state());
        }
        if out.wants.is_some() || self.now.mono >= due {
            self.last_decision = self.now;
        }
        if let Some(w) = &out.wants {
            self.apply(Input::Programmed(Programmed {
                generation: w.generation,
                switched_at: Some(self.now.mono),
                repaired: BTreeMap::new(),
            }));
        }
        for (peer, _) in out.closes {
            self.bgp_down(peer, true, "closed by the agent: Cease/BFD Down");
            self.reconnect
                .push((self.now.after(Duration::from_secs(1)), peer));
        }
        self.persisted.extend(out.persist);
        for c in &out.counts {
            if let crate::metrics::Count::Down { path, .. } = c {
                *self.downs.entry(path.clone()).or_default() += 1;
            }
        }
        for (_, answer) in out.answers {
            let (refused, what) = self.asked.pop_front().expect("an answer to a command");
            assert_eq!(answer.is_err(), refused, "{what}: {answer:?}");
        }
        self.observe();
    }

    /// The site's group and the events, as they change.
    fn observe(&mut self) {
        let st = self.engine.state();
        // With every path down the kernel keeps what it has (fail static).
        let group = match st.active.get("b") {
            Some(c) if c.mode == crate::select::Mode::AllDown => self.group.clone(),
            Some(c) => {
                // As a set: the kernel's group is in id order whatever the config's.
                let mut names: Vec<&str> = c.members.iter().map(|(n, _)| n.as_str()).collect();
                names.sort_unstable();
                Some(names.join("+"))
            }
            None => None,
        };
        let ms = self.ms();
        if group != self.group {
            if let Some(g) = &group {
                self.changes.push((ms, g.clone()));
            }
            self.group = group;
        }
        let fresh: Vec<(u64, String, String)> = st
            .events()
            .filter(|e| e.seq > self.events_seen)
            .map(|e| {
                (
                    ms,
                    e.kind.as_str().to_owned(),
                    e.path.clone().unwrap_or_default(),
                )
            })
            .collect();
        self.events_seen = st.last_event_seq();
        self.events.extend(fresh);
    }

    /// When the supervisor would decide with no new input: a deadline of the engine's,
    /// or the periodic reconcile.
    fn decision_due(&self) -> std::time::Instant {
        let last = self.last_decision.mono;
        let reconcile = last + crate::routing::RECONCILE;
        self.engine
            .next_deadline(last)
            .map_or(reconcile, |d| d.min(reconcile))
    }

    /// Time passes from one happening to the next (a poll, an UPDATE of a table streaming
    /// in, a session reconnecting, a decision due), the engine turning at each, as the
    /// supervisor wakes for an input or a deadline.
    pub(super) fn run_until(&mut self, until: Now) {
        // A day of virtual time at a wake per millisecond is more than any scenario has.
        for _ in 0..100_000_000u64 {
            let mut next = self.decision_due().min(self.last_poll.mono + POLL);
            if !self.streaming.is_empty() {
                next = next.min(self.last_update.mono + UPDATES);
            }
            if let Some(t) = self.reconnect.iter().map(|(t, _)| t.mono).min() {
                next = next.min(t);
            }
            // Never twice at one instant: a deadline already decided waits a tick.
            let next = next.max(self.now.mono + Duration::from_millis(1));
            if next > until.mono {
                self.now = self.now.after(until.mono - self.now.mono);
                return;
            }
            self.now = self.now.after(next - self.now.mono);
            self.wake();
        }
        panic!("the scenario's time does not advance");
    }

    /// What is due at this instant, then a turn.
    fn wake(&mut self) {
        let now = self.now.mono;
        let due: Vec<IpAddr> = self
            .reconnect
            .iter()
            .filter(|(t, _)| t.mono <= now)
            .map(|(_, p)| *p)
            .collect();
        self.reconnect.retain(|(t, _)| t.mono > now);
        for peer in due {
            self.bgp_up(peer);
        }
        if !self.streaming.is_empty() && self.now.since(self.last_update.mono) >= UPDATES {
            self.last_update = self.now;
            for line in self.streaming.clone() {
                if let PathRef::Line(l) = self.path(&line) {
                    for peer in l.neighbors.get_ref().clone() {
                        if self.bgp[&peer].1 {
                            self.announce(peer);
                        }
                    }
                }
            }
        }
        if self.now.since(self.last_poll.mono) >= POLL {
            self.poll();
        }
        self.turn();
    }

    /// A line's router keeps sending its table (an UPDATE every UPDATES from now), or
    /// stops.
    pub(super) fn stream(&mut self, line: String, on: bool) {
        if on {
            self.last_update = self.now;
            self.streaming.insert(line);
        } else {
            self.streaming.remove(&line);
        }
    }

    pub(super) fn far_end(&mut self, quiet: bool) {
        self.far_end_quiet = quiet;
        let e2e: Vec<Key> = self.bfd.keys().filter(|k| k.2).cloned().collect();
        for k in e2e {
            self.bfd_to(&k, !quiet);
        }
    }

    /// Loss on a path's end-to-end probes, as the next poll reports it (at once).
    pub(super) fn set_loss(&mut self, path: String, loss: f64) {
        self.loss.insert(path, loss);
        self.poll();
    }

    pub(super) fn operator(
        &mut self,
        path: String,
        command: &str,
        refused: bool,
        lasting_ms: Option<u64>,
    ) {
        let command =
            Command::parse(command).unwrap_or_else(|| panic!("no operator command {command:?}"));
        // The asker waits (a closed reply is a command given up on, not applied).
        let (reply, waiting) = oneshot::channel();
        self.waiting.push(waiting);
        self.asked
            .push_back((refused, format!("{command:?} {path} at {} ms", self.ms())));
        self.apply(Input::Operator(OperatorRequest {
            path,
            command,
            force: false,
            by: crate::core::caller::Caller::process(Some("alice".into()), 1000, Some(4242)),
            lasting: lasting_ms.map(Duration::from_millis),
            reply,
        }));
    }
}
