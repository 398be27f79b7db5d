//! Which path carried a packet: each gateway rewrites the TTL (hop limit) of the probe's
//! packets it forwards to its hosts with a value that names the interface they came in on,
//! so the receiving probe reads the path off every packet (`traffic::Arrival::ttl`).
//! Nothing else is touched: only UDP forwarded out of the gateway's `lan`.
//!
//! Interface counters could tell the same, but only by polling, at a few hundred
//! microseconds a read per interface; the mark is exact to the packet and costs nothing.

use anyhow::Result;

use crate::netns;
use crate::topology::{Line, Side, Tunnel};

/// The paths between the two clouds, in the order pictures and tables show them.
pub const NAMES: [&str; 4] = ["line1", "line2", "inet1", "inet2"];

/// The TTL a packet arrives with after crossing path `NAMES[i]`.
const TTLS: [u8; 4] = [201, 202, 211, 212];

/// The nftables table that holds the marks.
const TABLE: &str = "xlpaths";

/// The path a packet came over, from the TTL it arrived with.
pub fn of_ttl(ttl: u8) -> Option<&'static str> {
    TTLS.iter().position(|&t| t == ttl).map(|i| NAMES[i])
}

/// The TTL that marks `path`.
pub fn ttl_of(path: &str) -> Option<u8> {
    NAMES.iter().position(|&n| n == path).map(|i| TTLS[i])
}

/// The interface on `side`'s gateway at which each path arrives.
fn ingress(side: Side) -> [String; 4] {
    [
        Line(1).ifname(),
        Line(2).ifname(),
        Tunnel(1).ifname(side),
        Tunnel(2).ifname(side),
    ]
}

/// The ruleset for `side`'s gateway. The forward hook runs after the kernel has
/// decremented the TTL, so the host sees exactly the value set here.
fn ruleset(side: Side) -> String {
    let mut rules = String::new();
    for (iface, ttl) in ingress(side).iter().zip(TTLS) {
        rules.push_str(&format!(
            "    iifname \"{iface}\" oifname \"lan\" meta l4proto udp ip ttl set {ttl}\n    \
             iifname \"{iface}\" oifname \"lan\" meta l4proto udp ip6 hoplimit set {ttl}\n"
        ));
    }
    format!(
        "table inet {TABLE} {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n{rules}  }}\n}}\n"
    )
}

/// Installs the marks on both gateways; idempotent (a second call replaces the table).
pub fn mark() -> Result<()> {
    for side in [Side::A, Side::B] {
        let ns = side.gateway().ns();
        let tables = netns::exec(&ns, &["nft", "list", "tables", "inet"])?;
        if tables
            .lines()
            .any(|l| l.trim() == format!("table inet {TABLE}"))
        {
            netns::exec(&ns, &["nft", "delete", "table", "inet", TABLE])?;
        }
        netns::exec_with_input(&ns, &["nft", "-f", "-"], &ruleset(side))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_has_its_own_mark_both_ways() {
        for name in NAMES {
            assert_eq!(of_ttl(ttl_of(name).unwrap()), Some(name));
        }
        // What a host sees without marks: 64 minus the hops.
        assert_eq!(of_ttl(61), None);
        assert_eq!(of_ttl(0), None);
    }

    #[test]
    fn the_ruleset_marks_udp_towards_the_lan_by_ingress() {
        let r = ruleset(Side::B);
        assert!(r.contains("table inet xlpaths"));
        assert!(r.contains("iifname \"gwb-t2\" oifname \"lan\" meta l4proto udp ip ttl set 212"));
        assert!(
            r.contains("iifname \"line1\" oifname \"lan\" meta l4proto udp ip6 hoplimit set 201")
        );
        assert_eq!(r.matches("ttl set").count(), 4);
    }
}
