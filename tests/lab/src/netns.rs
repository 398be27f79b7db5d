//! Network namespaces: create and delete them, run commands inside, and open sockets inside
//! from a thread of this process.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};

/// Runs `program args…` and returns its stdout; a non-zero exit is an error that carries
/// the command line and its stderr, so a failing lab step explains itself.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot start {program}"))?;
    check(program, args, out)
}

fn check(program: &str, args: &[&str], out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command inside namespace `ns` (with `ip netns exec`, which also gives it the
/// namespace's own /sys view).
pub fn exec(ns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", ns];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Runs a command inside `ns` with `input` on its stdin (for `nft -f -`).
pub fn exec_with_input(ns: &str, args: &[&str], input: &str) -> Result<String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start ip netns exec")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    check(args.first().copied().unwrap_or("?"), args, out)
}

pub fn list() -> Result<Vec<String>> {
    let out = run("ip", &["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

pub fn add(ns: &str) -> Result<()> {
    run("ip", &["netns", "add", ns]).map(drop)
}

/// Kills every process in `ns`, then deletes it. Safe to call for a namespace that is gone.
pub fn destroy(ns: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = run("ip", &["netns", "del", ns]);
}

/// Moves the calling thread into `ns`. Sockets created afterwards by this thread belong to
/// that namespace for their whole life, wherever they are used. Call it on a thread of its
/// own: the thread never returns to the original namespace.
pub fn enter(ns: &str) -> Result<()> {
    let f = File::open(Path::new("/run/netns").join(ns))
        .with_context(|| format!("namespace {ns} does not exist"))?;
    setns(&f, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into {ns}"))?;
    Ok(())
}

/// Runs `f` on a new thread that first enters `ns`, so every socket `f` opens (and every
/// thread it starts) lives in that namespace.
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter(&ns).unwrap_or_else(|e| panic!("entering {ns}: {e:#}"));
        f()
    })
}
