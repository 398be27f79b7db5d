//! BGP-4 message codec (RFC 4271 §4), sans-IO: bytes in, typed messages out, and back.
//!
//! Decoding never panics and never allocates more than a small multiple of the message
//! (which is at most 4,096 bytes). Errors are plain data (`DecodeError`) carrying the
//! NOTIFICATION code, subcode and data that RFC 4271 §6 prescribes; UPDATE attribute errors
//! that RFC 7606 lets us survive are not errors but a `treat_as_withdraw` verdict on the
//! decoded `Update`.

mod attrs;
mod nlri;
mod open;
mod update;

#[cfg(test)]
mod error_tests;
#[cfg(test)]
mod tests;

use std::fmt;

pub use attrs::{AsPath, AsSegment, Origin, PathAttrs, RawAttr, SegmentKind, GRACEFUL_SHUTDOWN};
pub use nlri::{decode_prefixes, encode_prefix, Family};
pub use open::{Capability, GracefulRestart, Open};
pub use update::{MpReach, MpUnreach, Update};

/// RFC 4271 §4.1.
pub const HEADER_LEN: usize = 19;
/// Without the Extended Message capability (RFC 8654), which we do not announce.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// RFC 6793: stands in for a 4-octet ASN towards a 2-octet speaker.
pub const AS_TRANS: u32 = 23456;

pub const AFI_IPV4: u16 = 1;
pub const AFI_IPV6: u16 = 2;
pub const SAFI_UNICAST: u8 = 1;

/// Message type codes, RFC 4271 §4.1 and RFC 2918.
pub mod msg_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// NOTIFICATION error codes and subcodes, RFC 4271 §4.5 and RFC 4486 (Cease).
pub mod err {
    pub const HEADER: u8 = 1;
    pub const HEADER_NOT_SYNCHRONIZED: u8 = 1;
    pub const HEADER_BAD_LENGTH: u8 = 2;
    pub const HEADER_BAD_TYPE: u8 = 3;

    pub const OPEN: u8 = 2;
    pub const OPEN_UNSUPPORTED_VERSION: u8 = 1;
    pub const OPEN_BAD_PEER_AS: u8 = 2;
    pub const OPEN_BAD_BGP_ID: u8 = 3;
    pub const OPEN_UNSUPPORTED_OPT_PARAM: u8 = 4;
    pub const OPEN_UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const OPEN_UNSUPPORTED_CAPABILITY: u8 = 7;

    pub const UPDATE: u8 = 3;
    pub const UPDATE_MALFORMED_ATTR_LIST: u8 = 1;
    pub const UPDATE_UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    pub const UPDATE_MISSING_WELL_KNOWN: u8 = 3;
    pub const UPDATE_ATTR_FLAGS: u8 = 4;
    pub const UPDATE_ATTR_LENGTH: u8 = 5;
    pub const UPDATE_INVALID_ORIGIN: u8 = 6;
    pub const UPDATE_INVALID_NEXT_HOP: u8 = 8;
    pub const UPDATE_OPTIONAL_ATTR: u8 = 9;
    pub const UPDATE_INVALID_NETWORK: u8 = 10;
    pub const UPDATE_MALFORMED_AS_PATH: u8 = 11;

    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const FSM_UNEXPECTED_IN_OPENSENT: u8 = 1;
    pub const FSM_UNEXPECTED_IN_OPENCONFIRM: u8 = 2;
    pub const FSM_UNEXPECTED_IN_ESTABLISHED: u8 = 3;

    pub const CEASE: u8 = 6;
    pub const CEASE_MAX_PREFIXES: u8 = 1;
    pub const CEASE_ADMIN_SHUTDOWN: u8 = 2;
    pub const CEASE_PEER_DECONFIGURED: u8 = 3;
    pub const CEASE_ADMIN_RESET: u8 = 4;
    pub const CEASE_CONNECTION_REJECTED: u8 = 5;
    pub const CEASE_COLLISION: u8 = 7;
    pub const CEASE_OUT_OF_RESOURCES: u8 = 8;
    /// RFC 9384: the BFD session the BGP session follows went down.
    pub const CEASE_BFD_DOWN: u8 = 10;

    pub const ROUTE_REFRESH: u8 = 7;
    pub const ROUTE_REFRESH_BAD_LENGTH: u8 = 1;
}

/// A decoding failure that ends the session: send this NOTIFICATION and close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
    pub reason: &'static str,
}

