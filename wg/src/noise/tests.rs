//! Two peers in virtual time, and one of ours against boringtun's.

use std::net::{Ipv4Addr, SocketAddr};

use super::*;

pub(super) const A_ADDR: &str = "192.0.2.1:51820";
pub(super) const B_ADDR: &str = "192.0.2.2:51820";

fn keys() -> ([u8; 32], [u8; 32], [u8; 32], [u8; 32]) {
    let a = [0x11; 32];
    let b = [0x22; 32];
    let pa = crypto::public_of(&x25519_dalek::StaticSecret::from(a));
    let pb = crypto::public_of(&x25519_dalek::StaticSecret::from(b));
    (a, pa, b, pb)
}

pub(super) fn peers(now: Instant) -> (Peer, Peer) {
    let (a, pa, b, pb) = keys();
    let cfg = |private, peer| Config {
        private_key: private,
        peer_public_key: peer,
        preshared_key: Some([7; 32]),
        persistent_keepalive: None,
        mtu: 1420,
    };
    (
        Peer::new(&cfg(a, pb), now).expect("a"),
        Peer::new(&cfg(b, pa), now).expect("b"),
    )
}

/// An IPv4 packet of `len` bytes from `src`.
pub(super) fn packet(len: usize, src: [u8; 4], fill: u8) -> Vec<u8> {
    let mut p = vec![fill; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[12..16].copy_from_slice(&src);
    p
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// Delivers `datagram` to `to` and returns what it says, with the plaintext for data.
pub(super) fn deliver(
    to: &mut Peer,
    from: &str,
    datagram: &[u8],
    now: Instant,
) -> (Result<Received, Error>, Vec<u8>) {
    let mut d = datagram.to_vec();
    let mut out = vec![0u8; 2048];
    let r = to.decapsulate(&mut d, addr(from), &mut out, now);
    let body = match r {
        Ok(Received::Data { len, .. }) => d[DATA_OFFSET..DATA_OFFSET + len].to_vec(),
        Ok(Received::Reply(n)) => out[..n].to_vec(),
        _ => Vec::new(),
    };
    (r, body)
}

/// a sends `first` with no session: the handshake runs and `first` arrives at b.
pub(super) fn establish(a: &mut Peer, b: &mut Peer, now: Instant) {
    let mut out = vec![0u8; 2048];
    let first = packet(100, [10, 0, 0, 1], 1);
    let n = a.encapsulate(&first, &mut out, now).expect("an initiation");
    assert_eq!(n, INITIATION_LEN);
    let (r, response) = deliver(b, A_ADDR, &out[..n], now);
    assert_eq!(r, Ok(Received::Reply(RESPONSE_LEN)));
    let (r, _) = deliver(a, B_ADDR, &response, now);
    assert_eq!(r, Ok(Received::Established));
    let n = a.flush(&mut out, now).expect("the packet that waited");
    assert_eq!(a.flush(&mut out[n..], now), None, "sent, nothing owed");
    let (r, got) = deliver(b, A_ADDR, &out[..n], now);
    assert_eq!(
        r,
        Ok(Received::Data {
            len: 100,
            src: Ipv4Addr::new(10, 0, 0, 1).into()
        })
    );
    assert_eq!(got, first);
}

fn send(from: &mut Peer, p: &[u8], now: Instant) -> Vec<u8> {
    let mut out = vec![0u8; p.len() + overhead() + INITIATION_LEN];
    let n = from.encapsulate(p, &mut out, now).expect("sealed");
    out.truncate(n);
    out
}

#[test]
fn a_handshake_then_data_both_ways() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    establish(&mut a, &mut b, t);
    assert!(
        a.has_session(t) && b.has_session(t),
        "b confirmed by a's data"
    );
    assert_eq!(
        a.time_since_last_handshake(t + Duration::from_secs(3)),
        Some(Duration::from_secs(3))
    );
    let p = packet(1420, [10, 0, 1, 1], 9);
    let d = send(&mut b, &p, t);
    assert_eq!(d.len(), 16 + 1420 + 16, "no padding past the MTU");
    let (r, got) = deliver(&mut a, B_ADDR, &d, t);
    assert!(matches!(r, Ok(Received::Data { len: 1420, .. })));
    assert_eq!(got, p);
    let (r, _) = deliver(&mut a, B_ADDR, &d, t);
    assert_eq!(r, Err(Error::Replay));
}

#[test]
fn the_responder_confirms_with_a_keepalive_when_nothing_waited() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    let mut out = vec![0u8; 2048];
    let n = a.initiate(&mut out, t).expect("initiation");
    let (_, response) = deliver(&mut b, A_ADDR, &out[..n], t);
    assert!(
        !b.has_session(t),
        "not before the initiator's first message"
    );
    assert_eq!(
        deliver(&mut a, B_ADDR, &response, t).0,
        Ok(Received::Established)
    );
    let n = a.flush(&mut out, t).expect("a keepalive");
    assert_eq!(
        deliver(&mut b, A_ADDR, &out[..n], t).0,
        Ok(Received::Keepalive)
    );
    assert!(b.has_session(t));
}

