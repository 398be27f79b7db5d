//! The supervisor: the one task that owns the agent's state. Sources (links, BGP, BFD,
//! tunnels), the control socket, reloads and the FIB programmer send it typed inputs on
//! one channel; it applies them in order, decides (policy, selection, members), hands the
//! wants to the FIB programmer, couples BFD and BGP, and publishes a read-only view for
//! the control socket, the metrics and systemd. Nobody else reads or writes the state, so
//! nothing locks it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::control::proto::{LogEntry, Status};
use crate::policy::Advertise;
use crate::routing::{Programmed, Wants, RECONCILE};
use crate::state::AgentState;

mod decide;
mod input;
pub(crate) mod members;
mod operator;

pub use decide::Decider;
pub use input::{Input, Inputs, OperatorRequest, Reply};
pub use operator::unsafe_to_take_out;

/// The supervisor's clock: tokio's, so a driver test in virtual time (`start_paused`)
/// moves the policy's hold-downs and the decision's deadlines together.
fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The longest a view lags behind inputs that moved no decision (counters, RTT).
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// Inputs taken in one go before deciding: enough to fold a burst (a table streaming in)
/// into one pass, few enough that a pass is never far behind.
const BATCH: usize = 256;

/// What the agent shows, as of its last pass: the status document, the event log and when
/// the kernel was last programmed.
#[derive(Debug, Clone)]
pub struct View {
    pub status: Status,
    pub events: Arc<[LogEntry]>,
    /// When the FIB programmer last completed a pass (the service watchdog's proof that
    /// the supervisor and the programmer both turn).
    pub last_pass: Option<Instant>,
    /// When a pass last got the kernel to what was wanted (READY waits for the first).
    pub last_programmed: Option<Instant>,
}

impl View {
    pub fn of(st: &AgentState) -> View {
        View::with_events(st, st.events().cloned().collect())
    }

    fn with_events(st: &AgentState, events: Arc<[LogEntry]>) -> View {
        View {
            status: st.status(),
            events,
            last_pass: st.last_pass,
            last_programmed: st.last_programmed,
        }
    }
}

/// The readers' side of the view.
pub type Views = watch::Receiver<Arc<View>>;

/// How each line should be announced (drains), for the BGP side.
pub type Exports = watch::Receiver<BTreeMap<String, Advertise>>;

/// BFD sessions held until BGP with the same router is up, and BGP closed when that BFD
/// fails (see `coupling`).
pub struct Coupling {
    pub bfd: Arc<probes::driver::Bfd>,
    pub sessions: crate::sources::bfd::Running,
    pub bgp: crate::sources::bgp::Handles,
    /// What the driver was last told, by session.
    pub admin: std::collections::HashMap<probes::driver::SessionId, bool>,
}

pub struct Supervisor {
    st: AgentState,
    rx: mpsc::UnboundedReceiver<Input>,
    decider: Decider,
    view: watch::Sender<Arc<View>>,
    exports: watch::Sender<BTreeMap<String, Advertise>>,
    /// None when the FIB programmer could not start: the state is kept and shown, nothing
    /// is decided or programmed.
    fib: Option<watch::Sender<Arc<Wants>>>,
    coupling: Option<Coupling>,
    /// The previous run's kernel objects have been taken up (see `Decider::adopt`).
    adopted: bool,
    generation: u64,
    /// A reload waits for the first pass programmed with its config.
    config_acks: Vec<(u64, oneshot::Sender<()>)>,
    /// Sites whose traffic moved, when it was decided and in which wants (for the
    /// switch-time histogram).
    moves: Vec<(String, Instant, u64)>,
    /// The events of the last view, by their last sequence number.
    events_published: Option<u64>,
}

/// The channels readers and the BGP side follow, made before anything runs so the control
/// socket answers from the start.
pub fn views(st: &AgentState) -> (watch::Sender<Arc<View>>, Views) {
    watch::channel(Arc::new(View::of(st)))
}

