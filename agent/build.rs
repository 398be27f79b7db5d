//! Writes the man pages and shell completions from the CLI's own definition, so that they
//! never drift from it. They go to `target/<profile>/assets/`, a path the Debian package's
//! asset list can name: cargo's OUT_DIR carries a hash that changes between builds.

use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;

#[path = "src/logging/format.rs"]
mod format;
use format::LogFormat;

#[path = "src/cli.rs"]
#[allow(dead_code)]
mod cli;

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=src/cli.rs");
    println!("cargo:rerun-if-changed=src/logging/format.rs");
    let out = assets_dir();
    let man = out.join("man");
    let completions = out.join("completions");
    // Pages of subcommands that no longer exist must not reach the package (its asset
    // list takes every page here).
    let _ = std::fs::remove_dir_all(&man);
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    // One page for `crosslink` and one per subcommand (`crosslink-status.1.gz`, …).
    write_man_pages(cli::Cli::command(), &man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cli::Cli::command(), "crosslink", &completions)?;
    }
    Ok(())
}

/// Each page gzipped with no timestamp in the header, so that a rebuild gives the same bytes.
/// Built first, so that subcommands carry the global options and their display names
/// (`crosslink-status`), as `clap_mangen::generate_to` does.
fn write_man_pages(cmd: clap::Command, dir: &std::path::Path) -> std::io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    write_page(&cmd, dir)
}

fn write_page(cmd: &clap::Command, dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_page(sub, dir)?;
    }
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    let file = std::fs::File::create(dir.join(format!("{name}.1.gz")))?;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(file, flate2::Compression::best());
    gz.write_all(&page)?;
    gz.finish()?;
    Ok(())
}

/// `target/<profile>/assets`: OUT_DIR is `target/<profile>/build/crosslink-<hash>/out`.
/// Outside OUT_DIR, against cargo's advice, because packaging tools need a path that does
/// not change between builds (cargo-deb's own example does the same).
fn assets_dir() -> PathBuf {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let build = out.ancestors().nth(2);
    assert!(
        build
            .and_then(|b| b.file_name())
            .is_some_and(|n| n == "build"),
        "OUT_DIR {} is not target/<profile>/build/<crate>/out: where should the man pages go?",
        out.display()
    );
    out.ancestors()
        .nth(3)
        .expect("checked above")
        .join("assets")
}