#[test]
fn a_handover_keeps_the_session_and_the_counters() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    establish(&mut a, &mut b, t);
    let before = send(&mut a, &packet(60, [10, 0, 0, 1], 2), t);
    assert!(matches!(
        deliver(&mut b, A_ADDR, &before, t).0,
        Ok(Received::Data { .. })
    ));
    // b's packets sealed while a was away, for the session a had.
    let in_flight = send(&mut b, &packet(60, [10, 0, 1, 1], 3), t);
    let state = a.export(t + Duration::from_millis(10));
    let t2 = t + Duration::from_millis(60);
    let (mut a2, _) = peers(t2);
    a2.import(&state, t2, Duration::from_millis(50))
        .expect("imported");
    assert!(a2.has_session(t2));
    assert_eq!(
        a2.time_since_last_handshake(t2),
        Some(Duration::from_millis(60))
    );
    let (r, _) = deliver(&mut a2, B_ADDR, &in_flight, t2);
    assert!(matches!(r, Ok(Received::Data { len: 60, .. })), "{r:?}");
    // The new process continues the counter: b takes its packets, and what the old one
    // sent stays taken.
    let after = send(&mut a2, &packet(60, [10, 0, 0, 1], 4), t2);
    assert!(matches!(
        deliver(&mut b, A_ADDR, &after, t2).0,
        Ok(Received::Data { .. })
    ));
    assert_eq!(deliver(&mut b, A_ADDR, &before, t2).0, Err(Error::Replay));
    assert_eq!(
        after[8..16],
        2u64.to_le_bytes(),
        "counters 0 and 1 were the old process's"
    );
    assert!(a2.tick(t2).is_empty(), "no handshake needed");
}

#[test]
fn a_handover_for_other_keys_or_garbage_is_refused() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    establish(&mut a, &mut b, t);
    let state = a.export(t);
    assert_eq!(
        b.import(&state, t, Duration::ZERO),
        Err(HandoverError::OtherKeys)
    );
    let (mut a2, _) = peers(t);
    assert_eq!(
        a2.import(&state[..state.len() - 1], t, Duration::ZERO),
        Err(HandoverError::Format)
    );
    assert_eq!(
        a2.import(b"nonsense", t, Duration::ZERO),
        Err(HandoverError::Format)
    );
    assert!(!a2.has_session(t));
    // Too old by the time it is read: nothing taken, a handshake as usual.
    a2.import(&state, t, session::REJECT_AFTER_TIME)
        .expect("read");
    assert!(!a2.has_session(t));
}

#[test]
fn initiations_are_retransmitted_then_given_up() {
    let t = Instant::now();
    let (mut a, _) = peers(t);
    let mut out = vec![0u8; 2048];
    assert!(a
        .encapsulate(&packet(60, [10, 0, 0, 1], 1), &mut out, t)
        .is_some());
    assert!(
        a.encapsulate(&packet(60, [10, 0, 0, 1], 1), &mut out, t)
            .is_none(),
        "one in flight"
    );
    assert!(a.tick(t + Duration::from_secs(4)).is_empty());
    let mut sent = 0;
    let mut at = t;
    while at < t + REKEY_ATTEMPT_TIME + Duration::from_secs(10) {
        sent += a.tick(at).len();
        at += Duration::from_millis(250);
    }
    // One every REKEY_TIMEOUT plus up to a third of a second, for 90 s.
    assert!((16..=18).contains(&sent), "{sent} retransmissions");
    assert!(
        a.queue.is_empty(),
        "what waited is dropped when the attempt is given up"
    );
    assert!(
        a.tick(at + Duration::from_secs(30)).is_empty(),
        "and no more until a packet"
    );
}

