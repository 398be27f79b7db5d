//! Deterministic simulations of the policy engine and the selection together, in virtual
//! time: two lines (priorities 10 and 20) and two tunnels to one site, each path with its
//! own signals, judged by the agent's own rules (`core::signals`). Each scenario asserts
//! the timeline of group changes and events.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::core::signals::{judge, Health, Holds, Signal, SignalKind};
use crate::select::{choose, CandidateKind, Mode};

const STEP: Duration = Duration::from_millis(10);

pub(super) fn settings() -> Settings {
    Settings {
        hold_down: Duration::from_secs(30),
        loss_threshold: 0.1,
        drain_delay: Duration::from_secs(30),
        damping: damping::Settings {
            penalty: 1000.0,
            half_life: Duration::from_secs(900),
            suppress: 2000.0,
            reuse: 750.0,
            max_suppress: Duration::from_secs(3600),
        },
    }
}

const LINE_SIGNALS: [SignalKind; 4] = [
    SignalKind::Carrier,
    SignalKind::Bfd,
    SignalKind::Bgp,
    SignalKind::E2eBfd,
];
const TUNNEL_SIGNALS: [SignalKind; 3] = [
    SignalKind::Carrier,
    SignalKind::Handshake,
    SignalKind::E2eBfd,
];

pub(super) struct Sim {
    pub(super) policy: Policy,
    t0: Instant,
    pub(super) now: Instant,
    paths: Vec<(String, CandidateKind)>,
    /// Each path's signals in the order the agent judges them, up or down.
    signals: BTreeMap<String, Vec<(SignalKind, bool)>>,
    pub(super) loss: BTreeMap<String, f64>,
    pub(super) relearned: BTreeMap<String, bool>,
    /// The kernel group: what the last applied choice put there.
    pub(super) group: Vec<String>,
    changes: Vec<(u64, String)>,
    events: Vec<(u64, &'static str, String)>,
    all_down_alarms: usize,
}

impl Sim {
    pub(super) fn new() -> Sim {
        Sim::with(Policy::new(settings()), &[])
    }

    /// `group`: what the kernel carries at the start (adopted), else the first choice.
    pub(super) fn with(policy: Policy, group: &[&str]) -> Sim {
        let t0 = Instant::now();
        let paths = vec![
            ("line1".to_owned(), CandidateKind::Line { priority: 10 }),
            ("line2".to_owned(), CandidateKind::Line { priority: 20 }),
            ("t1".to_owned(), CandidateKind::Tunnel { weight: 1 }),
            ("t2".to_owned(), CandidateKind::Tunnel { weight: 1 }),
        ];
        let signals = paths
            .iter()
            .map(|(p, kind)| {
                let kinds: &[SignalKind] = match kind {
                    CandidateKind::Line { .. } => &LINE_SIGNALS,
                    CandidateKind::Tunnel { .. } => &TUNNEL_SIGNALS,
                };
                (p.clone(), kinds.iter().map(|k| (*k, true)).collect())
            })
            .collect();
        let mut sim = Sim {
            policy,
            t0,
            now: t0,
            relearned: paths.iter().map(|(p, _)| (p.clone(), true)).collect(),
            paths,
            signals,
            loss: BTreeMap::new(),
            group: group.iter().map(|s| s.to_string()).collect(),
            changes: Vec::new(),
            events: Vec::new(),
            all_down_alarms: 0,
        };
        sim.step();
        sim.changes.clear();
        sim.events.clear();
        sim
    }

    pub(super) fn ms(&self) -> u64 {
        (self.now - self.t0).as_millis() as u64
    }

    pub(super) fn set(&mut self, path: &str, signal: &str, up: bool) {
        let v = self
            .signals
            .get_mut(path)
            .and_then(|s| s.iter_mut().find(|(k, _)| k.name() == signal))
            .unwrap_or_else(|| panic!("{path} has no signal {signal}"));
        v.1 = up;
    }

    /// Cuts (or heals) every signal of a path.
    pub(super) fn cut(&mut self, path: &str, down: bool) {
        for (_, v) in self.signals.get_mut(path).into_iter().flatten() {
            *v = !down;
        }
    }

