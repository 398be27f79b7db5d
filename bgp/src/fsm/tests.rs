//! The FSM driven through its events with virtual time.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;
use crate::wire::{Capability, RouteRefresh};

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(198, 19, 11, 1);
const PEER_ID_HIGH: Ipv4Addr = Ipv4Addr::new(198, 19, 11, 2);
const PEER_ID_LOW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const C1: ConnId = ConnId(1);
const C2: ConnId = ConnId(2);

struct Harness {
    s: Session,
    t0: Instant,
    now: Instant,
}

impl Harness {
    fn new(cfg: SessionConfig) -> Harness {
        let t0 = Instant::now();
        Harness {
            s: Session::new(cfg),
            t0,
            now: t0,
        }
    }

    fn default() -> Harness {
        Harness::new(SessionConfig::new(65001, LOCAL_ID, 65101))
    }

    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    fn advance(&mut self, secs: f64) {
        self.now += Duration::from_secs_f64(secs);
    }

    fn run(&mut self, input: Input) -> Vec<Output> {
        self.s.process(input, self.now)
    }

    /// Brings the session to Established over an outbound connection C1.
    fn establish(&mut self, peer: Open) -> Negotiated {
        self.run(Input::Start);
        self.run(Input::TcpConnected(C1));
        self.run(Input::Received(C1, Message::Open(peer)));
        let out = self.run(Input::Received(C1, Message::Keepalive));
        assert_eq!(self.s.state(), State::Established);
        out.into_iter()
            .find_map(|o| match o {
                Output::Established(n) => Some(n),
                _ => None,
            })
            .expect("Established output")
    }
}

fn peer_open(asn: u32, hold: u16, id: Ipv4Addr) -> Open {
    Open::new(asn, hold, id, &[Family::Ipv4, Family::Ipv6])
}

fn with_gr(mut o: Open, secs: u16) -> Open {
    o.capabilities
        .retain(|c| !matches!(c, Capability::GracefulRestart(_)));
    o.capabilities
        .push(Capability::GracefulRestart(GracefulRestart {
            restarting: false,
            notification: false,
            restart_time: secs,
            families: vec![],
        }));
    o
}

fn notifications(out: &[Output]) -> Vec<(ConnId, u8, u8)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(id, Message::Notification(n)) => Some((*id, n.code, n.subcode)),
            _ => None,
        })
        .collect()
}

fn armed(out: &[Output], timer: Timer) -> Option<Instant> {
    out.iter().rev().find_map(|o| match o {
        Output::ArmTimer(t, at) if *t == timer => Some(*at),
        _ => None,
    })
}

fn down(out: &[Output]) -> Option<(String, Option<Duration>)> {
    out.iter().find_map(|o| match o {
        Output::Down {
            reason,
            keep_stale_for,
        } => Some((reason.clone(), *keep_stale_for)),
        _ => None,
    })
}

#[test]
fn handshake_reaches_established_with_negotiated_parameters() {
    let mut h = Harness::default();
    let out = h.run(Input::Start);
    assert_eq!(out[0], Output::Connect);
    assert_eq!(armed(&out, Timer::ConnectRetry), Some(h.at(5.0)));
    assert_eq!(h.s.state(), State::Connect);

    let out = h.run(Input::TcpConnected(C1));
    let Output::Send(C1, Message::Open(ours)) = &out[1] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (ours.asn(), ours.hold_time, ours.bgp_id),
        (65001, 90, LOCAL_ID)
    );
    assert_eq!(
        armed(&out, Timer::Hold(C1)),
        Some(h.at(240.0)),
        "large hold time before OPEN"
    );
    assert_eq!(h.s.state(), State::OpenSent);

    h.advance(0.1);
    let out = h.run(Input::Received(
        C1,
        Message::Open(peer_open(65101, 30, PEER_ID_HIGH)),
    ));
    assert!(out.contains(&Output::Send(C1, Message::Keepalive)));
    assert_eq!(
        armed(&out, Timer::Hold(C1)),
        Some(h.at(30.1)),
        "the smaller hold time wins"
    );
    assert_eq!(armed(&out, Timer::Keepalive(C1)), Some(h.at(10.1)));
    assert_eq!(h.s.state(), State::OpenConfirm);

    let out = h.run(Input::Received(C1, Message::Keepalive));
    let n = out
        .iter()
        .find_map(|o| {
            if let Output::Established(n) = o {
                Some(n.clone())
            } else {
                None
            }
        })
        .unwrap();
    assert_eq!(n.peer_asn, 65101);
    assert_eq!(n.hold_time, 30);
    assert_eq!(n.families, vec![Family::Ipv4, Family::Ipv6]);
    assert!(n.ctx.four_octet_as && n.route_refresh);
    assert!(!n.ctx.ibgp, "65001 and 65101: eBGP");
    assert_eq!(h.s.state(), State::Established);
    assert_eq!(h.s.established_conn(), Some(C1));
}

