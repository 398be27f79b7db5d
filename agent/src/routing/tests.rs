use super::*;

#[test]
fn a_path_that_fails_again_while_out_of_service_counts_as_leaving_it_again() {
    let cfg = crate::config::parse(
        r#"
        [gateway]
        name = "gw"
        asn = 65001
        router_id = "192.0.2.1"
        [[site]]
        name = "b"
        prefixes = ["198.18.2.0/24"]
        [[line]]
        name = "l1"
        site = "b"
        interface = "eth-up"
        neighbors = ["192.0.2.2"]
        peer_asn = 65101
        "#,
        std::path::Path::new("t.toml"),
        std::path::Path::new("/nonexistent"),
    )
    .unwrap();
    let mut st = AgentState::new(cfg, std::path::Path::new("t.toml"));
    let view = |admitted: bool, flaps: u64| PolicyStatus {
        admitted,
        reason: String::new(),
        hold_down_seconds: None,
        penalty: 0.0,
        flaps,
        suppressed_seconds: None,
        degraded: false,
        operator: "none".into(),
    };
    let pass = |st: &mut AgentState, v: PolicyStatus| {
        let views = BTreeMap::from([("l1".to_owned(), v)]);
        count_transitions(st, &views);
        st.policy = views;
    };
    pass(&mut st, view(true, 0)); // the first verdict: no transition
    pass(&mut st, view(false, 1)); // fails
    pass(&mut st, view(false, 1)); // still out, nothing new
    pass(&mut st, view(false, 2)); // back for a moment in hold-down, fails again
    pass(&mut st, view(false, 3));
    pass(&mut st, view(true, 3)); // returns
    assert_eq!(st.metrics.transitions_of("l1", "down"), 3);
    assert_eq!(st.metrics.transitions_of("l1", "up"), 1);
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
