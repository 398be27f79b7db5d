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

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::control::server::{ControlSocket, ReloadRequest};
use crate::core::events::EventKind;
use crate::state::{lock, AgentState};

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
    let state = Arc::new(Mutex::new(AgentState::new(config, config_file)));
    state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .record(EventKind::AgentStarted, None, summary);

    // Reloads asked for over the control socket (`crosslink reload`, the unit's
    // ExecReload): applied here like SIGHUP, but the asker learns the outcome.
    let (reload_tx, mut reload_requests) = tokio::sync::mpsc::channel(4);
    let server = tokio::spawn(socket.serve(state.clone(), reload_tx));
    let cfg = lock(&state).config().clone();
    // The operator's failovers and drains from before a restart, in force from the first
    // announcement on (a drained line must not look attractive for a moment).
    let marks = operator_state::load(&cfg.control.state_file);
    {
        let mut st = lock(&state);
        for (path, mark) in &marks {
            if *mark != operator_state::Mark::Failover {
                st.set_advertise(path, policy::Advertise::Unattractive);
            }
        }
        st.resumed = marks;
        // Whether each path was in service or had failed: a restart is not a failure.
        st.resumed_standings = operator_state::load_standings(&operator_state::standings_file(
            &cfg.control.state_file,
        ));
    }
    let restarted = routing::previous_run_left_routes().await;
    if restarted {
        tracing::info!("a previous run's routes are in the kernel: restarting gracefully");
    }
    // Held until shutdown; the sessions' sockets close when the runtime ends, without a
    // NOTIFICATION, so a restarting agent looks like a transport failure to the routers
    // (which then keep our routes: graceful restart).
    // BFD with each line router follows the BGP session with it, and BGP follows BFD.
    let (nudge, nudges) = tokio::sync::mpsc::unbounded_channel();
    let mut sessions = sources::bgp::start(&cfg, state.clone(), restarted, nudge.clone()).await;
    sessions.sync_exports(&cfg, &state).await;
    // Tunnels before BFD: the end-to-end sessions over them bind to their interfaces.
    let mut tunnels = sources::tunnels::start(&cfg, state.clone()).await;
    // BFD runs on its own thread; without its sockets (port taken, no IPv6) the agent still
    // runs, and status shows BFD as unknown.
    let mut bfd = match sources::bfd::start(&cfg, state.clone(), nudge).await {
        Ok(b) => {
            let (driver, running) = b.coupled();
            tokio::spawn(coupling::run(
                nudges,
                driver,
                running,
                sessions.handles(),
                state.clone(),
            ));
            Some(b)
        }
        Err(e) => {
            tracing::error!(error = %e, "BFD could not start");
            None
        }
    };
    sources::links::start(state.clone());
    // Routes last: the selection reads every signal above. Without netlink the agent still
    // runs and reports; the kernel's routes are then not managed.
    let programming = match routing::start(state.clone()) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "route programming could not start");
            false
        }
    };
    let service = tokio::spawn(service::supervise(state.clone(), programming));
    let metrics_addr = cfg.metrics.listen;
    // Without the endpoint (address in use, not on this host) the agent runs on.
    let metrics = match tokio::net::TcpListener::bind(metrics_addr).await {
        Ok(listener) => {
            tracing::info!(address = %metrics_addr, "metrics at http://{metrics_addr}/metrics");
            Some(tokio::spawn(metrics::http::serve(listener, state.clone())))
        }
        Err(e) => {
            tracing::error!(address = %metrics_addr, error = %e, "metrics endpoint could not start; the agent runs on without it");
            None
        }
    };
    let drains = lock(&state).exports_changed();
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
                lock(&state).record(EventKind::ReexecFailed, None, msg);
                fdstore::give_back(retired);
                tunnels.apply(&in_force, &state).await;
                continue;
            }
            () = drains.notified() => {
                sessions.sync_exports(&in_force, &state).await;
                continue;
            }
        };
        let parts = reload::Parts {
            bgp: &mut sessions,
            tunnels: &mut tunnels,
            bfd: bfd.as_mut(),
        };
        let answer = match reload_now(config_file, &running_source, parts, &state).await {
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
    state: &Mutex<AgentState>,
) -> Result<reload::Reloaded, String> {
    service::reloading();
    let outcome = reload::reload(config_file, running_source, parts, state).await;
    service::reloaded(match &outcome {
        Ok(_) => "config reloaded",
        Err(_) => {
            "reload refused: the config file has errors (see the log); running config unchanged"
        }
    });
    outcome
}
