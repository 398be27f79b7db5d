//! Failover scenarios replayed from files through the engine, as holo's conformance tests
//! are: each `agent/tests/scenarios/*.jsonl` is a timeline of what happens to the paths (a
//! signal down or up, a line cut or healed, loss, a table streaming in, an operator's
//! command) and of the outputs expected (the site's group changes and, when listed, events
//! of the kinds listed), one JSON object per line, times in ms. What happens becomes the
//! inputs the sources would send (a carrier notification, a BFD state change with its
//! session id, a BGP session's events and route deltas, a tunnel's handshake time, a BFD
//! poll's loss) and goes through the agent's own engine: the signal rules, the coupling of
//! BFD and BGP, the policy, the selection and the FIB programmer's answers. Time is
//! virtual, so minutes of a scenario replay in milliseconds.
//!
//! The world (`world`): gateway `gw`, site `b`, lines `line1` (priority 10) and `line2` (20) each
//! with BFD to its router and end to end to the far gateway, tunnels `t1` and `t2` each
//! with end-to-end BFD; everything up and announcing the site for 10 s before 0 ms. A
//! reload reshapes that config (`Shape`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Config;
use crate::core::signals::SignalKind;
use world::World;

mod world;

/// How a reload changes the world's config: line priorities, paths left out, and the
/// paths listed in the reverse order (their ids must not follow the order).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Shape {
    #[serde(default)]
    priority: BTreeMap<String, u8>,
    #[serde(default)]
    remove: BTreeSet<String>,
    #[serde(default)]
    reversed: bool,
}

/// The world's config (see the top), shaped by `shape`.
fn config(dir: &Path, shape: &Shape) -> Config {
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    for t in ["t1", "t2"] {
        let p = dir.join("keys").join(format!("{t}.key"));
        std::fs::write(&p, "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=").unwrap();
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&p, private).unwrap();
    }
    let line = |n: u8, priority: u8| {
        let name = format!("line{n}");
        let priority = shape.priority.get(&name).copied().unwrap_or(priority);
        format!(
            r#"
            [[line]]
            name = "{name}"
            site = "b"
            interface = "line{n}"
            neighbors = ["192.0.2.{r}"]
            peer_asn = 65101
            priority = {priority}
            probe_target = "198.18.2.1"
            "#,
            r = 4 * n - 2
        )
    };
    let tunnel = |n: u8| {
        format!(
            r#"
            [[tunnel]]
            name = "t{n}"
            site = "b"
            interface = "tun{n}"
            uplink = "up{n}"
            listen_port = {port}
            private_key_file = "keys/t{n}.key"
            peer_public_key = "sJ81Fq/D4ftWa7I7V6RLC01HJOfnzkMMuRwFYpWnCXY="
            endpoints = ["198.51.100.{n}:51820"]
            addresses = ["169.254.10{n}.0/31"]
            probe_target = "169.254.10{n}.1"
            "#,
            port = 51819 + u16::from(n)
        )
    };
    let mut paths: Vec<(&str, String)> = vec![
        ("line1", line(1, 10)),
        ("line2", line(2, 20)),
        ("t1", tunnel(1)),
        ("t2", tunnel(2)),
    ];
    paths.retain(|(name, _)| !shape.remove.contains(*name));
    if shape.reversed {
        paths.reverse();
    }
    let paths: String = paths.into_iter().map(|(_, text)| text).collect();
    let src = format!(
        r#"
        [gateway]
        name = "gw"
        asn = 65001
        router_id = "192.0.2.1"
        [control]
        state_file = "{}/operator.json"
        [policy]
        hold_down = "30s"
        loss_threshold = 0.1
        drain_delay = "30s"
        [[site]]
        name = "b"
        prefixes = ["{}"]
        {paths}
        "#,
        dir.display(),
        world::SITE,
    );
    crate::config::parse(&src, Path::new("gw.toml"), dir).unwrap()
}

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
    /// The line's router is still sending its table (UPDATEs keep coming), or done.
    Relearned {
        path: String,
        done: bool,
    },
    /// The far gateway stops answering on every path at once (its agent killed), or
    /// answers again.
    FarEnd {
        quiet: bool,
    },
    /// The agent restarts (stopped and started again: what it kept on disk and left in
    /// the kernel is all the new run has).
    Restart {},
    /// The config reloaded (SIGHUP) in a new shape: the engine takes it first, then
    /// the sources stop the sessions of paths left out and start those of paths added.
    Reload(Shape),
    /// Loss measured by the path's end-to-end probes (0.0-1.0).
    Loss {
        path: String,
        loss: f64,
    },
    /// An operator's command; `refused` when the agent must refuse it.
    Operator {
        path: String,
        command: String,
        #[serde(default)]
        refused: bool,
        /// A timed test (`--for`), in milliseconds.
        #[serde(default)]
        lasting_ms: Option<u64>,
    },
    /// The scenario runs until here.
    End {},
    /// Expected: the site's group became `members` (`+`-joined).
    Group {
        members: String,
    },
    /// Expected: an event of `kind` about `path`.
    Event {
        kind: String,
        path: String,
    },
    /// Expected: the signal-level downs of `path` counted for the metrics by the end
    /// (`crosslink_path_downs_total`), whatever the policy made of them.
    Downs {
        path: String,
        count: u64,
    },
}

