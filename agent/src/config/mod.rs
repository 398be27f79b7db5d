//! The gateway's configuration: one TOML file, parsed with serde and checked as a whole.
//! A file with any error is refused entirely, so nothing half-valid is ever applied.

mod error;
mod types;
mod validate;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors, Locator};
pub use types::*;
pub use validate::decode_wg_key;

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            message: format!("cannot read config: {e}"),
            hint: format!("check that {} exists and is readable", path.display()),
        }])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&src, path, base)
}

/// Parses and validates config text; `file` names it in errors and `base_dir` anchors
/// relative key file paths.
pub fn parse(src: &str, file: &Path, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let loc = Locator::new(file, src);
    let mut cfg: Config = toml::from_str(src).map_err(|e| ConfigErrors(vec![loc.from_toml(&e)]))?;
    let errors = validate::validate(&mut cfg, &loc, base_dir);
    if errors.is_empty() {
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
}

#[cfg(test)]
mod tests;
