//! UPDATE (RFC 4271 §4.3) with MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760).
//!
//! ```text
//! +-----------------------------------------------------+
//! |   Withdrawn Routes Length (2 octets)                |
//! +-----------------------------------------------------+
//! |   Withdrawn Routes (variable)                       |
//! +-----------------------------------------------------+
//! |   Total Path Attribute Length (2 octets)            |
//! +-----------------------------------------------------+
//! |   Path Attributes (variable)                        |
//! +-----------------------------------------------------+
//! |   Network Layer Reachability Information (variable) |
//! +-----------------------------------------------------+
//! ```

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

use super::attrs::{
    attr_error, code, expected_flags, put_attr, As4Pending, PathAttrs, Verdict, FLAG_EXT_LEN,
    FLAG_OPTIONAL, FLAG_TRANSITIVE,
};
use super::nlri::{decode_prefixes, encode_prefix, encoded_len, Family};
use super::{err, Ctx, DecodeError, Reader, HEADER_LEN, MAX_MESSAGE_LEN};

/// RFC 4760 §3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    pub family: Family,
    /// One address, or for IPv6 a global and a link-local one (RFC 2545 §3).
    pub next_hops: Vec<IpAddr>,
    pub nlri: Vec<IpNet>,
}

/// RFC 4760 §4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    pub family: Family,
    pub withdrawn: Vec<IpNet>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// IPv4 prefixes in the Withdrawn Routes field.
    pub withdrawn: Vec<IpNet>,
    pub attrs: PathAttrs,
    /// IPv4 prefixes in the NLRI field.
    pub nlri: Vec<IpNet>,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    /// Set when RFC 7606 says the UPDATE's announced routes must be treated as withdrawn;
    /// the reason is for the log.
    pub treat_as_withdraw: Option<&'static str>,
    /// Attributes dropped under RFC 7606 attribute-discard, for the log.
    pub discarded: Vec<&'static str>,
}

impl Update {
    /// Every prefix the UPDATE announces, any family.
    pub fn announced(&self) -> impl Iterator<Item = &IpNet> {
        self.nlri
            .iter()
            .chain(self.mp_reach.iter().flat_map(|m| m.nlri.iter()))
    }

    /// Every prefix the UPDATE withdraws, any family (not counting treat-as-withdraw).
    pub fn withdrawn_all(&self) -> impl Iterator<Item = &IpNet> {
        self.withdrawn
            .iter()
            .chain(self.mp_unreach.iter().flat_map(|m| m.withdrawn.iter()))
    }

    /// RFC 4724 §2: the End-of-RIB marker for a family.
    pub fn end_of_rib(&self) -> Option<Family> {
        let no_attrs = self.attrs == PathAttrs::default() && self.mp_reach.is_none();
        if !no_attrs || !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match &self.mp_unreach {
            None => Some(Family::Ipv4),
            Some(u) if u.withdrawn.is_empty() => Some(u.family),
            Some(_) => None,
        }
    }

    pub(super) fn decode(body: &[u8], ctx: &Ctx) -> Result<Update, DecodeError> {
        let malformed = |why| DecodeError::new(err::UPDATE, err::UPDATE_MALFORMED_ATTR_LIST, why);
        let mut r = Reader::new(body);
        let wlen = usize::from(r.u16().ok_or_else(|| malformed("truncated"))?);
        // RFC 7606 §3 (b): if the fields cannot be located, nothing can be trusted.
        let wbytes = r
            .take(wlen)
            .ok_or_else(|| malformed("withdrawn routes length overruns the message"))?;
        let alen = usize::from(r.u16().ok_or_else(|| malformed("truncated"))?);
        let abytes = r
            .take(alen)
            .ok_or_else(|| malformed("path attribute length overruns the message"))?;
        let nbytes = r.rest();
        // RFC 7606 §3 (i) and §5.3: a syntax error in either field is a session reset.
        let mut u = Update {
            withdrawn: decode_prefixes(wbytes, Family::Ipv4)?,
            nlri: decode_prefixes(nbytes, Family::Ipv4)?,
            ..Update::default()
        };
        let mut found = Findings::default();
        u.decode_attrs(abytes, ctx, &mut found)?;
        u.check_mandatory(&mut found);
        // RFC 7606 §5.2: attributes besides MP_UNREACH_NLRI but no reachable NLRI means we
        // cannot be sure the NLRI were found; an error beyond attribute discard resets.
        if let Some(e) = found.withdraw {
            if found.other_attrs && u.announced().next().is_none() {
                return Err(e);
            }
        }
        Ok(u)
    }

