//! Path attributes (RFC 4271 §4.3, §5) and their error handling under RFC 7606.
//!
//! ```text
//!  0                   1
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Attr. Flags  |Attr. Type Code|  then 1 length octet, or 2 with Extended Length
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::Ipv4Addr;

use super::{err, Ctx, DecodeError, Reader, AS_TRANS};

pub(crate) const FLAG_OPTIONAL: u8 = 0x80;
pub(crate) const FLAG_TRANSITIVE: u8 = 0x40;
pub(crate) const FLAG_PARTIAL: u8 = 0x20;
pub(crate) const FLAG_EXT_LEN: u8 = 0x10;

pub(crate) mod code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MED: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITIES: u8 = 32;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

impl SegmentKind {
    /// AS_CONFED_SEQUENCE or AS_CONFED_SET (RFC 5065).
    pub fn is_confed(self) -> bool {
        matches!(self, SegmentKind::ConfedSequence | SegmentKind::ConfedSet)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsSegment {
    pub kind: SegmentKind,
    pub asns: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    pub fn sequence(asns: Vec<u32>) -> AsPath {
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![AsSegment {
                kind: SegmentKind::Sequence,
                asns,
            }],
        }
    }

    /// The path length as best-path selection counts it (RFC 4271 §9.1.2.2: a set counts 1,
    /// confederation segments 0).
    pub fn len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentKind::Sequence => s.asns.len(),
                SegmentKind::Set => 1,
                _ => 0,
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The neighbouring AS: first ASN of a leading AS_SEQUENCE.
    pub fn first_asn(&self) -> Option<u32> {
        let s = self.segments.first()?;
        (s.kind == SegmentKind::Sequence)
            .then(|| s.asns.first().copied())
            .flatten()
    }

    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// Number of ASNs as counted for RFC 6793 §4.2.3 merging (sets count 1).
    fn count_for_merge(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentKind::Set => 1,
                SegmentKind::Sequence => s.asns.len(),
                _ => 0,
            })
            .sum()
    }

    /// RFC 7606 §7.2 / RFC 4271 §6.3 syntax: known segment types, no empty segments.
    pub(crate) fn decode(buf: &[u8], width: usize) -> Option<AsPath> {
        let mut r = Reader::new(buf);
        let mut segments = Vec::new();
        while !r.is_empty() {
            let kind = match r.u8()? {
                1 => SegmentKind::Set,
                2 => SegmentKind::Sequence,
                3 => SegmentKind::ConfedSequence,
                4 => SegmentKind::ConfedSet,
                _ => return None,
            };
            let n = usize::from(r.u8()?);
            if n == 0 {
                return None;
            }
            let bytes = r.take(n * width)?;
            let asns = bytes
                .chunks_exact(width)
                .map(|c| {
                    if width == 4 {
                        u32::from_be_bytes([c[0], c[1], c[2], c[3]])
                    } else {
                        u32::from(u16::from_be_bytes([c[0], c[1]]))
                    }
                })
                .collect();
            segments.push(AsSegment { kind, asns });
        }
        Some(AsPath { segments })
    }

    fn encode(&self, width: usize, out: &mut Vec<u8>) {
        for s in &self.segments {
            // Segments hold at most 255 ASNs: split longer ones.
            for chunk in s.asns.chunks(255) {
                out.push(s.kind as u8);
                out.push(chunk.len() as u8);
                for &a in chunk {
                    if width == 4 {
                        out.extend_from_slice(&a.to_be_bytes());
                    } else {
                        out.extend_from_slice(
                            &(u16::try_from(a).unwrap_or(AS_TRANS as u16)).to_be_bytes(),
                        );
                    }
                }
            }
        }
    }

    fn needs_as4(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.asns.iter().any(|&a| a > 0xffff))
    }

    /// RFC 6793 §4.2.3: rebuild the true path from a 2-octet AS_PATH and an AS4_PATH.
    fn merge_as4(self, as4: AsPath) -> AsPath {
        let (n, m) = (self.count_for_merge(), as4.count_for_merge());
        if n < m {
            return self;
        }
        let mut keep = n - m;
        let mut segments = Vec::new();
        for s in self.segments {
            if keep == 0 {
                break;
            }
            match s.kind {
                SegmentKind::Sequence if s.asns.len() > keep => {
                    segments.push(AsSegment {
                        kind: s.kind,
                        asns: s.asns[..keep].to_vec(),
                    });
                    keep = 0;
                }
                SegmentKind::Sequence => {
                    keep -= s.asns.len();
                    segments.push(s);
                }
                SegmentKind::Set => {
                    keep -= 1;
                    segments.push(s);
                }
                _ => segments.push(s),
            }
        }
        // The prefix and AS4_PATH usually meet inside one AS_SEQUENCE: rejoin it.
        let mut rest = as4.segments.into_iter();
        if let (Some(last), Some(first)) = (segments.last_mut(), rest.as_slice().first()) {
            if last.kind == SegmentKind::Sequence && first.kind == SegmentKind::Sequence {
                last.asns.extend_from_slice(&first.asns);
                rest.next();
            }
        }
        segments.extend(rest);
        AsPath { segments }
    }
}

