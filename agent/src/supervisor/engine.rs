//! The engine: the agent's state and its decision, with no task, channel, socket or clock
//! of its own. The supervisor tells it the time and hands it the inputs in order; a turn
//! returns what the world must do (the FIB programmer's wants, the lines' announcements,
//! BGP sessions to close, BFD sessions to admit or hold, operators' answers, what to keep
//! on disk for the next run). A replayed scenario drives the same engine in virtual time
//! (`scenarios`), and so does a record of a live run (`record`, `crosslink replay`).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::decide::Decider;
use super::input::{Input, Reply};
use crate::policy::Advertise;
use crate::routing::{Programmed, Wants};
use crate::state::{AgentState, Now};

/// What a turn asks of the world, in the order the supervisor does it.
#[derive(Default)]
pub struct Outputs {
    /// New wants for the FIB programmer (none: nothing changed).
    pub wants: Option<Arc<Wants>>,
    /// How each line should be announced, when that changed (drains).
    pub exports: Option<BTreeMap<String, Advertise>>,
    /// BGP sessions to close with Cease/BFD Down: each only while it is one established
    /// before the instant given (BFD's last sign of life from its router).
    pub closes: Vec<(IpAddr, Instant)>,
    /// BFD sessions with line routers to admit (`true`) or hold AdminDown.
    pub admin: Vec<(probes::driver::SessionId, bool)>,
    /// Operators' answers, to send once the view shows their effect.
    pub answers: Vec<(Reply, Result<String, String>)>,
    /// What the next run must find on disk, when it changed.
    pub persist: Option<super::decide::Persist>,
    /// Transitions, failovers and switch times, for the metrics.
    pub counts: Vec<crate::metrics::Count>,
}

pub struct Engine {
    pub(super) st: AgentState,
    decider: Decider,
    /// A FIB programmer runs: without one the state is kept and shown, nothing is decided.
    programming: bool,
    /// BFD and BGP with the line routers are coupled (BFD runs).
    coupled: bool,
    /// The previous run's kernel objects have been taken up (see `Decider::adopt`).
    adopted: bool,
    /// The wants last handed out, numbered by their generation.
    wants: Option<Arc<Wants>>,
    /// A reload waits for the first pass programmed with its config.
    config_acks: Vec<(u64, oneshot::Sender<()>)>,
    /// Sites whose traffic moved, when it was decided and in which wants (for the
    /// switch-time histogram).
    moves: Vec<(String, Instant, u64)>,
    /// What the BFD driver was last told of each coupled session.
    admin: HashMap<probes::driver::SessionId, bool>,
    closes: Vec<(IpAddr, Instant)>,
}

impl Engine {
    pub fn new(mut st: AgentState, programming: bool, coupled: bool) -> Engine {
        let decider = Decider::new(&mut st);
        Engine {
            st,
            decider,
            programming,
            coupled,
            adopted: false,
            wants: None,
            config_acks: Vec::new(),
            moves: Vec::new(),
            admin: HashMap::new(),
            closes: Vec::new(),
        }
    }

    pub fn state(&self) -> &AgentState {
        &self.st
    }

    /// The generation of the wants last handed out (0: none yet).
    pub fn generation(&self) -> u64 {
        self.wants.as_ref().map_or(0, |w| w.generation)
    }

    /// The time of the inputs that follow.
    pub fn set_now(&mut self, now: Now) {
        self.st.set_now(now);
    }

