use super::health::{bfd_signal, EOR_WAIT, ROUTES_SETTLE};
use super::*;
use crate::control::status::{path as path_status, status};
use crate::core::signals::{Health, SignalKind};
use bgp::wire::Family;
use ipnet::IpNet;

fn state_with_sysfs(dir: &Path) -> AgentState {
    state_from(LINES, dir)
}

fn state_from(src: &str, dir: &Path) -> AgentState {
    let cfg = crate::config::parse(src, Path::new("t.toml"), dir).unwrap();
    let mut st = AgentState::new(cfg, Path::new("t.toml"), Now::read());
    st.links = Some(carriers_in(dir));
    st
}

/// A test's interfaces, written as sysfs has them (a directory each with `carrier`),
/// as the link table would hold them.
fn carriers_in(dir: &Path) -> crate::sources::links::LinkTable {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .zip(1..)
        .filter_map(|(e, index)| {
            let carrier = std::fs::read_to_string(e.path().join("carrier")).ok()?;
            let up = carrier.trim() == "1";
            let link = crate::sources::links::Link { index, up };
            Some((e.file_name().into_string().ok()?, link))
        })
        .collect()
}

const LINES: &str = r#"
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
        [[line]]
        name = "l2"
        site = "b"
        interface = "eth-nocarrier"
        neighbors = ["192.0.2.6"]
        peer_asn = 65102
        [[line]]
        name = "l3"
        site = "b"
        interface = "eth-gone"
        neighbors = ["192.0.2.10"]
        peer_asn = 65102
    "#;

/// The test config's state with `l1`'s interface up (keep the directory alive).
fn line_up_state() -> (tempfile::TempDir, AgentState) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("eth-up")).unwrap();
    std::fs::write(dir.path().join("eth-up/carrier"), "1\n").unwrap();
    let st = state_with_sysfs(dir.path());
    (dir, st)
}

#[test]
fn status_reports_only_measured_health() {
    let dir = tempfile::tempdir().unwrap();
    for (iface, carrier) in [("eth-up", "1\n"), ("eth-nocarrier", "0\n")] {
        std::fs::create_dir(dir.path().join(iface)).unwrap();
        std::fs::write(dir.path().join(iface).join("carrier"), carrier).unwrap();
    }
    let st = state_with_sysfs(dir.path());
    let status = status(&st);
    let paths = &status.sites[0].paths;
    assert_eq!(status.sites[0].active_path, None);
    assert_eq!(
        paths[0].state,
        Health::Unknown,
        "carrier up proves nothing about BGP/BFD"
    );
    assert_eq!(paths[0].signals[0].state, Health::Up);
    assert!(paths[0].signals[1..]
        .iter()
        .all(|s| s.state == Health::Unknown));
    assert_eq!(paths[1].state, Health::Down);
    assert_eq!(paths[2].signals[0].state, Health::Absent);
    assert_eq!(paths[2].state, Health::Down);
}

#[test]
fn status_names_the_active_and_the_fallback_paths() {
    let (_dir, mut st) = line_up_state();
    let site = st.config.sites[0].name.get_ref().clone();
    let choice = |members: &[&str]| crate::select::Choice::of(crate::select::Mode::Lines, members);
    st.active.insert(site.clone(), choice(&["line1"]));
    st.fallback
        .insert(site.clone(), choice(&["inet1", "inet2"]));
    let s = &status(&st).sites[0];
    assert_eq!(s.active_path.as_deref(), Some("line1"));
    assert_eq!(s.fallback_path.as_deref(), Some("inet1, inet2"));
    st.fallback.insert(site, choice(&[]));
    assert_eq!(
        status(&st).sites[0].fallback_path,
        None,
        "nothing else healthy"
    );
}