    fn observations(&self) -> Vec<Observation> {
        self.paths
            .iter()
            .map(|(name, kind)| {
                // The agent's own judgement of the signals (`core::signals`).
                let signals: Vec<Signal> = self.signals[name]
                    .iter()
                    .map(|(k, up)| match up {
                        true => Signal::new(*k, Health::Up),
                        false => Signal::down(*k, format!("{} down", k.name())),
                    })
                    .collect();
                let verdict = judge(&signals, &Holds::default());
                Observation {
                    name: name.clone(),
                    kind: *kind,
                    up: verdict.health == Health::Up,
                    unproven: verdict.health == Health::Unknown && verdict.evidence,
                    draining: None,
                    why: verdict.reason,
                    loss: self.loss.get(name).copied(),
                    relearned: self.relearned[name],
                }
            })
            .collect()
    }

    fn step(&mut self) {
        let obs = self.observations();
        let candidates = self.policy.evaluate(self.now, &obs);
        let choice = choose(&candidates);
        let ms = self.ms();
        for e in self.policy.take_events() {
            self.events.push((ms, e.kind.as_str(), e.path));
        }
        if choice.mode == Mode::AllDown {
            // Fail static: the kernel keeps the last group.
            self.all_down_alarms += 1;
            return;
        }
        let members: Vec<String> = choice.members.iter().map(|(n, _)| n.clone()).collect();
        if members != self.group {
            self.changes.push((ms, members.join("+")));
            self.group = members;
        }
    }

    /// Steps every 10 ms for `d`. The observations stay as they are within a run, so
    /// after the first step it jumps to the step at or after the policy's next deadline:
    /// the same timeline as stepping through, hours of it in milliseconds.
    pub(super) fn run(&mut self, d: Duration) {
        let end = self.now + d;
        let mut first = true;
        while self.now < end {
            let mut next = self.now + STEP;
            if !first {
                let deadline = self.policy.next_deadline(self.now).unwrap_or(end);
                let steps = (deadline.saturating_duration_since(self.t0).as_nanos())
                    .div_ceil(STEP.as_nanos());
                let on_grid = self.t0 + STEP * u32::try_from(steps).unwrap_or(u32::MAX);
                next = next.max(on_grid.min(end));
            }
            first = false;
            self.now = next;
            self.step();
        }
    }

    pub(super) fn secs(&mut self, s: u64) {
        self.run(Duration::from_secs(s));
    }

    pub(super) fn changes(&self) -> Vec<(u64, &str)> {
        self.changes.iter().map(|(t, g)| (*t, g.as_str())).collect()
    }

