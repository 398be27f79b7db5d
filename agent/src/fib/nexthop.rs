//! Kernel nexthop objects (RTM_NEWNEXTHOP, RTM_DELNEXTHOP, RTM_GETNEXTHOP; linux/nexthop.h),
//! which netlink-packet-route does not model. A small typed codec of our own, sans-IO,
//! that plugs into netlink-proto as a message type so it travels on an ordinary rtnetlink
//! connection. Layouts are the kernel's uapi; the tests hold byte vectors as `ip nexthop`
//! sends them (read with strace).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NetlinkDeserializable, NetlinkHeader, NetlinkSerializable};

pub const RTM_NEWNEXTHOP: u16 = 104;
pub const RTM_DELNEXTHOP: u16 = 105;
pub const RTM_GETNEXTHOP: u16 = 106;

const NHA_ID: u16 = 1;
const NHA_GROUP: u16 = 2;
const NHA_BLACKHOLE: u16 = 4;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;

const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// `struct nhmsg`: family, scope, protocol, reserved, flags (u32).
const NHMSG_LEN: usize = 8;
/// `struct nexthop_grp`: id (u32), weight - 1 (u8), weight_high (u8), reserved (u16).
const GRP_LEN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Out of an interface with no gateway (a tunnel).
    Dev {
        oif: u32,
    },
    /// Through a gateway on an interface (a line router).
    Via {
        gateway: IpAddr,
        oif: u32,
    },
    /// A multipath group: member ids with weights 1..=256.
    Group(Vec<(u32, u16)>),
    Blackhole,
}

/// One nexthop object. `family` is AF_INET/AF_INET6 for single nexthops, AF_UNSPEC for
/// groups (the kernel's convention).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nexthop {
    pub id: u32,
    pub family: u8,
    pub protocol: u8,
    pub kind: Kind,
}

impl Nexthop {
    pub fn dev(id: u32, v6: bool, protocol: u8, oif: u32) -> Nexthop {
        Nexthop {
            id,
            family: if v6 { AF_INET6 } else { AF_INET },
            protocol,
            kind: Kind::Dev { oif },
        }
    }

    pub fn via(id: u32, protocol: u8, gateway: IpAddr, oif: u32) -> Nexthop {
        Nexthop {
            id,
            family: if gateway.is_ipv6() { AF_INET6 } else { AF_INET },
            protocol,
            kind: Kind::Via { gateway, oif },
        }
    }

    pub fn group(id: u32, protocol: u8, members: Vec<(u32, u16)>) -> Nexthop {
        Nexthop {
            id,
            family: AF_UNSPEC,
            protocol,
            kind: Kind::Group(members),
        }
    }
}

/// A message of this family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    New(Nexthop),
    Del(u32),
    /// A dump request (all nexthops).
    Get,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("nexthop message shorter than its header")]
    Short,
    #[error("attribute {0} is malformed")]
    Attribute(u16),
    #[error("nexthop message without an id")]
    NoId,
    #[error("nexthop {0} has neither an interface, a group nor a blackhole")]
    NoKind(u32),
    #[error("message type {0} is not a nexthop message")]
    Type(u16),
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn put_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(align4(out.len()), 0);
}

fn header(family: u8, protocol: u8) -> [u8; NHMSG_LEN] {
    // Scope universe (0), reserved 0, flags 0.
    [family, 0, protocol, 0, 0, 0, 0, 0]
}

