//! `crosslink`: the agent (`run`) and the operator's CLI to it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use crosslink::config::{self, DEFAULT_PATH};
use crosslink::control::client;
use crosslink::control::proto::{Event, Request, Status};
use crosslink::logging::{self, LogFormat};

mod render;

#[derive(Debug, Parser)]
#[command(
    name = "crosslink",
    version,
    about = "Keeps traffic flowing between clouds when a dedicated line fails"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, default_value = DEFAULT_PATH, env = "CROSSLINK_CONFIG")]
    config: PathBuf,
    /// Control socket (default: the config's [control] socket).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    /// Log level or tracing filter; RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent in the foreground.
    Run,
    /// Show sites, paths and their health.
    Status {
        /// The status document as JSON (stable schema, see README).
        #[arg(long)]
        json: bool,
    },
    /// Force a line's traffic onto the tunnels.
    Failover { line: String },
    /// Clear a line's damping and return traffic to it once it is healthy.
    Restore { line: String },
    /// Take a line out of service for maintenance, far side first.
    Drain { line: String },
    /// Put a drained line back into service.
    Undrain { line: String },
    /// Show the transition log.
    Events {
        #[arg(long)]
        json: bool,
    },
    /// Validate a configuration file; exit 0 when it is valid, 1 otherwise.
    CheckConfig {
        /// File to check (default: --config).
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crosslink: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let socket = || client::socket_path(cli.socket.as_deref(), &cli.config);
    match cli.command {
        Command::Run => {
            logging::init(cli.log_format, &cli.log_level);
            run_agent(&cli.config, cli.socket.clone())
        }
        Command::CheckConfig { ref file } => {
            Ok(check_config(file.as_deref().unwrap_or(&cli.config)))
        }
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
        Command::Events { json } => {
            let v = client::request(&socket(), &Request::Events)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let events: Vec<Event> = serde_json::from_value(v).context("decoding events")?;
                print!("{}", render::events(&events));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Failover { ref line } => {
            operator(&socket(), Request::Failover { path: line.clone() })
        }
        Command::Restore { ref line } => {
            operator(&socket(), Request::Restore { path: line.clone() })
        }
        Command::Drain { ref line } => operator(&socket(), Request::Drain { path: line.clone() }),
        Command::Undrain { ref line } => {
            operator(&socket(), Request::Undrain { path: line.clone() })
        }
    }
}

fn operator(socket: &Path, req: Request) -> anyhow::Result<ExitCode> {
    let v = client::request(socket, &req)?;
    match v.as_str() {
        Some(said) => println!("{said}"),
        None => println!("{}", serde_json::to_string_pretty(&v)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn check_config(file: &Path) -> ExitCode {
    match config::load(file) {
        Ok(cfg) => {
            println!(
                "{}: ok (gateway {}, {} site(s), {} line(s), {} tunnel(s))",
                file.display(),
                cfg.gateway.name,
                cfg.sites.len(),
                cfg.lines.len(),
                cfg.tunnels.len()
            );
            ExitCode::SUCCESS
        }
        Err(errs) => {
            eprintln!("{errs}");
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
    let rt = tokio::runtime::Builder::new_multi_thread()
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
