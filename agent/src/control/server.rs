//! The agent's side of the control socket: a Unix socket that only root and the control
//! group may open, answering newline-delimited JSON requests.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::proto::{LogEntry, Reply, Request, MAX_LINE};
use crate::core::caller::Caller;
use crate::policy::Command;
use crate::supervisor::{Input, Inputs, OperatorRequest, Views};

/// A reload asked for over the socket: the agent's main loop applies it (it owns the
/// sessions and tunnels a reload reconfigures) and answers with what it did or why not.
pub struct ReloadRequest {
    pub by: Caller,
    /// None for SIGHUP: nobody waits for the outcome.
    pub answer: Option<tokio::sync::oneshot::Sender<Result<String, String>>>,
}

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
    pub async fn serve(self, to: Agent) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let to = to.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_client(stream, to).await {
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

/// Where a client's requests go: the views it reads, the supervisor's inputs and
/// questions, and the reloads.
#[derive(Clone)]
pub struct Agent {
    pub views: Views,
    pub inputs: Inputs,
    pub reloads: tokio::sync::mpsc::Sender<ReloadRequest>,
    pub questions: tokio::sync::mpsc::Sender<crate::supervisor::Question>,
}

async fn serve_client(stream: UnixStream, to: Agent) -> io::Result<()> {
    let by = caller(&stream).await;
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
            Ok(req) => handle(req, &by, &to).await,
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

/// Who is on the other end, from the kernel (`SO_PEERCRED`): what the socket's mode lets
/// in is root and the control group, and each of them is named in the audit trail. A
/// user name is looked up off the runtime (NSS may ask a directory server).
async fn caller(stream: &UnixStream) -> Caller {
    let Ok(cred) = stream.peer_cred() else {
        return Caller::named("unknown");
    };
    let (uid, pid) = (cred.uid(), cred.pid());
    let name = tokio::task::spawn_blocking(move || {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    })
    .await
    .ok()
    .flatten();
    Caller::process(name, uid, pid)
}

async fn reload(by: &Caller, reloads: &tokio::sync::mpsc::Sender<ReloadRequest>) -> Reply {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let request = ReloadRequest {
        by: by.clone(),
        answer: Some(tx),
    };
    if reloads.send(request).await.is_err() {
        return Reply::err("the agent is shutting down; nothing was reloaded");
    }
    match rx.await {
        Ok(Ok(said)) => Reply::ok(said),
        Ok(Err(refused)) => Reply::err(refused),
        Err(_) => Reply::err("the agent stopped before the reload finished"),
    }
}

async fn handle(req: Request, by: &Caller, to: &Agent) -> Reply {
    let (views, inputs, reloads) = (&to.views, &to.inputs, &to.reloads);
    let (path, command, force, lasting) = match req {
        Request::Routes => return super::routes::answer(&to.questions).await,
        // The view is taken out of the channel first: the supervisor never waits for a
        // client's serialization.
        Request::Status => return Reply::ok(&views.borrow().clone().status),
        Request::Events { since, by } => {
            let view = views.borrow().clone();
            let events: Vec<&LogEntry> = view
                .events
                .iter()
                .filter(|e| since.is_none_or(|n| e.seq > n))
                .filter(|e| by.is_none() || e.by == by)
                .collect();
            return Reply::ok(events);
        }
        Request::Failover {
            path,
            force,
            for_seconds,
        } => (path, Command::Failover, force, for_seconds),
        Request::Restore { path } => (path, Command::Restore, false, None),
        Request::Drain {
            path,
            force,
            for_seconds,
        } => (path, Command::Drain, force, for_seconds),
        Request::Undrain { path } => (path, Command::Undrain, false, None),
        Request::Reload => return reload(by, reloads).await,
    };
    // The supervisor judges the command against the state of the moment and hands it to
    // the policy; it answers once the view shows the effect (at once when it is idle), or
    // at once that route programming is not running (no netlink). It holds commands until
    // it has read the kernel's objects of a previous run; one it has not answered within
    // COMMAND_TIMEOUT is dropped when it gets to it (the asker has gone), so the answer
    // below is true.
    // Zero is the policy's to refuse, so that the refusal is audited like any other.
    let lasting = lasting.map(std::time::Duration::from_secs);
    let (tx, rx) = tokio::sync::oneshot::channel();
    inputs.send(Input::Operator(OperatorRequest {
        path,
        command,
        force,
        by: by.clone(),
        lasting,
        reply: tx,
    }));
    match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
        Ok(Ok(Ok(msg))) => Reply::ok(msg),
        Ok(Ok(Err(refused))) => Reply::err(refused),
        _ => Reply::err(format!(
            "the agent did not answer within {} s (still reading the kernel's routes at start?); the command was not applied",
            COMMAND_TIMEOUT.as_secs()
        )),
    }
}

/// How long a command waits for the supervisor's answer.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