#[test]
fn the_initiator_rekeys_after_two_minutes_of_sending() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    establish(&mut a, &mut b, t);
    let later = t + Duration::from_secs(121);
    let d = send(&mut a, &packet(60, [10, 0, 0, 1], 1), later);
    assert!(matches!(
        deliver(&mut b, A_ADDR, &d, later).0,
        Ok(Received::Data { .. })
    ));
    let sent = a.tick(later);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0][0], INITIATION);
    // b (the responder) never rekeys on age.
    send(&mut b, &packet(60, [10, 0, 1, 1], 1), later);
    assert!(b.tick(later).iter().all(|d| d[0] != INITIATION));
    // The new handshake: a's old session stays usable for what b sent on it meanwhile.
    let in_flight = send(&mut b, &packet(60, [10, 0, 1, 1], 2), later);
    let (r, response) = deliver(&mut b, A_ADDR, &sent[0], later);
    assert_eq!(r, Ok(Received::Reply(RESPONSE_LEN)));
    assert_eq!(
        deliver(&mut a, B_ADDR, &response, later).0,
        Ok(Received::Established)
    );
    assert!(matches!(
        deliver(&mut a, B_ADDR, &in_flight, later).0,
        Ok(Received::Data { .. })
    ));
}

#[test]
fn data_received_and_nothing_sent_gets_a_keepalive_after_ten_seconds() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    establish(&mut a, &mut b, t);
    assert!(b.tick(t + Duration::from_secs(9)).is_empty());
    let sent = b.tick(t + Duration::from_secs(10));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].len(), 32, "an empty data message");
    assert_eq!(
        deliver(&mut a, B_ADDR, &sent[0], t).0,
        Ok(Received::Keepalive)
    );
    assert!(b.tick(t + Duration::from_secs(20)).is_empty(), "owed once");
}

#[test]
fn data_sent_and_nothing_heard_for_fifteen_seconds_starts_a_handshake() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    establish(&mut a, &mut b, t);
    let reply = send(&mut b, &packet(60, [10, 0, 1, 1], 1), t);
    assert!(matches!(
        deliver(&mut a, B_ADDR, &reply, t).0,
        Ok(Received::Data { .. })
    ));
    send(
        &mut a,
        &packet(60, [10, 0, 0, 1], 1),
        t + Duration::from_secs(1),
    );
    assert!(a.tick(t + Duration::from_secs(15)).is_empty());
    let sent = a.tick(t + Duration::from_secs(16));
    assert_eq!(sent.iter().filter(|d| d[0] == INITIATION).count(), 1);
}

#[test]
fn persistent_keepalive_every_interval() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    a.persistent_keepalive = Some(Duration::from_secs(25));
    establish(&mut a, &mut b, t);
    let reply = send(&mut b, &packet(60, [10, 0, 1, 1], 1), t);
    assert!(matches!(
        deliver(&mut a, B_ADDR, &reply, t).0,
        Ok(Received::Data { .. })
    ));
    // b's data owes it a keepalive at 10 s; then the persistent ones, 25 s apart.
    assert_eq!(a.tick(t + Duration::from_secs(10)).len(), 1, "passive");
    assert!(a.tick(t + Duration::from_secs(34)).is_empty());
    assert_eq!(a.tick(t + Duration::from_secs(35)).len(), 1);
    assert!(a.tick(t + Duration::from_secs(36)).is_empty());
}

#[test]
fn keys_are_erased_after_nine_minutes_without_a_handshake() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    establish(&mut a, &mut b, t);
    a.tick(t + Duration::from_secs(540));
    assert!(a.sessions.previous.is_none() && a.sessions.current.is_none());
    assert_eq!(
        a.time_since_last_handshake(t + Duration::from_secs(540)),
        None
    );
}

