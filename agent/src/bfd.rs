//! The agent's BFD: single-hop sessions with each line router neighbour and an end-to-end
//! multi-hop session to the remote gateway across each line and each tunnel, run by the
//! probes crate's driver on its own thread; their state as `status` shows it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use probes::driver::{Bfd, DriverOptions, Event, FarEnd, SessionSpec, SessionStatus};
use probes::session::AuthConfig;
use probes::wire::{AuthType, Diag, State};
use tokio::sync::mpsc;

use crate::config::{BfdAuthType, Config, Line};
use crate::control::proto::BfdStatus;
use crate::state::{lock, AgentState};

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
}

impl BfdView {
    pub fn to_status(&self) -> BfdStatus {
        let s = self.detail.as_ref();
        BfdStatus {
            neighbor: self.peer.to_string(),
            kind: if self.end_to_end {
                "end-to-end"
            } else {
                "single-hop"
            }
            .into(),
            state: self
                .state
                .map_or("unknown".into(), |s| s.as_str().to_owned()),
            local_diag: self.local_diag.map(|d| d.to_string()),
            remote_diag: self.remote_diag.map(|d| d.to_string()),
            detection_ms: s.map(|s| s.detection_time.as_secs_f64() * 1000.0),
            rtt_ms: s.and_then(|s| s.rtt).map(|d| d.as_secs_f64() * 1000.0),
            loss: s.and_then(|s| s.loss),
            up_seconds: s.and_then(|s| s.up_for).map(|d| d.as_secs()),
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
        for &peer in line.neighbors.get_ref() {
            let mut s = SessionSpec::single_hop(name, peer, iface, interval, mult);
            s.auth = auth(line);
            out.push(s);
        }
        if let Some(target) = line.probe_target {
            // Bound to the line so the probe crosses it, whatever the routing table prefers.
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
                .map(|l| (l.bfd.interval.0, *l.bfd.multiplier.get_ref()))
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

pub struct Sessions {
    bfd: Arc<Bfd>,
}

/// Starts the BFD thread and the sessions of `cfg`; a session that cannot start (its
/// interface is missing) is logged and shown as `unknown`.
pub async fn start(cfg: &Config, state: Arc<Mutex<AgentState>>) -> anyhow::Result<Sessions> {
    let (tx, rx) = mpsc::unbounded_channel();
    let bfd = Arc::new(Bfd::start(DriverOptions::default(), tx)?);
    match bfd.priority() {
        p @ probes::driver::priority::Priority::Normal(_) => {
            tracing::warn!("BFD thread scheduling: {p}; under CPU load its packets may run late")
        }
        p => tracing::info!("BFD thread scheduling: {p}"),
    }
    let mut views = BTreeMap::new();
    for spec in specs(cfg) {
        let key = (spec.name.clone(), spec.peer, spec.multihop);
        if let Err(e) = bfd.add(spec.clone()).await {
            tracing::warn!(line = %spec.name, peer = %spec.peer, error = %e, "cannot start a BFD session");
        }
        views.insert(
            key,
            BfdView {
                line: spec.name,
                peer: spec.peer,
                end_to_end: spec.multihop,
                state: None,
                local_diag: None,
                remote_diag: None,
                detail: None,
                far_end_quiet: None,
            },
        );
    }
    lock(&state).bfd = views;
    let window = cfg.policy.loss_window.0;
    tokio::spawn(fold_events(rx, state.clone()));
    tokio::spawn(poll(bfd.clone(), state, window));
    Ok(Sessions { bfd })
}

impl Sessions {
    pub fn driver(&self) -> &Bfd {
        &self.bfd
    }
}

async fn fold_events(mut rx: mpsc::UnboundedReceiver<Event>, state: Arc<Mutex<AgentState>>) {
    while let Some(ev) = rx.recv().await {
        let mut st = lock(&state);
        let key = st
            .bfd
            .keys()
            .find(|(line, peer, _)| *line == ev.name && *peer == ev.peer)
            .cloned();
        let Some(key) = key else { continue };
        let mut quiet = None;
        if let Some(v) = st.bfd.get_mut(&key) {
            v.state = Some(ev.to);
            v.local_diag = Some(ev.diag);
            v.remote_diag = ev.remote_diag;
            if matches!(ev.far_end, FarEnd::Silent | FarEnd::Restarted) {
                v.far_end_quiet = Some((ev.far_end, Instant::now()));
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
            st.record("far-end-quiet", Some(&ev.name), msg);
        }
        // Only transitions into or out of Up are worth the operator's log.
        if ev.to != State::Up && ev.from != State::Up {
            continue;
        }
        let what = if key.2 { "end-to-end BFD" } else { "BFD" };
        let remote = ev
            .remote_diag
            .filter(|d| *d != Diag::None)
            .map(|d| format!(", peer says {d}"))
            .unwrap_or_default();
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
                "bfd-up"
            } else {
                "bfd-down"
            },
            Some(&ev.name),
            msg,
        );
    }
}

/// Counters, RTT and loss the events do not carry, refreshed twice a second.
async fn poll(bfd: Arc<Bfd>, state: Arc<Mutex<AgentState>>, window: Duration) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let all = bfd.status(window).await;
        let mut st = lock(&state);
        for s in all {
            if let Some(v) = st.bfd.get_mut(&(s.name.clone(), s.peer, s.multihop)) {
                v.state = Some(s.state);
                v.local_diag = Some(s.local_diag);
                v.remote_diag = s.remote_diag;
                v.detail = Some(s);
            }
        }
    }
}
