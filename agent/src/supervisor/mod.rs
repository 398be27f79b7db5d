//! The supervisor: the one task that owns the agent's state. Sources (links, BGP, BFD,
//! tunnels), the control socket, reloads and the FIB programmer send it typed inputs on
//! one channel; its engine (`engine`: the state and the decision, sans-IO) takes them in
//! order with the time the supervisor reads, and each turn says what the world must do:
//! the supervisor hands the wants to the FIB programmer, the exports to the BGP side,
//! admits or holds BFD sessions and closes BGP sessions (coupling), answers operators, and
//! publishes a read-only view for the control socket, the metrics and systemd. Nobody
//! else reads or writes the state, so nothing locks it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::control::proto::{LogEntry, Status};
use crate::control::status;
use crate::policy::Advertise;
use crate::routing::{Wants, RECONCILE};
use crate::state::{AgentState, Now};

mod counts;
mod decide;
mod engine;
mod input;
pub(crate) mod members;
mod operator;
pub mod record;
pub mod routes;
#[cfg(test)]
mod scenarios;

pub use decide::{Decider, Persist};
pub use engine::{Engine, Outputs};
pub use input::{Input, Inputs, OperatorRequest, Reply};
pub use routes::Question;

/// The supervisor's clock: tokio's, so a driver test in virtual time (`start_paused`)
/// moves the policy's hold-downs and the decision's deadlines together.
fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Both clocks, for the state (see `core::now`).
fn read_now() -> Now {
    Now {
        mono: clock(),
        wall: std::time::SystemTime::now(),
    }
}

/// The longest a view lags behind inputs that moved no decision (counters, RTT).
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// Inputs taken in one go before deciding: enough to fold a burst (a table streaming in)
/// into one pass, few enough that a pass is never far behind.
const BATCH: usize = 256;

/// A BGP session's close waiting for the wants of `generation` to reach the kernel.
struct HeldClose {
    since: Instant,
    generation: u64,
    peer: IpAddr,
    /// The close applies only to a session established before this (see `coupling`).
    before: Instant,
}

