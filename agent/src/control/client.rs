//! The CLI's side of the control socket: one request, one reply, with a deadline so a
//! stuck agent cannot hang an operator's shell.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use super::proto::{Reply, Request};
use crate::config::DEFAULT_SOCKET;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Finds the socket the agent listens on: `--socket` wins, then the config file's
/// `[control] socket`, then the default. Only that one key is read, because the key files
/// the full config names are not readable by the operators' group.
pub fn socket_path(explicit: Option<&Path>, config_file: &Path) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    std::fs::read_to_string(config_file)
        .ok()
        .and_then(|src| src.parse::<toml::Table>().ok())
        .and_then(|t| t.get("control")?.get("socket")?.as_str().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

pub fn request(socket: &Path, req: &Request) -> anyhow::Result<serde_json::Value> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!("cannot reach the agent at {} (is `crosslink run` active, and are you root or in its group?)", socket.display())
    })?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .context("reading the agent's reply")?;
    if reply.is_empty() {
        bail!("the agent closed the connection without replying");
    }
    let reply: Reply = serde_json::from_str(&reply).context("decoding the agent's reply")?;
    if reply.ok {
        Ok(reply.result.unwrap_or(serde_json::Value::Null))
    } else {
        Err(anyhow!(reply.error.unwrap_or_else(|| {
            "the agent refused without a reason".into()
        })))
    }
}
