//! FRR (Debian's `frr`, 8.4) as the line routers: zebra, bgpd and bfdd started by hand in
//! the router's namespace, each with its own config file and a path space of its own for
//! its sockets (`-N lr1`: /var/run/frr/lr1/), so two routers run side by side on one host
//! and `vtysh -N lr1` talks to the right one. BGP with both gateways for IPv4 and IPv6,
//! BFD on every session (bgpd registers the peers with bfdd through zebra), the routes
//! into the router's kernel through zebra so it forwards between the two gateways.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::bird::BfdTimers;
use crate::netns;
use crate::topology::{Line, Node, Side};

/// The daemons, in the order they start: bgpd and bfdd talk to zebra.
pub const DAEMONS: [&str; 3] = ["zebra", "bfdd", "bgpd"];

/// Where a router's daemons keep their sockets (`-N`).
pub fn run_dir(node: Node) -> PathBuf {
    PathBuf::from("/var/run/frr").join(node.name())
}

/// The command line of `daemon` on `node`, with its config in `dir`.
pub fn command(daemon: &str, node: Node, dir: &Path) -> Vec<String> {
    let conf = dir.join(format!("{node}.{daemon}.conf"));
    let log = dir.join(format!("{node}.{daemon}.log"));
    let pid = run_dir(node).join(format!("{daemon}.pid"));
    vec![
        format!("/usr/lib/frr/{daemon}"),
        "-N".into(),
        node.name().into(),
        "-f".into(),
        conf.display().to_string(),
        "-i".into(),
        pid.display().to_string(),
        "--log".into(),
        format!("file:{}", log.display()),
        // As the package's user: the daemons insist their VTY group (frrvty) be theirs.
        "-u".into(),
        "frr".into(),
        "-g".into(),
        "frr".into(),
    ]
}

/// The config of `daemon` on line router `line`. `bgp_ignores_bfd`: the side whose
/// gateway's sessions do not follow BFD (BFD with it still runs, on its own).
pub fn config(daemon: &str, line: Line, bfd: BfdTimers, bgp_ignores_bfd: Option<Side>) -> String {
    let node = line.router();
    let mut out = format!("frr defaults traditional\nhostname {node}\n!\n");
    match daemon {
        "zebra" => {}
        "bfdd" => {
            // The lab's record of every session bgpd asks for and bfdd drops: what a start
            // looks like from the router's side (see `tests/frr_line_routers.rs`).
            out.push_str("debug bfd peer\ndebug bfd zebra\n!\n");
            let ms = bfd.interval.as_millis().max(10);
            let _ = write!(
                out,
                "bfd\n profile lab\n  transmit-interval {ms}\n  receive-interval {ms}\n  detect-multiplier {}\n",
                bfd.multiplier
            );
            // The sessions bgpd does not ask for: with the gateway whose BGP ignores BFD.
            if let Some(side) = bgp_ignores_bfd {
                for v6 in [false, true] {
                    let _ = write!(
                        out,
                        " peer {} local-address {} interface {}\n  profile lab\n !\n",
                        line.addr(side, false, v6),
                        line.addr(side, true, v6),
                        side.gateway().name()
                    );
                }
            }
        }
        "bgpd" => {
            out.push_str("debug bgp bfd\ndebug bgp neighbor-events\n!\n");
            bgpd(&mut out, line, bgp_ignores_bfd)
        }
        other => panic!("no config for {other}"),
    }
    out
}

fn bgpd(out: &mut String, line: Line, bgp_ignores_bfd: Option<Side>) {
    let _ = write!(
        out,
        "router bgp {}\n bgp router-id {}\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n bgp graceful-restart\n",
        line.asn(),
        line.addr(Side::A, true, false)
    );
    let peers: Vec<(Side, IpAddr)> = [Side::A, Side::B]
        .into_iter()
        .flat_map(|side| [false, true].map(|v6| (side, line.addr(side, false, v6))))
        .collect();
    for (side, peer) in &peers {
        let _ = write!(
            out,
            " neighbor {peer} remote-as {}\n neighbor {peer} timers 1 3\n neighbor {peer} timers connect 2\n",
            side.asn()
        );
        if bgp_ignores_bfd != Some(*side) {
            // crosslink's BFD shares fate with its control plane (C bit clear): its
            // going down during a restart is the restart, kept as graceful.
            let _ = write!(
                out,
                " neighbor {peer} bfd\n neighbor {peer} bfd profile lab\n neighbor {peer} bfd check-control-plane-failure\n"
            );
        }
    }
    for (family, v6) in [("ipv4", false), ("ipv6", true)] {
        let _ = writeln!(out, " address-family {family} unicast");
        for (_, peer) in peers.iter().filter(|(_, p)| p.is_ipv6() == v6) {
            let _ = writeln!(out, "  neighbor {peer} activate");
        }
        let _ = writeln!(out, " exit-address-family");
    }
}

