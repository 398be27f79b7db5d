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
    // What a reload compares against (see `config::changes`).
    let mut running_source = std::fs::read_to_string(config_file).unwrap_or_default();
    let mut state = AgentState::new(config, config_file);
    state.record(EventKind::AgentStarted, None, summary);
    let cfg = state.config().clone();
    // The operator's failovers and drains from before a restart, in force from the first
    // announcement on (a drained line must not look attractive for a moment).
    let marks = operator_state::load(&cfg.control.state_file);
    for (path, mark) in &marks {
        if *mark != operator_state::Mark::Failover {
            state.set_advertise(path, policy::Advertise::Unattractive);
        }
    }
    state.take_advertise_changed();
    state.resumed = marks;
    // Whether each path was in service or had failed: a restart is not a failure.
    state.resumed_standings =
        operator_state::load_standings(&operator_state::standings_file(&cfg.control.state_file));
    // Everything reaches the supervisor on one channel; what it knows goes out as views.
    // Both exist before any source runs: their inputs wait in order, the control socket
    // answers from the start.
    let (inputs, input_rx) = Inputs::channel();
    let (view_tx, views) = supervisor::views(&state);
    let (exports_tx, mut exports) = supervisor::exports(&state);
    let recorder = state.metrics.clone();

    // Reloads asked for over the control socket (`crosslink reload`, the unit's
    // ExecReload): applied here like SIGHUP, but the asker learns the outcome.
    let (reload_tx, mut reload_requests) = tokio::sync::mpsc::channel(4);
    let server = tokio::spawn(socket.serve(views.clone(), inputs.clone(), reload_tx));
    let restarted = routing::previous_run_left_routes().await;
    if restarted {
        tracing::info!("a previous run's routes are in the kernel: restarting gracefully");
    }
    // Held until shutdown; the sessions' sockets close when the runtime ends, without a
    // NOTIFICATION, so a restarting agent looks like a transport failure to the routers
    // (which then keep our routes: graceful restart).
    let mut sessions = sources::bgp::start(&cfg, inputs.clone(), restarted).await;
    sessions
        .sync_exports(&cfg, &exports.borrow_and_update().clone(), &inputs)
        .await;
    // Tunnels before BFD: the end-to-end sessions over them bind to their interfaces.
    let mut tunnels = sources::tunnels::start(&cfg, inputs.clone()).await;
    // BFD runs on its own thread; without its sockets (port taken, no IPv6) the agent still
    // runs, and status shows BFD as unknown. BFD with each line router follows the BGP
    // session with it, and BGP follows BFD (`coupling`, applied by the supervisor).
    let mut bfd = match sources::bfd::start(&cfg, inputs.clone()).await {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!(error = %e, "BFD could not start");
            None
        }
    };
    let coupling = bfd.as_ref().map(|b| {
        let (driver, running) = b.coupled();
        supervisor::Coupling {
            bfd: driver,
            sessions: running,
            bgp: sessions.handles(),
            admin: Default::default(),
        }
    });
    sources::links::start(inputs.clone());
    // Without netlink the agent still runs and reports; the kernel's routes are then not
    // managed.
    let fib = match routing::start(inputs.clone()) {
        Ok(wants) => Some(wants),
        Err(e) => {
            tracing::error!(error = %e, "route programming could not start");
            None
        }
    };
    let programming = fib.is_some();
    let stall = match stall::StallWatch::start() {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(error = %e, "the agent's own stalls cannot be watched; a pause of the host counts against the paths");
            None
        }
    };
    let supervisor = Supervisor::new(state, input_rx, view_tx, exports_tx, fib, coupling, stall);
    let supervisor = tokio::spawn(supervisor.run());
    let service = tokio::spawn(service::supervise(views.clone(), programming));
    let metrics_addr = cfg.metrics.listen;
    // Without the endpoint (address in use, not on this host) the agent runs on.
    let metrics = match tokio::net::TcpListener::bind(metrics_addr).await {
        Ok(listener) => {
            tracing::info!(address = %metrics_addr, "metrics at http://{metrics_addr}/metrics");
            Some(tokio::spawn(metrics::http::serve(
                listener,
                views.clone(),
                recorder,
            )))
        }
        Err(e) => {
            tracing::error!(address = %metrics_addr, error = %e, "metrics endpoint could not start; the agent runs on without it");
            None
        }
    };
    // The config in force, which the drains' announcements build on.
    let mut in_force = cfg;
    tokio::pin!(shutdown);
    loop {
        // A reload, from SIGHUP (nobody to answer) or asked over the control socket.
        let asker: Option<ReloadRequest> = tokio::select! {
            () = &mut shutdown => break,
            _ = hup.recv() => None,
            Some(asker) = reload_requests.recv() => Some(asker),
            _ = usr2.recv() => {
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
                tunnels.apply(&in_force).await;
                continue;
            }
            Ok(()) = exports.changed() => {
                let advertise = exports.borrow_and_update().clone();
                sessions.sync_exports(&in_force, &advertise, &inputs).await;
                continue;
            }
        };
        let parts = reload::Parts {
            bgp: &mut sessions,
            tunnels: &mut tunnels,
            bfd: bfd.as_mut(),
            exports: &exports,
        };
        let reloaded = reload_now(config_file, &running_source, parts, &in_force, &inputs).await;
        let answer = match reloaded {
            Ok(r) => {
                in_force = r.config;
                running_source = r.source;
                Ok(r.summary)
            }
            Err(errs) => Err(format!(
                "reload refused, the running config is unchanged:\n{errs}"
            )),
        };
        if let Some(asker) = asker {
            let _ = asker.send(answer);
        }
    }
    tracing::info!("shutting down; kernel state is left in place");
    service::stopping();
    service.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    server.abort();
    let _ = server.await;
    supervisor.abort();
    // Last, so the tunnels carry traffic until now: their sessions join their descriptors
    // in systemd's store, and the next run continues them without a handshake (a stop
    // for good discards the store).
    let retired = tunnels.hand_over().await;
    fdstore::keep_sessions(&retired);
    Ok(())
}

/// One reload, told to systemd around it (the unit shows `reloading`, then the outcome).
async fn reload_now(
    config_file: &Path,
    running_source: &str,
    parts: reload::Parts<'_>,
    in_force: &Config,
    inputs: &Inputs,
) -> Result<reload::Reloaded, String> {
    service::reloading();
    let outcome = reload::reload(config_file, running_source, parts, in_force, inputs).await;
    service::reloaded(match &outcome {
        Ok(_) => "config reloaded",
        Err(_) => {
            "reload refused: the config file has errors (see the log); running config unchanged"
        }
    });
    outcome
}
