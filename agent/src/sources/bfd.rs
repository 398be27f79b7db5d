//! The agent's BFD: single-hop sessions with each line router neighbour and an end-to-end
//! multi-hop session to the remote gateway across each line and each tunnel, run by the
//! probes crate's driver on its own thread; their state as `status` shows it. A forwarder
//! and a poller (control runtime) send the driver's events and polls to the supervisor,
//! whose task applies them to the state.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use probes::driver::{Bfd, DriverOptions, Event, FarEnd, SessionId, SessionSpec, SessionStatus};
use probes::session::AuthConfig;
use probes::wire::{AuthType, Diag, State};
use tokio::sync::mpsc;

use crate::config::{BfdAuthType, Config, Line};
use crate::core::events::EventKind;
use crate::coupling;
use crate::state::{lock, AgentState};
use crate::supervisor::{Input, Inputs};

/// What the agent knows of one BFD session.
#[derive(Debug, Clone)]
pub struct BfdView {
    pub line: String,
    pub peer: IpAddr,
    pub end_to_end: bool,
    /// None until the driver first reported (the session may not have started).
    pub state: Option<State>,
    pub local_diag: Option<Diag>,
    pub remote_diag: Option<Diag>,
    /// Counters and measurements from the last poll.
    pub detail: Option<SessionStatus>,
    /// An end-to-end session that went down because the far gateway went quiet on every
    /// path at once, or restarted (see `probes::driver::fate`), and when.
    pub far_end_quiet: Option<(FarEnd, Instant)>,
    /// The peer has answered at least once since the agent started (a session restarted
    /// with its interface counts from zero again; the peer is not new for that).
    pub heard: bool,
    /// Held AdminDown until the BGP session with the same router is up (see `coupling`).
    pub waiting_for_bgp: bool,
    /// When the session last came Up (kept once it goes down again).
    pub last_up_at: Option<Instant>,
    /// When its state last changed, as the agent saw it (for status and metrics).
    pub changed_at: Option<Instant>,
    /// The driver's session this view follows: events of one a reload replaced are not
    /// this session's.
    pub id: Option<SessionId>,
    /// Its silent peer has been reported (once per session).
    pub told_unanswered: bool,
    /// The driver's session `state` came from: a poll of the session the view follows
    /// replaces a state left by another (one a reload replaced, whose last event or poll
    /// came in before the view knew its new session).
    pub state_of: Option<SessionId>,
}

impl BfdView {
    /// A session nothing is known of yet.
    pub(crate) fn fresh(line: String, peer: IpAddr, end_to_end: bool) -> BfdView {
        BfdView {
            line,
            peer,
            end_to_end,
            state: None,
            local_diag: None,
            remote_diag: None,
            detail: None,
            far_end_quiet: None,
            heard: false,
            waiting_for_bgp: false,
            last_up_at: None,
            changed_at: None,
            id: None,
            told_unanswered: false,
            state_of: None,
        }
    }

    /// Not one packet from the peer since the session started, though we send: a line
    /// router with no BFD configured, or a far end that does not run it.
    pub fn unanswered(&self) -> bool {
        !self.heard
            && !self.waiting_for_bgp
            && self.state != Some(State::Up)
            && self
                .detail
                .as_ref()
                .is_some_and(|d| d.rx_packets == 0 && d.tx_packets > 0)
    }

    /// Why the peer may be silent, for an operator.
    pub fn unanswered_why(&self) -> String {
        if self.end_to_end {
            format!(
                "end-to-end BFD with {} has never been answered: does the far gateway run crosslink, with this address as its end of the path?",
                self.peer
            )
        } else {
            format!(
                "BFD with {} has never been answered: is BFD configured on the line router? (`[line.bfd] enabled = false` if it runs none)",
                self.peer
            )
        }
    }
}

