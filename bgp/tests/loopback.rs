//! Two crosslink BGP speakers on loopback: session, routes both ways, export changes,
//! administrative stop. (Interop with BIRD runs in the lab tests.) Tests that wait for
//! something not to happen run in virtual time (`start_paused`): tokio moves the clock
//! only when every task is idle, the loopback's I/O included, so the wait is exact and
//! costs nothing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bgp::driver::{self, Event, Listener, NeighborConfig, Peer, SocketOptions};
use bgp::fsm::{SessionConfig, State};
use bgp::rib::{ExportPolicy, ImportBound, ImportPolicy, MaxPrefixAction};
use ipnet::IpNet;
use tokio::sync::mpsc;

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// An aggregate admitting any prefix inside it.
fn bound(s: &str) -> ImportBound {
    ImportBound {
        net: net(s),
        max_len: 32,
    }
}

fn neighbor(
    local: IpAddr,
    peer: IpAddr,
    port: u16,
    local_asn: u32,
    peer_asn: u32,
    export: &[&str],
    passive: bool,
) -> NeighborConfig {
    let id = match local {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!(),
    };
    let mut session = SessionConfig::new(local_asn, id, peer_asn);
    session.passive = passive;
    session.hold_time = 3;
    session.families = vec![bgp::wire::Family::Ipv4];
    NeighborConfig {
        peer,
        port,
        socket: SocketOptions {
            local: Some(local),
            ..SocketOptions::default()
        },
        session,
        import: ImportPolicy {
            bounds: vec![bound("198.18.0.0/15")],
            max_prefixes: 100,
            action: MaxPrefixAction::Teardown,
            local_asn,
            peer_asn,
        },
        export: ExportPolicy {
            local_asn,
            prefixes: export.iter().map(|p| net(p)).collect(),
            med: None,
            prepend: 0,
            communities: vec![],
            large_communities: vec![],
            withdrawn: false,
        },
    }
}

/// The listener's peers: A alone, handed to B's session.
fn only_a(b: &driver::Handle) -> HashMap<IpAddr, Peer> {
    HashMap::from([(
        A,
        Peer {
            handle: b.clone(),
            md5_key: None,
            gtsm: false,
        },
    )])
}

async fn next_event(
    rx: &mut mpsc::Receiver<Event>,
    what: &str,
    mut want: impl FnMut(&Event) -> bool,
) -> Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("channel open");
        if want(&ev) {
            return ev;
        }
    }
}