    fn decode_attrs(
        &mut self,
        buf: &[u8],
        ctx: &Ctx,
        found: &mut Findings,
    ) -> Result<(), DecodeError> {
        let mut r = Reader::new(buf);
        let mut seen = [false; 256];
        let mut as4 = As4Pending::default();
        while !r.is_empty() {
            let Some((flags, code, value)) = read_attr(&mut r) else {
                // RFC 7606 §4: a length that overruns the attribute field, or too few octets
                // left for an attribute header, is treat-as-withdraw; the Total Attribute
                // Length still locates the NLRI.
                found.other_attrs = true;
                self.withdraw(
                    found,
                    DecodeError::new(
                        err::UPDATE,
                        err::UPDATE_ATTR_LENGTH,
                        "attribute length overruns the path attributes",
                    ),
                );
                break;
            };
            if code != code::MP_UNREACH_NLRI {
                found.other_attrs = true;
            }
            let first = !std::mem::replace(&mut seen[usize::from(code)], true);
            if code == code::MP_REACH_NLRI || code == code::MP_UNREACH_NLRI {
                if !first {
                    // RFC 7606 §3 (g).
                    return Err(DecodeError::new(
                        err::UPDATE,
                        err::UPDATE_MALFORMED_ATTR_LIST,
                        "MP_REACH_NLRI or MP_UNREACH_NLRI appears twice",
                    ));
                }
                self.decode_mp(flags, code, value, found)?;
                continue;
            }
            if !first {
                // RFC 7606 §3 (g).
                self.discarded.push("duplicate attribute");
                continue;
            }
            if code == code::LOCAL_PREF && !ctx.ibgp {
                // RFC 7606 §7.5, RFC 4271 §5.1.5: whatever its form.
                self.discarded.push("LOCAL_PREF from an external peer");
                continue;
            }
            if let Some((optional, transitive)) = expected_flags(code) {
                let has = (flags & FLAG_OPTIONAL != 0, flags & FLAG_TRANSITIVE != 0);
                if has != (optional, transitive) {
                    if matches!(
                        code,
                        code::ATOMIC_AGGREGATE
                            | code::AGGREGATOR
                            | code::AS4_PATH
                            | code::AS4_AGGREGATOR
                    ) {
                        // RFC 7606 §3 (f) and RFC 6793 §6: these are only discarded.
                        self.discarded
                            .push("attribute flags conflict with the type code");
                    } else {
                        // RFC 7606 §3 (c).
                        self.withdraw(
                            found,
                            attr_error(
                                err::UPDATE_ATTR_FLAGS,
                                "attribute flags conflict with the type code",
                                flags,
                                code,
                                value,
                            ),
                        );
                    }
                    continue;
                }
            }
            match self.attrs.parse_one(flags, code, value, ctx, &mut as4) {
                Verdict::Ok => {}
                Verdict::Discard(why) => self.discarded.push(why),
                Verdict::Withdraw(e) => self.withdraw(found, e),
                Verdict::Reset(e) => return Err(e),
            }
        }
        if !ctx.four_octet_as {
            self.attrs.reconcile_as4(as4);
        }
        Ok(())
    }

