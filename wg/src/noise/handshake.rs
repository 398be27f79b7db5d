//! WireGuard's handshake messages (whitepaper §5.4.2-5.4.7): the initiation, the response
//! and the cookie reply, each built and consumed here; the decisions of when to send them
//! belong to `Peer`.

use std::time::Instant;

use x25519_dalek::StaticSecret;

use super::crypto::{
    self, dh, hash, kdf, mac, open_once, public_of, seal_once, xopen, xseal, Key, CONSTRUCTION,
    IDENTIFIER, LABEL_COOKIE, LABEL_MAC1,
};
use super::Error;

pub const INITIATION: u8 = 1;
pub const RESPONSE: u8 = 2;
pub const COOKIE_REPLY: u8 = 3;
pub const INITIATION_LEN: usize = 148;
pub const RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;

/// The two identities and what is derived from them alone, computed once.
pub struct Identity {
    private: StaticSecret,
    pub public: [u8; 32],
    pub peer: [u8; 32],
    psk: Key,
    /// DH(our static, the peer's static).
    static_static: Key,
    /// HASH(LABEL_MAC1 || peer): mac1 of what we send.
    mac1_out: Key,
    /// HASH(LABEL_MAC1 || us): mac1 of what we receive.
    mac1_in: Key,
    /// HASH(LABEL_COOKIE || peer): opens the cookie replies the peer sends.
    cookie_in: Key,
    /// HASH(LABEL_COOKIE || us): seals the cookie replies we send.
    cookie_out: Key,
    /// Noise's hash after the responder's static key is mixed in, for initiations we send
    /// and for those we receive.
    hash_out: Key,
    hash_in: Key,
}

impl Identity {
    /// `None` when the two static keys give no shared secret (a peer key of small order).
    pub fn new(private: [u8; 32], peer: [u8; 32], psk: Option<[u8; 32]>) -> Option<Identity> {
        let private = StaticSecret::from(private);
        let public = public_of(&private);
        let static_static = dh(&private, &peer)?;
        let h0 = hash(&hash(CONSTRUCTION, &[]), IDENTIFIER);
        Some(Identity {
            static_static,
            mac1_out: hash(LABEL_MAC1, &peer),
            mac1_in: hash(LABEL_MAC1, &public),
            cookie_in: hash(LABEL_COOKIE, &peer),
            cookie_out: hash(LABEL_COOKIE, &public),
            hash_out: hash(&h0, &peer),
            hash_in: hash(&h0, &public),
            private,
            public,
            peer,
            psk: psk.unwrap_or([0; 32]),
        })
    }
}

impl Identity {
    /// Names the preshared key without giving it away (the handover checks it).
    pub fn psk_digest(&self) -> Key {
        hash(b"crosslink handover: preshared key", &self.psk)
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.psk.zeroize();
        self.static_static.zeroize();
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.chaining.zeroize();
        self.hash.zeroize();
    }
}

impl Drop for Initiation {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.chaining);
    }
}

impl Drop for Agreed {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.send.zeroize();
        self.recv.zeroize();
    }
}