/// An attribute we do not interpret, kept as received (optional transitive ones only).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttr {
    pub flags: u8,
    pub code: u8,
    pub value: Vec<u8>,
}

/// Well-known community GRACEFUL_SHUTDOWN (RFC 8326 §5, 65535:0): the sender is about to
/// take the path out of service and asks its neighbours to prefer any other path
/// (LOCAL_PREF 0) while it still carries traffic, so they move first and lose nothing.
pub const GRACEFUL_SHUTDOWN: u32 = 0xFFFF_0000;

/// The attributes of a route, minus MP_REACH/MP_UNREACH (which carry NLRI, see `Update`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PathAttrs {
    pub origin: Option<Origin>,
    pub as_path: Option<AsPath>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<(u32, Ipv4Addr)>,
    pub communities: Vec<u32>,
    pub large_communities: Vec<[u32; 3]>,
    pub unknown: Vec<RawAttr>,
}

/// What RFC 7606 says to do with one attribute.
pub(crate) enum Verdict {
    Ok,
    /// §2 attribute discard: drop the attribute, keep the routes.
    Discard(&'static str),
    /// §2 treat-as-withdraw: the UPDATE's routes are withdrawn. The error (its `reason` is
    /// the log line) is the NOTIFICATION should §5.2 call for a session reset instead.
    Withdraw(DecodeError),
    /// §2 session reset.
    Reset(DecodeError),
}

/// Attributes needing AS4 reconciliation after all are read (RFC 6793 §4.2.3).
#[derive(Default)]
pub(crate) struct As4Pending {
    pub as4_path: Option<AsPath>,
    pub as4_aggregator: Option<(u32, Ipv4Addr)>,
}

/// Expected (optional, transitive) flags per known attribute type.
pub(crate) fn expected_flags(code: u8) -> Option<(bool, bool)> {
    use code::*;
    match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => Some((false, true)),
        MED | MP_REACH_NLRI | MP_UNREACH_NLRI => Some((true, false)),
        AGGREGATOR | COMMUNITIES | AS4_PATH | AS4_AGGREGATOR | LARGE_COMMUNITIES => {
            Some((true, true))
        }
        _ => None,
    }
}

/// An attribute as it was on the wire (flags, type, length, value): the Data field of the
/// attribute NOTIFICATIONs of RFC 4271 §6.3.
pub(crate) fn attr_bytes(flags: u8, code: u8, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + value.len());
    if flags & FLAG_EXT_LEN != 0 {
        out.extend_from_slice(&[flags, code]);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[flags, code, value.len() as u8]);
    }
    out.extend_from_slice(value);
    out
}

/// The UPDATE Message Error a malformed attribute would have been under RFC 4271 §6.3.
pub(crate) fn attr_error(
    subcode: u8,
    why: &'static str,
    flags: u8,
    code: u8,
    value: &[u8],
) -> DecodeError {
    DecodeError::new(err::UPDATE, subcode, why).with_data(&attr_bytes(flags, code, value))
}