#[derive(Debug, PartialEq, Eq)]
enum Out {
    Group(u64, String),
    Event(u64, String, String),
    Downs(String, u64),
}

/// Replays one scenario; returns what it expected and what happened, in that order.
fn replay(name: &str, text: &str) -> (Vec<Out>, Vec<Out>) {
    replay_recorded(name, text, None)
}

/// The same, the engine's inputs and outputs recorded to `record`.
fn replay_recorded(name: &str, text: &str, record: Option<&Path>) -> (Vec<Out>, Vec<Out>) {
    let mut w = World::recorded(record);
    let mut expected = Vec::new();
    let mut end = 0;
    for (n, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line =
            serde_json::from_str(raw).unwrap_or_else(|e| panic!("{name}:{}: {e}", n + 1));
        let expectation = matches!(
            line.what,
            What::Group { .. } | What::Event { .. } | What::Downs { .. }
        );
        if !expectation && line.at_ms > w.ms() {
            // What the inputs of the last instant decide, decided in that instant (one
            // batch, as the supervisor takes what is waiting at once).
            w.turn();
            w.run_until(w.t0.after(Duration::from_millis(line.at_ms)));
        }
        match line.what {
            What::Signal { path, kind, up } => w.signal(&path, kind, up),
            What::Cut { path } => w.cut(&path, true),
            What::Heal { path } => w.cut(&path, false),
            What::Relearned { path, done } => w.stream(path, !done),
            What::FarEnd { quiet } => w.far_end(quiet),
            What::Restart {} => w.restart(),
            What::Reload(shape) => w.reload(&shape),
            What::Loss { path, loss } => w.set_loss(path, loss),
            What::Operator {
                path,
                command,
                refused,
                lasting_ms,
            } => w.operator(path, &command, refused, lasting_ms),
            What::End {} => end = line.at_ms,
            What::Group { members } => expected.push(Out::Group(line.at_ms, members)),
            What::Event { kind, path } => expected.push(Out::Event(line.at_ms, kind, path)),
            What::Downs { path, count } => expected.push(Out::Downs(path, count)),
        }
    }
    w.turn();
    w.run_until(w.t0.after(Duration::from_millis(end)));
    assert!(
        w.asked.is_empty(),
        "{name}: unanswered commands {:?}",
        w.asked
    );
    // Events of the kinds the file lists (none listed: none compared).
    let kinds: BTreeSet<String> = expected
        .iter()
        .filter_map(|o| match o {
            Out::Event(_, k, _) => Some(k.clone()),
            Out::Group(..) | Out::Downs(..) => None,
        })
        .collect();
    let mut got: Vec<Out> = w
        .events
        .into_iter()
        .filter(|(_, k, _)| kinds.contains(k))
        .map(|(t, k, p)| Out::Event(t, k, p))
        .collect();
    got.extend(w.changes.into_iter().map(|(t, g)| Out::Group(t, g)));
    for o in &expected {
        if let Out::Downs(path, _) = o {
            let n = w.downs.get(path).copied().unwrap_or(0);
            got.push(Out::Downs(path.clone(), n));
        }
    }
    let key = |o: &Out| match o {
        Out::Event(t, ..) => (*t, 0),
        Out::Group(t, _) => (*t, 1),
        Out::Downs(..) => (u64::MAX, 2),
    };
    got.sort_by_key(key);
    expected.sort_by_key(key);
    (expected, got)
}