#[test]
fn a_replayed_or_too_early_initiation_is_refused() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    let mut out = vec![0u8; 2048];
    let n = a.initiate(&mut out, t).expect("initiation");
    let first = out[..n].to_vec();
    assert_eq!(
        deliver(&mut b, A_ADDR, &first, t).0,
        Ok(Received::Reply(RESPONSE_LEN))
    );
    let later = t + Duration::from_secs(1);
    assert_eq!(deliver(&mut b, A_ADDR, &first, later).0, Err(Error::Replay));
    let n = a
        .initiate(&mut out, t + Duration::from_millis(5100))
        .expect("retransmission");
    let second = out[..n].to_vec();
    assert_eq!(
        deliver(&mut b, A_ADDR, &second, t + Duration::from_millis(10)).0,
        Err(Error::TooSoon)
    );
    assert_eq!(
        deliver(&mut b, A_ADDR, &second, later).0,
        Ok(Received::Reply(RESPONSE_LEN))
    );
    let mut bad = second.clone();
    bad[120] ^= 1;
    assert_eq!(deliver(&mut b, A_ADDR, &bad, later).0, Err(Error::Mac));
}

#[test]
fn under_load_a_cookie_is_asked_for_and_then_honoured() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    let mut out = vec![0u8; 2048];
    let mut last = Vec::new();
    let mut reply = None;
    for i in 0..=UNDER_LOAD as u64 + 1 {
        let at = t + Duration::from_secs(6 * i);
        let n = a.send_initiation(&mut out, at).expect("initiation");
        last = out[..n].to_vec();
        if let (Ok(Received::Reply(COOKIE_REPLY_LEN)), body) =
            deliver(&mut b, A_ADDR, &last, t + Duration::from_millis(30 * i))
        {
            reply = Some((body, at));
            break;
        }
    }
    let (reply, at) = reply.expect("a cookie reply once over the load");
    assert_eq!(deliver(&mut a, B_ADDR, &reply, at).0, Ok(Received::Nothing));
    assert!(a.cookie.is_some());
    let n = a
        .send_initiation(&mut out, at + Duration::from_secs(1))
        .expect("initiation with mac2");
    assert_ne!(out[n - 16..n], [0; 16]);
    // Still under load at b: a's mac2 gets it through to a response.
    assert_eq!(
        deliver(&mut b, A_ADDR, &out[..n], t + Duration::from_millis(900)).0,
        Ok(Received::Reply(RESPONSE_LEN))
    );
    // From another address, the same message is asked for a cookie again.
    assert_eq!(
        deliver(
            &mut b,
            "192.0.2.9:51820",
            &last,
            t + Duration::from_millis(950)
        )
        .0,
        Ok(Received::Reply(COOKIE_REPLY_LEN))
    );
}

#[test]
fn a_short_handshake_message_is_refused_before_any_work() {
    let t = Instant::now();
    let (_, mut b) = peers(t);
    // A valid mac1 over a one-byte "initiation": anyone who knows b's public key can
    // make one. It must not count as load nor draw a (larger) cookie reply.
    let mut msg = vec![INITIATION, 0, 0, 0];
    let m = crypto::mac(&crypto::hash(crypto::LABEL_MAC1, &b.id.public), &msg);
    msg.extend_from_slice(&m);
    msg.extend_from_slice(&[0; 16]);
    for i in 0..100 {
        let at = t + Duration::from_millis(i);
        assert_eq!(deliver(&mut b, A_ADDR, &msg, at).0, Err(Error::Malformed));
    }
    assert_eq!(b.load.1, 0);
    let mut reserved = vec![0u8; INITIATION_LEN];
    reserved[0] = INITIATION;
    reserved[2] = 1;
    assert_eq!(
        deliver(&mut b, A_ADDR, &reserved, t).0,
        Err(Error::Malformed)
    );
}

fn in_2027() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn in_2020() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
}

#[test]
fn timestamps_follow_the_wall_clock_of_each_initiation() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    let mut out = vec![0u8; 2048];
    a.wall = in_2020;
    let n = a.initiate(&mut out, t).expect("initiation");
    assert_eq!(
        deliver(&mut b, A_ADDR, &out[..n], t).0,
        Ok(Received::Reply(RESPONSE_LEN))
    );
    // The clock is set (NTP) while the process runs: the next initiation says so.
    a.wall = in_2027;
    let t1 = t + Duration::from_secs(6);
    let n = a.initiate(&mut out, t1).expect("initiation");
    assert_eq!(
        deliver(&mut b, A_ADDR, &out[..n], t1).0,
        Ok(Received::Reply(RESPONSE_LEN))
    );
    // A process whose clock is behind what b saw is refused, as WireGuard must.
    let (mut behind, _) = peers(t);
    behind.wall = in_2020;
    let n = behind.initiate(&mut out, t1).expect("initiation");
    let t2 = t + Duration::from_secs(7);
    assert_eq!(deliver(&mut b, A_ADDR, &out[..n], t2).0, Err(Error::Replay));
}

