//! The log formats the CLI offers. On its own so that the build script, which writes the
//! man pages and shell completions from the CLI's definition, can include it.

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// journald when systemd connected stderr to the journal, text otherwise.
    Auto,
    Text,
    Journald,
    Json,
}
