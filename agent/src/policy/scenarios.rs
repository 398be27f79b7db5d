//! Failover scenarios replayed from files, as holo's conformance tests are: each
//! `agent/tests/scenarios/*.jsonl` is a timeline of inputs (a signal of a path up or down,
//! a line cut or healed, loss, a table re-learned, an operator's command) and of the
//! outputs expected (the site's group changes and, when listed, the policy's events),
//! one JSON object per line, times in ms from the start. The policy, the selection and
//! the signal rules (`core::signals`) are the agent's own; time is virtual, so hours of
//! a scenario run in milliseconds. A file that lists no event expects only its groups.

use std::time::Duration;

use serde::Deserialize;

use super::sim::Sim;
use super::Command;
use crate::core::signals::SignalKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    at_ms: u64,
    #[serde(flatten)]
    what: What,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum What {
    /// One signal of a path.
    Signal {
        path: String,
        kind: SignalKind,
        up: bool,
    },
    /// Every signal of a path down, or back up.
    Cut {
        path: String,
    },
    Heal {
        path: String,
    },
    /// The path's BGP table re-learned since its session came back, or not yet.
    Relearned {
        path: String,
        done: bool,
    },
    /// Loss measured by the path's probes (0.0-1.0).
    Loss {
        path: String,
        loss: f64,
    },
    /// An operator's command; `refused` when the policy must refuse it.
    Operator {
        path: String,
        command: String,
        #[serde(default)]
        refused: bool,
    },
    /// The scenario runs until here.
    End {},
    /// Expected: the site's group became `members` (`+`-joined, as `status` shows it).
    Group {
        members: String,
    },
    /// Expected: the policy said `kind` of `path`.
    Event {
        kind: String,
        path: String,
    },
}

#[derive(Debug, PartialEq, Eq)]
enum Out {
    Group(u64, String),
    Event(u64, String, String),
}

fn command(name: &str) -> Command {
    match name {
        "failover" => Command::Failover,
        "restore" => Command::Restore,
        "drain" => Command::Drain,
        "undrain" => Command::Undrain,
        other => panic!("no operator command {other:?}"),
    }
}

/// Replays one scenario; returns what it expected and what happened, in that order.
fn replay(name: &str, text: &str) -> (Vec<Out>, Vec<Out>) {
    let mut sim = Sim::new();
    let mut expected = Vec::new();
    let mut end = 0;
    for (n, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line =
            serde_json::from_str(raw).unwrap_or_else(|e| panic!("{name}:{}: {e}", n + 1));
        if line.at_ms > sim.ms() && !matches!(line.what, What::Group { .. } | What::Event { .. }) {
            sim.run(Duration::from_millis(line.at_ms - sim.ms()));
        }
        match line.what {
            What::Signal { path, kind, up } => sim.set(&path, kind.name(), up),
            What::Cut { path } => sim.cut(&path, true),
            What::Heal { path } => sim.cut(&path, false),
            What::Relearned { path, done } => {
                sim.relearned.insert(path, done);
            }
            What::Loss { path, loss } => {
                sim.loss.insert(path, loss);
            }
            What::Operator {
                path,
                command: c,
                refused,
            } => {
                let r = sim.policy.command(sim.now, &path, command(&c));
                assert_eq!(r.is_err(), refused, "{name}:{}: {c} {path}: {r:?}", n + 1);
            }
            What::End {} => end = line.at_ms,
            What::Group { members } => expected.push(Out::Group(line.at_ms, members)),
            What::Event { kind, path } => expected.push(Out::Event(line.at_ms, kind, path)),
        }
    }
    if end > sim.ms() {
        sim.run(Duration::from_millis(end - sim.ms()));
    }
    let with_events = expected.iter().any(|o| matches!(o, Out::Event(..)));
    let mut got: Vec<Out> = Vec::new();
    for (t, kind, path) in sim.events() {
        if with_events {
            got.push(Out::Event(t, kind.to_owned(), path.to_owned()));
        }
    }
    for (t, members) in sim.changes() {
        got.push(Out::Group(t, members.to_owned()));
    }
    let key = |o: &Out| match o {
        Out::Event(t, ..) => (*t, 0),
        Out::Group(t, _) => (*t, 1),
    };
    got.sort_by_key(key);
    expected.sort_by_key(key);
    (expected, got)
}

#[test]
fn every_scenario_file_replays_as_written() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "scenarios in {}", dir.display());
    let mut failed = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let (expected, got) = replay(&name, &std::fs::read_to_string(f).unwrap());
        if expected != got {
            failed.push(format!(
                "{name}\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn a_scenario_that_does_not_happen_fails() {
    let (expected, got) = replay(
        "wrong",
        r#"{"at_ms": 10000, "cut": {"path": "line1"}}
{"at_ms": 10010, "group": {"members": "t1+t2"}}
{"at_ms": 20000, "end": {}}"#,
    );
    assert_ne!(expected, got);
    assert_eq!(got, [Out::Group(10_010, "line2".into())]);
}