#[test]
fn a_persistent_keepalive_without_a_session_is_a_handshake() {
    let t = Instant::now();
    let (mut a, _) = peers(t);
    a.persistent_keepalive = Some(Duration::from_secs(25));
    let sent = a.tick(t + Duration::from_secs(1));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0][0], INITIATION);
}

#[test]
fn the_responders_queue_goes_once_the_initiator_confirms() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    let mut out = vec![0u8; 2048];
    // b has something to send and starts its own handshake, which gets lost; a's
    // initiation crosses it.
    assert!(b
        .encapsulate(&packet(80, [10, 0, 1, 1], 3), &mut out, t)
        .is_some());
    assert!(b.has_queued());
    let n = a.initiate(&mut out, t).expect("initiation");
    let (_, response) = deliver(&mut b, A_ADDR, &out[..n], t);
    assert_eq!(
        deliver(&mut a, B_ADDR, &response, t).0,
        Ok(Received::Established)
    );
    let n = a.flush(&mut out, t).expect("a keepalive");
    assert_eq!(
        deliver(&mut b, A_ADDR, &out[..n], t).0,
        Ok(Received::Keepalive)
    );
    assert!(b.attempt_since.is_none(), "b's own attempt is over");
    let n = b.flush(&mut out, t).expect("what waited");
    let (r, _) = deliver(&mut a, B_ADDR, &out[..n], t);
    assert!(matches!(r, Ok(Received::Data { len: 80, .. })), "{r:?}");
    assert!(
        b.tick(t + Duration::from_secs(6)).is_empty(),
        "no retransmission"
    );
}

#[test]
fn a_cookie_reply_to_our_response_is_taken() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    let mut out = vec![0u8; 2048];
    let n = a.initiate(&mut out, t).expect("initiation");
    let (_, response) = deliver(&mut b, A_ADDR, &out[..n], t);
    // a is under load and answers b's response with a cookie.
    let mut reply = [0u8; COOKIE_REPLY_LEN];
    handshake::cookie_reply(
        &a.id,
        &[4; 32],
        &[192, 0, 2, 2, 0xca, 0x6c],
        &response,
        &mut reply,
    );
    assert_eq!(deliver(&mut b, A_ADDR, &reply, t).0, Ok(Received::Nothing));
    assert!(b.cookie.is_some());
}

#[test]
fn a_handover_for_another_preshared_key_is_refused() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    establish(&mut a, &mut b, t);
    let state = a.export(t);
    let (pa_private, _, _, pb) = keys();
    let other = Config {
        private_key: pa_private,
        peer_public_key: pb,
        preshared_key: Some([8; 32]),
        persistent_keepalive: None,
        mtu: 1420,
    };
    let mut a2 = Peer::new(&other, t).expect("a");
    assert_eq!(
        a2.import(&state, t, Duration::ZERO),
        Err(HandoverError::OtherKeys)
    );
}

