//! `crosslink`: the agent (`run`) and the operator's CLI to it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use crosslink::config;
use crosslink::control::client;
use crosslink::control::proto::{LogEntry, Request, Status};
use crosslink::logging::{self, LogFormat};

mod cli;
mod render;
mod render_routes;

use cli::{Cli, Command};

/// How long `crosslink reload` waits for the agent: a reload waits up to 2 s for the routes
/// of removed paths to move, then restarts what changed; well inside the unit's timeouts.
const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run) {
        // A command piped into `head` ends quietly when the pipe closes, as other tools
        // do, instead of failing on the next print. The agent keeps Rust's default of
        // ignoring SIGPIPE: a client that hangs up must not kill it.
        // SAFETY: single-threaded here, and SIG_DFL installs no handler of ours.
        #[allow(unsafe_code)]
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crosslink: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    // Found once: the note, when there is one, is said once.
    let found = std::cell::OnceCell::new();
    let socket = || {
        found
            .get_or_init(|| {
                let (path, note) = client::socket_and_note(cli.socket.as_deref(), &cli.config);
                if let Some(note) = note {
                    eprintln!("crosslink: note: {note}");
                }
                path
            })
            .clone()
    };
    match cli.command {
        Command::Run => {
            logging::init(cli.log_format, &cli.log_level);
            run_agent(&cli.config, cli.socket.clone())
        }
        Command::CheckConfig {
            ref file,
            ref running,
            no_key_files,
        } => Ok(check_config(
            file.as_deref().unwrap_or(&cli.config),
            running.as_deref(),
            !no_key_files,
        )),
        Command::Status { json } => {
            let v = client::request(&socket(), &Request::Status)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let status: Status = serde_json::from_value(v).context("decoding status")?;
                print!("{}", render::status(&status));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckHealth => check_health(&socket()),
        Command::Routes { json } => {
            let v = client::request(&socket(), &Request::Routes)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let doc = serde_json::from_value(v).context("decoding routes")?;
                print!("{}", render_routes::routes(&doc));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay { ref file } => Ok(replay(file)),
        Command::Reload => {
            let said = client::request_within(&socket(), &Request::Reload, RELOAD_TIMEOUT)?;
            println!("{}", said.as_str().unwrap_or("config reloaded"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Events {
            json,
            follow,
            ref by,
        } => {
            let by = by.as_deref();
            let events = fetch_events(&socket(), None, by)?;
            if json && !follow {
                println!("{}", serde_json::to_string_pretty(&events)?);
            } else {
                print_events(&events, json)?;
            }
            if follow {
                follow_events(&socket(), events.last().cloned(), json, by);
            }
            Ok(ExitCode::SUCCESS)
        }
        ref c @ (Command::Failover { ref line, .. }
        | Command::Restore { ref line }
        | Command::Drain { ref line, .. }
        | Command::Undrain { ref line }) => operator(&socket(), line, operator_request(c)),
    }
}

/// `check-health`: healthy, or the problems and a failure exit (a rollout's gate).
fn check_health(socket: &std::path::Path) -> anyhow::Result<ExitCode> {
    let status: Status = serde_json::from_value(client::request(socket, &Request::Status)?)
        .context("decoding status")?;
    let problems = crosslink::control::health::problems(&status);
    let who = format!(
        "gateway {} (crosslink {})",
        status.gateway.name, status.version
    );
    if problems.is_empty() {
        println!("healthy: {who}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("unhealthy: {who}");
    for p in problems {
        println!("  {p}");
    }
    Ok(ExitCode::FAILURE)
}

fn print_events(events: &[LogEntry], json: bool) -> anyhow::Result<()> {
    if json {
        // One object per line while following, so that a pipe can read them as they come.
        for e in events {
            println!("{}", serde_json::to_string(e)?);
        }
    } else {
        print!("{}", render::events(events));
    }
    Ok(())
}

fn fetch_events(
    socket: &Path,
    since: Option<u64>,
    by: Option<&str>,
) -> anyhow::Result<Vec<LogEntry>> {
    let by = by.map(str::to_owned);
    let v = client::request(socket, &Request::Events { since, by })?;
    serde_json::from_value(v).context("decoding events")
}

/// Polls for events after `last` until interrupted. Each poll asks from `last` itself: when
/// the answer does not start with that very event, the agent restarted (it numbers its
/// events from 1 again) and everything it has is new. While the agent does not answer,
/// says so once and keeps trying.
fn follow_events(socket: &Path, last: Option<LogEntry>, json: bool, by: Option<&str>) -> ! {
    let mut last = last;
    let mut unreachable = false;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let since = last.as_ref().map(|e| e.seq.saturating_sub(1));
        let events = match fetch_events(socket, since, by) {
            Ok(events) => events,
            Err(e) => {
                if !unreachable {
                    eprintln!("crosslink: {e:#}; still trying");
                    unreachable = true;
                }
                continue;
            }
        };
        if unreachable {
            eprintln!("crosslink: the agent answers again");
            unreachable = false;
        }
        let new = match &last {
            Some(l) if events.first() == Some(l) => &events[1..],
            Some(_) => {
                // The next poll asks for everything.
                eprintln!("crosslink: the agent restarted; its events so far:");
                last = None;
                continue;
            }
            None => &events[..],
        };
        let _ = print_events(new, json);
        if let Some(e) = new.last() {
            last = Some(e.clone());
        }
    }
}

/// Sends an operator command, prints what the agent will do, then where the traffic of
/// the path's sites is now.
/// An operator command as the control socket takes it.
fn operator_request(c: &Command) -> Request {
    // Whole seconds, rounded up: `--for 500ms` is a second, not nothing.
    let secs =
        |d: &Option<std::time::Duration>| d.map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    match c {
        Command::Failover {
            line,
            force,
            lasting,
        } => Request::Failover {
            path: line.clone(),
            force: *force,
            for_seconds: secs(lasting),
        },
        Command::Drain {
            line,
            force,
            lasting,
        } => Request::Drain {
            path: line.clone(),
            force: *force,
            for_seconds: secs(lasting),
        },
        Command::Restore { line } => Request::Restore { path: line.clone() },
        Command::Undrain { line } => Request::Undrain { path: line.clone() },
        _ => unreachable!("not an operator command"),
    }
}

fn operator(socket: &Path, path: &str, req: Request) -> anyhow::Result<ExitCode> {
    let v = client::request(socket, &req)?;
    match v.as_str() {
        Some(said) => println!("{said}"),
        None => println!("{}", serde_json::to_string_pretty(&v)?),
    }
    // The agent answered after applying the command to its selection: status now shows
    // the result (a drain's routes move when its delay is over).
    let status: Status = serde_json::from_value(client::request(socket, &Request::Status)?)
        .context("decoding status")?;
    print!("{}", render::outcome(&status, path));
    Ok(ExitCode::SUCCESS)
}

fn check_config(file: &Path, running: Option<&Path>, key_files: bool) -> ExitCode {
    let loaded = if key_files {
        config::load(file)
    } else {
        config::load_without_key_files(file)
    };
    match loaded {
        Ok(cfg) => {
            println!(
                "{}: ok (gateway {}, {} site(s), {} line(s), {} tunnel(s))",
                file.display(),
                cfg.gateway.name,
                cfg.sites.len(),
                cfg.lines.len(),
                cfg.tunnels.len()
            );
            for w in &cfg.warnings {
                eprintln!("{w}");
            }
            if let Some(old) = running {
                // A missing running config (first install) needs a start anyway.
                let old = std::fs::read_to_string(old).unwrap_or_default();
                let new = std::fs::read_to_string(file).unwrap_or_default();
                match config::needs_restart(&old, &new) {
                    d if d.is_empty() => match config::changes(&old, &new) {
                        c if c.is_empty() => println!("reload: enough (nothing changed)"),
                        c => println!("reload: enough ({} changed)", c.join(", ")),
                    },
                    d => println!("restart: needed ({} changed)", d.join(", ")),
                }
            }
            ExitCode::SUCCESS
        }
        Err(errs) => {
            use std::io::IsTerminal;
            let src = std::fs::read_to_string(file).ok();
            eprint!(
                "{}",
                errs.render(src.as_deref(), std::io::stderr().is_terminal())
            );
            ExitCode::FAILURE
        }
    }
}

fn run_agent(config_file: &Path, socket: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut cfg = match config::load(config_file) {
        Ok(cfg) => cfg,
        Err(errs) => {
            eprintln!("{errs}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Some(s) = socket {
        cfg.control.socket = s;
    }
    // Before any thread starts, so that every one of them is placed (see `cpus`).
    crosslink::cpus::init(cfg.bfd_host.cpu);
    crosslink::reexec::remember_binary();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .on_thread_start(crosslink::cpus::enter_control)
        .enable_all()
        .build()?;
    rt.block_on(crosslink::run(cfg, config_file, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// `crosslink replay`: what the record went through, or the first turn that differs.
fn replay(file: &std::path::Path) -> ExitCode {
    match crosslink::replay::replay(file) {
        Ok(Ok(r)) => {
            println!(
                "{}: {} inputs over {:.1} s, {} turns ({} with new wants): every turn answered as recorded",
                file.display(),
                r.inputs,
                r.span.as_secs_f64(),
                r.turns,
                r.decisions
            );
            ExitCode::SUCCESS
        }
        Ok(Err(d)) => {
            println!(
                "{}:{}: the turn answered otherwise than recorded\n  recorded: {:?}\n  replayed: {:?}",
                file.display(),
                d.line,
                d.recorded,
                d.replayed
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("crosslink replay: {e}");
            ExitCode::FAILURE
        }
    }
}
