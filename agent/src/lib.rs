//! The crosslink agent: configuration, the control socket and the supervisor that ties the
//! protocol crates together. The binary in `main.rs` is a thin CLI over this library so that
//! tests can run the agent in-process and stop it through its shutdown future.

pub mod config;
pub mod control;
pub mod logging;
pub mod state;

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::control::server::ControlSocket;
use crate::state::AgentState;

/// Runs the agent until `shutdown` completes. On return, the control socket is removed;
/// nothing else the agent owns on the host is torn down (routes stay, see DESIGN.md).
pub async fn run(
    config: Config,
    config_file: &Path,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
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
    let state = Arc::new(Mutex::new(AgentState::new(config, config_file)));
    state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .record("agent-started", None, summary);

    let server = tokio::spawn(socket.serve(state.clone()));
    shutdown.await;
    tracing::info!("shutting down; kernel state is left in place");
    server.abort();
    let _ = server.await;
    Ok(())
}