#[test]
fn keepalives_and_hold_timer() {
    let mut h = Harness::default();
    h.establish(peer_open(65101, 3, PEER_ID_HIGH));
    h.advance(1.0);
    let out = h.run(Input::TimerExpired(Timer::Keepalive(C1)));
    assert_eq!(out[0], Output::Send(C1, Message::Keepalive));
    assert_eq!(armed(&out, Timer::Keepalive(C1)), Some(h.at(2.0)));
    // A received KEEPALIVE restarts the hold timer.
    let out = h.run(Input::Received(C1, Message::Keepalive));
    assert_eq!(armed(&out, Timer::Hold(C1)), Some(h.at(4.0)));
    h.advance(3.0);
    let out = h.run(Input::TimerExpired(Timer::Hold(C1)));
    assert_eq!(notifications(&out), vec![(C1, err::HOLD_TIMER_EXPIRED, 0)]);
    assert!(out.contains(&Output::Close(C1)));
    let (reason, stale) = down(&out).expect("session down");
    assert!(reason.contains("hold timer expired"));
    assert_eq!(
        stale,
        Some(Duration::from_secs(0)),
        "peer announced GR with restart time 0"
    );
    assert_eq!(h.s.state(), State::Idle);
    assert_eq!(
        armed(&out, Timer::IdleHold),
        Some(h.at(5.0)),
        "idle hold of 1 s before reconnecting"
    );
    h.advance(1.0);
    let out = h.run(Input::TimerExpired(Timer::IdleHold));
    assert_eq!(out[0], Output::Connect);
}

/// Our OPEN on a new outbound connection.
fn our_open(h: &mut Harness, id: ConnId) -> Open {
    let out = h.run(Input::TcpConnected(id));
    out.into_iter()
        .find_map(|o| match o {
            Output::Send(_, Message::Open(o)) => Some(o),
            _ => None,
        })
        .expect("our OPEN")
}

#[test]
fn a_restarting_speaker_sets_r_only_in_its_first_open_and_f_for_every_family() {
    let mut cfg = SessionConfig::new(65001, LOCAL_ID, 65101);
    assert_eq!(
        Harness::new(cfg.clone())
            .establish(peer_open(65101, 90, PEER_ID_HIGH))
            .graceful_restart
            .map(|g| g.restart_time),
        Some(0),
        "peer's capability: receiving speaker"
    );
    let mut h = Harness::new(cfg.clone());
    h.run(Input::Start);
    let gr = our_open(&mut h, C1).graceful_restart().cloned().unwrap();
    assert_eq!((gr.restart_time, gr.restarting), (0, false));
    assert!(
        gr.families.is_empty(),
        "receiving only: no forwarding state"
    );

    cfg.restart_time = Some(120);
    cfg.restarted = true;
    let mut h = Harness::new(cfg);
    h.run(Input::Start);
    let gr = our_open(&mut h, C1).graceful_restart().cloned().unwrap();
    assert_eq!((gr.restart_time, gr.restarting), (120, true));
    assert_eq!(gr.families, vec![(1, 1, true), (2, 1, true)]);
    h.run(Input::Received(
        C1,
        Message::Open(peer_open(65101, 90, PEER_ID_HIGH)),
    ));
    h.run(Input::Received(C1, Message::Keepalive));
    assert_eq!(h.s.state(), State::Established);
    h.run(Input::TcpClosed(C1));
    h.advance(300.0);
    h.run(Input::TimerExpired(Timer::IdleHold));
    h.run(Input::TimerExpired(Timer::ConnectRetry));
    let gr = our_open(&mut h, C2).graceful_restart().cloned().unwrap();
    assert!(!gr.restarting, "a reconnect is no restart of ours");
    assert_eq!(gr.restart_time, 120);
}