impl DecodeError {
    pub fn new(code: u8, subcode: u8, reason: &'static str) -> DecodeError {
        DecodeError {
            code,
            subcode,
            data: Vec::new(),
            reason,
        }
    }

    pub fn with_data(mut self, data: &[u8]) -> DecodeError {
        self.data = data.to_vec();
        self
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            self.reason,
            error_name(self.code, self.subcode)
        )
    }
}

impl std::error::Error for DecodeError {}

impl From<DecodeError> for Notification {
    fn from(e: DecodeError) -> Notification {
        Notification {
            code: e.code,
            subcode: e.subcode,
            data: e.data,
        }
    }
}

/// What was negotiated on the session: it shapes the encoding of UPDATEs and how a
/// received one is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// Both sides announced the 4-octet AS capability (RFC 6793).
    pub four_octet_as: bool,
    /// The peer is in our AS. On eBGP (the default) a received LOCAL_PREF is discarded
    /// whatever its form (RFC 4271 §5.1.5, RFC 7606 §7.5).
    pub ibgp: bool,
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx {
            four_octet_as: true,
            ibgp: false,
        }
    }
}

/// RFC 4271 §4.5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8) -> Notification {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}/{})",
            error_name(self.code, self.subcode),
            self.code,
            self.subcode
        )?;
        match self.shutdown_communication() {
            None | Some(ShutdownCommunication::Text("")) => {}
            Some(ShutdownCommunication::Text(text)) => {
                // Control characters are escaped: the text goes to logs, where a crafted
                // one could pass for log lines of its own (RFC 8203 §6).
                f.write_str(": \"")?;
                for c in text.chars() {
                    if c.is_control() {
                        write!(f, "{}", c.escape_default())?;
                    } else {
                        write!(f, "{c}")?;
                    }
                }
                f.write_str("\"")?;
            }
            Some(ShutdownCommunication::Malformed) => write!(
                f,
                ": malformed shutdown communication ({} octets)",
                self.data.len()
            )?,
        }
        Ok(())
    }
}

/// What a Cease / Administrative Shutdown or Reset says (RFC 8203 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownCommunication<'a> {
    Text(&'a str),
    /// The length octet disagrees with the data, or the text is not UTF-8: RFC 8203 §4 asks
    /// to log it and forbids to interpret it.
    Malformed,
}

impl Notification {
    /// The shutdown communication (RFC 8203, with the 255-octet limit of RFC 9003), or
    /// `None` for another NOTIFICATION or one without data.
    pub fn shutdown_communication(&self) -> Option<ShutdownCommunication<'_>> {
        if self.code != err::CEASE
            || !matches!(
                self.subcode,
                err::CEASE_ADMIN_SHUTDOWN | err::CEASE_ADMIN_RESET
            )
        {
            return None;
        }
        let (&len, text) = self.data.split_first()?;
        if text.len() != usize::from(len) {
            return Some(ShutdownCommunication::Malformed);
        }
        Some(match std::str::from_utf8(text) {
            Ok(t) => ShutdownCommunication::Text(t),
            Err(_) => ShutdownCommunication::Malformed,
        })
    }
}

