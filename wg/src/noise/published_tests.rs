//! The real-time path's sealing and opening without the peer's lock, against the locked
//! path on the same sessions.

use std::time::{Duration, Instant};

use super::super::tests::{deliver, establish, packet, peers, A_ADDR, B_ADDR};
use super::super::{Error, Peer, Received, DATA_OFFSET, INITIATION, INITIATION_LEN, RESPONSE_LEN};

fn counter(d: &[u8]) -> u64 {
    u64::from_le_bytes(d[8..16].try_into().unwrap())
}

/// Seals `p` on `from`'s published sessions.
fn seal(from: &Peer, p: &[u8], now: Instant) -> Option<Vec<u8>> {
    let mut out = vec![0u8; 2048];
    let n = from.published().seal(p, &mut out, now)?;
    Some(out[..n].to_vec())
}

/// Opens `d` on `to`'s published sessions; the result and the plaintext.
fn open(to: &Peer, d: &[u8], now: Instant) -> Option<(Result<Received, Error>, Vec<u8>)> {
    let mut d = d.to_vec();
    let r = to.published().open(&mut d, now)?;
    let body = match r {
        Ok(Received::Data { len, .. }) => d[DATA_OFFSET..DATA_OFFSET + len].to_vec(),
        _ => Vec::new(),
    };
    Some((r, body))
}

/// Two peers with a session and nothing owed either way: b's keepalive for the data of
/// `establish` delivered.
fn quiet(t: Instant) -> (Peer, Peer) {
    let (mut a, mut b) = peers(t);
    establish(&mut a, &mut b, t);
    let sent = b.tick(t + Duration::from_secs(10));
    assert_eq!(
        deliver(&mut a, B_ADDR, &sent[0], t).0,
        Ok(Received::Keepalive)
    );
    (a, b)
}

#[test]
fn no_session_no_fast_path() {
    let t = Instant::now();
    let (a, _) = peers(t);
    assert_eq!(seal(&a, &packet(60, [10, 0, 0, 1], 1), t), None);
}

/// Both paths share the send counter and the replay window: no counter is used twice,
/// and a message taken by one is a replay to the other.
#[test]
fn both_paths_share_the_counters_and_the_window() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    establish(&mut a, &mut b, t);
    let p = packet(64, [10, 0, 0, 1], 7);
    let mut out = vec![0u8; 2048];
    let n = a.encapsulate(&p, &mut out, t).expect("locked");
    let locked = out[..n].to_vec();
    let fast = seal(&a, &p, t).expect("published");
    let mut sealer = a.sealer(2, t).expect("reserved");
    let n = sealer.seal(&p, &mut out).expect("a counter");
    let reserved = out[..n].to_vec();
    let again = seal(&a, &p, t).expect("published again");
    let counters: Vec<u64> = [&locked, &fast, &reserved, &again]
        .iter()
        .map(|d| counter(d))
        .collect();
    assert_eq!(counters, [1, 2, 3, 5], "the reserved run's second is a gap");

    // b opens the fast one without its lock, the locked one with it; each once.
    let (r, got) = open(&b, &fast, t).expect("to a published session");
    assert!(matches!(r, Ok(Received::Data { len: 64, .. })), "{r:?}");
    assert_eq!(got, p);
    assert_eq!(deliver(&mut b, A_ADDR, &fast, t).0, Err(Error::Replay));
    assert!(matches!(
        deliver(&mut b, A_ADDR, &locked, t).0,
        Ok(Received::Data { len: 64, .. })
    ));
    assert_eq!(open(&b, &locked, t).map(|r| r.0), Some(Err(Error::Replay)));
    let mut forged = again.clone();
    forged[40] ^= 1;
    assert_eq!(open(&b, &forged, t).map(|r| r.0), Some(Err(Error::Decrypt)));
    assert!(
        open(&b, &again, t).is_some_and(|r| r.0.is_ok()),
        "the forgery took nothing"
    );

    // The answer: b seals without its lock, a opens with its lock.
    let reply = seal(&b, &packet(40, [10, 0, 1, 1], 9), t).expect("b has a session");
    assert!(matches!(
        deliver(&mut a, B_ADDR, &reply, t).0,
        Ok(Received::Data { len: 40, .. })
    ));
    // A keepalive opens as one; a handshake message is not for this path.
    let keepalive = seal(&a, &[], t).expect("a keepalive");
    assert_eq!(
        open(&b, &keepalive, t).map(|r| r.0),
        Some(Ok(Received::Keepalive))
    );
    let mut init = vec![0u8; 2048];
    let n = peers(t).0.initiate(&mut init, t).expect("an initiation");
    assert!(open(&b, &init[..n], t).is_none());
    // Too old to use: refused as the locked path refuses it.
    let late = t + super::super::REJECT_AFTER_TIME;
    assert_eq!(seal(&a, &p, late), None);
    let old = seal(&a, &p, t).unwrap();
    assert_eq!(open(&b, &old, late).map(|r| r.0), Some(Err(Error::Replay)));
}

