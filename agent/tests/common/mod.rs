//! What the agent's integration tests share: the shipped example config in a temp dir and
//! an agent process run from it in a network namespace of its own.

#![allow(dead_code)] // each test binary uses its own part

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_crosslink");
pub const EXAMPLE: &str = include_str!("../../../examples/crosslink.toml");
const WG_KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

/// The example config in a temp dir, with its key files (mode 0600) and a private socket.
pub fn example_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("keys")).unwrap();
    for (name, content) in [
        ("line1.md5", "s3cret"),
        ("inet1.key", WG_KEY),
        ("inet2.key", WG_KEY),
    ] {
        let p = dir.path().join("keys").join(name);
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let sock = dir.path().join("run/control.sock");
    let state = dir.path().join("operator.json");
    let cfg = EXAMPLE
        .replace("/run/crosslink/control.sock", sock.to_str().unwrap())
        .replace("/var/lib/crosslink/operator.json", state.to_str().unwrap());
    let file = dir.path().join("crosslink.toml");
    fs::write(&file, cfg).unwrap();
    (dir, file)
}

pub fn crosslink(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Kills the agent even when an assertion fails.
pub struct Agent(pub Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `crosslink run` on `config` in a network namespace of its own (`unshare --net`
/// and `sh` exec into the agent: the child's pid is the agent's), so that the test host's
/// interfaces, routes and ports are never touched. Returns once the control socket exists.
pub fn start_agent(config: &Path, env: &[(&str, &str)]) -> Agent {
    // A new namespace's loopback is down: up it for the metrics endpoint, then become the
    // agent (exec keeps the pid).
    let child = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            r#"ip link set lo up && exec "$0" --config "$1" --log-format text run"#,
            BIN,
        ])
        .arg(config)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = Agent(child);
    let sock = config.parent().unwrap().join("run/control.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "agent did not create its control socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    agent
}
