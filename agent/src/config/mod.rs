//! The gateway's configuration: one TOML file, parsed with serde and checked as a whole.
//! A file with any error is refused entirely, so nothing half-valid is ever applied.

mod error;
mod types;
mod validate;
mod values;
mod warnings;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors, Locator};
pub use types::*;
pub use validate::decode_wg_key;

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, true)
}

/// As `load`, without reading the key files (a config checked away from its gateway).
pub fn load_without_key_files(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, false)
}

fn load_with(path: &Path, key_files: bool) -> Result<Config, ConfigErrors> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            message: format!("cannot read config: {e}"),
            hint: format!("check that {} exists and is readable", path.display()),
            span: None,
        }])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_with(&src, path, base, key_files)
}

/// Parses and validates config text; `file` names it in errors and `base_dir` anchors
/// relative key file paths.
pub fn parse(src: &str, file: &Path, base_dir: &Path) -> Result<Config, ConfigErrors> {
    parse_with(src, file, base_dir, true)
}

/// Parses config text another host ran with (a record being replayed): every check but
/// the key files', which stay on that host.
pub fn parse_recorded(src: &str, file: &Path) -> Result<Config, ConfigErrors> {
    parse_with(src, file, Path::new("/nonexistent"), false)
}

fn parse_with(
    src: &str,
    file: &Path,
    base_dir: &Path,
    key_files: bool,
) -> Result<Config, ConfigErrors> {
    let loc = Locator::new(file, src);
    let mut cfg: Config = toml::from_str(src).map_err(|e| ConfigErrors(vec![loc.from_toml(&e)]))?;
    let errors = validate::validate(&mut cfg, &loc, base_dir, key_files);
    if errors.is_empty() {
        cfg.warnings = warnings::warnings(&cfg, &loc);
        cfg.source = src.to_owned();
        Ok(cfg)
    } else {
        Err(ConfigErrors(errors))
    }
}

impl Config {
    /// Paths (lines and tunnels) of one site, in configuration order.
    pub fn paths_of<'a>(&'a self, site: &'a str) -> impl Iterator<Item = PathRef<'a>> + 'a {
        let lines = self
            .lines
            .iter()
            .filter(move |l| l.site.get_ref() == site)
            .map(PathRef::Line);
        let tunnels = self
            .tunnels
            .iter()
            .filter(move |t| t.site.get_ref() == site)
            .map(PathRef::Tunnel);
        lines.chain(tunnels)
    }

    /// Every site's name with its paths' names, in configuration order (what stable ids
    /// are given to, see `core::ids`).
    pub fn layout(&self) -> Vec<(String, Vec<String>)> {
        self.sites
            .iter()
            .map(|s| {
                let name = s.name.get_ref();
                let paths = self.paths_of(name).map(|p| p.name().to_owned()).collect();
                (name.clone(), paths)
            })
            .collect()
    }

    pub fn find_path(&self, name: &str) -> Option<PathRef<'_>> {
        self.lines
            .iter()
            .find(|l| l.name.get_ref() == name)
            .map(PathRef::Line)
            .or_else(|| {
                self.tunnels
                    .iter()
                    .find(|t| t.name.get_ref() == name)
                    .map(PathRef::Tunnel)
            })
    }
}