fn chaining_key0() -> Key {
    hash(CONSTRUCTION, &[])
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

/// An initiation we sent, waiting for its response.
pub struct Pending {
    pub local_index: u32,
    ephemeral: StaticSecret,
    hash: Key,
    chaining: Key,
    pub sent_at: Instant,
    /// Its mac1: a cookie reply to it is sealed with this as associated data.
    pub mac1: [u8; 16],
}

/// Transport keys agreed by a handshake, from our side.
pub struct Agreed {
    pub local_index: u32,
    pub remote_index: u32,
    pub send: Key,
    pub recv: Key,
}

/// Writes mac1 and mac2 (zeros without a cookie) at the end of `msg` and returns mac1.
fn stamp(mac1_key: &Key, cookie: Option<&[u8; 16]>, msg: &mut [u8]) -> [u8; 16] {
    let n = msg.len();
    let m1 = mac(mac1_key, &msg[..n - 32]);
    msg[n - 32..n - 16].copy_from_slice(&m1);
    let m2 = cookie.map_or([0; 16], |c| mac(c, &msg[..n - 16]));
    msg[n - 16..].copy_from_slice(&m2);
    m1
}

/// Whether a received handshake message carries a valid mac1 (anyone who knows our
/// public key can make one: it only spares us the DH of messages sent to someone else).
pub fn mac1_valid(id: &Identity, msg: &[u8]) -> bool {
    let n = msg.len();
    n >= 32 && crypto_eq(&mac(&id.mac1_in, &msg[..n - 32]), &msg[n - 32..n - 16])
}

/// Whether its mac2 proves the sender got `cookie` for its address.
pub fn mac2_valid(cookie: &[u8; 16], msg: &[u8]) -> bool {
    let n = msg.len();
    n >= 16 && crypto_eq(&mac(cookie, &msg[..n - 16]), &msg[n - 16..])
}

fn crypto_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Builds an initiation into `out` (§5.4.2).
pub fn initiate(
    id: &Identity,
    local_index: u32,
    timestamp: [u8; 12],
    cookie: Option<&[u8; 16]>,
    out: &mut [u8; INITIATION_LEN],
    now: Instant,
) -> Result<Pending, Error> {
    let ephemeral = crypto::ephemeral();
    let e = public_of(&ephemeral);
    let mut c = chaining_key0();
    let mut h = id.hash_out;
    out[..4].copy_from_slice(&[INITIATION, 0, 0, 0]);
    out[4..8].copy_from_slice(&local_index.to_le_bytes());
    out[8..40].copy_from_slice(&e);
    [c] = kdf(&c, &e);
    h = hash(&h, &e);
    let [c1, k] = kdf(&c, &dh(&ephemeral, &id.peer).ok_or(Error::BadKey)?);
    c = c1;
    out[40..72].copy_from_slice(&id.public);
    seal_once(&k, &h, &mut out[40..88]);
    h = hash(&h, &out[40..88]);
    let [c2, k] = kdf(&c, &id.static_static);
    c = c2;
    out[88..100].copy_from_slice(&timestamp);
    seal_once(&k, &h, &mut out[88..116]);
    h = hash(&h, &out[88..116]);
    let mac1 = stamp(&id.mac1_out, cookie, out);
    Ok(Pending {
        local_index,
        ephemeral,
        hash: h,
        chaining: c,
        sent_at: now,
        mac1,
    })
}

/// A received initiation, authenticated as the peer's.
pub struct Initiation {
    pub remote_index: u32,
    pub timestamp: [u8; 12],
    ephemeral: [u8; 32],
    hash: Key,
    chaining: Key,
}

/// Consumes an initiation (mac1 already checked): it must come from our one peer.
pub fn consume_initiation(id: &Identity, msg: &[u8]) -> Result<Initiation, Error> {
    if msg.len() != INITIATION_LEN {
        return Err(Error::Malformed);
    }
    let mut buf = [0u8; INITIATION_LEN];
    buf.copy_from_slice(msg);
    let e: [u8; 32] = buf[8..40].try_into().expect("32 bytes");
    let mut c = chaining_key0();
    let mut h = id.hash_in;
    [c] = kdf(&c, &e);
    h = hash(&h, &e);
    let [c1, k] = kdf(&c, &dh(&id.private, &e).ok_or(Error::BadKey)?);
    c = c1;
    let sealed_static = &mut buf[40..88];
    let h_next = hash(&h, sealed_static);
    if !open_once(&k, &h, sealed_static) {
        return Err(Error::Decrypt);
    }
    if !crypto_eq(&buf[40..72], &id.peer) {
        return Err(Error::UnknownPeer);
    }
    h = h_next;
    let [c2, k] = kdf(&c, &id.static_static);
    c = c2;
    let h_next = hash(&h, &buf[88..116]);
    if !open_once(&k, &h, &mut buf[88..116]) {
        return Err(Error::Decrypt);
    }
    Ok(Initiation {
        remote_index: le32(&buf[4..8]),
        timestamp: buf[88..100].try_into().expect("12 bytes"),
        ephemeral: e,
        hash: h_next,
        chaining: c,
    })
}

/// Answers an initiation (§5.4.3); the keys are ours as the responder.
pub fn respond(
    id: &Identity,
    init: &Initiation,
    local_index: u32,
    cookie: Option<&[u8; 16]>,
    out: &mut [u8; RESPONSE_LEN],
) -> Result<(Agreed, [u8; 16]), Error> {
    let ephemeral = crypto::ephemeral();
    let e = public_of(&ephemeral);
    out[..4].copy_from_slice(&[RESPONSE, 0, 0, 0]);
    out[4..8].copy_from_slice(&local_index.to_le_bytes());
    out[8..12].copy_from_slice(&init.remote_index.to_le_bytes());
    out[12..44].copy_from_slice(&e);
    let [mut c] = kdf(&init.chaining, &e);
    let mut h = hash(&init.hash, &e);
    [c] = kdf(&c, &dh(&ephemeral, &init.ephemeral).ok_or(Error::BadKey)?);
    [c] = kdf(&c, &dh(&ephemeral, &id.peer).ok_or(Error::BadKey)?);
    let [c3, tau, k] = kdf(&c, &id.psk);
    h = hash(&h, &tau);
    out[44..60].fill(0);
    seal_once(&k, &h, &mut out[44..60]);
    let [first, second] = kdf(&c3, &[]);
    let mac1 = stamp(&id.mac1_out, cookie, out);
    Ok((
        Agreed {
            local_index,
            remote_index: init.remote_index,
            send: second,
            recv: first,
        },
        mac1,
    ))
}

/// The sender and receiver indices of a response.
pub fn response_indices(msg: &[u8]) -> Option<(u32, u32)> {
    (msg.len() == RESPONSE_LEN).then(|| (le32(&msg[4..8]), le32(&msg[8..12])))
}

/// Consumes the response to `pending` (mac1 already checked); the keys are ours as the
/// initiator.
pub fn consume_response(id: &Identity, pending: &Pending, msg: &[u8]) -> Result<Agreed, Error> {
    let (remote_index, _) = response_indices(msg).ok_or(Error::Malformed)?;
    let e: [u8; 32] = msg[12..44].try_into().expect("32 bytes");
    let [mut c] = kdf(&pending.chaining, &e);
    let mut h = hash(&pending.hash, &e);
    [c] = kdf(&c, &dh(&pending.ephemeral, &e).ok_or(Error::BadKey)?);
    [c] = kdf(&c, &dh(&id.private, &e).ok_or(Error::BadKey)?);
    let [c3, tau, k] = kdf(&c, &id.psk);
    h = hash(&h, &tau);
    let mut empty: [u8; 16] = msg[44..60].try_into().expect("16 bytes");
    if !open_once(&k, &h, &mut empty) {
        return Err(Error::Decrypt);
    }
    let [first, second] = kdf(&c3, &[]);
    Ok(Agreed {
        local_index: pending.local_index,
        remote_index,
        send: first,
        recv: second,
    })
}

/// The cookie a sender at `source` (address and port bytes) gets while we are under load
/// (§5.4.7): a MAC of its address under a secret that changes every two minutes.
pub fn cookie_for(secret: &Key, source: &[u8]) -> [u8; 16] {
    mac(secret, source)
}

/// Builds a cookie reply to the handshake message `msg` from `source`.
pub fn cookie_reply(
    id: &Identity,
    secret: &Key,
    source: &[u8],
    msg: &[u8],
    out: &mut [u8; COOKIE_REPLY_LEN],
) {
    let n = msg.len();
    let nonce: [u8; 24] = crypto::random();
    out[..4].copy_from_slice(&[COOKIE_REPLY, 0, 0, 0]);
    out[4..8].copy_from_slice(&msg[4..8]);
    out[8..32].copy_from_slice(&nonce);
    out[32..48].copy_from_slice(&cookie_for(secret, source));
    xseal(
        &id.cookie_out,
        &nonce,
        &msg[n - 32..n - 16],
        &mut out[32..64],
    );
}

/// Opens a cookie reply to the message whose mac1 was `mac1`; the index it names must be
/// checked by the caller.
pub fn consume_cookie_reply(id: &Identity, mac1: &[u8; 16], msg: &[u8]) -> Option<[u8; 16]> {
    if msg.len() != COOKIE_REPLY_LEN {
        return None;
    }
    let nonce: [u8; 24] = msg[8..32].try_into().expect("24 bytes");
    let mut sealed: [u8; 32] = msg[32..64].try_into().expect("32 bytes");
    xopen(&id.cookie_in, &nonce, mac1, &mut sealed)
        .then(|| sealed[..16].try_into().expect("16 bytes"))
}

pub fn cookie_reply_index(msg: &[u8]) -> Option<u32> {
    (msg.len() == COOKIE_REPLY_LEN).then(|| le32(&msg[4..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Identity, Identity) {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let pa = public_of(&StaticSecret::from(a));
        let pb = public_of(&StaticSecret::from(b));
        (
            Identity::new(a, pb, Some([9; 32])).expect("keys"),
            Identity::new(b, pa, Some([9; 32])).expect("keys"),
        )
    }

    #[test]
    fn both_sides_agree_on_the_keys() {
        let (a, b) = pair();
        let now = Instant::now();
        let mut init = [0u8; INITIATION_LEN];
        let pending = initiate(&a, 7, [1; 12], None, &mut init, now).expect("initiation");
        assert!(mac1_valid(&b, &init));
        assert!(!mac1_valid(&a, &init), "mac1 is for the responder");
        let got = consume_initiation(&b, &init).expect("consumed");
        assert_eq!(got.remote_index, 7);
        assert_eq!(got.timestamp, [1; 12]);
        let mut resp = [0u8; RESPONSE_LEN];
        let (theirs, _) = respond(&b, &got, 99, None, &mut resp).expect("response");
        assert!(mac1_valid(&a, &resp));
        assert_eq!(response_indices(&resp), Some((99, 7)));
        let ours = consume_response(&a, &pending, &resp).expect("keys");
        assert_eq!((ours.local_index, ours.remote_index), (7, 99));
        assert_eq!((theirs.local_index, theirs.remote_index), (99, 7));
        assert_eq!(ours.send, theirs.recv);
        assert_eq!(ours.recv, theirs.send);
        assert_ne!(ours.send, ours.recv);
    }

    #[test]
    fn a_stranger_or_a_tampered_message_is_refused() {
        let (a, b) = pair();
        let now = Instant::now();
        let mut init = [0u8; INITIATION_LEN];
        initiate(&a, 7, [1; 12], None, &mut init, now).expect("initiation");
        let mut bad = init;
        bad[50] ^= 1;
        assert_eq!(consume_initiation(&b, &bad).err(), Some(Error::Decrypt));
        // A third party that knows b's public key but is not b's configured peer.
        let c = Identity::new([3; 32], b.public, None).expect("keys");
        initiate(&c, 8, [1; 12], None, &mut init, now).expect("initiation");
        assert!(mac1_valid(&b, &init), "anyone can make a mac1");
        assert_eq!(
            consume_initiation(&b, &init).err(),
            Some(Error::UnknownPeer)
        );
        assert_eq!(
            consume_initiation(&b, &init[..100]).err(),
            Some(Error::Malformed)
        );
    }

    #[test]
    fn a_preshared_key_must_match() {
        let (a, _) = pair();
        let b = Identity::new([2; 32], a.public, None).expect("keys");
        let now = Instant::now();
        let mut init = [0u8; INITIATION_LEN];
        let pending = initiate(&a, 7, [1; 12], None, &mut init, now).expect("initiation");
        let got = consume_initiation(&b, &init).expect("the psk is not used yet");
        let mut resp = [0u8; RESPONSE_LEN];
        respond(&b, &got, 99, None, &mut resp).expect("response");
        assert_eq!(
            consume_response(&a, &pending, &resp).err(),
            Some(Error::Decrypt)
        );
    }

    #[test]
    fn cookie_reply_round_trip_and_mac2() {
        let (a, b) = pair();
        let now = Instant::now();
        let mut init = [0u8; INITIATION_LEN];
        let pending = initiate(&a, 7, [1; 12], None, &mut init, now).expect("initiation");
        assert!(!mac2_valid(&[5; 16], &init));
        let source = [192, 0, 2, 1, 0x13, 0x88];
        let mut reply = [0u8; COOKIE_REPLY_LEN];
        cookie_reply(&b, &[4; 32], &source, &init, &mut reply);
        assert_eq!(cookie_reply_index(&reply), Some(7));
        let cookie = consume_cookie_reply(&a, &pending.mac1, &reply).expect("opened");
        assert_eq!(cookie, cookie_for(&[4; 32], &source));
        assert_eq!(
            consume_cookie_reply(&a, &[0; 16], &reply),
            None,
            "another message's"
        );
        initiate(&a, 8, [2; 12], Some(&cookie), &mut init, now).expect("initiation");
        assert!(mac2_valid(&cookie_for(&[4; 32], &source), &init));
        assert!(!mac2_valid(
            &cookie_for(&[4; 32], &[192, 0, 2, 2, 0x13, 0x88]),
            &init
        ));
    }

    #[test]
    fn a_small_order_peer_key_is_no_identity() {
        assert!(Identity::new([1; 32], [0; 32], None).is_none());
    }
}
