//! Prefix encoding in NLRI and withdrawn-routes fields (RFC 4271 §4.3, RFC 4760 §5):
//!
//! ```text
//! +---------------------------+
//! |   Length (1 octet, bits)  |
//! +---------------------------+
//! |   Prefix (variable)       |   ceil(Length / 8) octets
//! +---------------------------+
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{err, DecodeError, Reader, AFI_IPV4, AFI_IPV6, SAFI_UNICAST};

/// The address families crosslink exchanges: IPv4 and IPv6 unicast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn from_afi_safi(afi: u16, safi: u8) -> Option<Family> {
        match (afi, safi) {
            (AFI_IPV4, SAFI_UNICAST) => Some(Family::Ipv4),
            (AFI_IPV6, SAFI_UNICAST) => Some(Family::Ipv6),
            _ => None,
        }
    }

    pub fn afi(self) -> u16 {
        match self {
            Family::Ipv4 => AFI_IPV4,
            Family::Ipv6 => AFI_IPV6,
        }
    }

    pub fn safi(self) -> u8 {
        SAFI_UNICAST
    }

    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::Ipv4,
            IpNet::V6(_) => Family::Ipv6,
        }
    }

    fn max_len(self) -> u8 {
        match self {
            Family::Ipv4 => 32,
            Family::Ipv6 => 128,
        }
    }
}

/// Decodes a run of prefixes filling `buf` entirely. Bits beyond the prefix length are
/// cleared (RFC 4271 §4.3 calls them irrelevant), so equal prefixes compare equal.
pub fn decode_prefixes(buf: &[u8], family: Family) -> Result<Vec<IpNet>, DecodeError> {
    let invalid = |why| DecodeError::new(err::UPDATE, err::UPDATE_INVALID_NETWORK, why);
    let mut r = Reader::new(buf);
    // Each prefix takes at least one byte: the capacity is bounded by the input.
    let mut out = Vec::with_capacity(buf.len().min(1024));
    while !r.is_empty() {
        let len = r.u8().ok_or_else(|| invalid("truncated prefix"))?;
        if len > family.max_len() {
            return Err(invalid("prefix length beyond the address size"));
        }
        let bytes = r
            .take(usize::from(len).div_ceil(8))
            .ok_or_else(|| invalid("prefix overruns the field"))?;
        out.push(make_prefix(family, len, bytes));
    }
    Ok(out)
}

fn make_prefix(family: Family, len: u8, bytes: &[u8]) -> IpNet {
    match family {
        Family::Ipv4 => {
            let mut a = [0u8; 4];
            a[..bytes.len()].copy_from_slice(bytes);
            // Length was checked against 32 above; `trunc` clears the irrelevant bits.
            IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(a), len)
                    .unwrap_or_default()
                    .trunc(),
            )
        }
        Family::Ipv6 => {
            let mut a = [0u8; 16];
            a[..bytes.len()].copy_from_slice(bytes);
            IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(a), len)
                    .unwrap_or_default()
                    .trunc(),
            )
        }
    }
}

pub fn encode_prefix(net: &IpNet, out: &mut Vec<u8>) {
    let len = net.prefix_len();
    out.push(len);
    let n = usize::from(len).div_ceil(8);
    match net.network() {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..n]),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..n]),
    }
}

/// Bytes `encode_prefix` writes for `net`.
pub fn encoded_len(net: &IpNet) -> usize {
    1 + usize::from(net.prefix_len()).div_ceil(8)
}
