//! What the operator asked of each path (failover, drain), kept on disk so that a restart
//! or an upgrade of the agent does not silently put a line under maintenance back into
//! service.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    Failover,
    /// Drain asked, our routes not moved yet: resumed with a fresh drain delay.
    Draining,
    Drained,
}

impl Mark {
    /// As status and the state file spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mark::Failover => "failover",
            Mark::Draining => "draining",
            Mark::Drained => "drained",
        }
    }
}

pub type Marks = BTreeMap<String, Mark>;

/// The marks saved by a previous run; none when the file does not exist. A file that
/// cannot be read is reported and ignored: better a line in service than an agent that
/// does not start.
pub fn load(path: &Path) -> Marks {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Marks::new(),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "operator state unreadable; starting without it");
            return Marks::new();
        }
    };
    serde_json::from_str(&text).unwrap_or_else(|e| {
        tracing::error!(file = %path.display(), error = %e, "operator state corrupt; starting without it");
        Marks::new()
    })
}

/// Writes `marks` atomically (a temporary file renamed over the old one), so a crash
/// mid-write leaves the previous state, never half of one.
pub fn save(path: &Path, marks: &Marks) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(marks).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text + "\n")?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_a_save_and_load_and_bad_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/operator.json");
        assert!(load(&file).is_empty(), "no file: nothing asked");
        let marks: Marks = [
            ("line1".to_owned(), Mark::Drained),
            ("line2".to_owned(), Mark::Draining),
            ("inet1".to_owned(), Mark::Failover),
        ]
        .into();
        save(&file, &marks).unwrap();
        assert_eq!(load(&file), marks);
        std::fs::write(&file, "{ not json").unwrap();
        assert!(load(&file).is_empty());
    }
}