fn auth(line: &Line) -> Option<AuthConfig> {
    let a = line.bfd.auth.as_ref()?;
    let key = std::fs::read_to_string(a.key_file.get_ref()).ok()?;
    Some(AuthConfig {
        kind: match a.kind {
            BfdAuthType::KeyedSha1 => AuthType::KeyedSha1,
            BfdAuthType::MeticulousKeyedSha1 => AuthType::MeticulousKeyedSha1,
        },
        key_id: a.key_id,
        key: key.trim_end_matches(['\n', '\r']).as_bytes().to_vec(),
    })
}

/// The sessions a config asks for: `(line, spec)`.
pub fn specs(cfg: &Config) -> Vec<SessionSpec> {
    let mut out = Vec::new();
    for line in &cfg.lines {
        let name = line.name.get_ref();
        let iface = line.interface.get_ref();
        let interval = line.bfd.interval.0;
        let mult = *line.bfd.multiplier.get_ref();
        // A router without BFD answers none: no sessions, rather than sessions held Down.
        let routers: &[IpAddr] = if *line.bfd.enabled.get_ref() {
            line.neighbors.get_ref()
        } else {
            &[]
        };
        for &peer in routers {
            let mut s = SessionSpec::single_hop(name, peer, iface, interval, mult);
            s.auth = auth(line);
            // Admitted once BGP with the router is up (see `coupling`).
            s.start_admin_down = true;
            out.push(s);
        }
        if let Some(target) = line.probe_target {
            // Bound to the line so the probe crosses it, whatever the routing table prefers.
            let interval = line.bfd.end_to_end();
            let mut s = SessionSpec::multi_hop(name, target, None, interval, mult);
            s.interface = Some(iface.clone());
            s.fate = Some(line.site.get_ref().clone());
            out.push(s);
        }
    }
    for t in &cfg.tunnels {
        if let Some(target) = t.probe_target {
            // Tunnels probe at the site's fastest line rate: they are what failover lands on.
            let (interval, mult) = cfg
                .lines
                .iter()
                .filter(|l| l.site.get_ref() == t.site.get_ref())
                .map(|l| (l.bfd.end_to_end(), *l.bfd.multiplier.get_ref()))
                .min()
                .unwrap_or((Duration::from_millis(100), 3));
            let mut s = SessionSpec::multi_hop(t.name.get_ref(), target, None, interval, mult);
            s.interface = Some(t.interface.get_ref().clone());
            s.fate = Some(t.site.get_ref().clone());
            out.push(s);
        }
    }
    out
}

/// A session's key: its path, peer and whether it is end to end.
pub(crate) type Key = (String, IpAddr, bool);

pub(crate) fn key(spec: &SessionSpec) -> Key {
    (spec.name.clone(), spec.peer, spec.multihop)
}

/// The sessions as asked for, and their ids in the driver (None: could not start yet,
/// e.g. the tunnel interface it binds to is not there; retried).
pub(crate) type Running = Arc<Mutex<BTreeMap<Key, (SessionSpec, Option<SessionId>)>>>;

/// Sessions that could not start are tried again every this many polls (5 s).
const RETRY_TICKS: u32 = 10;

pub struct Sessions {
    bfd: Arc<Bfd>,
    running: Running,
    /// Where the sessions' state goes.
    inputs: Inputs,
    /// The loss window the poll measures over (`[policy] loss_window`).
    window: Arc<Mutex<Duration>>,
}

pub(crate) fn view(spec: &SessionSpec) -> BfdView {
    let mut v = BfdView::fresh(spec.name.clone(), spec.peer, spec.multihop);
    v.waiting_for_bgp = spec.start_admin_down;
    v
}

/// How a running session becomes `new`: in place when only its timers differ (a Poll
/// Sequence renegotiates the intervals; the multiplier goes with the next packet), else
/// by replacing it.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Timers,
    Replace,
}

pub fn change(old: &SessionSpec, new: &SessionSpec) -> Option<Change> {
    if old == new {
        return None;
    }
    let retimed = SessionSpec {
        desired_min_tx: new.desired_min_tx,
        required_min_rx: new.required_min_rx,
        detect_mult: new.detect_mult,
        ..old.clone()
    };
    Some(if retimed == *new {
        Change::Timers
    } else {
        Change::Replace
    })
}