    /// RFC 4760 §3-§4 with the error handling of RFC 7606 §5.3 and §7.11: an MP attribute
    /// we cannot read in full hides NLRI, so it resets the session with the subcode RFC
    /// 4760 §7 names (AFI/SAFI disable, the alternative, would leave a half-working line).
    fn decode_mp(
        &mut self,
        flags: u8,
        code: u8,
        v: &[u8],
        found: &mut Findings,
    ) -> Result<(), DecodeError> {
        let bad = |why| attr_error(err::UPDATE_OPTIONAL_ATTR, why, flags, code, v);
        if flags & FLAG_OPTIONAL == 0 || flags & FLAG_TRANSITIVE != 0 {
            return Err(bad("MP attribute with wrong flags"));
        }
        let mut r = Reader::new(v);
        let afi = r.u16().ok_or_else(|| bad("truncated MP attribute"))?;
        let safi = r.u8().ok_or_else(|| bad("truncated MP attribute"))?;
        let Some(family) = Family::from_afi_safi(afi, safi) else {
            // A family we never announce (RFC 4760 sets no rule): its NLRI are not ours to
            // use, and are ignored.
            self.discarded
                .push("MP attribute for a family we do not speak");
            return Ok(());
        };
        let prefixes = |buf| decode_prefixes(buf, family).map_err(|e| bad(e.reason));
        if code == code::MP_UNREACH_NLRI {
            self.mp_unreach = Some(MpUnreach {
                family,
                withdrawn: prefixes(r.rest())?,
            });
            return Ok(());
        }
        let nh_len = usize::from(r.u8().ok_or_else(|| bad("truncated MP_REACH_NLRI"))?);
        let nh = r
            .take(nh_len)
            .ok_or_else(|| bad("MP_REACH_NLRI next hop overruns"))?;
        r.u8().ok_or_else(|| bad("truncated MP_REACH_NLRI"))?; // reserved
        let next_hops = match (family, nh.len()) {
            (Family::Ipv4, 4) => vec![IpAddr::from(<[u8; 4]>::try_from(nh).unwrap_or_default())],
            (Family::Ipv6, 16) => vec![v6(&nh[..16])],
            (Family::Ipv6, 32) => vec![v6(&nh[..16]), v6(&nh[16..])],
            // RFC 7606 §7.11: we use no extension (RFC 8950) that allows other lengths.
            _ => return Err(bad("MP_REACH_NLRI next hop length does not fit the family")),
        };
        let nlri = prefixes(r.rest())?;
        if !nlri.is_empty() && !next_hops.first().is_some_and(|a| usable_next_hop(*a)) {
            // RFC 4760 §3 and RFC 4271 §6.3: a semantically wrong next hop makes the routes
            // unusable, no more.
            self.withdraw(
                found,
                bad("MP_REACH_NLRI next hop is not a unicast address"),
            );
        }
        self.mp_reach = Some(MpReach {
            family,
            next_hops,
            nlri,
        });
        Ok(())
    }

    /// RFC 7606 §3 (d): a missing well-known mandatory attribute is treat-as-withdraw; so
    /// is a NEXT_HOP for the IPv4 NLRI that is no unicast address (RFC 4271 §6.3). Without
    /// IPv4 NLRI the NEXT_HOP is ignored (RFC 4760 §3).
    fn check_mandatory(&mut self, found: &mut Findings) {
        let announces =
            !self.nlri.is_empty() || self.mp_reach.as_ref().is_some_and(|m| !m.nlri.is_empty());
        if !announces {
            return;
        }
        let missing = |code: u8, why| {
            DecodeError::new(err::UPDATE, err::UPDATE_MISSING_WELL_KNOWN, why).with_data(&[code])
        };
        if self.attrs.origin.is_none() {
            self.withdraw(found, missing(code::ORIGIN, "ORIGIN missing"));
        }
        if self.attrs.as_path.is_none() {
            self.withdraw(found, missing(code::AS_PATH, "AS_PATH missing"));
        }
        if self.nlri.is_empty() {
            return;
        }
        match self.attrs.next_hop {
            None => self.withdraw(found, missing(code::NEXT_HOP, "NEXT_HOP missing")),
            Some(nh) if !usable_next_hop(IpAddr::V4(nh)) => self.withdraw(
                found,
                attr_error(
                    err::UPDATE_INVALID_NEXT_HOP,
                    "NEXT_HOP is not a unicast address",
                    FLAG_TRANSITIVE,
                    code::NEXT_HOP,
                    &nh.octets(),
                ),
            ),
            Some(_) => {}
        }
    }

    fn withdraw(&mut self, found: &mut Findings, e: DecodeError) {
        self.treat_as_withdraw.get_or_insert(e.reason);
        found.withdraw.get_or_insert(e);
    }