#[test]
fn garbage_never_panics() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    establish(&mut a, &mut b, t);
    let mut out = vec![0u8; 2048];
    for len in [
        0usize, 1, 4, 15, 16, 31, 32, 64, 91, 92, 93, 147, 148, 149, 400,
    ] {
        for kind in 0u8..6 {
            let mut d = vec![0xa5u8; len];
            if let Some(first) = d.first_mut() {
                *first = kind;
            }
            assert!(
                a.decapsulate(&mut d, addr(B_ADDR), &mut out, t).is_err(),
                "{kind} {len}"
            );
        }
    }
    // Data messages whose inner length claims more than they carry, or less than an
    // IPv4 header.
    for claim in [1000u16, 12] {
        let mut p = packet(60, [10, 0, 1, 1], 1);
        p[2..4].copy_from_slice(&claim.to_be_bytes());
        let d = send(&mut b, &p, t);
        assert_eq!(
            deliver(&mut a, B_ADDR, &d, t).0,
            Err(Error::BadInner),
            "{claim}"
        );
    }
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever arrives, at a peer with sessions and a handshake under way: no
        /// panic, and nothing taken as data that the session did not seal.
        #[test]
        fn arbitrary_datagrams_never_panic(
            datagrams in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..8),
            kinds in prop::collection::vec(0u8..6, 8),
        ) {
            let t = Instant::now();
            let (mut a, mut b) = peers(t);
            establish(&mut a, &mut b, t);
            let mut out = vec![0u8; 2048];
            a.initiate(&mut out, t + Duration::from_secs(6));
            for (i, mut d) in datagrams.into_iter().enumerate() {
                if d.len() >= 4 {
                    // Valid-looking headers reach the deeper checks.
                    d[..4].copy_from_slice(&[kinds[i], 0, 0, 0]);
                }
                let r = a.decapsulate(&mut d, addr(B_ADDR), &mut out, t);
                let taken = matches!(r, Ok(Received::Data { .. } | Received::Keepalive));
                prop_assert!(!taken, "forged data taken: {:?}", r);
            }
            prop_assert!(a.has_session(t));
        }

        /// A handover file of any content is refused or taken, never a panic.
        #[test]
        fn arbitrary_handovers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4000), cut in 0usize..4000) {
            let t = Instant::now();
            let (mut a, mut b) = peers(t);
            establish(&mut a, &mut b, t);
            let good = a.export(t);
            let (mut fresh, _) = peers(t);
            let _ = fresh.import(&bytes, t, Duration::ZERO);
            let mut spliced = good[..cut.min(good.len())].to_vec();
            spliced.extend_from_slice(&bytes);
            let _ = fresh.import(&spliced, t, Duration::from_nanos(u64::MAX));
        }
    }
}

/// boringtun's `Tunn`, an independent implementation, against ours in both roles.
mod boringtun_interop {
    use super::*;
    use boringtun::noise::{Tunn, TunnResult};

    fn theirs(private: [u8; 32], peer: [u8; 32]) -> Tunn {
        Tunn::new(
            boringtun::x25519::StaticSecret::from(private),
            boringtun::x25519::PublicKey::from(peer),
            Some([7; 32]),
            None,
            1,
            None,
        )
    }

    fn network(r: TunnResult<'_>) -> Vec<u8> {
        match r {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("expected a datagram, got {}", kind(&other)),
        }
    }