#[test]
fn graceful_restart_keeps_routes_only_without_notification() {
    let mut h = Harness::default();
    h.establish(with_gr(peer_open(65101, 90, PEER_ID_HIGH), 120));
    let out = h.run(Input::TcpClosed(C1));
    assert_eq!(down(&out).unwrap().1, Some(Duration::from_secs(120)));

    let mut h = Harness::default();
    h.establish(with_gr(peer_open(65101, 90, PEER_ID_HIGH), 120));
    let out = h.run(Input::Received(
        C1,
        Message::Notification(Notification::new(err::CEASE, err::CEASE_ADMIN_RESET)),
    ));
    let (reason, stale) = down(&out).unwrap();
    assert_eq!(stale, None);
    assert!(reason.contains("Administrative Reset"), "{reason}");
    assert!(
        notifications(&out).is_empty(),
        "never answer a NOTIFICATION with one"
    );
}

#[test]
fn wrong_peer_asn_is_refused_with_bad_peer_as() {
    let mut h = Harness::default();
    h.run(Input::Start);
    h.run(Input::TcpConnected(C1));
    let out = h.run(Input::Received(
        C1,
        Message::Open(peer_open(65099, 90, PEER_ID_HIGH)),
    ));
    assert_eq!(
        notifications(&out),
        vec![(C1, err::OPEN, err::OPEN_BAD_PEER_AS)]
    );
    let Some(Output::Send(_, Message::Notification(n))) = out
        .iter()
        .find(|o| matches!(o, Output::Send(_, Message::Notification(_))))
    else {
        panic!()
    };
    assert_eq!(
        n.data,
        65099u16.to_be_bytes().to_vec(),
        "data is the peer's My AS field"
    );
    assert_eq!(h.s.state(), State::Idle);
    assert!(h.s.last_error().unwrap().contains("65099"));
}

#[test]
fn failures_back_off_exponentially_up_to_the_cap() {
    let mut cfg = SessionConfig::new(65001, LOCAL_ID, 65101);
    cfg.idle_hold_max = Duration::from_secs(16);
    let mut h = Harness::new(cfg);
    h.run(Input::Start);
    let mut waits = Vec::new();
    for i in 0..7 {
        let conn = ConnId(10 + i);
        h.run(Input::TcpConnected(conn));
        // The peer answers with a NOTIFICATION every time: a protocol failure.
        let n = Notification::new(err::OPEN, err::OPEN_BAD_PEER_AS);
        let out = h.run(Input::Received(conn, Message::Notification(n)));
        let until = armed(&out, Timer::IdleHold).expect("idle hold armed");
        assert_eq!(h.s.state(), State::Idle);
        waits.push(until.duration_since(h.now).as_secs());
        h.now = until;
        let out = h.run(Input::TimerExpired(Timer::IdleHold));
        assert_eq!(out[0], Output::Connect);
    }
    assert_eq!(waits, vec![1, 2, 4, 8, 16, 16, 16]);
}

#[test]
fn a_refused_connection_waits_in_active_for_the_peer() {
    let mut h = Harness::default();
    h.run(Input::Start);
    let out = h.run(Input::TcpConnectFailed);
    assert!(
        armed(&out, Timer::IdleHold).is_none(),
        "no backoff for a refused connect"
    );
    assert_eq!(h.s.state(), State::Active);
    assert_eq!(h.s.last_error(), Some("cannot connect to the peer"));
    // The peer's own connection is welcome meanwhile.
    let out = h.run(Input::TcpAccepted(C2));
    assert!(matches!(out[0], Output::Send(C2, Message::Open(_))));
    // And the ConnectRetry timer tries again.
    let mut h = Harness::default();
    h.run(Input::Start);
    h.run(Input::TcpConnectFailed);
    h.advance(5.0);
    let out = h.run(Input::TimerExpired(Timer::ConnectRetry));
    assert!(out.contains(&Output::Connect));
}