    pub(super) fn events(&self) -> Vec<(u64, &str, &str)> {
        self.events
            .iter()
            .map(|(t, k, p)| (*t, *k, p.as_str()))
            .collect()
    }
}

#[test]
fn flapping_every_two_seconds_for_ten_minutes_changes_the_group_once() {
    let mut sim = Sim::new();
    sim.secs(10);
    for i in 0..300 {
        sim.cut("line1", i % 2 == 0);
        sim.secs(2);
    }
    sim.cut("line1", false);
    let stopped = sim.ms();
    assert_eq!(sim.changes(), [(10_010, "line2")]);
    let downs = sim.events().iter().filter(|e| e.1 == "path-down").count();
    assert_eq!(downs, 150);
    // Each a failure of its own (up 2 s each time), each counted for the alerts, though
    // the line left service once.
    assert_eq!(sim.policy.status("line1", sim.now).unwrap().flaps, 150);
    let suppressed: Vec<u64> = sim
        .events()
        .iter()
        .filter(|e| e.1 == "path-suppressed")
        .map(|e| e.0)
        .collect();
    assert_eq!(suppressed, [18_010], "the third down suppresses");
    // Stable from now on: the penalty sits at its ceiling, so the line stays out for
    // max_suppress (1 h), not for the hold-down.
    sim.run(Duration::from_secs(3590));
    assert_eq!(sim.changes().len(), 1);
    sim.secs(20);
    let back = sim.changes()[1];
    assert_eq!(back.1, "line1");
    let out_for = Duration::from_millis(back.0 - stopped);
    assert!(
        out_for > Duration::from_secs(3590) && out_for <= Duration::from_secs(3601),
        "returned {out_for:?} after the flapping stopped"
    );
}

#[test]
fn slow_flapping_is_suppressed_at_the_third_flap() {
    let mut sim = Sim::new();
    sim.secs(10);
    // Down for 1 s every 60 s: each return passes the 30 s hold-down.
    for _ in 0..3 {
        sim.cut("line1", true);
        sim.secs(1);
        sim.cut("line1", false);
        sim.secs(59);
    }
    assert_eq!(
        sim.changes(),
        [
            (10_010, "line2"),
            (41_010, "line1"),
            (70_010, "line2"),
            (101_010, "line1"),
            (130_010, "line2"),
        ]
    );
    let s = sim.policy.status("line1", sim.now).unwrap();
    let left = s.suppressed_for.expect("suppressed");
    assert!(left > Duration::from_secs(1500), "{left:?}");
    sim.run(left - Duration::from_secs(1));
    assert_eq!(sim.changes().len(), 5, "still suppressed");
    sim.secs(2);
    assert_eq!(sim.changes().len(), 6, "reused once the penalty decayed");
    assert_eq!(sim.changes()[5].1, "line1");
}

#[test]
fn tunnels_down_in_failover_keep_the_last_group_and_a_tunnel_back_is_used_at_once() {
    let mut sim = Sim::new();
    sim.cut("line1", true);
    sim.cut("line2", true);
    sim.secs(5);
    sim.set("t1", "e2e-bfd", false);
    sim.secs(5);
    sim.set("t2", "handshake", false);
    sim.secs(5);
    assert!(sim.all_down_alarms > 0);
    sim.set("t1", "e2e-bfd", true);
    sim.secs(5);
    assert_eq!(
        sim.changes(),
        [(10, "t1+t2"), (5_010, "t2"), (15_010, "t1")],
        "nothing healthy keeps t2 (fail static); t1 is used without a hold-down: nothing else is up"
    );
    // t2 back: it waits for its hold-down, since t1 carries.
    sim.set("t2", "handshake", true);
    sim.secs(31);
    assert_eq!(sim.changes()[3], (50_010, "t1+t2"));
}

#[test]
fn a_waiver_is_told_once_however_often_the_policy_looks() {
    const ALL: [&str; 4] = ["line1", "line2", "t1", "t2"];
    let mut sim = Sim::new();
    sim.secs(5);
    // Three flaps each: every path suppressed by damping (1,000 a flap, suppress 2,000).
    for _ in 0..3 {
        ALL.iter().for_each(|p| sim.cut(p, true));
        sim.secs(1);
        ALL.iter().for_each(|p| sim.cut(p, false));
        sim.secs(1);
    }
    // All up, none admitted: all are used, and the agent evaluates on every observation
    // (here every 10 ms, as under churn), each pass finding them suppressed again.
    for _ in 0..500 {
        sim.now += STEP;
        sim.step();
    }
    let told = |sim: &Sim, path: &str| {
        sim.events()
            .iter()
            .filter(|e| e.1 == "path-return" && e.2 == path)
            .count()
    };
    assert_eq!(told(&sim, "t1"), 3, "{:?}", sim.events());
    let before = sim.events().len();
    for _ in 0..500 {
        sim.now += STEP;
        sim.step();
    }
    assert_eq!(sim.events().len(), before, "{:?}", &sim.events()[before..]);
    // Nothing admitted a next time is news again.
    ALL.iter().for_each(|p| sim.cut(p, true));
    sim.secs(1);
    sim.cut("t1", false);
    sim.secs(1);
    assert_eq!(told(&sim, "t1"), 4, "{:?}", sim.events());
}

#[test]
fn drain_during_a_failure_keeps_the_line_out_until_undrained() {
    let mut sim = Sim::new();
    sim.secs(5);
    sim.cut("line1", true);
    sim.secs(5);
    let msg = sim
        .policy
        .command(sim.now, "line1", Command::Drain, None)
        .unwrap();
    assert!(msg.contains("carried no traffic"), "{msg}");
    assert_eq!(sim.policy.advertise("line1"), Advertise::Unattractive);
    sim.cut("line1", false);
    sim.secs(60);
    assert_eq!(sim.changes(), [(5_010, "line2")], "drained: no return");
    sim.policy
        .command(sim.now, "line1", Command::Undrain, None)
        .unwrap();
    assert_eq!(sim.policy.advertise("line1"), Advertise::Normal);
    sim.secs(1);
    assert_eq!(sim.changes(), [(5_010, "line2"), (70_010, "line1")]);
}

#[test]
fn drain_tells_the_far_side_first_and_moves_our_routes_after_the_delay() {
    let mut sim = Sim::new();
    sim.secs(5);
    sim.policy
        .command(sim.now, "line1", Command::Drain, None)
        .unwrap();
    assert_eq!(sim.policy.advertise("line1"), Advertise::Unattractive);
    assert!(sim
        .policy
        .command(sim.now, "line1", Command::Drain, None)
        .is_err());
    sim.secs(29);
    assert!(
        sim.changes().is_empty(),
        "still carrying during the drain delay"
    );
    sim.secs(2);
    assert_eq!(sim.changes(), [(35_000, "line2")]);
    let kinds: Vec<&str> = sim.events().iter().map(|e| e.1).collect();
    // The command itself is logged by the supervisor, with who asked.
    assert_eq!(kinds, ["drained"]);
}

#[test]
fn restore_clears_damping_so_a_suppressed_line_returns_after_its_hold_down() {
    let mut sim = Sim::new();
    for _ in 0..3 {
        sim.cut("line1", true);
        sim.secs(1);
        sim.cut("line1", false);
        sim.secs(1);
    }
    sim.secs(60);
    assert_eq!(sim.changes(), [(10, "line2")], "suppressed");
    sim.policy
        .command(sim.now, "line1", Command::Restore, None)
        .unwrap();
    sim.secs(1);
    assert_eq!(sim.changes(), [(10, "line2"), (66_010, "line1")]);
}

#[test]
fn a_restart_in_the_middle_of_a_failover_waits_for_the_hold_down() {
    let mut policy = Policy::new(settings());
    let t0 = Instant::now();
    policy.adopt(
        t0,
        &["t1".into(), "t2".into()],
        &["line1".into(), "line2".into()],
    );
    let mut sim = Sim::with(policy, &["t1", "t2"]);
    assert_eq!(
        sim.group,
        ["t1", "t2"],
        "adopted group kept while the lines prove themselves"
    );
    sim.secs(40);
    assert_eq!(sim.changes(), [(30_000, "line1")]);
}

#[test]
fn deadlines_name_the_next_verdict_change() {
    let mut sim = Sim::new();
    sim.cut("line1", true);
    sim.secs(1);
    sim.cut("line1", false);
    sim.run(STEP);
    let up = sim.now;
    assert_eq!(
        sim.policy.next_deadline(sim.now),
        Some(up + Duration::from_secs(30))
    );
}

#[test]
fn hours_of_a_stable_network_change_nothing() {
    let mut sim = Sim::new();
    sim.run(Duration::from_secs(3 * 3600));
    assert!(sim.changes().is_empty());
    assert!(sim.events().is_empty());
}

#[test]
fn the_operators_marks_survive_a_restart() {
    use crate::operator_state::Mark;
    let mut sim = Sim::new();
    sim.secs(5);
    sim.policy
        .command(sim.now, "line1", Command::Drain, None)
        .unwrap();
    sim.policy
        .command(sim.now, "t1", Command::Failover, None)
        .unwrap();
    let marks = sim.policy.marks();
    assert_eq!(
        marks
            .iter()
            .map(|(p, m)| (p.as_str(), m.mark))
            .collect::<Vec<_>>(),
        [("line1", Mark::Draining), ("t1", Mark::Failover)]
    );
    sim.secs(31);
    assert_eq!(sim.policy.marks()["line1"].mark, Mark::Drained);

    // The new process: an interrupted drain starts its delay over, a drained line stays
    // out from the first pass.
    let t0 = Instant::now();
    let mut policy = Policy::new(settings());
    policy.resume(t0, SystemTime::now(), "line1", Mark::Drained.into());
    policy.resume(t0, SystemTime::now(), "line2", Mark::Draining.into());
    assert_eq!(policy.advertise("line1"), Advertise::Unattractive);
    assert_eq!(policy.advertise("line2"), Advertise::Unattractive);
    let mut sim = Sim::with(policy, &["line1"]);
    assert_eq!(sim.group, ["line2"], "line 1 out from the first pass");
    sim.secs(29);
    assert!(sim.changes().is_empty(), "line 2 waits for its new delay");
    sim.secs(2);
    assert_eq!(sim.group, ["t1", "t2"]);
    assert_eq!(sim.policy.marks()["line2"].mark, Mark::Drained);
}

#[test]
fn a_reloaded_hold_down_applies_to_the_return_already_waiting() {
    let mut sim = Sim::new();
    sim.secs(10);
    sim.cut("line1", true);
    sim.secs(10);
    sim.cut("line1", false);
    sim.secs(5);
    // Five seconds into the 30 s hold-down, a reload shortens it to 10 s.
    sim.policy.set_settings(Settings {
        hold_down: Duration::from_secs(10),
        ..settings()
    });
    sim.secs(30);
    assert_eq!(sim.changes(), [(10_010, "line2"), (30_010, "line1")]);
    // A path the reload removed is forgotten with its operator mark.
    let now = sim.now;
    sim.policy
        .command(now, "t2", Command::Failover, None)
        .unwrap();
    assert!(sim.policy.marks().contains_key("t2"));
    sim.policy.retain(|p| p != "t2");
    assert!(!sim.policy.marks().contains_key("t2"));
}

#[test]
fn a_line_router_restart_costs_one_penalty_however_its_sessions_come_back() {
    let mut sim = Sim::new();
    sim.secs(10);
    // lr1 dies: BFD goes down.
    sim.set("line1", "bfd", false);
    sim.secs(5);
    // It comes back: BFD and BGP up, then for a moment no route of one family, then of
    // the other, as its sessions with the far gateway come up one by one.
    sim.set("line1", "bfd", true);
    for _ in 0..2 {
        sim.run(Duration::from_millis(20));
        sim.set("line1", "bgp", false);
        sim.run(Duration::from_millis(20));
        sim.set("line1", "bgp", true);
    }
    sim.secs(60);
    let downs = sim
        .events()
        .iter()
        .filter(|(_, k, p)| *k == "path-down" && *p == "line1")
        .count();
    assert_eq!(downs, 3, "each is told: {:?}", sim.events());
    let s = sim.policy.status("line1", sim.now).unwrap();
    assert!(s.penalty < 1000.0, "charged once: {}", s.penalty);
    assert_eq!(s.flaps, 1, "and counted once");
    assert!(s.suppressed_for.is_none());
    assert_eq!(sim.changes(), [(10_010, "line2"), (45_090, "line1")]);
}

/// The previous run's standings, as saved with a wall clock `wall` at `sim`'s now.
fn standings_of(sim: &Sim, wall: std::time::SystemTime) -> crate::operator_state::Standings {
    sim.policy.standings(sim.now, wall)
}

#[test]
fn a_restart_is_no_failure_the_standby_line_is_a_failover_target_at_once() {
    // A run in steady state: line1 carries, line2 is the healthy standby.
    let before = Sim::new();
    let wall = std::time::SystemTime::now();
    let saved = standings_of(&before, wall);
    assert!(
        saved["line2"].in_service && !saved["line2"].held,
        "{saved:?}"
    );
    // The agent restarts with line1 carrying in the kernel.
    let mut policy = Policy::new(settings());
    let t0 = Instant::now();
    for (path, s) in &saved {
        policy.restore(t0, wall, path, *s);
    }
    policy.adopt(t0, &["line1".into()], &["line1".into(), "line2".into()]);
    let mut sim = Sim::with(policy, &["line1"]);
    sim.secs(3);
    // Line 1 fails 3 s after the restart: line 2 takes it, not the tunnels.
    sim.cut("line1", true);
    sim.secs(1);
    assert_eq!(sim.changes(), [(3_010, "line2")]);
}

#[test]
fn a_restart_keeps_a_failed_line_waiting_and_its_penalty() {
    let mut before = Sim::new();
    before.secs(10);
    before.cut("line1", true);
    before.secs(5);
    let wall = std::time::SystemTime::now();
    let saved = standings_of(&before, wall);
    let l1 = saved["line1"];
    assert!(l1.held && !l1.in_service && l1.penalty > 999.0, "{l1:?}");
    // Restarted a minute later (the penalty decays while the agent is away), line 1 up.
    let mut policy = Policy::new(settings());
    let t0 = Instant::now();
    for (path, s) in &saved {
        policy.restore(t0, wall + Duration::from_secs(60), path, *s);
    }
    policy.adopt(t0, &["line2".into()], &["line1".into(), "line2".into()]);
    let mut sim = Sim::with(policy, &["line2"]);
    sim.secs(29);
    assert!(sim.changes().is_empty(), "line 1 waits for its hold-down");
    sim.secs(2);
    assert_eq!(sim.changes(), [(30_000, "line1")]);
    let p = sim.policy.status("line1", sim.now).unwrap();
    // 1000 at the cut, decayed over the 5 s before the save, the 60 s away and the 31 s
    // since, at a 900 s half-life.
    assert!(
        (p.penalty - 1000.0 * 0.5f64.powf(96.0 / 900.0)).abs() < 1.0,
        "{p:?}"
    );
}
