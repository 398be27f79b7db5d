//! The crosslink agent: configuration, the control socket and the supervisor that ties the
//! protocol crates together. The binary in `main.rs` is a thin CLI over this library so that
//! tests can run the agent in-process and stop it through its shutdown future.

pub mod config;
pub mod control;
pub mod core;
pub mod coupling;
pub mod cpus;
pub mod fdstore;
pub mod fib;
pub mod logging;
pub mod metrics;
pub mod operator_state;
pub mod policy;
pub mod reexec;
pub mod refused;
pub mod reload;
pub mod replay;
pub mod routing;
pub mod select;
pub mod service;
pub mod sources;
pub mod stall;
pub mod state;
pub mod supervisor;

use std::future::Future;
use std::path::Path;

use crate::config::Config;
use crate::control::server::{ControlSocket, ReloadRequest};
use crate::core::events::EventKind;
use crate::state::AgentState;
use crate::supervisor::{Inputs, Supervisor};

/// Runs the agent until `shutdown` completes. On return, the control socket is removed;
/// nothing else the agent owns on the host is torn down (routes stay, see DESIGN.md).
pub async fn run(
    config: Config,
    config_file: &Path,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // First: until a handler is installed, SIGHUP and SIGUSR2 terminate the process (the
    // default), and an operator's reload or a second upgrade signal must not.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut usr2 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())?;
    let socket = ControlSocket::bind(&config.control.socket, &config.control.group).await?;
    let summary = started(&config, config_file);
    // What a reload compares against (see `config::changes`).
    let mut running_source = std::fs::read_to_string(config_file).unwrap_or_default();
    let state = initial_state(config, config_file, summary);
    let cfg = state.config().clone();
    // Everything reaches the supervisor on one channel; what it knows goes out as views.
    // Both exist before any source runs: their inputs wait in order, the control socket
    // answers from the start.
    let (inputs, input_rx) = Inputs::channel();
    let (view_tx, views) = supervisor::views(&state);
    let (exports_tx, mut exports) = supervisor::exports(&state);
    let (server, mut reload_requests, asked) = serve_control(socket, &views, &inputs);
    let restarted = routing::previous_run_left_routes().await;
    let advertise = exports.borrow_and_update().clone();
    let mut sources = Sources::start(&cfg, &inputs, restarted, &advertise).await;
    let (coupling, fib) = (sources.coupling.take(), start_fib(&inputs));
    let programming = fib.is_some();
    let recorder = metrics::Recorder::new();
    let supervisor = Supervisor::new(state, input_rx, view_tx, exports_tx, fib, coupling, stall())
        .with_metrics(recorder.clone())
        .with_questions(asked);
    let supervisor = tokio::spawn(supervisor.run());
    let service = tokio::spawn(service::supervise(views.clone(), programming));
    let metrics = serve_metrics(&cfg, &views, recorder.clone()).await;
    let mut in_force = cfg; // what the drains' announcements build on
    tokio::pin!(shutdown);
    loop {
        // A reload, from SIGHUP (nobody to answer) or asked over the control socket.
        let asker: ReloadRequest = tokio::select! {
            () = &mut shutdown => break,
            _ = hup.recv() => ReloadRequest { by: crate::core::caller::Caller::named("SIGHUP"), answer: None },
            Some(asker) = reload_requests.recv() => asker,
            _ = usr2.recv() => {
                hot_upgrade(&mut sources.tunnels, &in_force, &inputs).await;
                continue;
            }
            Ok(()) = exports.changed() => {
                let advertise = exports.borrow_and_update().clone();
                sources.sessions.sync_exports(&in_force, &advertise, &inputs).await;
                continue;
            }
        };
        let running = (&mut in_force, &mut running_source);
        let parts = sources.parts(&exports);
        let answer = reload_now(config_file, running, parts, &inputs, &asker.by).await;
        recorder.reload(&asker.by.user, answer.is_ok());
        if let Some(reply) = asker.answer {
            let _ = reply.send(answer);
        }
    }
    tracing::info!("shutting down; kernel state is left in place");
    service::stopping();
    let tasks = [Some(service), metrics, Some(supervisor), Some(server)];
    shut_down(tasks.into_iter().flatten(), &mut sources).await;
    Ok(())
}