/// A message on the responder's session that the initiator has not confirmed yet is
/// opened without the lock too; the responder promotes that session at its next call,
/// and seals on it from then on.
#[test]
fn an_unconfirmed_session_is_confirmed_by_the_fast_path() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    let mut out = vec![0u8; 2048];
    let n = a.initiate(&mut out, t).expect("initiation");
    let (r, response) = deliver(&mut b, A_ADDR, &out[..n], t);
    assert_eq!(r, Ok(Received::Reply(RESPONSE_LEN)));
    assert_eq!(
        seal(&b, &packet(40, [10, 0, 1, 1], 1), t),
        None,
        "b has no current session"
    );
    assert_eq!(
        deliver(&mut a, B_ADDR, &response, t).0,
        Ok(Received::Established)
    );
    let first = seal(&a, &packet(60, [10, 0, 0, 1], 2), t).expect("a's new session");
    let (r, _) = open(&b, &first, t).expect("to b's next session");
    assert!(matches!(r, Ok(Received::Data { len: 60, .. })), "{r:?}");
    assert_eq!(deliver(&mut b, A_ADDR, &first, t).0, Err(Error::Replay));
    // b's next call under its lock promotes the session: it seals on it.
    let n = b
        .encapsulate(&packet(40, [10, 0, 1, 1], 3), &mut out, t)
        .expect("b has a session now");
    assert_eq!(out[0], 4, "a data message, not a handshake");
    assert!(matches!(
        deliver(&mut a, B_ADDR, &out[..n], t).0,
        Ok(Received::Data { len: 40, .. })
    ));
    let second = seal(&a, &packet(60, [10, 0, 0, 1], 4), t).unwrap();
    assert!(open(&b, &second, t).is_some_and(|r| r.0.is_ok()));
    assert!(seal(&b, &packet(40, [10, 0, 1, 1], 5), t).is_some());
    // An index no session has is refused here, without the lock.
    let mut unknown = second.clone();
    unknown[4] ^= 0xff;
    assert_eq!(
        open(&b, &unknown, t).map(|r| r.0),
        Some(Err(Error::UnknownIndex))
    );
}

/// What this path sealed and opened counts for the timers as the locked path's would:
/// data sent and nothing heard starts a handshake after 15 s; data heard and nothing sent
/// owes a keepalive after 10 s.
#[test]
fn the_timers_see_what_the_fast_path_did() {
    let t = Instant::now();
    let (mut a, mut b) = quiet(t);
    let t1 = t + Duration::from_secs(20);
    assert!(a.tick(t1).is_empty() && b.tick(t1).is_empty());

    let d = seal(&a, &packet(60, [10, 0, 0, 1], 1), t1).unwrap();
    assert!(open(&b, &d, t1).is_some_and(|r| r.0.is_ok()));
    // b heard data without its lock and sent nothing: a keepalive 10 s later.
    assert!(b.tick(t1 + Duration::from_secs(9)).is_empty());
    let sent = b.tick(t1 + Duration::from_secs(10));
    assert_eq!(sent.len(), 1, "the keepalive owed");
    assert_eq!(sent[0].len(), 32);
    // a sent data without its lock; b's keepalive is lost: a handshake after 15 s.
    assert!(a.tick(t1 + Duration::from_secs(14)).is_empty());
    let sent = a.tick(t1 + Duration::from_secs(15));
    assert_eq!(sent.iter().filter(|d| d[0] == INITIATION).count(), 1);
    assert!(sent
        .iter()
        .all(|d| d[0] != INITIATION || d.len() == INITIATION_LEN));
}

