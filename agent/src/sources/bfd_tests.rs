use super::*;

fn state() -> AgentState {
    let cfg = crate::config::tests::one_line_site("line1", "");
    AgentState::new(
        cfg,
        std::path::Path::new("t.toml"),
        crate::state::Now::read(),
    )
}

fn poll(s: State) -> SessionStatus {
    SessionStatus {
        id: 7,
        name: "l1".into(),
        peer: "192.0.2.2".parse().unwrap(),
        multihop: false,
        state: s,
        remote_state: None,
        local_diag: Diag::None,
        remote_diag: None,
        detection_time: Duration::from_millis(300),
        tx_interval: Duration::from_millis(100),
        rtt: None,
        loss: None,
        up_for: None,
        tx_packets: 10,
        rx_packets: 10,
        discarded: 0,
        tx_gap_p99: None,
        tx_gap_max: None,
        stall_graces: 0,
    }
}

/// A poll taken just before a transition and applied after it must not undo it: the
/// sessions' events say the state once there has been one.
#[test]
fn a_poll_older_than_an_event_does_not_undo_it() {
    let mut st = state();
    let key: Key = ("l1".into(), "192.0.2.2".parse().unwrap(), false);
    let spec = SessionSpec::single_hop("l1", key.1, "line1", Duration::from_millis(100), 3);
    st.bfd.insert(key.clone(), view(&spec));
    st.bfd.get_mut(&key).unwrap().id = Some(7);
    polled(&mut st, vec![poll(State::Up)]);
    assert_eq!(
        st.bfd[&key].state,
        Some(State::Up),
        "a first state from a poll"
    );
    assert!(st.take_touched());
    let down = Event {
        id: 7,
        name: "l1".into(),
        peer: key.1,
        from: State::Up,
        to: State::Down,
        diag: Diag::ControlDetectionTimeExpired,
        remote_diag: None,
        remote_state: Some(State::Up),
        last_up_rx: None,
        far_end: FarEnd::Alive,
    };
    let failed = apply_event(&mut st, down);
    assert_eq!(failed, Some((key.1, None)), "BGP with the router follows");
    polled(&mut st, vec![poll(State::Up)]);
    assert_eq!(st.bfd[&key].state, Some(State::Down));
    assert!(st.bfd[&key].detail.is_some(), "the counters are taken");
}

/// A reload replaced the session: a reading of the old one that came in before the view
/// knew its new session is replaced by the first poll of the new one, even with no event.
#[test]
fn the_old_sessions_last_word_does_not_stick_to_the_new_one() {
    let mut st = state();
    let key: Key = ("l1".into(), "192.0.2.2".parse().unwrap(), false);
    let spec = SessionSpec::single_hop("l1", key.1, "line1", Duration::from_millis(100), 3);
    st.bfd.insert(key.clone(), view(&spec));
    // The old session (7) was Up; its poll lands on the fresh view (no id yet).
    polled(&mut st, vec![poll(State::Up)]);
    assert_eq!(st.bfd[&key].state, Some(State::Up));
    st.bfd.get_mut(&key).unwrap().id = Some(8);
    let mut new = poll(State::Down);
    new.id = 8;
    polled(&mut st, vec![new]);
    assert_eq!(
        st.bfd[&key].state,
        Some(State::Down),
        "the new session's state"
    );
}