    /// The next time a decision is due with no new input.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.decider.next_deadline(&self.st, now)
    }

    /// Takes one input; what it changes is decided at the end of the turn.
    pub fn apply(&mut self, input: Input) {
        use crate::sources::{bfd, bgp, links, tunnels};
        let st = &mut self.st;
        match input {
            Input::Link { iface, link } => links::update(st, iface, link),
            Input::Links { table, followed } => links::replace(st, table, followed),
            Input::BgpNeighbor { line, peer } => bgp::neighbor(st, &line, peer),
            Input::BgpGone(peer) => bgp::gone(st, peer),
            Input::Bgp(ev) => bgp::apply(st, ev),
            Input::BgpPolled(s) => bgp::polled(st, s),
            Input::BfdSession(key, view) => {
                st.bfd.insert(key, *view);
            }
            Input::BfdGone(key) => {
                st.bfd.remove(&key);
            }
            Input::BfdFollows(key, id) => {
                if let Some(v) = st.bfd.get_mut(&key) {
                    v.id = id;
                }
            }
            Input::Bfd(ev) => {
                if let Some((peer, last_up)) = bfd::apply_event(st, ev) {
                    if self.coupled {
                        self.closes
                            .extend(crate::coupling::close_bgp(st, peer, last_up));
                    }
                }
            }
            Input::BfdPolled(all) => bfd::polled(st, all),
            Input::TunnelStarted { name, retried } => tunnels::started(st, name, retried),
            Input::TunnelFailed { name, error, told } => tunnels::failed(st, name, error, told),
            Input::TunnelsKept(names) => st.tunnels.retain(|n, _| names.contains(n)),
            Input::TunnelStats(all) => tunnels::polled(st, all),
            Input::Record {
                kind,
                path,
                message,
                by,
            } => st.record_by(kind, path.as_deref(), message, by.as_deref()),
            Input::Operator(r) => {
                if self.programming {
                    st.operator_queue.push(r);
                    st.touch();
                } else {
                    let why = "route programming is not running; the command was not applied";
                    st.operator_answers.push((r.reply, Err(why.into())));
                }
            }
            Input::Config(cfg, ack) => {
                st.set_config(*cfg);
                // Answered by the first pass programmed with it (at once without one).
                if self.programming {
                    self.config_acks.push((self.generation() + 1, ack));
                } else {
                    let _ = ack.send(());
                }
            }
            Input::Adopted(kernel) => {
                let now = st.now().mono;
                self.decider.adopt(st, &kernel, now);
                self.adopted = true;
                st.touch();
            }
            Input::Programmed(p) => self.programmed(p),
            Input::Stall(s) => super::decide::note_stall(st, s),
        }
    }

    /// Ends a turn: decides when a signal changed or a deadline is `due`, couples BFD and
    /// BGP, and returns what the world must do.
    pub fn turn(&mut self, due: bool) -> Outputs {
        let mut out = Outputs::default();
        if self.st.take_touched() || due {
            out.wants = self.decide();
            if self.st.take_advertise_changed() {
                out.exports = Some(self.st.advertise.clone());
            }
        }
        if self.coupled {
            out.admin = crate::coupling::reconcile(&mut self.st, &mut self.admin);
        }
        out.closes = std::mem::take(&mut self.closes);
        out.persist = self.decider.take_persist();
        out.counts = std::mem::take(&mut self.st.counts);
        out.answers = std::mem::take(&mut self.st.operator_answers);
        out
    }

    /// Decides; new wants when they differ from the last (or a reload waits on a pass).
    /// Nothing before the previous run's objects are read (their ids and what they
    /// carried decide the first pass).
    fn decide(&mut self) -> Option<Arc<Wants>> {
        if !self.programming || !self.adopted {
            return None;
        }
        let now = self.st.now().mono;
        let (sites, moved) = self.decider.decide(&mut self.st, now);
        let next = Wants {
            generation: self.generation() + 1,
            sites,
            wanted: self.decider.wanted.clone(),
            prefixes_generation: self.decider.prefixes_builds,
            carrier_epoch: self.st.carrier_epoch,
            carriers_followed: self.st.links_followed,
        };
        // The programmer wakes for a change only (or a reload waiting on it): a repeated
        // want would cut its route work short for nothing.
        let same = self.wants.as_ref().is_some_and(|w| {
            w.sites == next.sites
                && w.prefixes_generation == next.prefixes_generation
                && w.carrier_epoch == next.carrier_epoch
                && w.carriers_followed == next.carriers_followed
        });
        let sent = (!same || !self.config_acks.is_empty()).then(|| Arc::new(next));
        if let Some(w) = &sent {
            self.wants = Some(w.clone());
        }
        let generation = self.generation();
        for site in moved {
            self.moves.push((site, now, generation));
        }
        sent
    }

    /// A pass of the FIB programmer: proof of life, switch times, and what waited on it.
    /// What the kernel was last asked for, in the operator's terms (`crosslink routes`).
    pub fn routes(&self) -> super::routes::Routes {
        super::routes::routes(&self.st, self.wants.as_deref(), &self.decider.ids)
    }

    /// Objects the FIB programmer had to put back: someone else deleted or changed them
    /// (a hand-typed `ip nexthop flush`, another routing daemon). Traffic is right again,
    /// but whoever did it may do it again: a warning, an event and a count each time.
    fn repaired(&mut self, repaired: &BTreeMap<&'static str, u64>) {
        if repaired.is_empty() {
            return;
        }
        let what: Vec<String> = repaired.iter().map(|(w, n)| format!("{n} {w}")).collect();
        let message = format!(
            "kernel objects deleted or changed behind the agent's back, put back: {}",
            what.join(", ")
        );
        tracing::warn!("{message}");
        self.st
            .record(crate::core::events::EventKind::FibRepaired, None, message);
        for (what, n) in repaired {
            self.st
                .counts
                .push(crate::metrics::Count::FibRepair { what, n: *n });
        }
    }

    fn programmed(&mut self, p: Programmed) {
        let now = self.st.now();
        self.st.last_pass = Some(now.mono);
        self.repaired(&p.repaired);
        // A pass the kernel refused moved nothing: its switches and standings wait for
        // one that gets through.
        let Some(switched_at) = p.switched_at else {
            return;
        };
        self.st.last_programmed = Some(now.mono);
        self.moves.retain(|(site, decided, generation)| {
            if *generation > p.generation {
                return true;
            }
            self.st.counts.push(crate::metrics::Count::Switched {
                site: site.clone(),
                took: switched_at.saturating_duration_since(*decided),
            });
            false
        });
        // On disk once the kernel has the latest decision, never ahead of it.
        if p.generation == self.generation() {
            self.decider.note_marks(now);
        }
        let (done, waiting) = std::mem::take(&mut self.config_acks)
            .into_iter()
            .partition(|(generation, _)| *generation <= p.generation);
        self.config_acks = waiting;
        for (_, ack) in done {
            let _ = ack.send(());
        }
    }
}