/// After a new handshake the fast path seals on the new session.
#[test]
fn a_new_session_is_published() {
    let t = Instant::now();
    let (mut a, mut b) = peers(t);
    establish(&mut a, &mut b, t);
    let before = seal(&a, &packet(60, [10, 0, 0, 1], 1), t).unwrap();
    let index = |d: &[u8]| u32::from_le_bytes(d[4..8].try_into().unwrap());
    let t1 = t + Duration::from_secs(30);
    let mut out = vec![0u8; 2048];
    let n = a.initiate(&mut out, t1).expect("a new initiation");
    let (_, response) = deliver(&mut b, A_ADDR, &out[..n], t1);
    assert_eq!(
        deliver(&mut a, B_ADDR, &response, t1).0,
        Ok(Received::Established)
    );
    let after = seal(&a, &packet(60, [10, 0, 0, 1], 2), t1).unwrap();
    assert_ne!(index(&before), index(&after));
    assert_eq!(counter(&after), 0, "a new session counts from zero");
    // b, not confirmed yet, takes it under its lock; its previous session still opens
    // without it what was sealed before.
    assert!(deliver(&mut b, A_ADDR, &after, t1).0.is_ok());
    let late = seal(&b, &packet(40, [10, 0, 1, 1], 3), t1).unwrap();
    assert!(matches!(
        deliver(&mut a, B_ADDR, &late, t1).0,
        Ok(Received::Data { .. })
    ));
}

/// The fast path's activity is ordered against the locked path's: a send here before a
/// message heard under the lock does not cancel the keepalive that message is owed.
#[test]
fn an_earlier_fast_send_does_not_cancel_a_later_keepalive_owed() {
    let t = Instant::now();
    let (mut a, mut b) = quiet(t);
    let t1 = t + Duration::from_secs(20);
    seal(&a, &packet(60, [10, 0, 0, 1], 1), t1).unwrap();
    let mut out = vec![0u8; 2048];
    let n = b
        .encapsulate(&packet(60, [10, 0, 1, 1], 2), &mut out, t1)
        .unwrap();
    let later = t1 + Duration::from_secs(1);
    assert!(matches!(
        deliver(&mut a, B_ADDR, &out[..n], later).0,
        Ok(Received::Data { .. })
    ));
    assert!(a.tick(later + Duration::from_secs(9)).is_empty());
    let sent = a.tick(later + Duration::from_secs(10));
    assert_eq!(sent.len(), 1, "the keepalive owed for b's data");
    assert_eq!(sent[0].len(), 32);
}

/// The initiator's session sealed on here past REKEY_AFTER_TIME starts a new handshake
/// at the next tick, as a send under the lock does.
#[test]
fn a_fast_send_on_an_old_session_asks_for_a_rekey() {
    let t = Instant::now();
    let (mut a, _) = quiet(t);
    let old = t + super::super::session::REKEY_AFTER_TIME;
    assert!(
        a.tick(old).iter().all(|d| d[0] != INITIATION),
        "not before it sends"
    );
    seal(&a, &packet(60, [10, 0, 0, 1], 1), old).unwrap();
    let sent = a.tick(old + Duration::from_millis(250));
    assert_eq!(sent.iter().filter(|d| d[0] == INITIATION).count(), 1);
}