async fn add(bfd: &Bfd, spec: &SessionSpec) -> Option<SessionId> {
    match bfd.add(spec.clone()).await {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(line = %spec.name, peer = %spec.peer, error = %e, "cannot start a BFD session; retrying");
            None
        }
    }
}

/// Starts the BFD thread and the sessions of `cfg`; a session that cannot start (its
/// interface is missing) is logged, shown as `unknown` and tried again.
pub async fn start(cfg: &Config, inputs: Inputs) -> anyhow::Result<Sessions> {
    let (tx, rx) = mpsc::unbounded_channel();
    let opts = DriverOptions {
        cpu: crate::cpus::bfd_cpu(),
        ..DriverOptions::default()
    };
    let bfd = Arc::new(Bfd::start(opts, tx)?);
    match bfd.priority() {
        p @ probes::driver::priority::Priority::Normal(_) => {
            tracing::warn!("BFD thread scheduling: {p}; under CPU load its packets may run late")
        }
        p => tracing::info!("BFD thread scheduling: {p}"),
    }
    if let Some(why) = crate::cpus::planned() {
        match bfd.cpu() {
            Some(Err(e)) => tracing::warn!("BFD thread not pinned ({e}); it runs on any CPU"),
            _ => tracing::info!("{why}"),
        }
    }
    let sessions = Sessions {
        bfd: bfd.clone(),
        running: Running::default(),
        inputs: inputs.clone(),
        window: Arc::new(Mutex::new(cfg.policy.loss_window.0)),
    };
    sessions.apply(cfg).await;
    tokio::spawn(forward(rx, inputs.clone()));
    tokio::spawn(poll(
        bfd,
        sessions.running.clone(),
        inputs,
        sessions.window.clone(),
    ));
    Ok(sessions)
}

impl Sessions {
    pub fn driver(&self) -> &Bfd {
        &self.bfd
    }

    /// The driver, for the supervisor to admit or hold the sessions with the line routers.
    pub(crate) fn shared_driver(&self) -> Arc<Bfd> {
        self.bfd.clone()
    }

    /// Ends the sessions `cfg` no longer asks for (the peer is told: AdminDown). Runs
    /// before tunnels and lines go, so the packet still has a way out.
    pub fn prune(&self, cfg: &Config) -> Vec<String> {
        let want: BTreeMap<Key, ()> = specs(cfg).iter().map(|s| (key(s), ())).collect();
        let mut running = lock(&self.running);
        let gone = crate::reload::diff(&running, &want, |_, ()| true).removed;
        let mut done = Vec::new();
        for k in gone {
            if let Some((_, Some(id))) = running.remove(&k) {
                self.bfd.remove(id);
            }
            self.inputs.send(Input::BfdGone(k.clone()));
            done.push(format!("BFD with {} ({}) stopped", k.1, k.0));
        }
        done
    }

    /// Brings the sessions to what `cfg` asks; the ones that did not change are not
    /// touched. Returns what was done, for the reload's report.
    pub async fn apply(&self, cfg: &Config) -> Vec<String> {
        *lock(&self.window) = cfg.policy.loss_window.0;
        let mut done = self.prune(cfg);
        let want: BTreeMap<Key, SessionSpec> =
            specs(cfg).into_iter().map(|s| (key(&s), s)).collect();
        let current: BTreeMap<Key, (SessionSpec, Option<SessionId>)> = lock(&self.running).clone();
        let plan = crate::reload::diff(&current, &want, |(old, _), new| old == new);
        for k in &plan.changed {
            let ((old, id), new) = (&current[k], &want[k]);
            let id = match (change(old, new), *id) {
                (Some(Change::Timers), Some(id)) => {
                    self.bfd
                        .set_intervals(id, new.desired_min_tx, new.required_min_rx);
                    self.bfd.set_detect_mult(id, new.detect_mult);
                    done.push(format!(
                        "BFD with {} ({}) now {:?} x {}",
                        k.1, k.0, new.desired_min_tx, new.detect_mult
                    ));
                    Some(id)
                }
                (_, id) => {
                    if let Some(id) = id {
                        self.bfd.remove(id);
                    }
                    self.inputs
                        .send(Input::BfdSession(k.clone(), Box::new(view(new))));
                    done.push(format!(
                        "BFD with {} ({}) restarted with its new settings",
                        k.1, k.0
                    ));
                    add(&self.bfd, new).await
                }
            };
            lock(&self.running).insert(k.clone(), (new.clone(), id));
            self.inputs.send(Input::BfdFollows(k.clone(), id));
        }
        for k in &plan.added {
            let spec = &want[k];
            self.inputs
                .send(Input::BfdSession(k.clone(), Box::new(view(spec))));
            let id = add(&self.bfd, spec).await;
            lock(&self.running).insert(k.clone(), (spec.clone(), id));
            self.inputs.send(Input::BfdFollows(k.clone(), id));
            done.push(format!("BFD with {} ({}) started", k.1, k.0));
        }
        done
    }
}