    fn kind(r: &TunnResult<'_>) -> &'static str {
        match r {
            TunnResult::Done => "done",
            TunnResult::Err(_) => "error",
            TunnResult::WriteToNetwork(_) => "network",
            TunnResult::WriteToTunnelV4(..) => "tunnel v4",
            TunnResult::WriteToTunnelV6(..) => "tunnel v6",
        }
    }

    #[test]
    fn ours_initiates() {
        let (a, pa, b, pb) = keys();
        let t = Instant::now();
        let (mut ours, _) = peers(t);
        let mut tunn = theirs(b, pa);
        let mut out = vec![0u8; 2048];
        let mut buf = vec![0u8; 2048];
        let n = ours.initiate(&mut out, t).expect("initiation");
        let response = network(tunn.decapsulate(None, &out[..n], &mut buf));
        assert_eq!(
            deliver(&mut ours, B_ADDR, &response, t).0,
            Ok(Received::Established)
        );
        let n = ours.flush(&mut out, t).expect("keepalive");
        assert!(matches!(
            tunn.decapsulate(None, &out[..n], &mut buf),
            TunnResult::Done
        ));
        let p = packet(200, [10, 0, 0, 1], 5);
        let d = send(&mut ours, &p, t);
        match tunn.decapsulate(None, &d, &mut buf) {
            TunnResult::WriteToTunnelV4(got, src) => {
                assert_eq!(got, &p[..]);
                assert_eq!(src, Ipv4Addr::new(10, 0, 0, 1));
            }
            other => panic!("{}", kind(&other)),
        }
        let q = packet(1420, [10, 0, 1, 1], 6);
        let d = network(tunn.encapsulate(&q, &mut buf));
        let (r, got) = deliver(&mut ours, B_ADDR, &d, t);
        assert!(matches!(r, Ok(Received::Data { len: 1420, .. })));
        assert_eq!(got, q);
        let _ = (a, pb);
    }

    #[test]
    fn theirs_initiates() {
        let (a, _, _, pb) = keys();
        let t = Instant::now();
        let (_, mut ours) = peers(t);
        let mut tunn = theirs(a, pb);
        let mut buf = vec![0u8; 2048];
        let p = packet(300, [10, 0, 0, 1], 5);
        let init = network(tunn.encapsulate(&p, &mut buf));
        let (r, response) = deliver(&mut ours, A_ADDR, &init, t);
        assert_eq!(r, Ok(Received::Reply(RESPONSE_LEN)));
        // boringtun confirms with a keepalive once the response is in, then sends what
        // waited when asked (an empty input).
        let confirm = network(tunn.decapsulate(None, &response, &mut buf));
        assert_eq!(
            deliver(&mut ours, A_ADDR, &confirm, t).0,
            Ok(Received::Keepalive)
        );
        let first = network(tunn.decapsulate(None, &[], &mut buf));
        let (r, got) = deliver(&mut ours, A_ADDR, &first, t);
        assert!(matches!(r, Ok(Received::Data { len: 300, .. })), "{r:?}");
        assert_eq!(got, p);
        let q = packet(64, [10, 0, 1, 1], 6);
        let d = send(&mut ours, &q, t);
        match tunn.decapsulate(None, &d, &mut buf) {
            TunnResult::WriteToTunnelV4(got, _) => assert_eq!(got, &q[..]),
            other => panic!("{}", kind(&other)),
        }
    }
}

/// Ten minutes of traffic both ways in virtual time, timers ticking as the tunnel ticks
/// them: every packet arrives across the rekeys (one every two minutes), the sessions
/// rotate, and nothing is ever refused.
#[test]
fn ten_minutes_of_traffic_across_rekeys_lose_nothing() {
    let t0 = Instant::now();
    let (mut a, mut b) = peers(t0);
    establish(&mut a, &mut b, t0);
    let mut out = vec![0u8; 4096];
    let (mut sent, mut delivered, mut handshakes) = (0u64, 0u64, 0u64);
    let mut t = t0;
    // Datagrams in flight, delivered the next step (10 ms of latency).
    let mut to_b: Vec<Vec<u8>> = Vec::new();
    let mut to_a: Vec<Vec<u8>> = Vec::new();
    while t < t0 + Duration::from_secs(600) {
        t += Duration::from_millis(10);
        let (for_b, for_a) = (std::mem::take(&mut to_b), std::mem::take(&mut to_a));
        for (dst, src_addr, inbox, replies) in [
            (&mut b, A_ADDR, for_b, &mut to_a),
            (&mut a, B_ADDR, for_a, &mut to_b),
        ] {
            for mut d in inbox {
                match dst.decapsulate(&mut d, addr(src_addr), &mut out, t) {
                    Ok(Received::Data { .. }) => delivered += 1,
                    Ok(Received::Reply(n)) => replies.push(out[..n].to_vec()),
                    Ok(Received::Established) => {
                        handshakes += 1;
                        while let Some(n) = dst.flush(&mut out, t) {
                            replies.push(out[..n].to_vec());
                        }
                    }
                    Ok(Received::Keepalive | Received::Nothing) => {}
                    Err(e) => panic!("refused at {:?}: {e}", t - t0),
                }
            }
        }
        // Each side sends a packet every 100 ms (a BFD-like rate), and ticks its timers
        // every 250 ms.
        let ms = (t - t0).as_millis();
        if ms % 100 == 0 {
            for (src, outbox, ip) in [
                (&mut a, &mut to_b, [10, 0, 0, 1]),
                (&mut b, &mut to_a, [10, 0, 1, 1]),
            ] {
                if let Some(n) = src.encapsulate(&packet(64, ip, 1), &mut out, t) {
                    outbox.push(out[..n].to_vec());
                }
                sent += 1;
            }
        }
        if ms % 250 == 0 {
            for (p, outbox) in [(&mut a, &mut to_b), (&mut b, &mut to_a)] {
                outbox.extend(p.tick(t));
            }
        }
    }
    assert!(handshakes >= 4, "{handshakes} rekeys in ten minutes");
    // What was sent in the last step is still in flight.
    assert!(sent - delivered <= 2, "sent {sent}, delivered {delivered}");
    assert!(a.has_session(t) && b.has_session(t));
}