#[test]
fn a_bfd_session_not_up_yet_after_the_start_is_unknown_not_down() {
    use probes::wire::{Diag, State};
    let view = |state: Option<State>, diag: Option<Diag>| BfdView {
        line: "t1".into(),
        peer: IpAddr::from([169, 254, 1, 1]),
        end_to_end: true,
        state,
        local_diag: diag,
        remote_diag: None,
        detail: None,
        far_end_quiet: None,
        heard: true,
        waiting_for_bgp: false,
        last_up_at: None,
        changed_at: None,
        id: None,
        told_unanswered: false,
        state_of: None,
    };
    let health = |v: &[BfdView]| -> Health {
        bfd_signal(
            SignalKind::E2eBfd,
            v.iter().collect::<Vec<_>>().iter(),
            true,
            Instant::now(),
        )
        .health
    };
    let fresh = view(Some(State::Down), Some(Diag::None));
    let up = view(Some(State::Up), Some(Diag::None));
    let expired = view(Some(State::Down), Some(Diag::ControlDetectionTimeExpired));
    assert_eq!(health(&[view(None, None)]), Health::Unknown);
    assert_eq!(health(std::slice::from_ref(&fresh)), Health::Unknown);
    assert_eq!(health(&[up.clone(), fresh.clone()]), Health::Unknown);
    assert_eq!(health(std::slice::from_ref(&up)), Health::Up);
    assert_eq!(health(&[up, fresh, expired.clone()]), Health::Down);
    assert_eq!(health(&[expired]), Health::Down);
    let old = |v: &[BfdView]| -> Health {
        bfd_signal(
            SignalKind::Bfd,
            v.iter().collect::<Vec<_>>().iter(),
            false,
            Instant::now(),
        )
        .health
    };
    assert_eq!(
        old(&[view(Some(State::Down), Some(Diag::None))]),
        Health::Down,
        "after the start-up grace a session that never came up is down"
    );
    let mut quiet = view(Some(State::Down), Some(Diag::ControlDetectionTimeExpired));
    quiet.far_end_quiet = Some((probes::driver::FarEnd::Silent, Instant::now()));
    assert_eq!(
        old(std::slice::from_ref(&quiet)),
        Health::Up,
        "the far end went quiet everywhere: the path is held"
    );
    if let Some(long_ago) = Instant::now().checked_sub(FAR_END_GRACE) {
        quiet.far_end_quiet = Some((probes::driver::FarEnd::Silent, long_ago));
        assert_eq!(old(&[quiet]), Health::Down, "not beyond the grace");
    }
}

#[test]
fn the_far_ends_silence_is_not_counted_as_the_paths_loss() {
    use probes::driver::{FarEnd, SessionStatus};
    use probes::wire::{Diag, State};
    let view = |loss: f64, quiet: Option<FarEnd>| BfdView {
        line: "t1".into(),
        peer: IpAddr::from([169, 254, 1, 1]),
        end_to_end: true,
        state: Some(State::Up),
        local_diag: None,
        remote_diag: None,
        detail: Some(SessionStatus {
            id: 0,
            name: "t1".into(),
            peer: IpAddr::from([169, 254, 1, 1]),
            multihop: false,
            state: State::Up,
            remote_state: Some(State::Up),
            local_diag: Diag::None,
            remote_diag: None,
            detection_time: Duration::from_millis(300),
            tx_interval: Duration::from_millis(100),
            rtt: None,
            loss: Some(loss),
            up_for: None,
            tx_packets: 0,
            rx_packets: 0,
            discarded: 0,
            tx_gap_p99: None,
            tx_gap_max: None,
            stall_graces: 0,
        }),
        far_end_quiet: quiet.map(|f| (f, Instant::now())),
        heard: true,
        waiting_for_bgp: false,
        last_up_at: None,
        changed_at: None,
        id: None,
        told_unanswered: false,
        state_of: None,
    };
    let lossy = view(0.29, Some(FarEnd::Silent));
    let clean = view(0.01, None);
    assert_eq!(path_loss([&lossy, &clean], Instant::now()), Some(0.01));
    assert_eq!(path_loss([&lossy], Instant::now()), None);
    let mut restarted = view(0.4, Some(FarEnd::Restarted));
    assert_eq!(
        path_loss([&restarted, &view(0.02, None)], Instant::now()),
        Some(0.02)
    );
    if let Some(long_ago) = Instant::now().checked_sub(FAR_END_GRACE) {
        restarted.far_end_quiet = Some((FarEnd::Restarted, long_ago));
        assert_eq!(
            path_loss([&restarted], Instant::now()),
            Some(0.4),
            "beyond the grace it counts"
        );
    }
}

#[test]
fn a_router_restarting_gracefully_keeps_its_line_up_until_its_restart_time() {
    let (_dir, mut st) = line_up_state();
    let peer = IpAddr::from([192, 0, 2, 2]);
    let mut n = NeighborState::new("l1", peer);
    n.reported = true;
    n.state = bgp::fsm::State::Established;
    st.bgp.insert(peer, n);
    let bgp_of = |st: &AgentState| {
        let p = st.config().find_path("l1").unwrap();
        path_status(st, p).signals[2].clone()
    };
    assert_eq!(bgp_of(&st).state, Health::Up);
    crate::sources::bgp::apply(
        &mut st,
        bgp::driver::Event::Down {
            peer,
            reason: "connection closed by the peer".into(),
            graceful: Some(Duration::from_secs(120)),
        },
    );
    assert_eq!(bgp_of(&st).state, Health::Up, "restarting gracefully");
    assert!(st.events().any(|e| e.kind == EventKind::BgpDown
        && e.message
            .contains("restarts gracefully, its routes are kept for 120 s")));
    // Its restart time is over.
    let now = st.now().mono;
    st.bgp.get_mut(&peer).unwrap().restarting_until = Some(now);
    assert_eq!(bgp_of(&st).state, Health::Down);
    // A reset without graceful restart is down at once.
    crate::sources::bgp::apply(
        &mut st,
        bgp::driver::Event::Down {
            peer,
            reason: "NOTIFICATION received: Cease".into(),
            graceful: None,
        },
    );
    assert_eq!(bgp_of(&st).state, Health::Down);
}