impl Message {
    /// The payload after the netlink header.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Message::New(nh) => {
                out.extend_from_slice(&header(nh.family, nh.protocol));
                put_attr(&mut out, NHA_ID, &nh.id.to_ne_bytes());
                match &nh.kind {
                    Kind::Dev { oif } => put_attr(&mut out, NHA_OIF, &oif.to_ne_bytes()),
                    Kind::Via { gateway, oif } => {
                        match gateway {
                            IpAddr::V4(a) => put_attr(&mut out, NHA_GATEWAY, &a.octets()),
                            IpAddr::V6(a) => put_attr(&mut out, NHA_GATEWAY, &a.octets()),
                        }
                        put_attr(&mut out, NHA_OIF, &oif.to_ne_bytes());
                    }
                    Kind::Group(members) => {
                        let mut v = Vec::with_capacity(members.len() * GRP_LEN);
                        for (id, weight) in members {
                            let w = weight.clamp(&1, &256) - 1;
                            v.extend_from_slice(&id.to_ne_bytes());
                            v.push((w & 0xff) as u8);
                            v.push((w >> 8) as u8);
                            v.extend_from_slice(&[0, 0]);
                        }
                        put_attr(&mut out, NHA_GROUP, &v);
                    }
                    Kind::Blackhole => put_attr(&mut out, NHA_BLACKHOLE, &[]),
                }
            }
            Message::Del(id) => {
                out.extend_from_slice(&header(AF_UNSPEC, 0));
                put_attr(&mut out, NHA_ID, &id.to_ne_bytes());
            }
            Message::Get => out.extend_from_slice(&header(AF_UNSPEC, 0)),
        }
        out
    }

    pub fn decode(message_type: u16, payload: &[u8]) -> Result<Message, DecodeError> {
        if message_type != RTM_NEWNEXTHOP {
            return Err(DecodeError::Type(message_type));
        }
        if payload.len() < NHMSG_LEN {
            return Err(DecodeError::Short);
        }
        let (family, protocol) = (payload[0], payload[2]);
        let mut id = None;
        let (mut oif, mut gateway, mut group, mut blackhole) = (None, None, None, false);
        let mut rest = &payload[NHMSG_LEN..];
        while rest.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
            // The top two bits of the type are flags (nested, byte order).
            let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
            if len < 4 || len > rest.len() {
                return Err(DecodeError::Attribute(kind));
            }
            let v = &rest[4..len];
            let u32_of = |v: &[u8]| -> Result<u32, DecodeError> {
                Ok(u32::from_ne_bytes(
                    v.try_into().map_err(|_| DecodeError::Attribute(kind))?,
                ))
            };
            match kind {
                NHA_ID => id = Some(u32_of(v)?),
                NHA_OIF => oif = Some(u32_of(v)?),
                NHA_BLACKHOLE => blackhole = true,
                NHA_GATEWAY => {
                    gateway = Some(match v.len() {
                        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(v).unwrap_or_default())),
                        16 => {
                            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).unwrap_or_default()))
                        }
                        _ => return Err(DecodeError::Attribute(kind)),
                    })
                }
                NHA_GROUP => {
                    if v.len() % GRP_LEN != 0 {
                        return Err(DecodeError::Attribute(kind));
                    }
                    group = Some(
                        v.chunks_exact(GRP_LEN)
                            .map(|g| {
                                let id = u32::from_ne_bytes([g[0], g[1], g[2], g[3]]);
                                (id, (u16::from(g[5]) << 8 | u16::from(g[4])) + 1)
                            })
                            .collect(),
                    );
                }
                // Group type (3), resilient-group details, FDB and encap: not ours to manage.
                _ => {}
            }
            rest = &rest[align4(len).min(rest.len())..];
        }
        let id = id.ok_or(DecodeError::NoId)?;
        let kind = match (group, gateway, oif, blackhole) {
            (Some(g), _, _, _) => Kind::Group(g),
            (_, _, _, true) => Kind::Blackhole,
            (_, Some(gateway), Some(oif), _) => Kind::Via { gateway, oif },
            (_, None, Some(oif), _) => Kind::Dev { oif },
            _ => return Err(DecodeError::NoKind(id)),
        };
        Ok(Message::New(Nexthop {
            id,
            family,
            protocol,
            kind,
        }))
    }
}

impl NetlinkSerializable for Message {
    fn message_type(&self) -> u16 {
        match self {
            Message::New(_) => RTM_NEWNEXTHOP,
            Message::Del(_) => RTM_DELNEXTHOP,
            Message::Get => RTM_GETNEXTHOP,
        }
    }

    fn buffer_len(&self) -> usize {
        // Attribute sizes are multiples of 4 here, so no padding to account for.
        let attrs = match self {
            Message::New(nh) => {
                8 + match &nh.kind {
                    Kind::Dev { .. } => 8,
                    Kind::Via { gateway, .. } => 4 + if gateway.is_ipv6() { 16 } else { 4 } + 8,
                    Kind::Group(m) => 4 + GRP_LEN * m.len(),
                    Kind::Blackhole => 4,
                }
            }
            Message::Del(_) => 8,
            Message::Get => 0,
        };
        NHMSG_LEN + attrs
    }

    fn serialize(&self, buffer: &mut [u8]) {
        let bytes = self.encode();
        buffer[..bytes.len()].copy_from_slice(&bytes);
    }
}

impl From<Message> for netlink_packet_core::NetlinkPayload<Message> {
    fn from(m: Message) -> Self {
        netlink_packet_core::NetlinkPayload::InnerMessage(m)
    }
}