/// Starts the control socket's server. Returns its task, the reloads asked for over it
/// (`crosslink reload`, the unit's ExecReload: applied like SIGHUP, but the asker learns
/// the outcome) and the questions for the supervisor (`crosslink routes`).
fn serve_control(
    socket: ControlSocket,
    views: &supervisor::Views,
    inputs: &Inputs,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::Receiver<ReloadRequest>,
    tokio::sync::mpsc::Receiver<supervisor::Question>,
) {
    let (reloads, reload_requests) = tokio::sync::mpsc::channel(4);
    let (questions, asked) = tokio::sync::mpsc::channel(4);
    let server = tokio::spawn(socket.serve(control::server::Agent {
        views: views.clone(),
        inputs: inputs.clone(),
        reloads,
        questions,
    }));
    (server, reload_requests, asked)
}

/// Stops the agent's tasks, the tunnels last, so that they carry traffic until now: their
/// sessions join their descriptors in systemd's store, and the next run continues them
/// without a handshake (a stop for good discards the store).
async fn shut_down(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<()>>,
    sources: &mut Sources,
) {
    for t in tasks {
        t.abort();
        // The control socket's file goes when its task is dropped.
        let _ = t.await;
    }
    let retired = sources.tunnels.hand_over().await;
    fdstore::keep_sessions(&retired);
}

/// Logs the start and its config's warnings; returns the line for the event log.
fn started(config: &Config, config_file: &Path) -> String {
    let summary = format!(
        "agent started for gateway {} (AS{}): {} site(s), {} line(s), {} tunnel(s) from {}",
        config.gateway.name,
        config.gateway.asn.get_ref(),
        config.sites.len(),
        config.lines.len(),
        config.tunnels.len(),
        config_file.display()
    );
    tracing::info!(socket = %config.control.socket.display(), "{summary}");
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    summary
}

/// The watch on the agent's own stalls; without it, a pause of the host counts against the
/// paths.
fn stall() -> Option<std::sync::Arc<stall::StallWatch>> {
    match stall::StallWatch::start() {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(error = %e, "the agent's own stalls cannot be watched; a pause of the host counts against the paths");
            None
        }
    }
}

/// The state to start from: the config, and what a previous run left on disk.
fn initial_state(config: Config, config_file: &Path, summary: String) -> AgentState {
    let mut state = AgentState::new(config, config_file, state::Now::read());
    state.record(EventKind::AgentStarted, None, summary);
    let file = state.config().control.state_file.clone();
    let marks = operator_state::load(&file);
    let standings = operator_state::load_standings(&operator_state::standings_file(&file));
    state.resumed_ids = operator_state::load_ids(&operator_state::ids_file(&file));
    resume(&mut state, marks, standings);
    state
}

/// What a previous run left, for the engine to take up: the operator's failovers and
/// drains, in force from the first announcement on (a drained line must not look
/// attractive for a moment), and whether each path was in service or had failed (a
/// restart is not a failure).
pub(crate) fn resume(
    state: &mut AgentState,
    marks: operator_state::Marks,
    standings: operator_state::Standings,
) {
    for (path, mark) in &marks {
        if mark.mark != operator_state::Mark::Failover {
            state.set_advertise(path, policy::Advertise::Unattractive);
        }
    }
    state.take_advertise_changed();
    state.resumed = marks;
    state.resumed_standings = standings;
}

/// The adapters that feed the supervisor, as a reload reconfigures them.
struct Sources {
    /// Held until shutdown; the sessions' sockets close when the runtime ends, without a
    /// NOTIFICATION, so a restarting agent looks like a transport failure to the routers
    /// (which then keep our routes: graceful restart).
    sessions: sources::bgp::Sessions,
    tunnels: sources::tunnels::Tunnels,
    /// None when BFD could not start (port taken, no IPv6): the agent still runs, and
    /// status shows BFD as unknown.
    bfd: Option<sources::bfd::Sessions>,
    /// BFD with each line router follows the BGP session with it, and BGP follows BFD
    /// (`coupling`, applied by the supervisor).
    coupling: Option<supervisor::Coupling>,
}