#[test]
fn a_line_whose_router_withdrew_the_site_is_down_while_another_line_announces_it() {
    let (_dir, mut st) = line_up_state();
    let established = |line: &str, peer: [u8; 4], routes: &[&str]| {
        let mut n = NeighborState::new(line, IpAddr::from(peer));
        n.reported = true;
        n.state = bgp::fsm::State::Established;
        for r in routes {
            n.learned.insert(r.parse().unwrap(), IpAddr::from(peer));
        }
        n
    };
    let bgp_of = |st: &AgentState, line: &str| {
        let p = st.config().find_path(line).unwrap();
        path_status(st, p).signals[2].clone()
    };
    // Neither line announces anything (a static set-up): BGP up is all there is.
    st.bgp.insert(
        IpAddr::from([192, 0, 2, 2]),
        established("l1", [192, 0, 2, 2], &[]),
    );
    st.bgp.insert(
        IpAddr::from([192, 0, 2, 6]),
        established("l2", [192, 0, 2, 6], &[]),
    );
    assert_eq!(bgp_of(&st, "l1").state, Health::Up);
    // l2 announces the site, l1 nothing: l1 cannot reach it.
    st.bgp.insert(
        IpAddr::from([192, 0, 2, 6]),
        established("l2", [192, 0, 2, 6], &["198.18.2.0/24"]),
    );
    assert_eq!(bgp_of(&st, "l1").state, Health::Down);
    assert_eq!(bgp_of(&st, "l2").state, Health::Up);
    let p = st.config().find_path("l1").unwrap();
    assert!(path_status(&st, p)
        .reason
        .contains("announces no IPv4 route of site b"));
    // While the far gateway restarts, its routes coming and going at the line
    // routers are its restart, not the line failing.
    let peer = IpAddr::from([198, 18, 2, 1]);
    st.bfd.insert(
        ("l1".into(), peer, true),
        BfdView {
            line: "l1".into(),
            peer,
            end_to_end: true,
            state: Some(probes::wire::State::Up),
            local_diag: None,
            remote_diag: None,
            detail: None,
            far_end_quiet: Some((probes::driver::FarEnd::Restarted, Instant::now())),
            heard: true,
            waiting_for_bgp: false,
            last_up_at: None,
            changed_at: None,
            id: None,
            told_unanswered: false,
            state_of: None,
        },
    );
    assert_eq!(bgp_of(&st, "l1").state, Health::Up);
}

