//! The agent's side of the control socket: a Unix socket that only root and the control
//! group may open, answering newline-delimited JSON requests.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::proto::{Health, LogEntry, PathKind, PathStatus, Reply, Request, Status, MAX_LINE};
use crate::policy::Command;
use crate::state::{lock, AgentState, OperatorRequest};

/// A reload asked for over the socket: the agent's main loop applies it (it owns the
/// sessions and tunnels a reload reconfigures) and answers with what it did or why not.
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<String, String>>;

/// The bound socket; the file is removed again on drop so a clean stop leaves nothing.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlSocket {
    /// Binds `path` with mode 0660 and group `group` (when that group exists). A socket file
    /// left by a dead agent is replaced; one that a live agent answers on is an error.
    pub async fn bind(path: &Path, group: &str) -> anyhow::Result<ControlSocket> {
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
                chgrp(dir, group)?;
            }
        }
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                bail!("another agent is already answering on {}", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        let sock = ControlSocket {
            listener,
            path: path.to_path_buf(),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        chgrp(path, group)?;
        Ok(sock)
    }

    /// Serves clients until the task is dropped.
    pub async fn serve(
        self,
        state: Arc<Mutex<AgentState>>,
        reloads: tokio::sync::mpsc::Sender<ReloadRequest>,
    ) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let state = state.clone();
                    let reloads = reloads.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_client(stream, state, reloads).await {
                            tracing::debug!(error = %e, "control client ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Hands the file to `group` if the group exists; a host without it keeps root-only access.
fn chgrp(path: &Path, group: &str) -> anyhow::Result<()> {
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => nix::unistd::chown(path, None, Some(g.gid))
            .with_context(|| format!("giving {} to group {group}", path.display())),
        Ok(None) => {
            tracing::warn!(group, path = %path.display(), "control group does not exist; only root can use the socket");
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("looking up group {group}")),
    }
}

async fn serve_client(
    stream: UnixStream,
    state: Arc<Mutex<AgentState>>,
    reloads: tokio::sync::mpsc::Sender<ReloadRequest>,
) -> io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut rd)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            write_reply(
                &mut wr,
                &Reply::err(format!("request longer than {MAX_LINE} bytes")),
            )
            .await?;
            return Ok(());
        }
        let reply = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => handle(req, &state, &reloads).await,
            Err(e) => Reply::err(format!("bad request: {e}")),
        };
        write_reply(&mut wr, &reply).await?;
    }
}