pub fn exports(st: &AgentState) -> (watch::Sender<BTreeMap<String, Advertise>>, Exports) {
    watch::channel(st.advertise.clone())
}

impl Supervisor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mut st: AgentState,
        rx: mpsc::UnboundedReceiver<Input>,
        view: watch::Sender<Arc<View>>,
        exports: watch::Sender<BTreeMap<String, Advertise>>,
        fib: Option<watch::Sender<Arc<Wants>>>,
        coupling: Option<Coupling>,
        stall: Option<Arc<crate::stall::StallWatch>>,
    ) -> Supervisor {
        let decider = Decider::new(&mut st, stall);
        Supervisor {
            st,
            rx,
            decider,
            view,
            exports,
            fib,
            coupling,
            adopted: false,
            generation: 0,
            config_acks: Vec::new(),
            moves: Vec::new(),
            events_published: None,
        }
    }

    /// Runs until every sender is gone (the agent stopping).
    pub async fn run(mut self) {
        let mut last_decision = clock();
        let mut published = clock();
        let mut unpublished = false;
        loop {
            // Deadlines since the last decision, also one that has just passed: it is due
            // at once.
            let due = self
                .decider
                .next_deadline(last_decision)
                .unwrap_or(last_decision + RECONCILE)
                .min(last_decision + RECONCILE);
            let wake = if unpublished {
                due.min(published + PUBLISH_EVERY)
            } else {
                due
            };
            let first = tokio::select! {
                i = self.rx.recv() => match i {
                    Some(i) => Some(i),
                    None => return,
                },
                () = tokio::time::sleep_until(wake.into()) => None,
            };
            // Events recorded by the inputs themselves count as news too, and so does a
            // pass of the FIB programmer: the watchdog reads it from the view.
            let before = (self.generation, self.st.last_event_seq(), self.st.last_pass);
            if let Some(i) = first {
                self.apply(i);
                for _ in 1..BATCH {
                    match self.rx.try_recv() {
                        Ok(i) => self.apply(i),
                        Err(_) => break,
                    }
                }
            }
            let now = clock();
            if self.st.take_touched() || now >= due {
                self.decide(now);
                last_decision = now;
                if self.generation != before.0 {
                    // New wants: the FIB programmer switches before this task goes on
                    // to couple and build the view (the runtime may have one core).
                    tokio::task::yield_now().await;
                }
            }
            self.couple();
            // What moved traffic or made an event is shown at once (an operator's command
            // then reads its effect); anything else (counters, RTT, a table streaming in)
            // at most every PUBLISH_EVERY: a view is the whole status document.
            let answers = std::mem::take(&mut self.st.operator_answers);
            let news = (self.generation, self.st.last_event_seq(), self.st.last_pass) != before;
            if news || !answers.is_empty() || now >= published + PUBLISH_EVERY {
                self.publish();
                published = now;
                unpublished = false;
            } else {
                unpublished = true;
            }
            // An operator reads the effect of a command in the next `status` it asks for.
            for (reply, answer) in answers {
                let _ = reply.send(answer);
            }
        }
    }

    fn apply(&mut self, input: Input) {
        use crate::sources::{bfd, bgp, links, tunnels};
        let st = &mut self.st;
        match input {
            Input::Link { iface, carrier } => links::update(st, iface, carrier),
            Input::Links(table) => links::replace(st, table),
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
                    self.close_bgp(peer, last_up);
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
            } => st.record(kind, path.as_deref(), message),
            Input::Operator(r) => {
                if self.fib.is_none() {
                    let _ = r.reply.send(Err(
                        "route programming is not running; the command was not applied".into(),
                    ));
                } else {
                    st.operator_queue.push(r);
                    st.touch();
                }
            }
            Input::Config(cfg, ack) => {
                st.set_config(*cfg);
                // Answered by the first pass programmed with it (at once without one).
                if self.fib.is_some() {
                    self.config_acks.push((self.generation + 1, ack));
                } else {
                    let _ = ack.send(());
                }
            }
            Input::Adopted(kernel) => {
                self.decider.adopt(st, &kernel, clock());
                self.adopted = true;
                st.touch();
            }
            Input::Programmed(p) => self.programmed(p),
        }
    }

    /// Decides and hands the wants to the FIB programmer; nothing before the previous
    /// run's objects are read (their ids and what they carried decide the first pass).
    fn decide(&mut self, now: Instant) {
        let Some(fib) = &self.fib else { return };
        if !self.adopted {
            return;
        }
        let forced = !self.config_acks.is_empty();
        let (sites, moved) = self.decider.decide(&mut self.st, now);
        let next = Wants {
            generation: self.generation + 1,
            sites,
            wanted: self.decider.wanted.clone(),
            prefixes_generation: self.decider.prefixes_builds,
            carrier_epoch: self.st.carrier_epoch,
            carriers_followed: self.st.links.is_some(),
        };
        // The programmer wakes for a change only (or a reload waiting on it): a repeated
        // want would cut its route work short for nothing.
        let sent = fib.send_if_modified(|w| {
            let same = w.sites == next.sites
                && w.prefixes_generation == next.prefixes_generation
                && w.carrier_epoch == next.carrier_epoch
                && w.carriers_followed == next.carriers_followed
                && w.generation > 0;
            if same && !forced {
                return false;
            }
            *w = Arc::new(next);
            true
        });
        if sent {
            self.generation += 1;
        }
        for site in moved {
            self.moves.push((site, now, self.generation));
        }
        if self.st.take_advertise_changed() {
            self.exports.send_replace(self.st.advertise.clone());
        }
    }

    /// A pass of the FIB programmer: proof of life, switch times, and what waited on it.
    fn programmed(&mut self, p: Programmed) {
        self.st.last_pass = Some(clock());
        // A pass the kernel refused moved nothing: its switches and standings wait for
        // one that gets through.
        let Some(switched_at) = p.switched_at else {
            return;
        };
        self.st.last_programmed = Some(clock());
        self.moves.retain(|(site, decided, generation)| {
            if *generation > p.generation {
                return true;
            }
            self.st
                .metrics
                .switched(site, switched_at.saturating_duration_since(*decided));
            false
        });
        // On disk once the kernel has the latest decision, never ahead of it.
        if p.generation == self.generation {
            self.decider.save_marks(clock());
        }
        let (done, waiting) = std::mem::take(&mut self.config_acks)
            .into_iter()
            .partition(|(generation, _)| *generation <= p.generation);
        self.config_acks = waiting;
        for (_, ack) in done {
            let _ = ack.send(());
        }
    }

    /// BFD with a line router follows BGP with it, and BGP follows BFD.
    fn couple(&mut self) {
        if let Some(c) = &mut self.coupling {
            crate::coupling::reconcile(&c.bfd, &c.sessions, &mut self.st, &mut c.admin);
        }
    }

    /// BFD with `peer` failed: the BGP session with it is closed (in its own task, the
    /// supervisor does not wait for it).
    fn close_bgp(&mut self, peer: std::net::IpAddr, last_up: Option<Instant>) {
        let Some(c) = &self.coupling else { return };
        if let Some(close) = crate::coupling::close_bgp(&mut self.st, &c.bgp, peer, last_up) {
            tokio::spawn(close);
        }
    }

    /// A new view for the readers; the event log is copied only when it grew.
    fn publish(&mut self) {
        let seq = self.st.last_event_seq();
        let events = if self.events_published == Some(seq) {
            self.view.borrow().events.clone()
        } else {
            self.events_published = Some(seq);
            self.st.events().cloned().collect()
        };
        self.view
            .send_replace(Arc::new(View::with_events(&self.st, events)));
    }
}

/// How long a reload waits for the kernel to be programmed with its config before going
/// on (the programmer passes at least once a second).
pub const CONFIG_WAIT: Duration = Duration::from_secs(2);