impl NetlinkDeserializable for Message {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        Message::decode(header.message_type, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le32(v: u32) -> [u8; 4] {
        v.to_ne_bytes()
    }

    /// `ip nexthop add id 11 dev v0` (ifindex 2), as strace showed it: nhmsg{AF_INET,
    /// universe, RTPROT_UNSPEC}, NHA_ID 11, NHA_OIF.
    #[test]
    fn a_device_nexthop_as_ip_sends_it() {
        let got = Message::New(Nexthop::dev(11, false, 0, 2)).encode();
        let mut want = vec![2, 0, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(&[8, 0, 1, 0]);
        want.extend_from_slice(&le32(11));
        want.extend_from_slice(&[8, 0, 5, 0]);
        want.extend_from_slice(&le32(2));
        assert_eq!(got, want);
        assert_eq!(got.len() + 16, 40, "nlmsg_len 40 in the capture");
        assert_eq!(
            Message::decode(RTM_NEWNEXTHOP, &got).unwrap(),
            Message::New(Nexthop::dev(11, false, 0, 2))
        );
    }

    /// `ip nexthop add id 100 group 11,3/12 proto 252`: weights are sent less one.
    #[test]
    fn a_weighted_group_as_ip_sends_it() {
        let nh = Nexthop::group(100, 252, vec![(11, 3), (12, 1)]);
        let got = Message::New(nh.clone()).encode();
        let mut want = vec![0, 0, 252, 0, 0, 0, 0, 0];
        want.extend_from_slice(&[8, 0, 1, 0]);
        want.extend_from_slice(&le32(100));
        want.extend_from_slice(&[20, 0, 2, 0]);
        want.extend_from_slice(&le32(11));
        want.extend_from_slice(&[2, 0, 0, 0]);
        want.extend_from_slice(&le32(12));
        want.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(got, want);
        assert_eq!(got.len() + 16, 52, "nlmsg_len 52 in the capture");
        assert_eq!(
            Message::decode(RTM_NEWNEXTHOP, &got).unwrap(),
            Message::New(nh)
        );
    }

    /// `ip -6 nexthop add id 13 via fe80::1 dev v0`.
    #[test]
    fn a_gateway_nexthop_and_a_delete() {
        let gw: IpAddr = "fe80::1".parse().unwrap();
        let got = Message::New(Nexthop::via(13, 0, gw, 2)).encode();
        assert_eq!(got.len() + 16, 60, "nlmsg_len 60 in the capture");
        assert_eq!(&got[..4], &[10, 0, 0, 0]);
        assert_eq!(&got[16..20], &[20, 0, 6, 0]);
        assert_eq!(
            &got[20..36],
            &"fe80::1".parse::<Ipv6Addr>().unwrap().octets()
        );
        // `ip nexthop del id 13`: nlmsg_len 32.
        let del = Message::Del(13).encode();
        assert_eq!(del.len() + 16, 32);
        assert_eq!(&del[8..16], &[8, 0, 1, 0, 13, 0, 0, 0]);
    }

    #[test]
    fn buffer_len_is_the_encoded_length() {
        let gw4: IpAddr = "192.0.2.1".parse().unwrap();
        let gw6: IpAddr = "fe80::1".parse().unwrap();
        for m in [
            Message::New(Nexthop::dev(1, true, 0, 2)),
            Message::New(Nexthop::via(2, 0, gw4, 2)),
            Message::New(Nexthop::via(3, 0, gw6, 2)),
            Message::New(Nexthop::group(4, 0, vec![(1, 1), (2, 7), (3, 256)])),
            Message::New(Nexthop {
                id: 5,
                family: AF_INET,
                protocol: 0,
                kind: Kind::Blackhole,
            }),
            Message::Del(6),
            Message::Get,
        ] {
            assert_eq!(m.buffer_len(), m.encode().len(), "{m:?}");
        }
    }

    #[test]
    fn malformed_dumps_are_errors_not_panics() {
        assert_eq!(
            Message::decode(RTM_NEWNEXTHOP, &[2, 0]),
            Err(DecodeError::Short)
        );
        let mut bad = vec![2, 0, 0, 0, 0, 0, 0, 0];
        bad.extend_from_slice(&[200, 0, 1, 0, 1, 0, 0, 0]);
        assert_eq!(
            Message::decode(RTM_NEWNEXTHOP, &bad),
            Err(DecodeError::Attribute(1))
        );
        let mut odd_group = vec![0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 1, 0, 5, 0, 0, 0];
        odd_group.extend_from_slice(&[7, 0, 2, 0, 1, 2, 3, 0]);
        assert_eq!(
            Message::decode(RTM_NEWNEXTHOP, &odd_group),
            Err(DecodeError::Attribute(2))
        );
        let no_id = vec![2, 0, 0, 0, 0, 0, 0, 0, 8, 0, 5, 0, 1, 0, 0, 0];
        assert_eq!(
            Message::decode(RTM_NEWNEXTHOP, &no_id),
            Err(DecodeError::NoId)
        );
        // Unknown attributes (resilient groups, FDB) are skipped.
        let mut extra = Message::New(Nexthop::dev(7, false, 0, 3)).encode();
        extra.extend_from_slice(&[8, 0, 99, 0, 1, 2, 3, 4]);
        assert_eq!(
            Message::decode(RTM_NEWNEXTHOP, &extra).unwrap(),
            Message::New(Nexthop::dev(7, false, 0, 3))
        );
    }
}