#[test]
fn a_session_that_stayed_up_starts_the_backoff_over() {
    let mut h = Harness::default();
    h.run(Input::Start);
    for i in 0..3 {
        h.run(Input::TcpConnected(ConnId(10 + i)));
        h.run(Input::TcpClosed(ConnId(10 + i)));
        h.advance(10.0);
        h.run(Input::TimerExpired(Timer::IdleHold));
    }
    h.run(Input::TcpConnected(C1));
    h.run(Input::Received(
        C1,
        Message::Open(peer_open(65101, 90, PEER_ID_HIGH)),
    ));
    h.run(Input::Received(C1, Message::Keepalive));
    // Flaps quickly: the backoff keeps growing.
    h.advance(5.0);
    let out = h.run(Input::TcpClosed(C1));
    assert_eq!(
        armed(&out, Timer::IdleHold).unwrap().duration_since(h.now),
        Duration::from_secs(8)
    );
    // Up for longer than `stable_after`: next failure waits the base time again.
    h.advance(8.0);
    h.run(Input::TimerExpired(Timer::IdleHold));
    h.run(Input::TcpConnected(C2));
    h.run(Input::Received(
        C2,
        Message::Open(peer_open(65101, 90, PEER_ID_HIGH)),
    ));
    h.run(Input::Received(C2, Message::Keepalive));
    h.advance(61.0);
    let out = h.run(Input::TcpClosed(C2));
    assert_eq!(
        armed(&out, Timer::IdleHold).unwrap().duration_since(h.now),
        Duration::from_secs(1)
    );
}

/// Both sides connect at once; the OPENs cross.
fn collide(peer_id: Ipv4Addr) -> (Harness, Vec<Output>) {
    collide_as(65001, 65101, peer_id)
}

fn collide_as(local_asn: u32, peer_asn: u32, peer_id: Ipv4Addr) -> (Harness, Vec<Output>) {
    let mut h = Harness::new(SessionConfig::new(local_asn, LOCAL_ID, peer_asn));
    h.run(Input::Start);
    h.run(Input::TcpConnected(C1));
    let out = h.run(Input::TcpAccepted(C2));
    assert!(
        matches!(out[0], Output::Send(C2, Message::Open(_))),
        "the peer's connection gets our OPEN too"
    );
    h.run(Input::Received(
        C1,
        Message::Open(peer_open(peer_asn, 90, peer_id)),
    ));
    let out = h.run(Input::Received(
        C2,
        Message::Open(peer_open(peer_asn, 90, peer_id)),
    ));
    (h, out)
}

#[test]
fn collision_keeps_the_connection_of_the_higher_identifier() {
    // The peer's identifier is higher: its connection (C2, accepted) wins.
    let (mut h, out) = collide(PEER_ID_HIGH);
    assert_eq!(
        notifications(&out),
        vec![(C1, err::CEASE, err::CEASE_COLLISION)]
    );
    h.run(Input::Received(C2, Message::Keepalive));
    assert_eq!(h.s.established_conn(), Some(C2));

    // Ours is higher: our connection (C1) wins, the newcomer is closed.
    let (mut h, out) = collide(PEER_ID_LOW);
    assert_eq!(
        notifications(&out),
        vec![(C2, err::CEASE, err::CEASE_COLLISION)]
    );
    assert!(!out.contains(&Output::Send(C2, Message::Keepalive)));
    h.run(Input::Received(C1, Message::Keepalive));
    assert_eq!(h.s.established_conn(), Some(C1));
}

#[test]
fn collision_with_equal_identifiers_keeps_the_connection_of_the_larger_as() {
    // RFC 6286 §2.3: an eBGP peer may share our identifier. The peer's AS is larger: its
    // connection (C2, accepted) wins. Deciding by identifier alone, both sides would keep
    // the connection the other initiated, and close both.
    let (mut h, out) = collide_as(65001, 65101, LOCAL_ID);
    assert_eq!(
        notifications(&out),
        vec![(C1, err::CEASE, err::CEASE_COLLISION)]
    );
    h.run(Input::Received(C2, Message::Keepalive));
    assert_eq!(h.s.established_conn(), Some(C2));

    let (mut h, out) = collide_as(65201, 65101, LOCAL_ID);
    assert_eq!(
        notifications(&out),
        vec![(C2, err::CEASE, err::CEASE_COLLISION)]
    );
    h.run(Input::Received(C1, Message::Keepalive));
    assert_eq!(h.s.established_conn(), Some(C1));
}