#[test]
fn every_scenario_file_replays_as_written() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
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
{"at_ms": 10000, "group": {"members": "t1+t2"}}
{"at_ms": 20000, "end": {}}"#,
    );
    assert_ne!(expected, got);
    assert_eq!(got, [Out::Group(10_000, "line2".into())]);
}

#[test]
fn a_recorded_run_replays_to_the_same_outputs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let tmp = tempfile::tempdir().unwrap();
    for name in [
        "single-cut.jsonl",
        "operator-failover-and-restore.jsonl",
        "drain-during-a-failure.jsonl",
        "far-end-restarts.jsonl",
        "thirty-percent-loss.jsonl",
    ] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let record = tmp.path().join(name);
        let (expected, got) = replay_recorded(name, &text, Some(&record));
        assert_eq!(expected, got, "{name}");
        let replayed = crate::replay::replay(&record)
            .unwrap()
            .unwrap_or_else(|d| panic!("{name}: {d:#?}"));
        assert!(
            replayed.decisions >= 1 && replayed.turns > 10,
            "{name}: {replayed:?}"
        );
        assert!(
            replayed.span > Duration::from_secs(10),
            "{name}: {replayed:?}"
        );
    }
}

#[test]
fn a_record_that_answers_otherwise_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let record = tmp.path().join("cut.jsonl");
    let cut = r#"{"at_ms": 10000, "cut": {"path": "line1"}}
{"at_ms": 20000, "end": {}}"#;
    replay_recorded("cut", cut, Some(&record));
    // The cut's carrier loss written down as a carrier gain: the line stays, the
    // recorded turn moved the site.
    let text = std::fs::read_to_string(&record).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let at = lines
        .iter()
        .position(|l| l.contains(r#""iface":"line1","link":{"index":2,"up":false}"#))
        .expect("the cut's carrier loss is in the record");
    lines[at] = lines[at].replace(r#""up":false"#, r#""up":true"#);
    std::fs::write(&record, lines.join("\n")).unwrap();
    let differs = crate::replay::replay(&record).unwrap().unwrap_err();
    assert!(differs.line > at + 1, "{differs:?}");
    assert_ne!(differs.recorded, differs.replayed);
}

#[test]
fn what_the_next_run_needs_is_handed_out_once_the_kernel_has_it() {
    use crate::operator_state::Mark;
    let mut w = World::recorded(None);
    // The start: the ids the kernel objects are numbered by, and every path in service.
    let first = w
        .persisted
        .first()
        .expect("handed out at the start")
        .clone();
    let ids = first.ids.expect("the ids");
    assert!(ids.path("b", "line1").is_some() && ids.path("b", "t2").is_some());
    w.persisted.clear();
    w.operator("line1".into(), "failover", false, None);
    w.turn();
    assert!(w.persisted.is_empty(), "not before the switch's pass");
    // The failover is a mark and a change of standing, handed out at the turn after the
    // programmer's pass.
    w.turn();
    let marks: Vec<_> = w.persisted.iter().filter_map(|p| p.marks.clone()).collect();
    assert_eq!(marks.len(), 1, "{:?}", w.persisted);
    assert_eq!(marks[0].get("line1"), Some(&Mark::Failover.into()));
    assert!(w.persisted.iter().any(|p| p.standings.is_some()));
    assert!(
        w.persisted.iter().all(|p| p.ids.is_none()),
        "the ids did not change"
    );
    // Nothing new, nothing handed out.
    w.persisted.clear();
    let later = w.t0.after(Duration::from_secs(20));
    w.run_until(later);
    assert!(
        w.persisted.iter().all(|p| p.marks.is_none()),
        "{:?}",
        w.persisted
    );
}