impl PathAttrs {
    /// Parses one non-MP attribute into `self`, for a session negotiated as `ctx`.
    pub(crate) fn parse_one(
        &mut self,
        flags: u8,
        code: u8,
        v: &[u8],
        ctx: &Ctx,
        as4: &mut As4Pending,
    ) -> Verdict {
        use code::*;
        let four_octet = ctx.four_octet_as;
        let width = if four_octet { 4 } else { 2 };
        let length_error =
            |why| Verdict::Withdraw(attr_error(err::UPDATE_ATTR_LENGTH, why, flags, code, v));
        match code {
            // RFC 7606 §7.1.
            ORIGIN => match v {
                [0] => self.origin = Some(Origin::Igp),
                [1] => self.origin = Some(Origin::Egp),
                [2] => self.origin = Some(Origin::Incomplete),
                [_] => {
                    return Verdict::Withdraw(attr_error(
                        err::UPDATE_INVALID_ORIGIN,
                        "invalid ORIGIN",
                        flags,
                        code,
                        v,
                    ))
                }
                _ => return length_error("invalid ORIGIN length"),
            },
            // RFC 7606 §7.2, RFC 7607 §2 (AS 0), RFC 5065 §5.3 (we are in no confederation).
            AS_PATH => {
                let malformed = |why| {
                    Verdict::Withdraw(DecodeError::new(
                        err::UPDATE,
                        err::UPDATE_MALFORMED_AS_PATH,
                        why,
                    ))
                };
                let Some(p) = AsPath::decode(v, width) else {
                    return malformed("malformed AS_PATH");
                };
                if p.contains(0) {
                    return malformed("AS 0 in AS_PATH");
                }
                if p.segments.iter().any(|s| s.kind.is_confed()) {
                    return malformed("confederation segment in AS_PATH");
                }
                self.as_path = Some(p);
            }
            // RFC 7606 §7.3. Whether the address is usable is judged once the UPDATE is
            // read: only IPv4 NLRI use it (RFC 4760 §3 has it ignored otherwise).
            NEXT_HOP => match v {
                [a, b, c, d] => self.next_hop = Some(Ipv4Addr::new(*a, *b, *c, *d)),
                _ => return length_error("NEXT_HOP length is not 4"),
            },
            // RFC 7606 §7.4.
            MED => match <[u8; 4]>::try_from(v) {
                Ok(b) => self.med = Some(u32::from_be_bytes(b)),
                Err(_) => return length_error("MULTI_EXIT_DISC length is not 4"),
            },
            // RFC 7606 §7.5 (the eBGP case is discarded before the flags are looked at).
            LOCAL_PREF => match <[u8; 4]>::try_from(v) {
                Ok(b) => self.local_pref = Some(u32::from_be_bytes(b)),
                Err(_) => return length_error("LOCAL_PREF length is not 4"),
            },
            // RFC 7606 §7.6.
            ATOMIC_AGGREGATE => {
                if !v.is_empty() {
                    return Verdict::Discard("ATOMIC_AGGREGATE length is not 0");
                }
                self.atomic_aggregate = true;
            }
            // RFC 7606 §7.7, RFC 7607 §2.
            AGGREGATOR => {
                if v.len() != width + 4 {
                    return Verdict::Discard("AGGREGATOR length wrong");
                }
                let asn = if four_octet {
                    u32::from_be_bytes([v[0], v[1], v[2], v[3]])
                } else {
                    u32::from(u16::from_be_bytes([v[0], v[1]]))
                };
                if asn == 0 {
                    return Verdict::Discard("AS 0 in AGGREGATOR");
                }
                let id = Ipv4Addr::new(v[width], v[width + 1], v[width + 2], v[width + 3]);
                self.aggregator = Some((asn, id));
            }
            // RFC 7606 §7.8 and §4: a non-zero multiple of 4.
            COMMUNITIES => {
                if v.is_empty() || v.len() % 4 != 0 {
                    return length_error("COMMUNITIES length is not a non-zero multiple of 4");
                }
                self.communities = v
                    .chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
            }
            // RFC 8092 §6.
            LARGE_COMMUNITIES => {
                if v.is_empty() || v.len() % 12 != 0 {
                    return length_error("LARGE_COMMUNITIES length is not a multiple of 12");
                }
                self.large_communities = v
                    .chunks_exact(12)
                    .map(|c| {
                        let w = |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
                        [w(0), w(4), w(8)]
                    })
                    .collect();
            }
            // RFC 6793 §6: a malformed AS4 attribute is discarded, never fatal; so is one
            // with AS 0 (RFC 7607 §2). A 4-octet speaker must not send them at all.
            AS4_PATH if !four_octet => {
                let Some(mut p) = AsPath::decode(v, 4).filter(|_| v.len() >= 6) else {
                    return Verdict::Discard("malformed AS4_PATH");
                };
                if p.contains(0) {
                    return Verdict::Discard("AS 0 in AS4_PATH");
                }
                let before = p.segments.len();
                p.segments.retain(|s| !s.kind.is_confed());
                let stripped = p.segments.len() != before;
                as4.as4_path = Some(p);
                if stripped {
                    // The segments go, the rest of the attribute stays.
                    return Verdict::Discard("confederation segments dropped from AS4_PATH");
                }
            }
            AS4_AGGREGATOR if !four_octet => {
                if v.len() != 8 {
                    return Verdict::Discard("AS4_AGGREGATOR length is not 8");
                }
                let asn = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                if asn == 0 {
                    return Verdict::Discard("AS 0 in AS4_AGGREGATOR");
                }
                as4.as4_aggregator = Some((asn, Ipv4Addr::new(v[4], v[5], v[6], v[7])));
            }
            AS4_PATH | AS4_AGGREGATOR => {
                return Verdict::Discard("AS4 attribute from a 4-octet speaker")
            }
            _ if flags & FLAG_OPTIONAL == 0 => {
                // RFC 4271 §6.3; RFC 7606 keeps this a session reset.
                return Verdict::Reset(attr_error(
                    err::UPDATE_UNRECOGNIZED_WELL_KNOWN,
                    "unrecognized well-known attribute",
                    flags,
                    code,
                    v,
                ));
            }
            _ if flags & FLAG_TRANSITIVE != 0 => {
                // RFC 4271 §5: unknown optional transitive attributes pass on marked Partial.
                self.unknown.push(RawAttr {
                    flags: flags | FLAG_PARTIAL,
                    code,
                    value: v.to_vec(),
                });
            }
            _ => return Verdict::Discard("unknown optional non-transitive attribute"),
        }
        Verdict::Ok
    }

