//! The two-cloud topology and its addressing plan.
//!
//! ```text
//!   ha ── lan ─ gwa ─ line1 ── lr1 ── line1 ─ gwb ─ lan ── hb
//!        cloud A   ├─ line2 ── lr2 ── line2 ─┤   cloud B
//!                  ├─ up1 ──┐       ┌── up1 ─┤
//!                  └─ up2 ──┴ inet ─┴── up2 ─┘
//! ```
//! Addresses come from the benchmarking range (RFC 2544, 198.18.0.0/15) and the IPv6
//! documentation range, and exist only inside the lab's namespaces:
//! - cloud A lan 198.18.1.0/24, 2001:db8:a::/64; cloud B lan 198.18.2.0/24, 2001:db8:b::/64
//!   (gateway .1 / ::1, host .10 / ::10)
//! - line L, side A (gwa–lrL): 198.19.L1.0/24, 2001:db8:L1::/64; side B (gwb–lrL):
//!   198.19.L2.0/24, 2001:db8:L2::/64 (gateway .1 / ::1, router .2 / ::2)
//! - uplink K of gwa: 198.18.10K.0/24, 2001:db8:10K::/64; of gwb: 198.18.20K.0/24,
//!   2001:db8:20K::/64 (gateway .1 / ::1, internet .2 / ::2)

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Prefix for every namespace the lab creates; anything with it is the lab's to delete.
pub const NS_PREFIX: &str = "xl-";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    Gwa,
    Gwb,
    Lr1,
    Lr2,
    Ha,
    Hb,
    Inet,
}

pub const ALL_NODES: [Node; 7] = [
    Node::Gwa,
    Node::Gwb,
    Node::Lr1,
    Node::Lr2,
    Node::Ha,
    Node::Hb,
    Node::Inet,
];

impl Node {
    pub fn name(self) -> &'static str {
        match self {
            Node::Gwa => "gwa",
            Node::Gwb => "gwb",
            Node::Lr1 => "lr1",
            Node::Lr2 => "lr2",
            Node::Ha => "ha",
            Node::Hb => "hb",
            Node::Inet => "inet",
        }
    }

    pub fn ns(self) -> String {
        format!("{NS_PREFIX}{}", self.name())
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One side of the two clouds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn gateway(self) -> Node {
        match self {
            Side::A => Node::Gwa,
            Side::B => Node::Gwb,
        }
    }

    pub fn host(self) -> Node {
        match self {
            Side::A => Node::Ha,
            Side::B => Node::Hb,
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// 1 for A, 2 for B: the digit the addressing plan uses.
    fn digit(self) -> u8 {
        match self {
            Side::A => 1,
            Side::B => 2,
        }
    }

    pub fn asn(self) -> u32 {
        65000 + u32::from(self.digit())
    }

    pub fn lan_v4(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.digit(), 0)
    }

    pub fn lan_v6(self) -> Ipv6Addr {
        Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xa + u16::from(self.digit()) - 1,
            0,
            0,
            0,
            0,
            0,
        )
    }

    /// The host behind this side's gateway.
    pub fn host_addr(self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(with_host6(self.lan_v6(), 0x10))
        } else {
            IpAddr::V4(with_host4(self.lan_v4(), 10))
        }
    }

    pub fn gateway_lan_addr(self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(with_host6(self.lan_v6(), 1))
        } else {
            IpAddr::V4(with_host4(self.lan_v4(), 1))
        }
    }
}

/// The two dedicated lines; line `n` runs through router `lr<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line(pub u8);

impl Line {
    pub const ALL: [Line; 2] = [Line(1), Line(2)];

    pub fn router(self) -> Node {
        if self.0 == 1 {
            Node::Lr1
        } else {
            Node::Lr2
        }
    }

    /// Interface name of this line on a gateway.
    pub fn ifname(self) -> String {
        format!("line{}", self.0)
    }

    pub fn asn(self) -> u32 {
        65100 + u32::from(self.0)
    }

    fn net_byte(self, side: Side) -> u8 {
        self.0 * 10 + side.digit()
    }

    /// The gateway's (`.1`) or the router's (`.2`) address on this line's `side` segment.
    pub fn addr(self, side: Side, router: bool, v6: bool) -> IpAddr {
        let host = if router { 2 } else { 1 };
        if v6 {
            let net = Ipv6Addr::new(0x2001, 0xdb8, hex_like(self.net_byte(side)), 0, 0, 0, 0, 0);
            IpAddr::V6(with_host6(net, host))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 19, self.net_byte(side), host as u8))
        }
    }
}

