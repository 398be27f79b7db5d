//! What a restart of the agent must not forget, kept on disk: what the operator asked of
//! each path (failover, drain), so that a line under maintenance does not silently come
//! back into service; and each path's standing in the policy (in service, waiting out a
//! hold-down, its flap penalty), so that a restart or an upgrade is not taken for a
//! failure of every path.

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

/// A mark and, for a timed test (`failover --for 5m`), when it ends: the path then
/// returns by itself, also when that moment passed while the agent was not running.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Marked {
    pub mark: Mark,
    /// Unix time, seconds.
    pub until: Option<f64>,
}

impl From<Mark> for Marked {
    fn from(mark: Mark) -> Marked {
        Marked { mark, until: None }
    }
}

/// On disk a mark without an end is the bare word, as before timed tests existed, so a
/// state file without them still reads in an older agent (a rollback).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum OnDisk {
    Bare(Mark),
    Timed { mark: Mark, until: f64 },
}

impl Serialize for Marked {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.until {
            None => OnDisk::Bare(self.mark),
            Some(until) => OnDisk::Timed {
                mark: self.mark,
                until,
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Marked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Marked, D::Error> {
        Ok(match OnDisk::deserialize(d)? {
            OnDisk::Bare(mark) => mark.into(),
            OnDisk::Timed { mark, until } => Marked {
                mark,
                until: Some(until),
            },
        })
    }
}

pub type Marks = BTreeMap<String, Marked>;

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
    write_atomically(
        path,
        &serde_json::to_string_pretty(marks).map_err(std::io::Error::other)?,
    )
}

/// A path's standing in the policy when it was saved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// Admitted: eligible to carry traffic (it may have been the standby).
    pub in_service: bool,
    /// Failed and not back yet: its return waits for the hold-down.
    pub held: bool,
    /// The flap penalty at `penalty_at` (Unix time, seconds); it decays from there.
    pub penalty: f64,
    pub penalty_at: f64,
    pub suppressed: bool,
}

pub type Standings = BTreeMap<String, Standing>;

/// Where the standings live: beside the operator's marks.
pub fn standings_file(state_file: &Path) -> std::path::PathBuf {
    state_file.with_extension("paths.json")
}

/// The standings saved by a previous run; none when missing or unreadable (the paths are
/// then judged as after a first start).
pub fn load_standings(path: &Path) -> Standings {
    load_or_default(path, "path standings")
}

/// Writes the standings atomically, as `save` does the marks.
pub fn save_standings(path: &Path, standings: &Standings) -> std::io::Result<()> {
    save_json(path, standings)
}

/// Where the stable ids of sites and paths live: beside the operator's marks.
pub fn ids_file(state_file: &Path) -> std::path::PathBuf {
    state_file.with_extension("ids.json")
}

/// The ids a previous run gave; none when missing or unreadable (numbered afresh in
/// config order, as a first start does).
pub fn load_ids(path: &Path) -> crate::core::ids::Ids {
    load_or_default(path, "path ids")
}

pub fn save_ids(path: &Path, ids: &crate::core::ids::Ids) -> std::io::Result<()> {
    save_json(path, ids)
}

fn load_or_default<T: Default + serde::de::DeserializeOwned>(path: &Path, what: &str) -> T {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
            // Kept aside for whoever looks into it: this run writes a fresh one.
            let aside = path.with_extension("corrupt");
            let _ = std::fs::rename(path, &aside);
            tracing::error!(file = %path.display(), kept = %aside.display(), error = %e, "{what} corrupt; starting without them");
            T::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => T::default(),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "{what} unreadable; starting without them");
            T::default()
        }
    }
}

fn save_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    write_atomically(
        path,
        &serde_json::to_string_pretty(value).map_err(std::io::Error::other)?,
    )
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{text}\n"))?;
    std::fs::rename(&tmp, path)
}

/// Writes what the engine handed out to be kept for the next run, each beside
/// `state_file`. A failure is logged once per change, not retried every pass: this run
/// keeps it in memory, a restart would not find it.
pub fn persist(state_file: &Path, p: &crate::supervisor::Persist) {
    if let Some(ids) = &p.ids {
        let file = ids_file(state_file);
        if let Err(e) = save_ids(&file, ids) {
            tracing::error!(file = %file.display(), error = %e, "cannot save the paths' ids; a restart after a reordered config may misread the kernel's groups");
        }
    }
    if let Some(standings) = &p.standings {
        let file = standings_file(state_file);
        if let Err(e) = save_standings(&file, standings) {
            tracing::error!(file = %file.display(), error = %e, "cannot save the paths' standings; a restart would take every path for failed");
        }
    }
    if let Some(marks) = &p.marks {
        if let Err(e) = save(state_file, marks) {
            tracing::error!(file = %state_file.display(), error = %e, "cannot save the operator state; a restart would forget it");
        }
    }
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
            ("line1".to_owned(), Mark::Drained.into()),
            ("line2".to_owned(), Mark::Draining.into()),
            (
                "inet1".to_owned(),
                Marked {
                    mark: Mark::Failover,
                    until: Some(1.8e9),
                },
            ),
        ]
        .into();
        save(&file, &marks).unwrap();
        assert_eq!(load(&file), marks);
        // A file an agent without timed tests wrote reads the same.
        std::fs::write(&file, r#"{"line1": "drained", "line2": "draining"}"#).unwrap();
        assert_eq!(load(&file)["line1"], Mark::Drained.into());
        // And one with only untimed marks is what such an agent reads.
        save(&file, &[("line1".to_owned(), Mark::Drained.into())].into()).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains(r#""line1": "drained""#), "{text}");
        std::fs::write(&file, "{ not json").unwrap();
        assert!(load(&file).is_empty());
    }

    #[test]
    fn standings_survive_a_save_and_load_beside_the_marks() {
        let dir = tempfile::tempdir().unwrap();
        let file = standings_file(&dir.path().join("operator.json"));
        assert_eq!(file, dir.path().join("operator.paths.json"));
        assert!(load_standings(&file).is_empty());
        let s: Standings = [(
            "line2".to_owned(),
            Standing {
                in_service: true,
                held: false,
                penalty: 993.5,
                penalty_at: 1.8e9,
                suppressed: false,
            },
        )]
        .into();
        save_standings(&file, &s).unwrap();
        assert_eq!(load_standings(&file), s);
        std::fs::write(&file, "[").unwrap();
        assert!(load_standings(&file).is_empty());
    }
}