    /// Applies AS4_PATH and AS4_AGGREGATOR received from a 2-octet speaker.
    pub(crate) fn reconcile_as4(&mut self, as4: As4Pending) {
        // RFC 6793 §4.2.3: AS4 attributes are ignored when AGGREGATOR names a real 2-octet AS.
        if let Some((asn, _)) = self.aggregator {
            if asn != AS_TRANS && as4.as4_aggregator.is_some() {
                return;
            }
        }
        if let Some(agg) = as4.as4_aggregator {
            self.aggregator = Some(agg);
        }
        if let Some(as4_path) = as4.as4_path {
            self.as_path = self.as_path.take().map(|path| path.merge_as4(as4_path));
        }
    }

    /// Encodes the attributes (not MP_*) for a session with the given AS width.
    pub(crate) fn encode(&self, four_octet: bool, out: &mut Vec<u8>) {
        use code::*;
        let well_known = FLAG_TRANSITIVE;
        let opt_trans = FLAG_OPTIONAL | FLAG_TRANSITIVE;
        if let Some(o) = self.origin {
            put_attr(out, well_known, ORIGIN, &[o as u8]);
        }
        if let Some(p) = &self.as_path {
            let mut v = Vec::with_capacity(2 + 4 * p.len());
            p.encode(if four_octet { 4 } else { 2 }, &mut v);
            put_attr(out, well_known, AS_PATH, &v);
        }
        if let Some(nh) = self.next_hop {
            put_attr(out, well_known, NEXT_HOP, &nh.octets());
        }
        if let Some(m) = self.med {
            put_attr(out, FLAG_OPTIONAL, MED, &m.to_be_bytes());
        }
        if let Some(lp) = self.local_pref {
            put_attr(out, well_known, LOCAL_PREF, &lp.to_be_bytes());
        }
        if self.atomic_aggregate {
            put_attr(out, well_known, ATOMIC_AGGREGATE, &[]);
        }
        if let Some((asn, id)) = self.aggregator {
            let mut v = Vec::with_capacity(8);
            if four_octet {
                v.extend_from_slice(&asn.to_be_bytes());
            } else {
                v.extend_from_slice(&u16::try_from(asn).unwrap_or(AS_TRANS as u16).to_be_bytes());
            }
            v.extend_from_slice(&id.octets());
            put_attr(out, opt_trans, AGGREGATOR, &v);
            if !four_octet && asn > 0xffff {
                let mut v4 = asn.to_be_bytes().to_vec();
                v4.extend_from_slice(&id.octets());
                put_attr(out, opt_trans, AS4_AGGREGATOR, &v4);
            }
        }
        if !self.communities.is_empty() {
            let v: Vec<u8> = self
                .communities
                .iter()
                .flat_map(|c| c.to_be_bytes())
                .collect();
            put_attr(out, opt_trans, COMMUNITIES, &v);
        }
        if !four_octet {
            if let Some(p) = self.as_path.as_ref().filter(|p| p.needs_as4()) {
                let mut v = Vec::with_capacity(2 + 4 * p.len());
                p.encode(4, &mut v);
                put_attr(out, opt_trans, AS4_PATH, &v);
            }
        }
        if !self.large_communities.is_empty() {
            let v: Vec<u8> = self
                .large_communities
                .iter()
                .flat_map(|c| c.iter().flat_map(|w| w.to_be_bytes()))
                .collect();
            put_attr(out, opt_trans, LARGE_COMMUNITIES, &v);
        }
        for a in &self.unknown {
            put_attr(out, a.flags & !FLAG_EXT_LEN, a.code, &a.value);
        }
    }
}

/// Writes one attribute, with the Extended Length form when the value needs it.
pub(crate) fn put_attr(out: &mut Vec<u8>, flags: u8, code: u8, value: &[u8]) {
    if value.len() > 255 {
        out.extend_from_slice(&[flags | FLAG_EXT_LEN, code]);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[flags & !FLAG_EXT_LEN, code, value.len() as u8]);
    }
    out.extend_from_slice(value);
}