#[test]
fn our_own_bgp_identifier_is_refused_on_ibgp_only() {
    // RFC 6286 §2.2: the identifier must be unique within the AS, no more.
    let mut h = Harness::new(SessionConfig::new(65001, LOCAL_ID, 65001));
    h.run(Input::Start);
    h.run(Input::TcpConnected(C1));
    let out = h.run(Input::Received(
        C1,
        Message::Open(peer_open(65001, 90, LOCAL_ID)),
    ));
    assert_eq!(
        notifications(&out),
        vec![(C1, err::OPEN, err::OPEN_BAD_BGP_ID)]
    );

    let mut h = Harness::new(SessionConfig::new(65001, LOCAL_ID, 65001));
    let n = h.establish(peer_open(65001, 90, PEER_ID_HIGH));
    assert!(n.ctx.ibgp, "same AS: iBGP, LOCAL_PREF is taken");

    let mut h = Harness::default();
    let n = h.establish(peer_open(65101, 90, LOCAL_ID));
    assert_eq!(n.peer_id, LOCAL_ID, "eBGP: the same identifier is fine");
}

#[test]
fn as_zero_in_an_open_is_a_bad_peer_as() {
    // RFC 7607 §2, whatever the configuration: in the My AS field or in the capability.
    let my_as_zero = {
        let mut o = peer_open(65101, 90, PEER_ID_HIGH);
        o.my_as = 0;
        o
    };
    for (configured, open) in [(0, peer_open(0, 90, PEER_ID_HIGH)), (65101, my_as_zero)] {
        let mut h = Harness::new(SessionConfig::new(65001, LOCAL_ID, configured));
        h.run(Input::Start);
        h.run(Input::TcpConnected(C1));
        let out = h.run(Input::Received(C1, Message::Open(open)));
        assert_eq!(
            notifications(&out),
            vec![(C1, err::OPEN, err::OPEN_BAD_PEER_AS)]
        );
        assert_eq!(h.s.state(), State::Idle);
    }
}

#[test]
fn route_refresh_acts_only_on_plain_requests_for_negotiated_families() {
    let mut h = Harness::default();
    h.establish(Open::new(65101, 90, PEER_ID_HIGH, &[Family::Ipv4]));
    let mut rr = |afi, safi, subtype| {
        h.run(Input::Received(
            C1,
            Message::RouteRefresh(RouteRefresh { afi, safi, subtype }),
        ))
    };
    assert!(rr(1, 1, 0).contains(&Output::RouteRefresh(Family::Ipv4)));
    // RFC 2918 §4: IPv6 was not negotiated; nor is IPv4 multicast ours.
    for (afi, safi, subtype) in [(2, 1, 0), (1, 2, 0), (1, 1, 1), (1, 1, 2), (1, 1, 7)] {
        // BoRR/EoRR (we announce no Enhanced Route Refresh) and unknown subtypes (RFC 7313
        // §5) are ignored too: no re-advertisement, no NOTIFICATION.
        let out = rr(afi, safi, subtype);
        assert!(
            !out.iter().any(|o| matches!(
                o,
                Output::RouteRefresh(_) | Output::Send(_, Message::Notification(_))
            )),
            "{afi}/{safi} subtype {subtype}: {out:?}"
        );
    }
    assert_eq!(h.s.state(), State::Established);
}

#[test]
fn a_peer_without_our_capabilities_is_taken_as_it_is() {
    // RFC 5492 §3: we require no capability, so never send Unsupported Capability (2/7):
    // a plain RFC 4271 speaker gets IPv4, 2-octet ASNs and no route refresh.
    let mut h = Harness::default();
    let mut open = peer_open(65101, 90, PEER_ID_HIGH);
    open.capabilities.clear();
    let n = h.establish(open);
    assert_eq!(n.families, vec![Family::Ipv4]);
    assert!(!n.ctx.four_octet_as && !n.route_refresh);
}