#[tokio::test]
async fn two_speakers_exchange_routes() {
    let (btx, mut brx) = mpsc::channel(64);
    let b_cfg = neighbor(B, A, 0, 65002, 65001, &["198.18.2.0/24"], true);
    let b = driver::spawn(b_cfg, btx);
    let peers = only_a(&b);
    let listener = Listener::bind(&[SocketAddr::new(B, 0)], peers).unwrap();
    let port = listener.local_addrs()[0].port();

    let (atx, mut arx) = mpsc::channel(64);
    let a = driver::spawn(
        neighbor(
            A,
            B,
            port,
            65001,
            65002,
            &["198.18.1.0/24", "10.9.0.0/16"],
            false,
        ),
        atx,
    );

    next_event(&mut arx, "A up", |e| matches!(e, Event::Up { .. })).await;
    let Event::Routes { delta, .. } = next_event(&mut brx, "routes at B", |e| {
        matches!(e, Event::Routes { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(delta.added, vec![(net("198.18.1.0/24"), A)]);
    assert_eq!(
        delta.rejected.len(),
        1,
        "10.9.0.0/16 is outside B's aggregates"
    );
    let Event::Routes { delta, .. } = next_event(&mut arx, "routes at A", |e| {
        matches!(e, Event::Routes { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(delta.added, vec![(net("198.18.2.0/24"), B)]);

    let st = a.status().await.unwrap();
    assert_eq!(st.state, State::Established);
    assert_eq!((st.prefixes_received, st.prefixes_advertised), (1, 2));

    // Draining B: its announcement is withdrawn at A.
    let mut drained = neighbor(B, A, 0, 65002, 65001, &["198.18.2.0/24"], true).export;
    drained.withdrawn = true;
    b.set_export(drained).await;
    let Event::Routes { delta, .. } = next_event(&mut arx, "withdrawal at A", |e| {
        matches!(e, Event::Routes { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(delta.withdrawn, vec![net("198.18.2.0/24")]);

    a.stop().await;
    let Event::Down { reason, .. } =
        next_event(&mut brx, "B down", |e| matches!(e, Event::Down { .. })).await
    else {
        unreachable!()
    };
    assert!(reason.contains("Administrative Shutdown"), "{reason}");
    let Event::Routes { delta, .. } = next_event(&mut brx, "B drops A's routes", |e| {
        matches!(e, Event::Routes { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(delta.withdrawn, vec![net("198.18.1.0/24")]);
}

#[tokio::test(start_paused = true)]
async fn wrong_peer_asn_never_establishes() {
    let (btx, mut brx) = mpsc::channel(64);
    // B expects AS 65009; A says 65001.
    let b = driver::spawn(neighbor(B, A, 0, 65002, 65009, &[], true), btx);
    let listener = Listener::bind(&[SocketAddr::new(B, 0)], only_a(&b)).unwrap();
    let (atx, mut arx) = mpsc::channel(64);
    let a = driver::spawn(
        neighbor(
            A,
            B,
            listener.local_addrs()[0].port(),
            65001,
            65002,
            &[],
            false,
        ),
        atx,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = a.status().await.unwrap();
    assert_ne!(st.state, State::Established);
    assert!(
        st.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("Bad Peer AS"),
        "{st:?}"
    );
    assert!(b
        .status()
        .await
        .unwrap()
        .last_error
        .unwrap()
        .contains("65001"));
    assert!(
        arx.try_recv().is_err() && brx.try_recv().is_err(),
        "no Up event either side"
    );
}

#[tokio::test(start_paused = true)]
async fn a_neighbour_added_to_a_running_listener_is_accepted() {
    let listener = Listener::bind(&[SocketAddr::new(B, 0)], HashMap::new()).unwrap();
    let port = listener.local_addrs()[0].port();
    let mut a_cfg = neighbor(A, B, port, 65001, 65002, &[], false);
    a_cfg.session.connect_retry = Duration::from_millis(200);
    a_cfg.session.idle_hold_base = Duration::from_millis(100);
    a_cfg.session.idle_hold_max = Duration::from_millis(200);
    let (atx, mut arx) = mpsc::channel(64);
    let a = driver::spawn(a_cfg, atx);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_ne!(
        a.status().await.unwrap().state,
        State::Established,
        "an unknown address is refused"
    );

    let (btx, mut brx) = mpsc::channel(64);
    let b = driver::spawn(neighbor(B, A, 0, 65002, 65001, &[], true), btx);
    listener.set_peers(only_a(&b)).unwrap();
    next_event(&mut arx, "A up once B is known", |e| {
        matches!(e, Event::Up { .. })
    })
    .await;
    next_event(&mut brx, "B up", |e| matches!(e, Event::Up { .. })).await;
}

#[tokio::test]
async fn a_wider_import_filter_learns_what_was_refused_without_a_reset() {
    let (btx, mut brx) = mpsc::channel(64);
    let b_cfg = neighbor(B, A, 0, 65002, 65001, &[], true);
    let mut import = b_cfg.import.clone();
    let b = driver::spawn(b_cfg, btx);
    let listener = Listener::bind(&[SocketAddr::new(B, 0)], only_a(&b)).unwrap();
    let port = listener.local_addrs()[0].port();
    let (atx, _arx) = mpsc::channel(64);
    let _a = driver::spawn(
        neighbor(
            A,
            B,
            port,
            65001,
            65002,
            &["198.18.1.0/24", "10.9.0.0/16"],
            false,
        ),
        atx,
    );
    let Event::Routes { delta, .. } = next_event(&mut brx, "routes at B", |e| {
        matches!(e, Event::Routes { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(delta.added, vec![(net("198.18.1.0/24"), A)]);
    assert_eq!(delta.rejected.len(), 1);

    // Wider: 10.9.0.0/16 arrives on the route refresh.
    import.bounds = vec![bound("198.18.0.0/15"), bound("10.0.0.0/8")];
    assert!(
        b.set_import(import.clone()).await,
        "both speakers support route refresh"
    );
    let Event::Routes { delta, .. } = next_event(
        &mut brx,
        "the refused route",
        |e| matches!(e, Event::Routes { delta, .. } if !delta.added.is_empty()),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!(delta.added, vec![(net("10.9.0.0/16"), A)]);

    // Narrower: 198.18.1.0/24 is withdrawn at once.
    import.bounds = vec![bound("10.0.0.0/8")];
    assert!(b.set_import(import).await);
    let Event::Routes { delta, .. } = next_event(
        &mut brx,
        "the withdrawal",
        |e| matches!(e, Event::Routes { delta, .. } if !delta.withdrawn.is_empty()),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!(delta.withdrawn, vec![net("198.18.1.0/24")]);
    let st = b.status().await.unwrap();
    assert_eq!(st.state, State::Established);
    assert_eq!(st.prefixes_received, 1);
    while let Ok(ev) = brx.try_recv() {
        assert!(!matches!(ev, Event::Down { .. }), "no reset: {ev:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_closed_session_ends_without_a_notification_so_the_peer_keeps_its_routes() {
    let gr = |mut n: NeighborConfig| {
        n.session.restart_time = Some(120);
        n
    };
    let (btx, mut brx) = mpsc::channel(64);
    let b = driver::spawn(gr(neighbor(B, A, 0, 65002, 65001, &[], true)), btx);
    let listener = Listener::bind(&[SocketAddr::new(B, 0)], only_a(&b)).unwrap();
    let port = listener.local_addrs()[0].port();
    let (atx, _arx) = mpsc::channel(64);
    let a = driver::spawn(
        gr(neighbor(
            A,
            B,
            port,
            65001,
            65002,
            &["198.18.1.0/24"],
            false,
        )),
        atx,
    );
    next_event(
        &mut brx,
        "A's route at B",
        |e| matches!(e, Event::Routes { delta, .. } if !delta.added.is_empty()),
    )
    .await;
    a.close().await;
    let Event::Down {
        reason, graceful, ..
    } = next_event(&mut brx, "B down", |e| matches!(e, Event::Down { .. })).await
    else {
        unreachable!()
    };
    assert!(!reason.contains("NOTIFICATION"), "{reason}");
    assert_eq!(
        graceful,
        Some(Duration::from_secs(120)),
        "A restarts gracefully"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(ev) = brx.try_recv() {
        assert!(
            !matches!(ev, Event::Routes { ref delta, .. } if !delta.withdrawn.is_empty()),
            "routes kept as stale: {ev:?}"
        );
    }
    assert_eq!(b.status().await.unwrap().prefixes_received, 1);
}