/// An internet uplink `k` of a gateway, for the tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uplink(pub u8);

impl Uplink {
    pub const ALL: [Uplink; 2] = [Uplink(1), Uplink(2)];

    pub fn ifname(self) -> String {
        format!("up{}", self.0)
    }

    /// Name of the interface in the internet namespace facing `side`'s uplink.
    pub fn inet_ifname(self, side: Side) -> String {
        format!("{}{}", side.gateway().name(), self.0)
    }

    fn net_byte(self, side: Side) -> u8 {
        side.digit() * 100 + self.0
    }

    pub fn addr(self, side: Side, internet_end: bool, v6: bool) -> IpAddr {
        let host = if internet_end { 2 } else { 1 };
        if v6 {
            let net = Ipv6Addr::new(0x2001, 0xdb8, hex_like(self.net_byte(side)), 0, 0, 0, 0, 0);
            IpAddr::V6(with_host6(net, host))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 18, self.net_byte(side), host as u8))
        }
    }
}

/// WireGuard tunnel `k` between the gateways, over uplink `k` on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel(pub u8);

impl Tunnel {
    pub const ALL: [Tunnel; 2] = [Tunnel(1), Tunnel(2)];

    /// The path name in crosslink's config.
    pub fn name(self) -> String {
        format!("inet{}", self.0)
    }

    /// Distinct on each gateway: `/var/run/wireguard/<iface>.sock` is shared by all
    /// namespaces.
    pub fn ifname(self, side: Side) -> String {
        format!("{}-t{}", side.gateway().name(), self.0)
    }

    pub fn port(self) -> u16 {
        51820 + u16::from(self.0)
    }

    /// `side`'s address inside the tunnel: 169.254.10k.0/31 (A .0, B .1), fd00:10k::/127.
    pub fn addr(self, side: Side, v6: bool) -> IpAddr {
        let host = side.digit() - 1;
        if v6 {
            IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                hex_like(100 + self.0),
                0,
                0,
                0,
                0,
                0,
                u16::from(host),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(169, 254, 100 + self.0, host))
        }
    }
}

/// Writes decimal digits as hex digits (11 -> 0x11) so IPv6 networks read like their IPv4
/// twins: 198.19.11.0/24 and 2001:db8:11::/64.
fn hex_like(n: u8) -> u16 {
    u16::from_str_radix(&n.to_string(), 16).unwrap_or(0)
}

fn with_host4(net: Ipv4Addr, host: u8) -> Ipv4Addr {
    let o = net.octets();
    Ipv4Addr::new(o[0], o[1], o[2], host)
}

fn with_host6(net: Ipv6Addr, host: u16) -> Ipv6Addr {
    let mut s = net.segments();
    s[7] = host;
    Ipv6Addr::from(s)
}

/// Address with prefix length, as `ip addr add` wants it.
pub fn cidr(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}/24"),
        IpAddr::V6(a) => format!("{a}/64"),
    }
}

/// The network an address of the plan sits in.
pub fn network(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("{}/24", with_host4(a, 0)),
        IpAddr::V6(a) => {
            let mut s = a.segments();
            s[4..].fill(0);
            format!("{}/64", Ipv6Addr::from(s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addressing_plan() {
        assert_eq!(
            Line(1).addr(Side::A, false, false).to_string(),
            "198.19.11.1"
        );
        assert_eq!(
            Line(2).addr(Side::B, true, false).to_string(),
            "198.19.22.2"
        );
        assert_eq!(
            Line(1).addr(Side::B, true, true).to_string(),
            "2001:db8:12::2"
        );
        assert_eq!(Side::B.host_addr(false).to_string(), "198.18.2.10");
        assert_eq!(Side::A.host_addr(true).to_string(), "2001:db8:a::10");
        assert_eq!(
            Uplink(2).addr(Side::B, false, false).to_string(),
            "198.18.202.1"
        );
        assert_eq!(
            Uplink(1).addr(Side::A, true, true).to_string(),
            "2001:db8:101::2"
        );
        assert_eq!(
            network(Line(2).addr(Side::A, false, true)),
            "2001:db8:21::/64"
        );
        assert_eq!(network(Side::A.host_addr(false)), "198.18.1.0/24");
    }
}