#[test]
fn the_hold_timer_runs_before_the_open_too() {
    // RFC 4271 §6.5 and §8.2.2: in OpenSent the hold timer is the large initial one.
    let mut h = Harness::default();
    h.run(Input::Start);
    h.run(Input::TcpConnected(C1));
    h.advance(240.0);
    let out = h.run(Input::TimerExpired(Timer::Hold(C1)));
    assert_eq!(notifications(&out), vec![(C1, err::HOLD_TIMER_EXPIRED, 0)]);
    assert_eq!(h.s.state(), State::Idle);
}

#[test]
fn establishing_closes_a_connection_still_opening() {
    let mut h = Harness::default();
    h.run(Input::Start);
    h.run(Input::TcpConnected(C1));
    h.run(Input::Received(
        C1,
        Message::Open(peer_open(65101, 90, PEER_ID_HIGH)),
    ));
    h.run(Input::TcpAccepted(C2));
    let out = h.run(Input::Received(C1, Message::Keepalive));
    assert_eq!(
        notifications(&out),
        vec![(C2, err::CEASE, err::CEASE_COLLISION)]
    );
    assert_eq!(h.s.state(), State::Established);
    // And a connection arriving once Established is refused outright.
    let out = h.run(Input::TcpAccepted(ConnId(3)));
    assert_eq!(
        notifications(&out),
        vec![(ConnId(3), err::CEASE, err::CEASE_CONNECTION_REJECTED)]
    );
    assert_eq!(h.s.established_conn(), Some(C1));
}

#[test]
fn unexpected_messages_are_fsm_errors() {
    let mut h = Harness::default();
    h.run(Input::Start);
    h.run(Input::TcpConnected(C1));
    let out = h.run(Input::Received(C1, Message::Keepalive));
    assert_eq!(
        notifications(&out),
        vec![(C1, err::FSM, err::FSM_UNEXPECTED_IN_OPENSENT)]
    );

    let mut h = Harness::default();
    h.run(Input::Start);
    h.run(Input::TcpConnected(C1));
    h.run(Input::Received(
        C1,
        Message::Open(peer_open(65101, 90, PEER_ID_HIGH)),
    ));
    let out = h.run(Input::Received(C1, Message::Update(Box::default())));
    assert_eq!(
        notifications(&out),
        vec![(C1, err::FSM, err::FSM_UNEXPECTED_IN_OPENCONFIRM)]
    );

    let mut h = Harness::default();
    h.establish(peer_open(65101, 90, PEER_ID_HIGH));
    let out = h.run(Input::Received(
        C1,
        Message::Open(peer_open(65101, 90, PEER_ID_HIGH)),
    ));
    assert_eq!(
        notifications(&out),
        vec![(C1, err::FSM, err::FSM_UNEXPECTED_IN_ESTABLISHED)]
    );
    assert!(down(&out).is_some());
}

#[test]
fn decode_errors_are_answered_with_their_notification() {
    let mut h = Harness::default();
    h.establish(peer_open(65101, 90, PEER_ID_HIGH));
    let e = DecodeError::new(err::UPDATE, err::UPDATE_MALFORMED_ATTR_LIST, "test");
    let out = h.run(Input::DecodeFailed(C1, e));
    assert_eq!(
        notifications(&out),
        vec![(C1, err::UPDATE, err::UPDATE_MALFORMED_ATTR_LIST)]
    );
    assert_eq!(
        down(&out).unwrap().1,
        None,
        "our NOTIFICATION ends graceful restart too"
    );
}

#[test]
fn updates_flow_only_when_established() {
    let mut h = Harness::default();
    h.run(Input::Start);
    assert!(h.run(Input::Send(vec![Update::default()])).is_empty());
    h.establish(peer_open(65101, 90, PEER_ID_HIGH));
    let out = h.run(Input::Send(vec![Update::default(), Update::default()]));
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, Output::Send(C1, Message::Update(_))))
            .count(),
        2
    );
    assert!(
        armed(&out, Timer::Keepalive(C1)).is_some(),
        "sending an UPDATE restarts the keepalive timer"
    );
    let out = h.run(Input::Received(C1, Message::Update(Box::default())));
    assert!(matches!(out.last(), Some(Output::Update(_))));
    let out = h.run(Input::Received(
        C1,
        Message::RouteRefresh(RouteRefresh::request(Family::Ipv6)),
    ));
    assert!(out.contains(&Output::RouteRefresh(Family::Ipv6)));
}

