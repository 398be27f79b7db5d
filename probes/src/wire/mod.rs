//! BFD Control packets (RFC 5880 §4), sans-IO.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       My Discriminator                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Your Discriminator                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Desired Min TX Interval                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   Required Min RX Interval                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Required Min Echo RX Interval                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Auth Type   |   Auth Len    |  Auth Key ID  |   Reserved    |  (§4.4, SHA1 types)
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Sequence Number                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Auth Key/Hash (20 octets)               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! Intervals are in microseconds. Decoding applies the packet-only checks of §6.8.6; the
//! checks that need session state (discriminator lookup, authentication) are the session's.

use std::fmt;

use sha1::{Digest, Sha1};

pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 24;
/// Auth section of Keyed / Meticulous Keyed SHA1: type, length, key id, reserved,
/// sequence, 20-octet hash.
pub const SHA1_AUTH_LEN: usize = 28;
pub const MAX_LEN: usize = HEADER_LEN + SHA1_AUTH_LEN;

/// RFC 5880 §4.1 state values.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(b: u8) -> State {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        }
    }
}

/// RFC 5880 §4.1 diagnostic codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Diag {
    None = 0,
    ControlDetectionTimeExpired = 1,
    EchoFunctionFailed = 2,
    NeighborSignaledSessionDown = 3,
    ForwardingPlaneReset = 4,
    PathDown = 5,
    ConcatenatedPathDown = 6,
    AdministrativelyDown = 7,
    ReverseConcatenatedPathDown = 8,
    /// 9-31: reserved; kept so a peer's code is shown as it was sent.
    Reserved = 31,
}

impl Diag {
    fn from_bits(b: u8) -> Diag {
        match b & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            _ => Diag::Reserved,
        }
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Diag::None => "no diagnostic",
            Diag::ControlDetectionTimeExpired => "control detection time expired",
            Diag::EchoFunctionFailed => "echo function failed",
            Diag::NeighborSignaledSessionDown => "neighbor signaled session down",
            Diag::ForwardingPlaneReset => "forwarding plane reset",
            Diag::PathDown => "path down",
            Diag::ConcatenatedPathDown => "concatenated path down",
            Diag::AdministrativelyDown => "administratively down",
            Diag::ReverseConcatenatedPathDown => "reverse concatenated path down",
            Diag::Reserved => "reserved diagnostic",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthType {
    /// §6.7.3: the sequence number may repeat; it advances occasionally.
    KeyedSha1 = 4,
    /// §6.7.4: the sequence number advances with every packet.
    MeticulousKeyedSha1 = 5,
}

/// The SHA1 authentication section as received (the hash is checked by the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth {
    pub kind: AuthType,
    pub key_id: u8,
    pub sequence: u32,
    pub digest: [u8; 20],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub diag: Diag,
    pub state: State,
    pub poll: bool,
    pub fin: bool,
    /// C bit: our forwarding does not share fate with the control plane.
    pub cpi: bool,
    pub demand: bool,
    pub detect_mult: u8,
    pub my_disc: u32,
    pub your_disc: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    pub required_min_echo_rx_us: u32,
    pub auth: Option<Auth>,
}

