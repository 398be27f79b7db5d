//! Timed tests in the policy simulation: the path returns when the time is up, sooner on
//! `restore`, and across a restart (or after one that outlasted the test).

use std::time::{Duration, Instant, SystemTime};

use super::sim::{settings, Sim};
use super::*;
use crate::operator_state::{Mark, Marked};

fn timed(secs: u64) -> Option<Timed> {
    Some(Timed {
        lasting: Duration::from_secs(secs),
        now_wall: SystemTime::now(),
    })
}

#[test]
fn a_timed_failover_comes_back_by_itself() {
    let mut sim = Sim::new();
    sim.secs(5);
    assert_eq!(sim.group, ["line1"]);
    let said = sim
        .policy
        .command(sim.now, "line1", Command::Failover, timed(300))
        .unwrap();
    assert!(said.contains("line1 taken out of service now; it comes back by itself after 5m, sooner with `restore line1`"), "{said}");
    sim.secs(1);
    assert_eq!(sim.group, ["line2"]);
    let left = sim.policy.status("line1", sim.now).unwrap().operator_left;
    assert_eq!(left.map(|d| d.as_secs()), Some(299), "{left:?}");
    assert_eq!(
        sim.policy.next_deadline(sim.now),
        Some(sim.now + left.unwrap()),
        "the engine wakes up for the end"
    );
    let saved = sim.policy.marks()["line1"];
    assert_eq!(saved.mark, Mark::Failover);
    assert!(saved.until.is_some());
    sim.secs(298);
    assert_eq!(sim.group, ["line2"], "not a moment early");
    sim.secs(2);
    assert_eq!(
        sim.group,
        ["line1"],
        "back when the time is up, no hold-down"
    );
    assert_eq!(
        sim.policy.status("line1", sim.now).unwrap().operator,
        "none"
    );
    assert!(sim.policy.marks().is_empty());
    let ended = sim
        .events()
        .into_iter()
        .filter(|(_, kind, path)| *kind == "operator" && *path == "line1")
        .count();
    assert_eq!(ended, 1);
}

#[test]
fn restore_ends_a_timed_test_sooner_and_undrain_takes_no_duration() {
    let mut sim = Sim::new();
    sim.secs(5);
    sim.policy
        .command(sim.now, "line1", Command::Drain, timed(3600))
        .unwrap();
    sim.secs(31);
    assert_eq!(sim.group, ["line2"], "drained after its delay");
    let refused = sim
        .policy
        .command(sim.now, "line1", Command::Undrain, timed(60))
        .unwrap_err();
    assert!(refused.contains("takes no duration"), "{refused}");
    let refused = sim
        .policy
        .command(sim.now, "line2", Command::Failover, timed(0))
        .unwrap_err();
    assert!(refused.contains("at least a second"), "{refused}");
    let refused = sim
        .policy
        .command(sim.now, "line2", Command::Drain, timed(30))
        .unwrap_err();
    assert!(
        refused.contains("would end before any traffic moved"),
        "{refused}"
    );
    sim.policy
        .command(sim.now, "line1", Command::Undrain, None)
        .unwrap();
    sim.secs(1);
    assert_eq!(sim.group, ["line1"]);
    assert_eq!(
        sim.policy.next_deadline(sim.now),
        None,
        "no end left to wait for"
    );
}

#[test]
fn a_timed_test_survives_a_restart_and_one_that_ran_out_meanwhile_ends_at_once() {
    let wall = SystemTime::now();
    let t0 = Instant::now();
    let mut policy = Policy::new(settings());
    let in_a_minute = wall + Duration::from_secs(60);
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    policy.resume(
        t0,
        wall,
        "line1",
        Marked {
            mark: Mark::Failover,
            until: Some(unix(in_a_minute)),
        },
    );
    policy.resume(
        t0,
        wall,
        "line2",
        Marked {
            mark: Mark::Drained,
            until: Some(unix(wall - Duration::from_secs(5))),
        },
    );
    let mut sim = Sim::with(policy, &["line1"]);
    assert_eq!(
        sim.group,
        ["line2"],
        "line 2's drain had ended while the agent was away"
    );
    sim.secs(58);
    assert_eq!(sim.group, ["line2"]);
    sim.secs(3);
    assert_eq!(sim.group, ["line1"]);
}
