//! The agent's side of the control socket: a Unix socket that only root and the control
//! group may open, answering newline-delimited JSON requests.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::proto::{Reply, Request, MAX_LINE};
use crate::state::AgentState;

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
    pub async fn serve(self, state: Arc<Mutex<AgentState>>) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let state = state.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_client(stream, state).await {
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

async fn serve_client(stream: UnixStream, state: Arc<Mutex<AgentState>>) -> io::Result<()> {
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
            Ok(req) => handle(req, &state),
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

fn handle(req: Request, state: &Mutex<AgentState>) -> Reply {
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    match req {
        Request::Status => Reply::ok(st.status()),
        Request::Events => Reply::ok(st.events()),
        Request::Failover { path } => operator_command(&mut st, "failover", &path),
        Request::Restore { path } => operator_command(&mut st, "restore", &path),
        Request::Drain { path } => operator_command(&mut st, "drain", &path),
        Request::Undrain { path } => operator_command(&mut st, "undrain", &path),
    }
}

/// Operator commands need the policy engine (forced failover, damping reset, drain over
/// BGP), which this build does not have yet: the routes follow the paths' health alone.
/// Refuse plainly and log the attempt, rather than pretend the traffic moved.
fn operator_command(st: &mut AgentState, what: &str, path: &str) -> Reply {
    if st.config().find_path(path).is_none() {
        let known: Vec<String> = st
            .config()
            .lines
            .iter()
            .map(|l| l.name.get_ref().clone())
            .collect();
        return Reply::err(format!(
            "no line or tunnel named `{path}` (lines: {})",
            known.join(", ")
        ));
    }
    let msg = format!(
        "`{what} {path}` refused: operator commands are not supported yet; routes follow the paths' health, so no traffic would move"
    );
    st.record("operator-refused", Some(path), msg.clone());
    Reply::err(msg)
}