#[test]
fn a_family_withdrawn_on_one_line_and_announced_on_another_takes_the_line_down() {
    let dir = tempfile::tempdir().unwrap();
    for iface in ["eth1", "eth2"] {
        std::fs::create_dir(dir.path().join(iface)).unwrap();
        std::fs::write(dir.path().join(iface).join("carrier"), "1\n").unwrap();
    }
    let src = r#"
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
        interface = "eth1"
        neighbors = ["192.0.2.2", "2001:db8::2"]
        peer_asn = 65101
        [[line]]
        name = "l2"
        site = "b"
        interface = "eth2"
        neighbors = ["192.0.2.6"]
        peer_asn = 65102
    "#;
    let mut st = state_from(src, dir.path());
    let session = |line: &str, peer: &str, routes: &[&str]| {
        let peer: IpAddr = peer.parse().unwrap();
        let mut n = NeighborState::new(line, peer);
        n.reported = true;
        n.state = bgp::fsm::State::Established;
        for r in routes {
            n.learned.insert(r.parse().unwrap(), peer);
        }
        (peer, n)
    };
    let bgp_of = |st: &AgentState, line: &str| {
        let p = st.config().find_path(line).unwrap();
        path_status(st, p).signals[2].clone()
    };
    let sessions = [
        session("l1", "192.0.2.2", &["198.18.2.0/24"]),
        session("l1", "2001:db8::2", &["2001:db8:2::/48"]),
        // l2 carries both families over one IPv4 session (MP-BGP).
        session("l2", "192.0.2.6", &["198.18.2.0/24", "2001:db8:2::/48"]),
    ];
    st.bgp.extend(sessions);
    assert_eq!(bgp_of(&st, "l1").state, Health::Up);
    // lr1 withdraws IPv6 first (its own session); IPv4 is still announced.
    st.bgp.extend([session("l1", "2001:db8::2", &[])]);
    let s = bgp_of(&st, "l1");
    assert_eq!(s.state, Health::Down);
    let p = st.config().find_path("l1").unwrap();
    assert!(path_status(&st, p)
        .reason
        .contains("announces no IPv6 route of site b"));
    // l2 has no IPv6 neighbour, so IPv6 is never routed over it: l1's IPv6 sessions
    // announcing nothing says nothing about l2.
    st.bgp
        .extend([session("l2", "192.0.2.6", &["198.18.2.0/24"])]);
    assert_eq!(bgp_of(&st, "l1").state, Health::Up, "nobody announces IPv6");
    st.bgp.extend([
        session("l1", "2001:db8::2", &["2001:db8:2::/48"]),
        session("l2", "192.0.2.6", &[]),
    ]);
    // l2 withdraws everything while l1 announces both: down for IPv4, its only family.
    assert_eq!(bgp_of(&st, "l2").state, Health::Down);
    let p = st.config().find_path("l2").unwrap();
    assert!(path_status(&st, p)
        .reason
        .contains("announces no IPv4 route of site b"));
    assert_eq!(bgp_of(&st, "l1").state, Health::Up);
}

#[test]
fn event_log_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = state_with_sysfs(dir.path());
    for i in 0..EVENT_LOG_CAPACITY + 5 {
        st.record(EventKind::Reload, None, format!("event {i}"));
    }
    let ev: Vec<&crate::core::events::Event> = st.events().collect();
    assert_eq!(ev.len(), EVENT_LOG_CAPACITY);
    assert_eq!(ev[0].message, "event 5");
}

#[test]
fn a_line_whose_router_tags_the_site_graceful_shutdown_is_drained_by_the_far_side() {
    let (_dir, mut st) = line_up_state();
    let neighbor = |line: &str, peer: [u8; 4], routes: &[&str], tagged: bool| {
        let mut n = NeighborState::new(line, IpAddr::from(peer));
        n.reported = true;
        n.state = bgp::fsm::State::Established;
        for r in routes {
            let p: IpNet = r.parse().unwrap();
            n.learned.insert(p, IpAddr::from(peer));
            if tagged {
                n.graceful_shutdown.insert(p);
            }
        }
        n
    };
    let draining = |st: &AgentState, name: &str| {
        let line = st
            .config()
            .lines
            .iter()
            .find(|l| l.name.get_ref() == name)
            .unwrap()
            .clone();
        st.far_side_draining(&line)
    };
    let (p1, p2) = (IpAddr::from([192, 0, 2, 2]), IpAddr::from([192, 0, 2, 6]));
    st.bgp
        .insert(p1, neighbor("l1", [192, 0, 2, 2], &["198.18.2.0/24"], true));
    // No other line announces the site: l1 is all there is, drained or not.
    st.bgp
        .insert(p2, neighbor("l2", [192, 0, 2, 6], &[], false));
    assert_eq!(draining(&st, "l1"), None);
    st.bgp.insert(
        p2,
        neighbor("l2", [192, 0, 2, 6], &["198.18.2.0/24"], false),
    );
    assert!(draining(&st, "l1").unwrap().contains("GRACEFUL_SHUTDOWN"));
    assert_eq!(draining(&st, "l2"), None);
    // Not a failure: no signal of l1 goes down for it.
    let p = st.config().find_path("l1").unwrap();
    assert_ne!(path_status(&st, p).state, Health::Down);
    // Both drained: neither is left for the other.
    st.bgp
        .insert(p2, neighbor("l2", [192, 0, 2, 6], &["198.18.2.0/24"], true));
    assert_eq!(draining(&st, "l1"), None);
}

