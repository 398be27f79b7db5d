use super::*;
use crate::metrics::Count;
use crate::supervisor::counts::count_transitions;

#[test]
fn a_path_that_fails_again_while_out_of_service_counts_as_leaving_it_again() {
    let cfg = crate::config::tests::one_line_site("eth-up", "");
    let mut st = AgentState::new(
        cfg,
        std::path::Path::new("t.toml"),
        crate::state::Now::read(),
    );
    let view = |admitted: bool, flaps: u64| Verdict {
        policy: crate::policy::PathPolicy {
            admitted,
            hold_down_left: None,
            penalty: 0.0,
            flaps,
            suppressed_for: None,
            degraded: false,
            operator: "none",
            operator_left: None,
        },
        why: String::new(),
    };
    let pass = |st: &mut AgentState, v: Verdict| {
        let views = BTreeMap::from([("l1".to_owned(), v)]);
        let (_, counts) = count_transitions(st, &views);
        st.counts.extend(counts);
        st.policy = views;
    };
    pass(&mut st, view(true, 0)); // the first verdict: no transition
    pass(&mut st, view(false, 1)); // fails
    pass(&mut st, view(false, 1)); // still out, nothing new
    pass(&mut st, view(false, 2)); // back for a moment in hold-down, fails again
    pass(&mut st, view(false, 3));
    pass(&mut st, view(true, 3)); // returns
    let count = |up: bool| {
        st.counts
            .iter()
            .filter(
                |c| matches!(c, Count::Transition { path, up: u, .. } if path == "l1" && *u == up),
            )
            .count()
    };
    assert_eq!(count(false), 3);
    assert_eq!(count(true), 1);
}

#[test]
fn transitions_are_named_for_the_operator() {
    let lines = Choice::of(Mode::Lines, &["l1"]);
    let tunnels = Choice::of(Mode::Failover, &["t1", "t2"]);
    assert_eq!(transition(None, &lines), Some(EventKind::PathChange));
    assert_eq!(transition(None, &Choice::of(Mode::AllDown, &[])), None);
    assert_eq!(transition(Some(&lines), &lines), None);
    assert_eq!(
        transition(Some(&lines), &tunnels),
        Some(EventKind::Failover)
    );
    assert_eq!(
        transition(Some(&tunnels), &Choice::of(Mode::Failover, &["t2"])),
        Some(EventKind::Failover)
    );
    assert_eq!(transition(Some(&tunnels), &lines), Some(EventKind::Return));
    assert_eq!(
        transition(Some(&lines), &Choice::of(Mode::AllDown, &[])),
        Some(EventKind::AllPathsDown)
    );
    assert_eq!(
        transition(Some(&lines), &Choice::of(Mode::Lines, &["l2"])),
        Some(EventKind::PathChange)
    );
}

/// A crashed agent's tunnels lose their carrier with it and the kernel may flush the
/// failover group before the next run reads it: the lines the previous run had taken out
/// still wait for their hold-down, while a fresh start holds nothing.
#[test]
fn lines_out_of_service_before_a_crash_stay_out_when_the_kernel_flushed_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let more = format!(
        r#"
        [[line]]
        name = "l2"
        site = "b"
        interface = "eth-up2"
        neighbors = ["192.0.2.6"]
        peer_asn = 65102
        [control]
        state_file = "{}/operator.json"
        "#,
        dir.path().display()
    );
    let cfg = crate::config::tests::one_line_site("eth-up", &more);
    let standing = |in_service: bool| crate::operator_state::Standing {
        in_service,
        held: !in_service,
        penalty: 0.0,
        penalty_at: 0.0,
        suppressed: false,
    };
    let up = |name: &str, priority: u32| Observation {
        name: name.into(),
        kind: CandidateKind::Line { priority },
        up: true,
        unproven: false,
        draining: None,
        why: String::new(),
        loss: None,
        relearned: true,
    };
    for (standings, l1_held) in [
        (
            [("l1", false), ("l2", true)]
                .into_iter()
                .map(|(n, s)| (n.to_owned(), standing(s)))
                .collect(),
            true,
        ),
        (crate::operator_state::Standings::new(), false),
    ] {
        let mut st = AgentState::new(
            cfg.clone(),
            std::path::Path::new("t.toml"),
            crate::state::Now::read(),
        );
        st.resumed_standings = standings;
        let mut d = Decider::new(&mut st);
        let now = Instant::now();
        d.adopt(&st, &crate::routing::Adopted::default(), now);
        d.policy.evaluate(now, &[up("l1", 10), up("l2", 20)]);
        let admitted = d.policy.status("l1", now).unwrap().admitted;
        assert_eq!(admitted, !l1_held, "standings: {:?}", st.resumed_standings);
        assert!(d.policy.status("l2", now).unwrap().admitted);
    }
}