/// A human name for a NOTIFICATION code/subcode, for logs and status.
pub fn error_name(code: u8, subcode: u8) -> &'static str {
    use err::*;
    match (code, subcode) {
        (HEADER, HEADER_NOT_SYNCHRONIZED) => "Message Header Error / Connection Not Synchronized",
        (HEADER, HEADER_BAD_LENGTH) => "Message Header Error / Bad Message Length",
        (HEADER, HEADER_BAD_TYPE) => "Message Header Error / Bad Message Type",
        (HEADER, _) => "Message Header Error",
        (OPEN, OPEN_UNSUPPORTED_VERSION) => "OPEN Message Error / Unsupported Version Number",
        (OPEN, OPEN_BAD_PEER_AS) => "OPEN Message Error / Bad Peer AS",
        (OPEN, OPEN_BAD_BGP_ID) => "OPEN Message Error / Bad BGP Identifier",
        (OPEN, OPEN_UNSUPPORTED_OPT_PARAM) => "OPEN Message Error / Unsupported Optional Parameter",
        (OPEN, OPEN_UNACCEPTABLE_HOLD_TIME) => "OPEN Message Error / Unacceptable Hold Time",
        (OPEN, OPEN_UNSUPPORTED_CAPABILITY) => "OPEN Message Error / Unsupported Capability",
        (OPEN, _) => "OPEN Message Error",
        (UPDATE, UPDATE_MALFORMED_ATTR_LIST) => "UPDATE Message Error / Malformed Attribute List",
        (UPDATE, UPDATE_UNRECOGNIZED_WELL_KNOWN) => {
            "UPDATE Message Error / Unrecognized Well-known Attribute"
        }
        (UPDATE, UPDATE_MISSING_WELL_KNOWN) => {
            "UPDATE Message Error / Missing Well-known Attribute"
        }
        (UPDATE, UPDATE_ATTR_FLAGS) => "UPDATE Message Error / Attribute Flags Error",
        (UPDATE, UPDATE_ATTR_LENGTH) => "UPDATE Message Error / Attribute Length Error",
        (UPDATE, UPDATE_INVALID_ORIGIN) => "UPDATE Message Error / Invalid ORIGIN Attribute",
        (UPDATE, UPDATE_INVALID_NEXT_HOP) => "UPDATE Message Error / Invalid NEXT_HOP Attribute",
        (UPDATE, UPDATE_OPTIONAL_ATTR) => "UPDATE Message Error / Optional Attribute Error",
        (UPDATE, UPDATE_INVALID_NETWORK) => "UPDATE Message Error / Invalid Network Field",
        (UPDATE, UPDATE_MALFORMED_AS_PATH) => "UPDATE Message Error / Malformed AS_PATH",
        (UPDATE, _) => "UPDATE Message Error",
        (HOLD_TIMER_EXPIRED, _) => "Hold Timer Expired",
        (FSM, _) => "Finite State Machine Error",
        (CEASE, CEASE_MAX_PREFIXES) => "Cease / Maximum Number of Prefixes Reached",
        (CEASE, CEASE_ADMIN_SHUTDOWN) => "Cease / Administrative Shutdown",
        (CEASE, CEASE_PEER_DECONFIGURED) => "Cease / Peer De-configured",
        (CEASE, CEASE_ADMIN_RESET) => "Cease / Administrative Reset",
        (CEASE, CEASE_CONNECTION_REJECTED) => "Cease / Connection Rejected",
        (CEASE, CEASE_COLLISION) => "Cease / Connection Collision Resolution",
        (CEASE, CEASE_OUT_OF_RESOURCES) => "Cease / Out of Resources",
        (CEASE, CEASE_BFD_DOWN) => "Cease / BFD Down",
        (CEASE, _) => "Cease",
        (ROUTE_REFRESH, _) => "ROUTE-REFRESH Message Error",
        _ => "unknown error code",
    }
}

/// RFC 2918, with the message subtype of RFC 7313 §3.2 in what was the reserved octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: u16,
    pub safi: u8,
    /// 0: a request to re-advertise (the only one we act on); 1 and 2: the peer's BoRR and
    /// EoRR markers (RFC 7313 §4); anything else is to be ignored (RFC 7313 §5).
    pub subtype: u8,
}

impl RouteRefresh {
    /// A plain refresh request (subtype 0).
    pub fn request(family: Family) -> RouteRefresh {
        RouteRefresh {
            afi: family.afi(),
            safi: family.safi(),
            subtype: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Box<Update>),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// Looks at the start of a receive buffer. Returns the length of the first complete
/// message, `None` if more bytes are needed, or the header error (RFC 4271 §6.1).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16].iter().any(|&b| b != 0xff) {
        return Err(DecodeError::new(
            err::HEADER,
            err::HEADER_NOT_SYNCHRONIZED,
            "marker is not all ones",
        ));
    }
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(DecodeError::new(
            err::HEADER,
            err::HEADER_BAD_LENGTH,
            "message length out of range",
        )
        .with_data(&buf[16..18]));
    }
    Ok((buf.len() >= len).then_some(len))
}