#[test]
fn after_the_agents_own_stall_timed_out_signals_hold_but_a_lost_carrier_does_not() {
    use probes::wire::{Diag, State};
    let (_dir, mut st) = line_up_state();
    let peer = IpAddr::from([192, 0, 2, 2]);
    st.bfd.insert(
        ("l1".into(), peer, false),
        BfdView {
            line: "l1".into(),
            peer,
            end_to_end: false,
            state: Some(State::Down),
            local_diag: Some(Diag::ControlDetectionTimeExpired),
            remote_diag: None,
            detail: None,
            far_end_quiet: None,
            heard: true,
            waiting_for_bgp: false,
            last_up_at: None,
            changed_at: None,
            id: None,
            told_unanswered: false,
            state_of: None,
        },
    );
    let status = |st: &AgentState| path_status(st, st.config().find_path("l1").unwrap());
    assert_eq!(status(&st).state, Health::Down);
    // The agent was stopped for 5 s and has just resumed.
    let since = Instant::now() - Duration::from_secs(5);
    st.stall = Some(crate::stall::Stall {
        since,
        length: Duration::from_secs(5),
    });
    let s = status(&st);
    assert_eq!(s.state, Health::Up, "{}", s.reason);
    assert!(s.reason.contains("did not run for 5.0 s"), "{}", s.reason);
    assert!(s.reason.contains("BFD with 192.0.2.2"), "{}", s.reason);
    // A lost carrier is the link's, stall or not.
    let links = st.links.as_mut().unwrap();
    links.get_mut("eth-up").unwrap().up = false;
    assert_eq!(status(&st).state, Health::Down);
    st.links.as_mut().unwrap().get_mut("eth-up").unwrap().up = true;
    // Past the grace, a signal still down is the path's.
    if let Some(long_ago) = Instant::now().checked_sub(crate::stall::GRACE * 2) {
        st.stall = Some(crate::stall::Stall {
            since: long_ago,
            length: Duration::from_secs(5),
        });
        assert_eq!(status(&st).state, Health::Down);
    }
}

#[test]
fn a_session_just_established_has_a_moment_to_send_its_routes() {
    let (_dir, mut st) = line_up_state();
    let neighbor = |line: &str, peer: [u8; 4], routes: &[&str], for_: Duration| {
        let mut n = NeighborState::new(line, IpAddr::from(peer));
        n.reported = true;
        n.state = bgp::fsm::State::Established;
        n.established_at = Instant::now().checked_sub(for_);
        for r in routes {
            n.learned.insert(r.parse().unwrap(), IpAddr::from(peer));
        }
        n
    };
    let bgp_of = |st: &AgentState| {
        let p = st.config().find_path("l1").unwrap();
        path_status(st, p).signals[2].state
    };
    let long = Duration::from_secs(60);
    st.bgp.insert(
        IpAddr::from([192, 0, 2, 6]),
        neighbor("l2", [192, 0, 2, 6], &["198.18.2.0/24"], long),
    );
    // lr1 came back a moment ago and has not sent the site yet: not a withdrawal.
    st.bgp.insert(
        IpAddr::from([192, 0, 2, 2]),
        neighbor("l1", [192, 0, 2, 2], &[], Duration::ZERO),
    );
    assert_eq!(bgp_of(&st), Health::Up);
    // Down and restarting gracefully after our own restart: nothing learned from it in
    // this run, which says nothing of its table.
    let mut restarting = neighbor("l1", [192, 0, 2, 2], &[], long);
    restarting.state = bgp::fsm::State::Connect;
    restarting.established_at = None;
    restarting.restarting_until = Some(Instant::now() + long);
    st.bgp.insert(IpAddr::from([192, 0, 2, 2]), restarting);
    assert_eq!(bgp_of(&st), Health::Up);
    // Still nothing a while after it is up: it has none to send.
    st.bgp.insert(
        IpAddr::from([192, 0, 2, 2]),
        neighbor("l1", [192, 0, 2, 2], &[], ROUTES_SETTLE * 2),
    );
    assert_eq!(bgp_of(&st), Health::Down);
    // A router that sends End-of-RIB is waited for, past the settle time...
    let mut marks = neighbor("l1", [192, 0, 2, 2], &[], ROUTES_SETTLE * 2);
    marks.sends_end_of_rib = true;
    st.bgp.insert(IpAddr::from([192, 0, 2, 2]), marks.clone());
    assert_eq!(bgp_of(&st), Health::Up);
    // ... and its table, once complete without the site, is a withdrawal at once.
    marks.synced.insert(Family::Ipv4);
    st.bgp.insert(IpAddr::from([192, 0, 2, 2]), marks.clone());
    assert_eq!(bgp_of(&st), Health::Down);
    // One that never sends the marker is judged after EOR_WAIT.
    marks.synced.clear();
    marks.established_at = Instant::now().checked_sub(EOR_WAIT * 2);
    st.bgp.insert(IpAddr::from([192, 0, 2, 2]), marks);
    assert_eq!(bgp_of(&st), Health::Down);
}