/// Writes the configs of `line`'s router into `dir` and makes its socket directory.
pub fn prepare(
    line: Line,
    dir: &Path,
    bfd: BfdTimers,
    bgp_ignores_bfd: Option<Side>,
) -> Result<()> {
    let node = line.router();
    let user = nix::unistd::User::from_name("frr")?
        .context("no user frr: install the lab's packages (tests/install-deps.sh: frr)")?;
    let owned = |path: &Path| -> Result<()> {
        nix::unistd::chown(path, Some(user.uid), Some(user.gid))
            .with_context(|| format!("giving {} to frr", path.display()))
    };
    for daemon in DAEMONS {
        let path = dir.join(format!("{node}.{daemon}.conf"));
        std::fs::write(&path, config(daemon, line, bfd, bgp_ignores_bfd))
            .with_context(|| format!("writing {}", path.display()))?;
        // The daemons write their logs as frr, in the lab's root-owned directory.
        let log = dir.join(format!("{node}.{daemon}.log"));
        std::fs::write(&log, "")?;
        owned(&log)?;
    }
    let run = run_dir(node);
    // A killed lab's sockets would make the daemons refuse to start.
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(&run).with_context(|| format!("creating {}", run.display()))?;
    owned(&run)?;
    Ok(())
}

/// `vtysh -N <router> -c <cmd>` in the router's namespace.
pub fn vtysh(node: Node, cmd: &str) -> Result<String> {
    netns::exec(&node.ns(), &["vtysh", "-N", node.name(), "-c", cmd])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bgpd_peers_with_both_gateways_in_both_families_with_bfd() {
        let c = config("bgpd", Line(1), BfdTimers::default(), None);
        assert!(c.contains("router bgp 65101"), "{c}");
        for peer in [
            "198.19.11.1",
            "198.19.12.1",
            "2001:db8:11::1",
            "2001:db8:12::1",
        ] {
            assert!(
                c.contains(&format!(" neighbor {peer} bfd profile lab")),
                "{c}"
            );
        }
        assert!(c.contains(" neighbor 198.19.12.1 remote-as 65002"), "{c}");
        let v6 = c.split(" address-family ipv6 unicast").nth(1).unwrap();
        assert!(v6.contains("neighbor 2001:db8:11::1 activate"), "{c}");
        assert!(!v6.contains("neighbor 198.19.11.1 activate"), "{c}");
    }

    #[test]
    fn a_side_whose_bgp_ignores_bfd_gets_bfd_from_bfdd_alone() {
        let bgp = config("bgpd", Line(1), BfdTimers::default(), Some(Side::B));
        assert!(!bgp.contains("neighbor 198.19.12.1 bfd"), "{bgp}");
        assert!(bgp.contains("neighbor 198.19.11.1 bfd"), "{bgp}");
        let bfd = config("bfdd", Line(1), BfdTimers::default(), Some(Side::B));
        assert!(
            bfd.contains(" peer 198.19.12.1 local-address 198.19.12.2 interface gwb"),
            "{bfd}"
        );
        assert!(bfd.contains("transmit-interval 100"), "{bfd}");
    }

    #[test]
    fn each_router_has_a_path_space_of_its_own() {
        let dir = Path::new("/tmp/x");
        let c = command("bgpd", Node::Lr2, dir);
        assert_eq!(c[0], "/usr/lib/frr/bgpd");
        assert!(c.windows(2).any(|w| w == ["-N", "lr2"]), "{c:?}");
        assert!(c.contains(&"/tmp/x/lr2.bgpd.conf".to_owned()), "{c:?}");
        assert_eq!(run_dir(Node::Lr2), Path::new("/var/run/frr/lr2"));
    }
}
