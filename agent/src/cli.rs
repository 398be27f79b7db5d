//! The command line: the agent (`run`) and the operator's commands. On its own, with no
//! dependency on the rest of the crate, so that the build script can include it and write
//! the man pages and shell completions the Debian package ships (`build.rs`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::LogFormat;

/// Where the agent and the CLI look for the config unless told otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/crosslink/crosslink.toml";

#[derive(Debug, Parser)]
#[command(
    name = "crosslink",
    version,
    about = "Keeps traffic flowing between clouds when a dedicated line fails"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG, env = "CROSSLINK_CONFIG")]
    pub config: PathBuf,
    /// Control socket (default: the config's [control] socket).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Log level or tracing filter; RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent in the foreground.
    Run,
    /// Show sites, paths and their health.
    Status {
        /// The status document as JSON (stable schema, see README).
        #[arg(long)]
        json: bool,
    },
    /// Force a line's traffic onto the tunnels (kept across agent restarts until `restore`).
    Failover {
        line: String,
        /// Also when nothing else to the site is healthy (its traffic then has nowhere to go).
        #[arg(long)]
        force: bool,
        /// A failover test: traffic comes back by itself after this long (`5m`, `1h30m`),
        /// also across agent restarts; `restore` ends it sooner.
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        lasting: Option<std::time::Duration>,
    },
    /// Clear a line's damping and return traffic to it once it is healthy.
    Restore { line: String },
    /// Take a line out of service for maintenance, far side first.
    Drain {
        line: String,
        /// Also when it is the last healthy line to its site.
        #[arg(long)]
        force: bool,
        /// Undrained by itself after this long (`30m`, `2h`); `undrain` ends it sooner.
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        lasting: Option<std::time::Duration>,
    },
    /// Put a drained line back into service.
    Undrain { line: String },
    /// Show what the agent programmed: per site each prefix and where it came from
    /// (configured, or learned from which line and neighbour), the groups and their
    /// members by path name, the fallback, and whether the kernel holds it all as asked.
    Routes {
        #[arg(long)]
        json: bool,
    },
    /// Show the transition log.
    Events {
        #[arg(long)]
        json: bool,
        /// Keep printing events as they happen (Ctrl-C to stop).
        #[arg(long, short)]
        follow: bool,
        /// Only the commands and reloads this user asked for (the audit trail).
        #[arg(long, value_name = "USER")]
        by: Option<String>,
    },
    /// Exit 0 when every line is up and in service and no failover is active (the
    /// rollout's health gate); otherwise print what is wrong and exit 1.
    CheckHealth,
    /// Ask the running agent to re-read its config file and apply it (as SIGHUP does);
    /// exit 1 with the file's errors when the agent refuses it (the unit's ExecReload).
    Reload,
    /// Validate a configuration file; exit 0 when it is valid, 1 otherwise.
    CheckConfig {
        /// File to check (default: --config).
        file: Option<PathBuf>,
        /// The config the agent runs with: also say whether a reload (SIGHUP) applies the
        /// change or a restart is needed.
        #[arg(long, value_name = "FILE")]
        running: Option<PathBuf>,
        /// Leave the key files out (a config checked away from its gateway, such as the
        /// shipped example or one in review); everything else is checked.
        #[arg(long)]
        no_key_files: bool,
    },
    /// Feed a record of the agent's inputs (`[debug] record`) to a new engine and check
    /// that every decision comes out as recorded; exit 1 at the first that does not.
    Replay { file: PathBuf },
}