/// Why a received packet was discarded (RFC 5880 §6.8.6). Discarding is silent on the
/// wire; the reason is for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    TooShort,
    BadVersion(u8),
    BadLength,
    ZeroDetectMult,
    Multipoint,
    ZeroMyDiscriminator,
    ZeroYourDiscriminator,
    BadAuthSection,
    UnsupportedAuthType(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooShort => f.write_str("shorter than a BFD control packet"),
            DecodeError::BadVersion(v) => write!(f, "version {v} is not 1"),
            DecodeError::BadLength => f.write_str("length field disagrees with the packet"),
            DecodeError::ZeroDetectMult => f.write_str("detect multiplier is 0"),
            DecodeError::Multipoint => f.write_str("multipoint bit set"),
            DecodeError::ZeroMyDiscriminator => f.write_str("my discriminator is 0"),
            DecodeError::ZeroYourDiscriminator => {
                f.write_str("your discriminator is 0 outside Down/AdminDown")
            }
            DecodeError::BadAuthSection => f.write_str("malformed authentication section"),
            DecodeError::UnsupportedAuthType(t) => {
                write!(f, "authentication type {t} not supported")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

const FLAG_POLL: u8 = 0x20;
const FLAG_FINAL: u8 = 0x10;
const FLAG_CPI: u8 = 0x08;
const FLAG_AUTH: u8 = 0x04;
const FLAG_DEMAND: u8 = 0x02;
const FLAG_MULTIPOINT: u8 = 0x01;

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

impl Packet {
    /// Decodes and validates a received packet (the stateless part of §6.8.6).
    pub fn decode(buf: &[u8]) -> Result<Packet, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::TooShort);
        }
        let version = buf[0] >> 5;
        if version != VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let flags = buf[1];
        let len = usize::from(buf[3]);
        let auth_bit = flags & FLAG_AUTH != 0;
        let min = if auth_bit { HEADER_LEN + 2 } else { HEADER_LEN };
        if len < min || len > buf.len() {
            return Err(DecodeError::BadLength);
        }
        if buf[2] == 0 {
            return Err(DecodeError::ZeroDetectMult);
        }
        if flags & FLAG_MULTIPOINT != 0 {
            return Err(DecodeError::Multipoint);
        }
        let p = Packet {
            diag: Diag::from_bits(buf[0]),
            state: State::from_bits(flags >> 6),
            poll: flags & FLAG_POLL != 0,
            fin: flags & FLAG_FINAL != 0,
            cpi: flags & FLAG_CPI != 0,
            demand: flags & FLAG_DEMAND != 0,
            detect_mult: buf[2],
            my_disc: u32_at(buf, 4),
            your_disc: u32_at(buf, 8),
            desired_min_tx_us: u32_at(buf, 12),
            required_min_rx_us: u32_at(buf, 16),
            required_min_echo_rx_us: u32_at(buf, 20),
            auth: if auth_bit {
                Some(decode_auth(&buf[HEADER_LEN..len])?)
            } else {
                None
            },
        };
        if p.my_disc == 0 {
            return Err(DecodeError::ZeroMyDiscriminator);
        }
        if p.your_disc == 0 && !matches!(p.state, State::Down | State::AdminDown) {
            return Err(DecodeError::ZeroYourDiscriminator);
        }
        Ok(p)
    }

    /// Encodes the packet. With `auth`, the SHA1 section is appended and the digest
    /// computed with `key` (RFC 5880 §6.7.3/§6.7.4): the hash covers the whole packet with
    /// the key, zero-padded to 20 octets, in the hash field.
    pub fn encode(&self, key: Option<&[u8]>) -> Vec<u8> {
        let mut b = Vec::with_capacity(MAX_LEN);
        b.push((VERSION << 5) | (self.diag as u8 & 0x1f));
        let mut flags = (self.state as u8) << 6;
        if self.poll {
            flags |= FLAG_POLL;
        }
        if self.fin {
            flags |= FLAG_FINAL;
        }
        if self.cpi {
            flags |= FLAG_CPI;
        }
        if self.auth.is_some() {
            flags |= FLAG_AUTH;
        }
        if self.demand {
            flags |= FLAG_DEMAND;
        }
        b.push(flags);
        b.push(self.detect_mult);
        // The length is part of what the digest covers: set it before hashing.
        b.push(if self.auth.is_some() {
            MAX_LEN
        } else {
            HEADER_LEN
        } as u8);
        for v in [
            self.my_disc,
            self.your_disc,
            self.desired_min_tx_us,
            self.required_min_rx_us,
            self.required_min_echo_rx_us,
        ] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        if let Some(a) = &self.auth {
            b.extend_from_slice(&[a.kind as u8, SHA1_AUTH_LEN as u8, a.key_id, 0]);
            b.extend_from_slice(&a.sequence.to_be_bytes());
            b.extend_from_slice(&padded_key(key.unwrap_or_default()));
            let digest = Sha1::digest(&b);
            let n = b.len();
            b[n - 20..].copy_from_slice(&digest);
        }
        b
    }
}

fn padded_key(key: &[u8]) -> [u8; 20] {
    let mut k = [0u8; 20];
    let n = key.len().min(20);
    k[..n].copy_from_slice(&key[..n]);
    k
}

fn decode_auth(section: &[u8]) -> Result<Auth, DecodeError> {
    let (kind, len) = (section[0], usize::from(section[1]));
    let kind = match kind {
        4 => AuthType::KeyedSha1,
        5 => AuthType::MeticulousKeyedSha1,
        other => return Err(DecodeError::UnsupportedAuthType(other)),
    };
    if len != SHA1_AUTH_LEN || section.len() != SHA1_AUTH_LEN {
        return Err(DecodeError::BadAuthSection);
    }
    let mut digest = [0u8; 20];
    digest.copy_from_slice(&section[8..28]);
    Ok(Auth {
        kind,
        key_id: section[2],
        sequence: u32_at(section, 4),
        digest,
    })
}

/// Checks a received packet's SHA1 digest against `key` (§6.7.3 reception): recompute the
/// hash over the packet with the key in the hash field.
pub fn verify_sha1(raw: &[u8], key: &[u8]) -> bool {
    let len = usize::from(raw.get(3).copied().unwrap_or(0));
    if len != MAX_LEN || raw.len() < len {
        return false;
    }
    let mut copy = raw[..len].to_vec();
    let received: [u8; 20] = match copy[len - 20..].try_into() {
        Ok(d) => d,
        Err(_) => return false,
    };
    copy[len - 20..].copy_from_slice(&padded_key(key));
    let want = Sha1::digest(&copy);
    // Constant time is not needed against an on-link attacker who sees every packet, but it
    // costs nothing.
    want.iter()
        .zip(received.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests;
