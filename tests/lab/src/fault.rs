//! Faults on a link, injected at one end: loss of carrier, a silent blackhole with the link
//! still up, or random loss. All three are undone by `heal`.

use std::fmt;

use anyhow::Result;

use crate::netns;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// `ip link set down`: the carrier drops, the kernel and daemons see it at once.
    Carrier,
    /// nftables drops every frame in and out while the link stays up: only probes notice.
    Blackhole,
    /// nftables drops this percentage of frames at random, in each direction.
    Loss(u8),
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cut::Carrier => f.write_str("carrier down"),
            Cut::Blackhole => f.write_str("silent drop"),
            Cut::Loss(p) => write!(f, "{p}% loss"),
        }
    }
}

/// Name of the nftables table that holds the drops for `iface`.
fn table(iface: &str) -> String {
    format!("xlcut_{}", iface.replace(['-', '.'], "_"))
}

/// The netdev hooks see every frame, ARP and neighbour discovery included, before any
/// routing decision: a real blackhole, not just a filtered IP path.
fn ruleset(iface: &str, verdict: &str) -> String {
    let t = table(iface);
    format!(
        "table netdev {t} {{
  chain ingress {{ type filter hook ingress device \"{iface}\" priority -500; policy accept; {verdict}; }}
  chain egress {{ type filter hook egress device \"{iface}\" priority -500; policy accept; {verdict}; }}
}}
"
    )
}

pub fn apply(ns: &str, iface: &str, cut: Cut) -> Result<()> {
    match cut {
        Cut::Carrier => netns::exec(ns, &["ip", "link", "set", "dev", iface, "down"]).map(drop),
        Cut::Blackhole => {
            netns::exec_with_input(ns, &["nft", "-f", "-"], &ruleset(iface, "drop")).map(drop)
        }
        Cut::Loss(p) => {
            let verdict = format!("numgen random mod 100 < {} drop", p.min(100));
            netns::exec_with_input(ns, &["nft", "-f", "-"], &ruleset(iface, &verdict)).map(drop)
        }
    }
}

/// Removes every fault from `iface`: link up, drop table gone. Idempotent.
pub fn heal(ns: &str, iface: &str) -> Result<()> {
    let tables = netns::exec(ns, &["nft", "list", "tables", "netdev"])?;
    let t = table(iface);
    if tables
        .lines()
        .any(|l| l.trim() == format!("table netdev {t}"))
    {
        netns::exec(ns, &["nft", "delete", "table", "netdev", &t])?;
    }
    netns::exec(ns, &["ip", "link", "set", "dev", iface, "up"]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_hooks_both_directions() {
        let r = ruleset("line1", "numgen random mod 100 < 20 drop");
        assert!(r.contains("table netdev xlcut_line1"));
        assert!(r.contains("hook ingress device \"line1\""));
        assert!(r.contains("hook egress device \"line1\""));
        assert_eq!(r.matches("numgen random mod 100 < 20 drop").count(), 2);
    }
}
