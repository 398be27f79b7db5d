//! The primitives of WireGuard's Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, named as the
//! whitepaper names them (§5.4): HASH, MAC, HMAC, KDF, AEAD, XAEAD, DH and TAI64N.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Mac as _, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::XChaCha20Poly1305;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::rand::{SecureRandom, SystemRandom};
use x25519_dalek::{PublicKey, StaticSecret};

pub const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
pub const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
pub const LABEL_MAC1: &[u8] = b"mac1----";
pub const LABEL_COOKIE: &[u8] = b"cookie--";
/// Poly1305's tag, appended to every AEAD output.
pub const TAG: usize = 16;

pub type Key = [u8; 32];

/// HASH(a || b): BLAKE2s-256.
pub fn hash(a: &[u8], b: &[u8]) -> Key {
    let mut h = Blake2s256::new();
    Digest::update(&mut h, a);
    Digest::update(&mut h, b);
    h.finalize().into()
}

/// MAC(key, input): keyed BLAKE2s with a 16-byte output (not a truncated 32-byte one).
pub fn mac(key: &[u8], input: &[u8]) -> [u8; 16] {
    let mut m = <Blake2sMac<U16> as KeyInit>::new_from_slice(key)
        .expect("BLAKE2s takes keys of up to 32 bytes");
    Update::update(&mut m, input);
    m.finalize_fixed().into()
}

/// HMAC(key, a || b) over BLAKE2s-256 (RFC 2104), as KDF needs it.
fn hmac(key: &[u8], a: &[u8], b: &[u8]) -> Key {
    let mut m = <hmac::SimpleHmac<Blake2s256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes keys of any length");
    Update::update(&mut m, a);
    Update::update(&mut m, b);
    m.finalize().into_bytes().into()
}

/// KDF_n(key, input) for n = 1..3: HKDF with HMAC-BLAKE2s.
pub fn kdf<const N: usize>(key: &Key, input: &[u8]) -> [Key; N] {
    let prk = hmac(key, input, &[]);
    let mut out = [[0u8; 32]; N];
    let mut prev = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        // T(1) = HMAC(prk, 0x1); T(i) = HMAC(prk, T(i-1) || i).
        let input: &[u8] = if i == 0 { &[] } else { &prev };
        *o = hmac(&prk, input, &[i as u8 + 1]);
        prev = *o;
    }
    out
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// A ChaCha20-Poly1305 key ready for use, with its bytes kept for a handover (`handover`).
pub struct AeadKey {
    key: LessSafeKey,
    bytes: Key,
}

impl AeadKey {
    pub fn new(bytes: Key) -> AeadKey {
        let key = LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &bytes).expect("a 32-byte ChaCha20 key"),
        );
        AeadKey { key, bytes }
    }

    pub fn bytes(&self) -> &Key {
        &self.bytes
    }

    /// AEAD(key, counter, plain, auth): encrypts `buf[..len - TAG]` in place and writes
    /// the tag into its last `TAG` bytes.
    pub fn seal(&self, counter: u64, auth: &[u8], buf: &mut [u8]) {
        let (plain, tag) = buf.split_at_mut(buf.len() - TAG);
        let t = self
            .key
            .seal_in_place_separate_tag(nonce(counter), Aad::from(auth), plain)
            .expect("ChaCha20-Poly1305 seals any length WireGuard sends");
        tag.copy_from_slice(t.as_ref());
    }

    /// Opens `buf` (ciphertext and tag) in place; the plaintext is `buf[..len - TAG]`.
    pub fn open(&self, counter: u64, auth: &[u8], buf: &mut [u8]) -> bool {
        buf.len() >= TAG
            && self
                .key
                .open_in_place(nonce(counter), Aad::from(auth), buf)
                .is_ok()
    }
}

impl Drop for AeadKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.bytes);
    }
}

/// AEAD with a key used once (the handshake's), counter 0.
pub fn seal_once(key: &Key, auth: &[u8], buf: &mut [u8]) {
    AeadKey::new(*key).seal(0, auth, buf);
}

pub fn open_once(key: &Key, auth: &[u8], buf: &mut [u8]) -> bool {
    AeadKey::new(*key).open(0, auth, buf)
}

/// XAEAD(key, nonce, plain, auth): XChaCha20-Poly1305, for cookie replies.
pub fn xseal(key: &Key, nonce: &[u8; 24], auth: &[u8], buf: &mut [u8]) {
    let (plain, tag) = buf.split_at_mut(buf.len() - TAG);
    let t = XChaCha20Poly1305::new(key.into())
        .encrypt_in_place_detached(nonce.into(), auth, plain)
        .expect("XChaCha20-Poly1305 seals a cookie");
    tag.copy_from_slice(&t);
}

pub fn xopen(key: &Key, nonce: &[u8; 24], auth: &[u8], buf: &mut [u8]) -> bool {
    if buf.len() < TAG {
        return false;
    }
    let (cipher, tag) = buf.split_at_mut(buf.len() - TAG);
    XChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(nonce.into(), auth, cipher, (&*tag).into())
        .is_ok()
}