/// Starts the sessions that could not start before. One that a reload changed or removed
/// meanwhile is stopped again at once.
async fn retry(bfd: &Bfd, running: &Running, inputs: &Inputs) {
    let missing: Vec<(Key, SessionSpec)> = lock(running)
        .iter()
        .filter(|(_, (_, id))| id.is_none())
        .map(|(k, (s, _))| (k.clone(), s.clone()))
        .collect();
    for (k, spec) in missing {
        let Ok(id) = bfd.add(spec.clone()).await else {
            continue;
        };
        let mut r = lock(running);
        match r.get_mut(&k) {
            Some((s, slot @ None)) if *s == spec => {
                tracing::info!(line = %spec.name, peer = %spec.peer, "BFD session started on retry");
                *slot = Some(id);
                inputs.send(Input::BfdFollows(k.clone(), Some(id)));
            }
            _ => bfd.remove(id),
        }
    }
}

/// Passes the sessions' state changes on, in order.
async fn forward(mut rx: mpsc::UnboundedReceiver<Event>, inputs: Inputs) {
    while let Some(ev) = rx.recv().await {
        inputs.send(Input::Bfd(ev));
    }
}

/// Applies one state change (in the supervisor). Returns the router and its last sign of
/// life when BFD with a line router failed: BGP with it is closed (see `coupling`).
pub(crate) fn apply_event(st: &mut AgentState, ev: Event) -> Option<(IpAddr, Option<Instant>)> {
    let key = st
        .bfd
        .keys()
        .find(|(line, peer, _)| *line == ev.name && *peer == ev.peer)
        .cloned()?;
    if st
        .bfd
        .get(&key)
        .and_then(|v| v.id)
        .is_some_and(|id| id != ev.id)
    {
        return None; // from a session a reload replaced
    }
    let failed = (!key.2 && coupling::bfd_failed(ev.from, ev.to, ev.remote_state, ev.remote_diag))
        .then_some((ev.peer, ev.last_up_rx));
    let mut quiet = None;
    let now = st.now().mono;
    if let Some(v) = st.bfd.get_mut(&key) {
        if v.state != Some(ev.to) {
            v.changed_at = Some(now);
        }
        v.state = Some(ev.to);
        v.state_of = Some(ev.id);
        v.local_diag = Some(ev.diag);
        v.remote_diag = ev.remote_diag;
        v.heard |= ev.to == State::Up;
        if ev.to == State::Up {
            v.last_up_at = Some(now);
        }
        if matches!(ev.far_end, FarEnd::Silent | FarEnd::Restarted) {
            v.far_end_quiet = Some((ev.far_end, now));
            quiet = Some(ev.far_end);
        } else if ev.from == State::Up {
            // A failure of this path, with the far end alive: no longer excused. The
            // mark outlives the session's return otherwise (see `state::FAR_END_GRACE`).
            v.far_end_quiet = None;
        }
    }
    st.touch();
    if let Some(how) = quiet {
        let msg = format!(
            "end-to-end BFD with {} down, but the far gateway {} on every path at once: the path is kept for up to {} s while it comes back",
            ev.peer,
            if how == FarEnd::Restarted { "restarted" } else { "went quiet" },
            crate::state::FAR_END_GRACE.as_secs()
        );
        tracing::warn!(line = %ev.name, "{msg}");
        st.record(EventKind::FarEndQuiet, Some(&ev.name), msg);
    }
    // Only transitions into or out of Up are worth the operator's log.
    if ev.to != State::Up && ev.from != State::Up {
        return failed;
    }
    let what = if key.2 { "end-to-end BFD" } else { "BFD" };
    let remote = if ev.to != State::Up && ev.remote_state == Some(State::AdminDown) {
        ", the peer is administratively down".to_owned()
    } else {
        ev.remote_diag
            .filter(|d| *d != Diag::None)
            .map(|d| format!(", peer says {d}"))
            .unwrap_or_default()
    };
    let msg = format!(
        "{what} with {} {} -> {} ({}{remote})",
        ev.peer,
        ev.from.as_str(),
        ev.to.as_str(),
        ev.diag
    );
    tracing::info!(line = %ev.name, "{msg}");
    st.record(
        if ev.to == State::Up {
            EventKind::BfdUp
        } else {
            EventKind::BfdDown
        },
        Some(&ev.name),
        msg,
    );
    failed
}