impl Sources {
    /// What a reload reconfigures.
    fn parts<'a>(&'a mut self, exports: &'a supervisor::Exports) -> reload::Parts<'a> {
        reload::Parts {
            bgp: &mut self.sessions,
            tunnels: &mut self.tunnels,
            bfd: self.bfd.as_mut(),
            exports,
        }
    }

    async fn start(
        cfg: &Config,
        inputs: &Inputs,
        restarted: bool,
        advertise: &std::collections::BTreeMap<String, policy::Advertise>,
    ) -> Sources {
        let mut sessions = sources::bgp::start(cfg, inputs.clone(), restarted).await;
        sessions.sync_exports(cfg, advertise, inputs).await;
        // Tunnels before BFD: the end-to-end sessions over them bind to their interfaces.
        let tunnels = sources::tunnels::start(cfg, inputs.clone()).await;
        let bfd = match sources::bfd::start(cfg, inputs.clone()).await {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(error = %e, "BFD could not start");
                None
            }
        };
        let coupling = bfd.as_ref().map(|b| supervisor::Coupling {
            bfd: b.shared_driver(),
            bgp: sessions.handles(),
        });
        sources::links::start(inputs.clone());
        Sources {
            sessions,
            tunnels,
            bfd,
            coupling,
        }
    }
}

/// The metrics endpoint; without it (address in use, not on this host) the agent runs on.
async fn serve_metrics(
    cfg: &Config,
    views: &supervisor::Views,
    recorder: metrics::Recorder,
) -> Option<tokio::task::JoinHandle<()>> {
    let addr = cfg.metrics.listen;
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            tracing::info!(address = %addr, "metrics at http://{addr}/metrics");
            let serving = metrics::http::serve(listener, views.clone(), recorder);
            Some(tokio::spawn(serving))
        }
        Err(e) => {
            tracing::error!(address = %addr, error = %e, "metrics endpoint could not start; the agent runs on without it");
            None
        }
    }
}

/// SIGUSR2: executes the agent's binary again in place, the tunnels' descriptors and
/// sessions handed over; returns only when that failed, with the tunnels running again.
async fn hot_upgrade(tunnels: &mut sources::tunnels::Tunnels, in_force: &Config, inputs: &Inputs) {
    let retired = tunnels.hand_over().await;
    tracing::info!(
        descriptors = retired.len(),
        "SIGUSR2: executing the agent's binary again, the tunnels' descriptors and sessions kept; routes stay in the kernel"
    );
    let fds: Vec<(String, std::os::fd::RawFd)> = retired
        .iter()
        .map(|(name, fd)| (name.clone(), std::os::fd::AsRawFd::as_raw_fd(fd)))
        .collect();
    let e = reexec::exec(&fds);
    let msg = format!("re-exec on SIGUSR2 failed: {e}; the agent runs on");
    tracing::error!("{msg}");
    inputs.record(EventKind::ReexecFailed, None, msg);
    fdstore::give_back(retired);
    tunnels.apply(in_force).await;
}

/// Without netlink the agent still runs and reports; the kernel's routes are then not
/// managed.
fn start_fib(
    inputs: &Inputs,
) -> Option<tokio::sync::watch::Sender<std::sync::Arc<routing::Wants>>> {
    match routing::start(inputs.clone()) {
        Ok(wants) => Some(wants),
        Err(e) => {
            tracing::error!(error = %e, "route programming could not start");
            None
        }
    }
}

/// One reload, told to systemd around it (the unit shows `reloading`, then the outcome);
/// `running` (the config in force and its file's text) becomes what it put in force.
/// Returns what it did, or why it was refused.
async fn reload_now(
    config_file: &Path,
    running: (&mut Config, &mut String),
    parts: reload::Parts<'_>,
    inputs: &Inputs,
    by: &crate::core::caller::Caller,
) -> Result<String, String> {
    let (in_force, running_source) = running;
    service::reloading();
    let outcome = reload::reload(config_file, running_source, parts, in_force, inputs, by).await;
    service::reloaded(match &outcome {
        Ok(_) => "config reloaded",
        Err(_) => {
            "reload refused: the config file has errors (see the log); running config unchanged"
        }
    });
    match outcome {
        Ok(r) => {
            *in_force = r.config;
            *running_source = r.source;
            Ok(r.summary)
        }
        Err(errs) => Err(format!(
            "reload refused, the running config is unchanged:\n{errs}"
        )),
    }
}