#[derive(Debug, Clone, Copy)]
pub enum PathRef<'a> {
    Line(&'a Line),
    Tunnel(&'a Tunnel),
}

impl PathRef<'_> {
    pub fn name(&self) -> &str {
        match self {
            PathRef::Line(l) => l.name.get_ref(),
            PathRef::Tunnel(t) => t.name.get_ref(),
        }
    }

    /// The interface its traffic leaves by.
    pub fn interface(&self) -> &str {
        match self {
            PathRef::Line(l) => l.interface.get_ref(),
            PathRef::Tunnel(t) => t.interface.get_ref(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

/// Sections a reload cannot apply: the control socket and the metrics endpoint are bound
/// once (the CLI and Prometheus would lose them mid-change), the operator's state file
/// is where the marks were just read from, and threads take their CPUs when they start.
const RESTART_ONLY: &[&str] = &["control", "metrics", "bfd"];

/// The settings that differ between two config sources, as dotted paths (`line[0].bfd`,
/// `gateway.router_id`; a line added or removed shows as `line`). Sources that do not parse
/// are reported as a whole.
pub fn changes(old: &str, new: &str) -> Vec<String> {
    let (Ok(old), Ok(new)) = (old.parse::<toml::Table>(), new.parse::<toml::Table>()) else {
        return vec!["(the file as a whole)".to_owned()];
    };
    let mut out = Vec::new();
    diff(
        "",
        &toml::Value::Table(old),
        &toml::Value::Table(new),
        &mut out,
    );
    out
}

/// What of a change a reload (SIGHUP) cannot apply: empty when a reload is enough. A
/// reload applies everything else, touching only what changed (see `reload`); a restart
/// keeps the routes too (see DESIGN.md), but restarts every session.
pub fn needs_restart(old: &str, new: &str) -> Vec<String> {
    changes(old, new)
        .into_iter()
        .filter(|c| {
            let section = c.split(['.', '[']).next().unwrap_or_default();
            c.starts_with('(') || RESTART_ONLY.contains(&section)
        })
        .collect()
}

fn diff(at: &str, old: &toml::Value, new: &toml::Value, out: &mut Vec<String>) {
    use toml::Value;
    let join = |k: &str| {
        if at.is_empty() {
            k.to_owned()
        } else {
            format!("{at}.{k}")
        }
    };
    match (old, new) {
        (Value::Table(a), Value::Table(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff(&join(k), x, y, out),
                    _ => out.push(join(k)),
                }
            }
        }
        // Arrays of tables (lines, tunnels, sites) are compared entry by entry, so the
        // report names the entry; other arrays (prefix lists) as a whole.
        (Value::Array(a), Value::Array(b))
            if a.len() == b.len() && a.iter().all(toml::Value::is_table) =>
        {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{at}[{i}]"), x, y, out);
            }
        }
        (a, b) if a != b => out.push(at.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod reload_tests {
    use super::{changes, needs_restart};

    const BASE: &str = r#"
[gateway]
name = "gwa"
announce = ["198.18.1.0/24"]

[[line]]
name = "line1"
bfd = { interval = "10ms" }
export = { med = 10 }

[[line]]
name = "line2"
"#;

    #[test]
    fn only_the_control_socket_and_the_metrics_endpoint_need_a_restart() {
        assert!(needs_restart(BASE, BASE).is_empty() && changes(BASE, BASE).is_empty());
        let exports = BASE
            .replace(
                r#"["198.18.1.0/24"]"#,
                r#"["198.18.1.0/24", "198.18.9.0/24"]"#,
            )
            .replace("med = 10", "med = 20, prepend = 2");
        assert_eq!(
            changes(BASE, &exports),
            [
                "gateway.announce",
                "line[0].export.med",
                "line[0].export.prepend"
            ]
        );
        assert!(needs_restart(BASE, &exports).is_empty());
        let bfd = BASE.replace(r#"interval = "10ms""#, r#"interval = "5ms""#);
        assert_eq!(changes(BASE, &bfd), ["line[0].bfd.interval"]);
        let one_line_less = &BASE[..BASE.find("[[line]]\nname = \"line2\"").unwrap()];
        assert_eq!(changes(BASE, one_line_less), ["line"]);
        let with_tunnel = format!("{BASE}\n[[tunnel]]\nname = \"inet1\"\n");
        assert_eq!(changes(BASE, &with_tunnel), ["tunnel"]);
        for reloadable in [&bfd, one_line_less, &with_tunnel] {
            assert!(needs_restart(BASE, reloadable).is_empty(), "{reloadable}");
        }
        let socket = format!("[control]\nsocket = \"/run/x.sock\"\n{BASE}");
        assert_eq!(needs_restart(BASE, &socket), ["control"]);
        let metrics = format!("[metrics]\nlisten = \"127.0.0.1:1\"\n{BASE}");
        let both = format!("[metrics]\nlisten = \"127.0.0.1:2\"\n{BASE}");
        assert_eq!(needs_restart(&metrics, &both), ["metrics.listen"]);
        assert_eq!(needs_restart(BASE, "[gateway"), ["(the file as a whole)"]);
        let cpu = format!("[bfd]\ncpu = 1\n{BASE}");
        let none = format!("[bfd]\ncpu = \"none\"\n{BASE}");
        assert_eq!(needs_restart(&cpu, &none), ["bfd.cpu"]);
    }
}