/// Counters, RTT and loss the events do not carry, refreshed twice a second; and every
/// few seconds another try at the sessions that could not start.
async fn poll(bfd: Arc<Bfd>, running: Running, inputs: Inputs, window: Arc<Mutex<Duration>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut ticks = 0u32;
    loop {
        tick.tick().await;
        ticks = ticks.wrapping_add(1);
        if ticks % RETRY_TICKS == 0 {
            retry(&bfd, &running, &inputs).await;
        }
        let window = *lock(&window);
        inputs.send(Input::BfdPolled(bfd.status(window).await));
    }
}

/// Applies a poll (in the supervisor); a peer that never answered is reported once. The
/// state comes from the session's events once there has been one of it: a poll taken
/// just before a transition may be applied after it, and must not undo it.
pub(crate) fn polled(st: &mut AgentState, all: Vec<SessionStatus>) {
    let settled = st.past_startup_grace();
    let now = st.now().mono;
    let threshold = *st.config().policy.loss_threshold.get_ref();
    let mut silent = Vec::new();
    let mut st_touched = false;
    for s in all {
        let key = (s.name.clone(), s.peer, s.multihop);
        if let Some(v) = st
            .bfd
            .get_mut(&key)
            .filter(|v| v.id.is_none_or(|id| id == s.id))
        {
            if v.state.is_none() || v.state_of != Some(s.id) {
                if v.state != Some(s.state) {
                    v.changed_at = Some(now);
                }
                v.state = Some(s.state);
                v.state_of = Some(s.id);
                v.local_diag = Some(s.local_diag);
                v.remote_diag = s.remote_diag;
                st_touched = true;
            }
            v.heard |= s.rx_packets > 0 || s.state == State::Up;
            // Loss that crosses one of the policy's bounds may move the path.
            let band = |l: Option<f64>| match l {
                Some(l) if l > threshold => 2,
                Some(l) if l > threshold / 2.0 => 1,
                _ => 0,
            };
            st_touched |= band(v.detail.as_ref().and_then(|d| d.loss)) != band(s.loss);
            v.detail = Some(s);
            if settled && v.unanswered() && !v.told_unanswered {
                v.told_unanswered = true;
                silent.push((v.line.clone(), v.unanswered_why()));
            }
        }
    }
    // A peer found silent, a first state or loss across a bound: the path may move.
    if st_touched || !silent.is_empty() {
        st.touch();
    }
    for (line, why) in silent {
        tracing::warn!(path = %line, "{why}");
        st.record(EventKind::BfdUnanswered, Some(&line), why);
    }
}

#[cfg(test)]
#[path = "bfd_tests.rs"]
mod tests;