#[test]
fn stop_says_goodbye_and_stays_down() {
    let mut h = Harness::default();
    h.establish(peer_open(65101, 90, PEER_ID_HIGH));
    let out = h.run(Input::Stop);
    assert_eq!(
        notifications(&out),
        vec![(C1, err::CEASE, err::CEASE_ADMIN_SHUTDOWN)]
    );
    assert_eq!(down(&out), Some(("administratively stopped".into(), None)));
    assert_eq!(h.s.state(), State::Idle);
    assert!(
        armed(&out, Timer::IdleHold).is_none(),
        "no automatic restart after a stop"
    );
    assert!(h.run(Input::TimerExpired(Timer::ConnectRetry)).is_empty());
}

#[test]
fn teardown_sends_the_given_notification_and_restarts_later() {
    let mut h = Harness::default();
    h.establish(peer_open(65101, 90, PEER_ID_HIGH));
    let out = h.run(Input::Teardown(Notification::new(
        err::CEASE,
        err::CEASE_MAX_PREFIXES,
    )));
    assert_eq!(
        notifications(&out),
        vec![(C1, err::CEASE, err::CEASE_MAX_PREFIXES)]
    );
    assert!(down(&out).is_some());
    assert!(armed(&out, Timer::IdleHold).is_some());
}

#[test]
fn passive_session_waits_for_the_peer() {
    let mut cfg = SessionConfig::new(65001, LOCAL_ID, 65101);
    cfg.passive = true;
    let mut h = Harness::new(cfg);
    assert!(h.run(Input::Start).is_empty());
    assert_eq!(h.s.state(), State::Active);
    let out = h.run(Input::TcpAccepted(C1));
    assert!(matches!(out[0], Output::Send(C1, Message::Open(_))));
    h.run(Input::Received(
        C1,
        Message::Open(peer_open(65101, 90, PEER_ID_HIGH)),
    ));
    h.run(Input::Received(C1, Message::Keepalive));
    assert_eq!(h.s.state(), State::Established);
}

#[test]
fn connect_retry_tries_again() {
    let mut h = Harness::default();
    h.run(Input::Start);
    h.advance(5.0);
    let out = h.run(Input::TimerExpired(Timer::ConnectRetry));
    assert_eq!(out[..2], [Output::AbortConnect, Output::Connect]);
    assert_eq!(armed(&out, Timer::ConnectRetry), Some(h.at(10.0)));
}

#[test]
fn zero_hold_time_means_no_keepalives() {
    let mut cfg = SessionConfig::new(65001, LOCAL_ID, 65101);
    cfg.hold_time = 0;
    let mut h = Harness::new(cfg);
    h.run(Input::Start);
    h.run(Input::TcpConnected(C1));
    let out = h.run(Input::Received(
        C1,
        Message::Open(peer_open(65101, 90, PEER_ID_HIGH)),
    ));
    assert!(armed(&out, Timer::Keepalive(C1)).is_none());
    assert!(out.contains(&Output::StopTimer(Timer::Hold(C1))));
}

#[test]
fn the_peer_may_connect_during_our_idle_hold() {
    let mut h = Harness::default();
    h.run(Input::Start);
    h.run(Input::TcpConnected(C1));
    let out = h.run(Input::Received(
        C1,
        Message::Notification(Notification::new(err::CEASE, err::CEASE_ADMIN_RESET)),
    ));
    assert!(armed(&out, Timer::IdleHold).is_some());
    assert_eq!(h.s.state(), State::Idle);
    let out = h.run(Input::TcpAccepted(C2));
    assert!(
        matches!(out[0], Output::Send(C2, Message::Open(_))),
        "{out:?}"
    );
    h.run(Input::Received(
        C2,
        Message::Open(peer_open(65101, 90, PEER_ID_HIGH)),
    ));
    h.run(Input::Received(C2, Message::Keepalive));
    assert_eq!(h.s.state(), State::Established);
    // The idle hold timer firing later does not disturb the session.
    h.advance(1.0);
    assert!(!h
        .run(Input::TimerExpired(Timer::IdleHold))
        .contains(&Output::Connect));
}
