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
/// the full config names are not readable by the operators' group; and it is found even
/// when the rest of the file does not parse, because `crosslink reload` is asked exactly
/// when the file has just been edited, and must reach the agent to be told what is wrong.
pub fn socket_path(explicit: Option<&Path>, config_file: &Path) -> PathBuf {
    socket_and_note(explicit, config_file).0
}

/// As `socket_path`, with a note for the operator when the config file is not what the
/// agent could load (unreadable, or not TOML): the path then came from its `[control]`
/// table alone, or is the default, and an operator told "cannot reach the agent" must
/// know why that socket was tried.
pub fn socket_and_note(explicit: Option<&Path>, config_file: &Path) -> (PathBuf, Option<String>) {
    if let Some(p) = explicit {
        return (p.to_path_buf(), None);
    }
    let file = config_file.display();
    let src = match std::fs::read_to_string(config_file) {
        Ok(src) => src,
        Err(e) => {
            let note = format!("cannot read {file} ({e}): trying the default socket {DEFAULT_SOCKET} (--socket names another)");
            return (PathBuf::from(DEFAULT_SOCKET), Some(note));
        }
    };
    let found = configured_socket(&src);
    let note = match (src.parse::<toml::Table>(), &found) {
        (Ok(_), _) => None,
        (Err(_), Some(p)) => Some(format!(
            "{file} has errors (`crosslink check-config` shows them); the socket {} was read from its [control] table",
            p.display()
        )),
        (Err(_), None) => Some(format!(
            "{file} has errors (`crosslink check-config` shows them) and no readable [control] socket: trying the default {DEFAULT_SOCKET} (--socket names another)"
        )),
    };
    (found.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)), note)
}

fn configured_socket(src: &str) -> Option<PathBuf> {
    let from = |t: &toml::Table| t.get("control")?.get("socket")?.as_str().map(PathBuf::from);
    if let Ok(t) = src.parse::<toml::Table>() {
        return from(&t);
    }
    // The file has an error somewhere: parse the `[control]` table on its own.
    let mut control = String::new();
    let mut inside = false;
    for line in src.lines() {
        let head = line.trim_start();
        if head.starts_with('[') {
            inside = head.starts_with("[control]");
        }
        if inside {
            control.push_str(line);
            control.push('\n');
        }
    }
    from(&control.parse::<toml::Table>().ok()?)
}

pub fn request(socket: &Path, req: &Request) -> anyhow::Result<serde_json::Value> {
    request_within(socket, req, TIMEOUT)
}

/// As `request`, for a request that may take the agent longer to answer (a reload
/// restarts sessions and waits for the routes to move first).
pub fn request_within(
    socket: &Path,
    req: &Request,
    timeout: Duration,
) -> anyhow::Result<serde_json::Value> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!("cannot reach the agent at {} (is `crosslink run` active, and are you root or in its group?)", socket.display())
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .with_context(|| {
            format!("reading the agent's reply (waited up to {timeout:?}; what was asked may still be done: see `crosslink events`)")
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_found_in_a_file_with_errors_elsewhere() {
        let good = "[gateway]\nname = \"gwa\"\n[control]\nsocket = \"/run/x/c.sock\" # here\n[policy]\nhold_down = \"30s\"\n";
        assert_eq!(
            configured_socket(good),
            Some(PathBuf::from("/run/x/c.sock"))
        );
        let broken = format!("{good}[policy]\nhold_down = \"soon\n");
        assert!(broken.parse::<toml::Table>().is_err());
        assert_eq!(
            configured_socket(&broken),
            Some(PathBuf::from("/run/x/c.sock"))
        );
        assert_eq!(configured_socket("[control]\nstate_file = \"/x\"\n"), None);
        assert_eq!(configured_socket("[control\nsocket = 1"), None);
    }
}