async fn write_reply(wr: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> io::Result<()> {
    let mut out = serde_json::to_vec(reply).map_err(io::Error::other)?;
    out.push(b'\n');
    wr.write_all(&out).await
}

async fn reload(reloads: &tokio::sync::mpsc::Sender<ReloadRequest>) -> Reply {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if reloads.send(tx).await.is_err() {
        return Reply::err("the agent is shutting down; nothing was reloaded");
    }
    match rx.await {
        Ok(Ok(said)) => Reply::ok(said),
        Ok(Err(refused)) => Reply::err(refused),
        Err(_) => Reply::err("the agent stopped before the reload finished"),
    }
}

async fn handle(
    req: Request,
    state: &Mutex<AgentState>,
    reloads: &tokio::sync::mpsc::Sender<ReloadRequest>,
) -> Reply {
    let (path, command, force) = match req {
        Request::Status => return Reply::ok(lock(state).status()),
        Request::Events { since } => {
            let st = lock(state);
            let events: Vec<&LogEntry> = st
                .events()
                .filter(|e| since.is_none_or(|n| e.seq > n))
                .collect();
            return Reply::ok(events);
        }
        Request::Failover { path, force } => (path, Command::Failover, force),
        Request::Restore { path } => (path, Command::Restore, false),
        Request::Drain { path, force } => (path, Command::Drain, force),
        Request::Undrain { path } => (path, Command::Undrain, false),
        Request::Reload => return reload(reloads).await,
    };
    let rx = {
        let mut st = lock(state);
        if let Err(e) = known_path(&st, &path) {
            return Reply::err(e);
        }
        if !force {
            if let Some(why) = unsafe_to_take_out(&st.status(), &path, command) {
                return Reply::err(why);
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        st.operator_queue.push(OperatorRequest {
            path,
            command,
            reply: tx,
        });
        st.touch();
        rx
    };
    // The route programming owns the policy and answers on its next pass (at once when
    // it is idle). Without netlink it does not run: say so rather than hang.
    match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
        Ok(Ok(Ok(msg))) => Reply::ok(msg),
        Ok(Ok(Err(refused))) => Reply::err(refused),
        _ => Reply::err("route programming is not running; the command was not applied"),
    }
}

/// How long a command waits for the route programming's answer.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn known_path(st: &AgentState, path: &str) -> Result<(), String> {
    if st.config().find_path(path).is_some() {
        return Ok(());
    }
    let cfg = st.config();
    let lines = cfg.lines.iter().map(|l| l.name.get_ref().as_str());
    let tunnels = cfg.tunnels.iter().map(|t| t.name.get_ref().as_str());
    let known: Vec<&str> = lines.chain(tunnels).collect();
    Err(format!(
        "no line or tunnel named `{path}` (paths: {})",
        known.join(", ")
    ))
}

/// Why taking `path` out of service now would be unsafe, if it would: when nothing else to
/// a site it serves is up and in service (its traffic would have nowhere to go), and, for a
/// drain, when it is the site's last healthy line (a drain is planned work; moving a whole
/// site onto the backup should be a deliberate choice). A failover onto the tunnels is
/// what `failover` is for. A path that is not carrying anything is never refused.
pub fn unsafe_to_take_out(status: &Status, path: &str, command: Command) -> Option<String> {
    let verb = match command {
        Command::Drain => "draining",
        Command::Failover => "failing over",
        Command::Restore | Command::Undrain => return None,
    };
    let in_service =
        |p: &PathStatus| p.state == Health::Up && p.policy.as_ref().is_none_or(|v| v.admitted);
    for site in &status.sites {
        let Some(me) = site.paths.iter().find(|p| p.name == path) else {
            continue;
        };
        if !in_service(me) {
            continue;
        }
        let others: Vec<&PathStatus> = site
            .paths
            .iter()
            .filter(|p| p.name != path && in_service(p))
            .collect();
        if others.is_empty() {
            return Some(format!(
                "refused: {verb} {path} would leave site {} with no healthy path in service, and its traffic with nowhere to go; add --force to do it anyway",
                site.name
            ));
        }
        let lines_left = others.iter().any(|p| p.kind == PathKind::Line);
        if command == Command::Drain && me.kind == PathKind::Line && !lines_left {
            let names: Vec<&str> = others.iter().map(|p| p.name.as_str()).collect();
            return Some(format!(
                "refused: {path} is the last healthy line to site {}; draining it moves all of the site's traffic onto the tunnels ({}); add --force to do it anyway",
                site.name,
                names.join(", ")
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A site with two lines and a tunnel; `up` lists the paths up and in service.
    fn status(up: &[&str], drained: &[&str]) -> Status {
        let path = |name: &str, kind: &str| {
            let admitted = up.contains(&name) && !drained.contains(&name);
            serde_json::json!({
                "name": name, "kind": kind, "interface": "x",
                "state": if up.contains(&name) { "up" } else { "down" },
                "reason": "", "signals": [],
                "policy": {"admitted": admitted, "penalty": 0.0, "degraded": false,
                           "operator": if drained.contains(&name) { "drained" } else { "none" }}
            })
        };
        serde_json::from_value(serde_json::json!({
            "schema": 1, "version": "0", "started_at": "", "uptime_seconds": 0,
            "config_file": "",
            "gateway": {"name": "gwa", "asn": 1, "router_id": "192.0.2.1"},
            "sites": [{
                "name": "cloud-b", "prefixes": [], "active_path": null, "active_reason": "",
                "learned_prefixes": 0,
                "paths": [path("line1", "line"), path("line2", "line"), path("inet1", "tunnel")]
            }]
        }))
        .unwrap()
    }

    #[test]
    fn the_last_healthy_line_is_drained_only_with_force() {
        let all = status(&["line1", "line2", "inet1"], &[]);
        assert_eq!(unsafe_to_take_out(&all, "line1", Command::Drain), None);
        let one_line = status(&["line1", "inet1"], &[]);
        let why = unsafe_to_take_out(&one_line, "line1", Command::Drain).unwrap();
        assert!(why.contains("last healthy line to site cloud-b"), "{why}");
        assert!(why.contains("(inet1)") && why.contains("--force"), "{why}");
        // A failover onto the tunnels is what failover is for.
        assert_eq!(
            unsafe_to_take_out(&one_line, "line1", Command::Failover),
            None
        );
        // line2 is up but drained: it does not count as a way out.
        let other_drained = status(&["line1", "line2", "inet1"], &["line2"]);
        assert!(unsafe_to_take_out(&other_drained, "line1", Command::Drain).is_some());
    }

    #[test]
    fn nothing_is_taken_out_that_leaves_a_site_without_a_path() {
        let alone = status(&["line1"], &[]);
        for c in [Command::Drain, Command::Failover] {
            let why = unsafe_to_take_out(&alone, "line1", c).unwrap();
            assert!(why.contains("no healthy path in service"), "{why}");
        }
        let tunnel_only = status(&["inet1"], &[]);
        assert!(unsafe_to_take_out(&tunnel_only, "inet1", Command::Drain).is_some());
        // A path carrying nothing can always be taken out; undoing is always safe.
        assert_eq!(unsafe_to_take_out(&alone, "line2", Command::Drain), None);
        assert_eq!(unsafe_to_take_out(&alone, "line1", Command::Restore), None);
        assert_eq!(unsafe_to_take_out(&alone, "line1", Command::Undrain), None);
    }
}