/// DH(private, public), refusing a result of all zeros: the peer sent a point of small
/// order, which would make the "shared" secret known to anyone.
pub fn dh(private: &StaticSecret, public: &[u8; 32]) -> Option<Key> {
    let shared = private.diffie_hellman(&PublicKey::from(*public));
    shared.was_contributory().then(|| shared.to_bytes())
}

pub fn public_of(private: &StaticSecret) -> [u8; 32] {
    PublicKey::from(private).to_bytes()
}

/// Random bytes from the kernel. WireGuard cannot run without them: a failure here
/// (getrandom refusing) is not something to continue past with weaker keys.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the kernel's random source");
    b
}

pub fn ephemeral() -> StaticSecret {
    StaticSecret::from(random::<32>())
}

/// TAI64N of a wall-clock time: seconds since 1970 plus 2^62 and 10 (TAI's offset, as
/// WireGuard's implementations write it), then nanoseconds, both big-endian. The low 24
/// bits of the nanoseconds are cleared, as wireguard-go does, so the timestamp does not
/// tell an observer of the (encrypted) handshake this host's exact timing.
pub fn tai64n(t: SystemTime) -> [u8; 12] {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(
        &0x4000_0000_0000_000a_u64
            .saturating_add(d.as_secs())
            .to_be_bytes(),
    );
    out[8..].copy_from_slice(&(d.subsec_nanos() & !0x00ff_ffff).to_be_bytes());
    out
}

/// The TAI64N after `t`, by one nanosecond (the next timestamp must be greater).
pub fn tai64n_after(t: &[u8; 12]) -> [u8; 12] {
    let secs = u64::from_be_bytes(t[..8].try_into().expect("8 bytes"));
    let nanos = u32::from_be_bytes(t[8..].try_into().expect("4 bytes"));
    let (secs, nanos) = if nanos >= 999_999_999 {
        (secs.saturating_add(1), 0)
    } else {
        (secs, nanos + 1)
    };
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&secs.to_be_bytes());
    out[8..].copy_from_slice(&nanos.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_chaining_key_and_hash_are_wireguards() {
        // The constants every implementation starts from (wireguard-go's
        // InitialChainKey / InitialHash, computed the same way from the two labels).
        let ck = hash(CONSTRUCTION, &[]);
        let h = hash(&ck, IDENTIFIER);
        assert_eq!(
            ck[..8],
            [0x60, 0xe2, 0x6d, 0xae, 0xf3, 0x27, 0xef, 0xc0],
            "{ck:02x?}"
        );
        assert_eq!(
            h[..8],
            [0x22, 0x11, 0xb3, 0x61, 0x08, 0x1a, 0xc5, 0x66],
            "{h:02x?}"
        );
    }

    #[test]
    fn aead_round_trip_and_tamper() {
        let k = AeadKey::new([7; 32]);
        let mut buf = *b"sixteen bytes!!!0123456789abcdef";
        k.seal(5, b"auth", &mut buf);
        let sealed = buf;
        assert!(k.open(5, b"auth", &mut buf));
        assert_eq!(&buf[..16], b"sixteen bytes!!!");
        let mut wrong = sealed;
        assert!(!k.open(6, b"auth", &mut wrong), "another counter");
        let mut wrong = sealed;
        wrong[3] ^= 1;
        assert!(!k.open(5, b"auth", &mut wrong), "a flipped bit");
    }

    #[test]
    fn xaead_round_trip() {
        let mut buf = [1u8; 32];
        xseal(&[3; 32], &[9; 24], b"mac1", &mut buf);
        assert!(xopen(&[3; 32], &[9; 24], b"mac1", &mut buf));
        assert_eq!(buf[..16], [1; 16]);
        assert!(
            !xopen(&[3; 32], &[9; 24], b"mac1", &mut buf),
            "opened twice"
        );
    }

    #[test]
    fn kdf_outputs_chain() {
        let [a] = kdf::<1>(&[1; 32], b"x");
        let [b, c] = kdf::<2>(&[1; 32], b"x");
        let [d, e, f] = kdf::<3>(&[1; 32], b"x");
        assert_eq!(a, b);
        assert_eq!((b, c), (d, e));
        assert_ne!(e, f);
    }

    #[test]
    fn small_order_points_give_no_secret() {
        let s = StaticSecret::from([5; 32]);
        assert_eq!(dh(&s, &[0; 32]), None);
        assert!(dh(&s, &public_of(&StaticSecret::from([6; 32]))).is_some());
    }

    #[test]
    fn timestamps_increase() {
        let t = tai64n(UNIX_EPOCH + Duration::new(1, 999_999_999));
        assert_eq!(t[11], 0, "the low nanoseconds are cleared");
        assert_eq!(t[10], 0);
        let n = tai64n_after(&t);
        assert!(n > t);
        let mut last = t;
        last[8..].copy_from_slice(&999_999_999u32.to_be_bytes());
        let n = tai64n_after(&last);
        assert_eq!(n[8..], [0, 0, 0, 0], "into the next second");
        assert!(n > last);
        assert_eq!(
            tai64n_after(&[0xff; 12])[..8],
            [0xff; 8],
            "saturates, never wraps"
        );
        assert!(tai64n(UNIX_EPOCH + Duration::new(2, 1)) > t);
    }
}