    pub(super) fn encode_body(&self, ctx: &Ctx, out: &mut Vec<u8>) {
        let wpos = out.len();
        out.extend_from_slice(&[0, 0]);
        for p in &self.withdrawn {
            encode_prefix(p, out);
        }
        let wlen = out.len() - wpos - 2;
        out[wpos..wpos + 2].copy_from_slice(&(wlen as u16).to_be_bytes());
        let apos = out.len();
        out.extend_from_slice(&[0, 0]);
        // RFC 7606 §5.1: MP attributes first, so a receiver can find the NLRI even when a
        // later attribute is malformed.
        if let Some(m) = &self.mp_reach {
            let mut v = Vec::with_capacity(64);
            v.extend_from_slice(&m.family.afi().to_be_bytes());
            v.push(m.family.safi());
            let nh: Vec<u8> = m
                .next_hops
                .iter()
                .flat_map(|a| match a {
                    IpAddr::V4(a) => a.octets().to_vec(),
                    IpAddr::V6(a) => a.octets().to_vec(),
                })
                .collect();
            v.push(nh.len() as u8);
            v.extend_from_slice(&nh);
            v.push(0);
            for p in &m.nlri {
                encode_prefix(p, &mut v);
            }
            put_attr(out, FLAG_OPTIONAL, code::MP_REACH_NLRI, &v);
        }
        if let Some(m) = &self.mp_unreach {
            let mut v = Vec::with_capacity(64);
            v.extend_from_slice(&m.family.afi().to_be_bytes());
            v.push(m.family.safi());
            for p in &m.withdrawn {
                encode_prefix(p, &mut v);
            }
            put_attr(out, FLAG_OPTIONAL, code::MP_UNREACH_NLRI, &v);
        }
        self.attrs.encode(ctx.four_octet_as, out);
        let alen = out.len() - apos - 2;
        out[apos..apos + 2].copy_from_slice(&(alen as u16).to_be_bytes());
        for p in &self.nlri {
            encode_prefix(p, out);
        }
    }

    /// UPDATEs announcing `prefixes` (one family) with `attrs`, each within 4,096 bytes.
    /// IPv4 goes in the NLRI field with `attrs.next_hop`; IPv6 in MP_REACH_NLRI.
    pub fn announce(
        family: Family,
        prefixes: &[IpNet],
        attrs: &PathAttrs,
        next_hops: &[IpAddr],
        ctx: &Ctx,
    ) -> Vec<Update> {
        let mut probe = Vec::new();
        let base = Update {
            attrs: attrs.clone(),
            mp_reach: (family == Family::Ipv6).then(|| MpReach {
                family,
                next_hops: next_hops.to_vec(),
                nlri: Vec::new(),
            }),
            ..Update::default()
        };
        base.encode_body(ctx, &mut probe);
        // Room left for prefixes; MP_REACH may switch to the extended length form (+1).
        let room = MAX_MESSAGE_LEN - HEADER_LEN - probe.len() - 1;
        chunks(prefixes, room)
            .map(|chunk| {
                let mut u = base.clone();
                match &mut u.mp_reach {
                    Some(m) => m.nlri = chunk.to_vec(),
                    None => u.nlri = chunk.to_vec(),
                }
                u
            })
            .collect()
    }

    /// UPDATEs withdrawing `prefixes` (one family), each within 4,096 bytes.
    pub fn withdraw_prefixes(family: Family, prefixes: &[IpNet]) -> Vec<Update> {
        // Header, two length fields, and for IPv6 the MP_UNREACH header (4 + 3 octets).
        let room = MAX_MESSAGE_LEN - HEADER_LEN - 4 - 7;
        chunks(prefixes, room)
            .map(|chunk| match family {
                Family::Ipv4 => Update {
                    withdrawn: chunk.to_vec(),
                    ..Update::default()
                },
                Family::Ipv6 => Update {
                    mp_unreach: Some(MpUnreach {
                        family,
                        withdrawn: chunk.to_vec(),
                    }),
                    ..Update::default()
                },
            })
            .collect()
    }
}

/// Splits prefixes into runs whose encoding fits `room` bytes.
fn chunks(prefixes: &[IpNet], room: usize) -> impl Iterator<Item = &[IpNet]> {
    let mut rest = prefixes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut used = 0;
        let n = rest.iter().take_while(|p| {
            used += encoded_len(p);
            used <= room
        });
        let n = n.count().max(1);
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

/// What decoding found besides the fields of `Update`.
#[derive(Default)]
struct Findings {
    /// The error behind the first treat-as-withdraw verdict: the NOTIFICATION to send
    /// should RFC 7606 §5.2 turn the verdict into a session reset.
    withdraw: Option<DecodeError>,
    /// An attribute other than MP_UNREACH_NLRI is present, or one could not be read.
    other_attrs: bool,
}

/// A next hop a route can use: not unspecified, multicast or broadcast.
fn usable_next_hop(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

fn v6(b: &[u8]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap_or_default()))
}

/// Reads one attribute header and value; `None` when it overruns.
fn read_attr<'a>(r: &mut Reader<'a>) -> Option<(u8, u8, &'a [u8])> {
    let flags = r.u8()?;
    let code = r.u8()?;
    let len = if flags & FLAG_EXT_LEN != 0 {
        usize::from(r.u16()?)
    } else {
        usize::from(r.u8()?)
    };
    let value = r.take(len)?;
    Some((flags, code, value))
}