impl Message {
    /// Decodes exactly one message (as delimited by `frame_len`).
    pub fn decode(msg: &[u8], ctx: &Ctx) -> Result<Message, DecodeError> {
        let len = match frame_len(msg)? {
            Some(len) if len == msg.len() => len,
            _ => {
                let field = msg.get(16..18).unwrap_or(&[0, 0]);
                return Err(DecodeError::new(
                    err::HEADER,
                    err::HEADER_BAD_LENGTH,
                    "length field does not match the message",
                )
                .with_data(field));
            }
        };
        let kind = msg[18];
        let body = &msg[HEADER_LEN..len];
        let bad_len = || {
            DecodeError::new(
                err::HEADER,
                err::HEADER_BAD_LENGTH,
                "length wrong for the message type",
            )
            .with_data(&msg[16..18])
        };
        match kind {
            msg_type::OPEN => {
                if body.len() < 10 {
                    return Err(bad_len());
                }
                Open::decode(body).map(Message::Open)
            }
            msg_type::UPDATE => {
                if body.len() < 4 {
                    return Err(bad_len());
                }
                Update::decode(body, ctx).map(|u| Message::Update(Box::new(u)))
            }
            msg_type::NOTIFICATION => {
                if body.len() < 2 {
                    return Err(bad_len());
                }
                Ok(Message::Notification(Notification {
                    code: body[0],
                    subcode: body[1],
                    data: body[2..].to_vec(),
                }))
            }
            msg_type::KEEPALIVE => {
                if !body.is_empty() {
                    return Err(bad_len());
                }
                Ok(Message::Keepalive)
            }
            msg_type::ROUTE_REFRESH => match body.get(2) {
                // RFC 7313 §5: an unknown subtype is ignored, whatever its length; the
                // session passes it on to be dropped.
                Some(&subtype) if subtype > 2 => Ok(Message::RouteRefresh(RouteRefresh {
                    afi: u16::from_be_bytes([body[0], body[1]]),
                    safi: body.get(3).copied().unwrap_or(0),
                    subtype,
                })),
                Some(&subtype) if body.len() == 4 => Ok(Message::RouteRefresh(RouteRefresh {
                    afi: u16::from_be_bytes([body[0], body[1]]),
                    safi: body[3],
                    subtype,
                })),
                // RFC 7313 §5 for BoRR and EoRR; a plain request with ORF entries (RFC
                // 5291, which we do not announce) or a truncated one gets the same answer:
                // its own error code, the whole message as data.
                _ => Err(DecodeError::new(
                    err::ROUTE_REFRESH,
                    err::ROUTE_REFRESH_BAD_LENGTH,
                    "ROUTE-REFRESH length is not 23",
                )
                .with_data(msg)),
            },
            other => {
                Err(
                    DecodeError::new(err::HEADER, err::HEADER_BAD_TYPE, "unknown message type")
                        .with_data(&[other]),
                )
            }
        }
    }

    /// Appends the encoded message to `out`. Fails only for an UPDATE that does not fit in
    /// 4,096 bytes (the caller splits its prefixes; see `Update::encode_split`).
    pub fn encode(&self, ctx: &Ctx, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&[0xff; 16]);
        out.extend_from_slice(&[0, 0, 0]);
        let kind = match self {
            Message::Open(o) => {
                o.encode(out);
                msg_type::OPEN
            }
            Message::Update(u) => {
                u.encode_body(ctx, out);
                msg_type::UPDATE
            }
            Message::Notification(n) => {
                out.push(n.code);
                out.push(n.subcode);
                // Keep the message within the limit even with a long peer-provided data field.
                let room = MAX_MESSAGE_LEN - (out.len() - start);
                out.extend_from_slice(&n.data[..n.data.len().min(room)]);
                msg_type::NOTIFICATION
            }
            Message::Keepalive => msg_type::KEEPALIVE,
            Message::RouteRefresh(r) => {
                out.extend_from_slice(&r.afi.to_be_bytes());
                out.push(r.subtype);
                out.push(r.safi);
                msg_type::ROUTE_REFRESH
            }
        };
        let len = out.len() - start;
        if len > MAX_MESSAGE_LEN {
            out.truncate(start);
            return Err(EncodeError::TooLong(len));
        }
        out[start + 16..start + 18].copy_from_slice(&(len as u16).to_be_bytes());
        out[start + 18] = kind;
        Ok(())
    }

    pub fn to_bytes(&self, ctx: &Ctx) -> Result<Vec<u8>, EncodeError> {
        let mut v = Vec::with_capacity(64);
        self.encode(ctx, &mut v)?;
        Ok(v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    TooLong(usize),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLong(n) => write!(f, "message of {n} bytes exceeds {MAX_MESSAGE_LEN}"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// A bounds-checked reader over a message body; every read returns `None` past the end.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
}