/// The longest a BGP close waits for the switch its BFD failure caused.
const CLOSE_WAIT: Duration = Duration::from_millis(200);

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
        View::with_events(st, st.events().map(status::log_entry).collect())
    }

    fn with_events(st: &AgentState, events: Arc<[LogEntry]>) -> View {
        View {
            status: status::status(st),
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

/// The sessions the coupling of BFD and BGP with each line router acts on (see
/// `coupling`): the engine decides, the supervisor tells them.
pub struct Coupling {
    pub bfd: Arc<probes::driver::Bfd>,
    pub bgp: crate::sources::bgp::Handles,
}

pub struct Supervisor {
    engine: Engine,
    rx: mpsc::UnboundedReceiver<Input>,
    view: watch::Sender<Arc<View>>,
    exports: watch::Sender<BTreeMap<String, Advertise>>,
    /// None when the FIB programmer could not start: the state is kept and shown, nothing
    /// is decided or programmed.
    fib: Option<watch::Sender<Arc<Wants>>>,
    coupling: Option<Coupling>,
    /// BGP sessions to close because BFD with their router failed: run once the FIB
    /// programmer has switched, so that closing a session (its whole table withdrawn)
    /// does not compete with the switch for the CPU; at most CLOSE_WAIT later.
    closes: Vec<HeldClose>,
    /// The latest wants the FIB programmer got into the kernel.
    programmed: u64,
    /// The events of the last view, by their last sequence number.
    events_published: Option<u64>,
    /// Whether the agent itself did not run for a while, and the latest stall told.
    stall: Option<Arc<crate::stall::StallWatch>>,
    stall_told: Option<crate::stall::Stall>,
    /// `[debug] record`: the engine's inputs and outputs, written as they go.
    record: Option<record::Recorder>,
    /// The metrics the engine's counts go to.
    metrics: crate::metrics::Recorder,
    /// Questions that change nothing (`crosslink routes`), answered between turns.
    questions: Option<mpsc::Receiver<Question>>,
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
    pub fn new(
        st: AgentState,
        rx: mpsc::UnboundedReceiver<Input>,
        view: watch::Sender<Arc<View>>,
        exports: watch::Sender<BTreeMap<String, Advertise>>,
        fib: Option<watch::Sender<Arc<Wants>>>,
        coupling: Option<Coupling>,
        stall: Option<Arc<crate::stall::StallWatch>>,
    ) -> Supervisor {
        let (programming, coupled) = (fib.is_some(), coupling.is_some());
        // Started before the engine takes the previous run's marks from the state.
        let record = st.config().debug.record.clone().and_then(|path| {
            match record::Recorder::start(&path, &st, programming, coupled) {
                Ok(r) => {
                    tracing::info!(file = %path.display(), "recording the supervisor's inputs and outputs");
                    Some(r)
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot record");
                    None
                }
            }
        });
        let engine = Engine::new(st, programming, coupled);
        Supervisor {
            engine,
            rx,
            view,
            exports,
            fib,
            coupling,
            closes: Vec::new(),
            programmed: 0,
            events_published: None,
            stall,
            stall_told: None,
            record,
            metrics: crate::metrics::Recorder::new(),
            questions: None,
        }
    }

    /// Where questions come from (the control socket).
    pub fn with_questions(mut self, questions: mpsc::Receiver<Question>) -> Supervisor {
        self.questions = Some(questions);
        self
    }

    /// The metrics the engine's counts go to (by default, ones nobody reads).
    pub fn with_metrics(mut self, metrics: crate::metrics::Recorder) -> Supervisor {
        self.metrics = metrics;
        self
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
                .engine
                .next_deadline(last_decision)
                .unwrap_or(last_decision + RECONCILE)
                .min(last_decision + RECONCILE);
            let mut wake = if unpublished {
                due.min(published + PUBLISH_EVERY)
            } else {
                due
            };
            if let Some(c) = self.closes.first() {
                wake = wake.min(c.since + CLOSE_WAIT);
            }
            let question = async {
                match self.questions.as_mut() {
                    Some(q) => q.recv().await,
                    None => std::future::pending().await,
                }
            };
            let first = tokio::select! {
                i = self.rx.recv() => match i {
                    Some(i) => Some(i),
                    None => return,
                },
                Some(q) = question => {
                    match q {
                        Question::Routes(reply) => {
                            let _ = reply.send(self.engine.routes());
                        }
                    }
                    continue;
                }
                () = tokio::time::sleep_until(wake.into()) => None,
            };
            self.set_now(read_now());
            // Events recorded by the inputs themselves count as news too, and so does a
            // pass of the FIB programmer: the watchdog reads it from the view.
            let st = self.engine.state();
            let before = (self.engine.generation(), st.last_event_seq(), st.last_pass);
            if let Some(i) = first {
                self.apply(i);
                for _ in 1..BATCH {
                    match self.rx.try_recv() {
                        Ok(i) => self.apply(i),
                        Err(_) => break,
                    }
                }
            }
            // The decision is taken now, after the batch (a table's withdrawal may have
            // taken a while): its deadlines and the switch time count from here.
            let reading = read_now();
            self.set_now(reading);
            let now = reading.mono;
            self.note_stall(now);
            let out = self.engine.turn(now >= due);
            if out.wants.is_some() || now >= due {
                last_decision = now;
            }
            if self.hand_over(&out) {
                // New wants: the FIB programmer switches before this task goes on to
                // couple and build the view (the runtime may have one core).
                tokio::task::yield_now().await;
            }
            self.keep(now >= due, &out);
            self.tell_sessions(out.admin, out.closes, now);
            // What moved traffic or made an event is shown at once (an operator's command
            // then reads its effect); anything else (counters, RTT, a table streaming in)
            // at most every PUBLISH_EVERY: a view is the whole status document.
            let st = self.engine.state();
            let news = (self.engine.generation(), st.last_event_seq(), st.last_pass) != before;
            if news || !out.answers.is_empty() || now >= published + PUBLISH_EVERY {
                self.publish();
                published = now;
                unpublished = false;
            } else {
                unpublished = true;
            }
            // An operator reads the effect of a command in the next `status` it asks for.
            for (reply, answer) in out.answers {
                let _ = reply.send(answer);
            }
        }
    }

    /// What a turn leaves behind: its record, its counts in the metrics and what the
    /// next run must find on disk.
    fn keep(&mut self, due: bool, out: &Outputs) {
        if let Some(r) = &mut self.record {
            r.turn(due, out, self.engine.state());
        }
        for c in &out.counts {
            self.metrics.count(c);
        }
        if let Some(p) = &out.persist {
            let st = self.engine.state();
            crate::operator_state::persist(&st.config().control.state_file, p);
        }
    }

    fn apply(&mut self, input: Input) {
        match &input {
            // The asker gave up (it told the operator the command was not applied): so
            // it is not. Judged here, at the edge: the engine reads no channel.
            Input::Operator(r) if r.reply.is_closed() => {
                tracing::info!(path = %r.path, "an operator's command whose asker gave up waiting was dropped");
                return;
            }
            // A pass of the FIB programmer that got the kernel to its wants: the closes
            // held for those wants may run.
            Input::Programmed(p) if p.switched_at.is_some() => {
                self.programmed = self.programmed.max(p.generation);
                self.release_closes(None);
            }
            _ => {}
        }
        // Recorded, the engine gets the input as the record has it (times in whole µs),
        // so that a replay decides exactly as the live run did.
        let input = match &mut self.record {
            Some(r) => r.input(input),
            None => input,
        };
        self.engine.apply(input);
    }

    fn set_now(&mut self, now: Now) {
        let now = match &mut self.record {
            Some(r) => r.now(now),
            None => now,
        };
        self.engine.set_now(now);
    }

    /// A stall of the agent's own process, once per change (see `stall`).
    fn note_stall(&mut self, now: Instant) {
        let latest = self.stall.as_ref().and_then(|w| w.latest(now));
        if let Some(s) = latest.filter(|s| self.stall_told != Some(*s)) {
            self.stall_told = Some(s);
            self.apply(Input::Stall(s));
        }
    }

    /// Gives the FIB programmer its new wants and the BGP side its exports; whether the
    /// programmer has a switch to make.
    fn hand_over(&mut self, out: &Outputs) -> bool {
        if let Some(e) = &out.exports {
            self.exports.send_replace(e.clone());
        }
        match (&self.fib, &out.wants) {
            (Some(fib), Some(w)) => {
                fib.send_replace(w.clone());
                true
            }
            _ => false,
        }
    }

    /// BFD with a line router follows BGP with it, and BGP follows BFD: admissions at
    /// once, closes once traffic has left the line (see `closes`).
    fn tell_sessions(
        &mut self,
        admin: Vec<(probes::driver::SessionId, bool)>,
        closes: Vec<(IpAddr, Instant)>,
        now: Instant,
    ) {
        let Some(c) = &self.coupling else { return };
        for (id, up) in admin {
            c.bfd.set_admin_up(id, up);
        }
        // Each waits for the latest wants handed out (none under way: it runs at once).
        let generation = self.engine.generation();
        self.closes
            .extend(closes.into_iter().map(|(peer, before)| HeldClose {
                since: now,
                generation,
                peer,
                before,
            }));
        self.release_closes(Some(now));
    }

    /// Runs the BGP closes whose switch is through, or that waited CLOSE_WAIT (at `now`,
    /// when known), each in a task of its own (the supervisor does not wait for them).
    fn release_closes(&mut self, now: Option<Instant>) {
        let Some(c) = self.coupling.as_ref().filter(|_| !self.closes.is_empty()) else {
            return;
        };
        let programmed = self.programmed;
        let due = |h: &HeldClose| {
            h.generation <= programmed || now.is_some_and(|t| t >= h.since + CLOSE_WAIT)
        };
        let (run, wait): (Vec<HeldClose>, Vec<HeldClose>) =
            std::mem::take(&mut self.closes).into_iter().partition(due);
        self.closes = wait;
        for h in run {
            let bgp = c.bgp.clone();
            let (peer, before) = (h.peer, h.before);
            tokio::spawn(async move { crate::coupling::teardown(&bgp, peer, before).await });
        }
    }

    /// A new view for the readers; the event log is copied only when it grew.
    fn publish(&mut self) {
        let st = self.engine.state();
        let seq = st.last_event_seq();
        let events = if self.events_published == Some(seq) {
            self.view.borrow().events.clone()
        } else {
            self.events_published = Some(seq);
            st.events().map(status::log_entry).collect()
        };
        self.view
            .send_replace(Arc::new(View::with_events(st, events)));
    }
}

/// How long a reload waits for the kernel to be programmed with its config before going
/// on (the programmer passes at least once a second).
pub const CONFIG_WAIT: Duration = Duration::from_secs(2);
