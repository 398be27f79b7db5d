//! BIRD 2 configurations for the line routers and for the `bird` baseline gateways, and a
//! small `birdc` client.
//!
//! Every BIRD has its own config, control socket and log under the lab's directory. One BGP
//! session per neighbour address and family, as cloud dedicated-line services set them up,
//! each with single-hop BFD.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::netns;
use crate::topology::{network, Line, Node, Side, Tunnel};

/// BFD timers the lab runs with.
#[derive(Debug, Clone, Copy)]
pub struct BfdTimers {
    pub interval: Duration,
    pub multiplier: u8,
}

impl Default for BfdTimers {
    fn default() -> Self {
        BfdTimers {
            interval: Duration::from_millis(100),
            multiplier: 3,
        }
    }
}

/// Timers that let a healed line come back in seconds: BIRD's defaults wait a minute or more
/// after an error before reconnecting.
const BGP_TIMERS: &str = "\
    hold time 9;
    keepalive time 3;
    connect delay time 1;
    connect retry time 2;
    error wait time 1, 5;
    error forget time 10;
";

/// `neighbors`: BFD sessions of their own, `(address, interface)`, besides those BGP asks for.
fn header(
    out: &mut String,
    router_id: &str,
    log: &Path,
    bfd: BfdTimers,
    bfd_ifaces: &str,
    neighbors: &[(IpAddr, String)],
) {
    let ms = bfd.interval.as_millis().max(1);
    let neighbors: String = neighbors
        .iter()
        .map(|(a, dev)| format!("  neighbor {a} dev \"{dev}\";\n"))
        .collect();
    let _ = write!(
        out,
        "log \"{log}\" all;
timeformat protocol iso short;
router id {router_id};
protocol device {{ scan time 10; }}
protocol kernel kernel4 {{ ipv4 {{ export where source ~ [RTS_BGP, RTS_STATIC]; }}; }}
protocol kernel kernel6 {{ ipv6 {{ export where source ~ [RTS_BGP, RTS_STATIC]; }}; }}
protocol bfd {{
  interface \"{bfd_ifaces}\" {{ interval {ms} ms; multiplier {mult}; }};
{neighbors}}}
",
        log = log.display(),
        mult = bfd.multiplier,
    );
}

/// How a BGP session follows its BFD session.
#[derive(Clone, Copy)]
enum BfdMode {
    /// BFD down closes the session and flushes the peer's routes.
    On,
    /// BFD down is handled as a graceful restart of the peer (RFC 5882 §4.3.2: a BFD
    /// that shares fate with the peer's control plane): a peer that restarts gracefully
    /// keeps its routes. What a line router must do for a hitless restart of crosslink.
    Graceful,
    /// The session ignores BFD (the BFD session runs on its own).
    Off,
}

/// `filters`: the channel's import and export filters.
fn session(
    out: &mut String,
    name: &str,
    local: (String, u32),
    peer: (String, u32),
    v6: bool,
    (import, export): (&str, &str),
    bfd: BfdMode,
) {
    let fam = if v6 { "ipv6" } else { "ipv4" };
    let bfd = match bfd {
        BfdMode::On => "on",
        BfdMode::Graceful => "graceful",
        BfdMode::Off => "off",
    };
    let _ = write!(
        out,
        "protocol bgp {name} {{
  local {} as {};
  neighbor {} as {};
  direct;
  bfd {bfd};
{BGP_TIMERS}  {fam} {{ import {import}; export {export}; }};
}}
",
        local.0, local.1, peer.0, peer.1
    );
}

/// Line router `lrN`: transit between the two gateways, BGP with both, routes into its kernel.
/// `bgp_ignores_bfd`: the side whose gateway's BGP sessions do not follow BFD, though BFD
/// with it runs (see `LabOptions::line_bgp_ignores_bfd`).
pub fn line_router_config(
    line: Line,
    log: &Path,
    bfd: BfdTimers,
    bgp_ignores_bfd: Option<Side>,
) -> String {
    let mut out = String::new();
    let neighbors: Vec<(IpAddr, String)> = bgp_ignores_bfd
        .into_iter()
        .flat_map(|side| {
            [false, true].map(|v6| (line.addr(side, false, v6), side.gateway().name().into()))
        })
        .collect();
    header(
        &mut out,
        &line.addr(Side::A, true, false).to_string(),
        log,
        bfd,
        "gw*",
        &neighbors,
    );
    for side in [Side::A, Side::B] {
        for v6 in [false, true] {
            let name = format!("{}_{}", side.gateway().name(), if v6 { "v6" } else { "v4" });
            let local = (line.addr(side, true, v6).to_string(), line.asn());
            let peer = (line.addr(side, false, v6).to_string(), side.asn());
            session(
                &mut out,
                &name,
                local,
                peer,
                v6,
                ("all", "all"),
                if bgp_ignores_bfd == Some(side) {
                    BfdMode::Off
                } else {
                    BfdMode::Graceful
                },
            );
        }
    }
    out
}

/// Baseline gateway: BIRD with BGP+BFD to both line routers, preferring line 1 (line 2's
/// routes get a lower LOCAL_PREF), announcing its lan.
pub fn gateway_config(side: Side, log: &Path, bfd: BfdTimers) -> String {
    let mut out = String::new();
    header(
        &mut out,
        &Line(1).addr(side, false, false).to_string(),
        log,
        bfd,
        "line*",
        &[],
    );
    out.push_str("protocol direct { ipv4; ipv6; interface \"lan\"; }\n");
    // The backup: the far lan over both wireguard-go tunnels (ECMP), preferred less than
    // any BGP route (preference 50 against BGP's 100), so it is used only when no line
    // has the route.
    for v6 in [false, true] {
        let fam = if v6 { "ipv6" } else { "ipv4" };
        let vias: Vec<String> = Tunnel::ALL
            .iter()
            .map(|t| format!("via {}", t.addr(side.other(), v6)))
            .collect();
        let _ = writeln!(
            out,
            "protocol static backup_{fam} {{ {fam} {{ preference 50; }}; route {} {}; }}",
            network(side.other().host_addr(v6)),
            vias.join(" ")
        );
    }
    for line in Line::ALL {
        for v6 in [false, true] {
            let name = format!("line{}_{}", line.0, if v6 { "v6" } else { "v4" });
            let local = (line.addr(side, false, v6).to_string(), side.asn());
            let peer = (line.addr(side, true, v6).to_string(), line.asn());
            let import = if line.0 == 1 {
                "all".to_owned()
            } else {
                "filter { bgp_local_pref = 90; accept; }".to_owned()
            };
            session(
                &mut out,
                &name,
                local,
                peer,
                v6,
                (&import, "where source = RTS_DEVICE"),
                BfdMode::On,
            );
        }
    }
    out
}

/// `birdc` against the BIRD of `node`, whose control socket is `sock`.
pub fn birdc(node: Node, sock: &Path, cmd: &str) -> Result<String> {
    let mut args = vec!["birdc", "-s", sock.to_str().unwrap_or_default()];
    args.extend(cmd.split_whitespace());
    netns::exec(&node.ns(), &args)
}

/// Protocol name -> (state, info) from `show protocols`.
pub fn protocols(output: &str) -> Vec<(String, String, String)> {
    output
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // name proto table state since... info
            if f.len() >= 4
                && (f[1] == "BGP"
                    || f[1] == "BFD"
                    || f[1] == "Kernel"
                    || f[1] == "Device"
                    || f[1] == "Direct")
            {
                let info = f.get(5..).map(|r| r.join(" ")).unwrap_or_default();
                Some((f[0].to_owned(), f[3].to_owned(), info))
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_show_protocols() {
        let out = "BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     19:40:01.123
line1_v4   BGP        ---        up     19:40:02.456  Established
line2_v6   BGP        ---        start  19:40:02.456  Connect       Socket: Connection refused
";
        let p = protocols(out);
        assert_eq!(p.len(), 3);
        assert_eq!(p[1], ("line1_v4".into(), "up".into(), "Established".into()));
        assert_eq!(p[2].1, "start");
        assert!(p[2].2.starts_with("Connect"));
    }

    #[test]
    fn gateway_prefers_line1() {
        let cfg = gateway_config(Side::A, Path::new("/tmp/x.log"), BfdTimers::default());
        assert!(cfg.contains("neighbor 198.19.11.2 as 65101"));
        assert!(cfg.contains("neighbor 2001:db8:21::2 as 65102"));
        assert_eq!(cfg.matches("bgp_local_pref = 90").count(), 2);
        assert!(cfg.contains("interval 100 ms; multiplier 3"));
    }

    /// BGP with gwb ignores BFD, and BFD with gwb runs on its own; BIRD takes the file.
    #[test]
    fn line_router_whose_bgp_with_gwb_ignores_bfd() {
        let log = std::env::temp_dir().join(format!("lr1-{}.log", std::process::id()));
        let cfg = line_router_config(Line(1), &log, BfdTimers::default(), Some(Side::B));
        assert!(cfg.contains("neighbor 198.19.12.1 dev \"gwb\";"), "{cfg}");
        assert!(
            cfg.contains("neighbor 2001:db8:12::1 dev \"gwb\";"),
            "{cfg}"
        );
        let session = |name: &str| {
            let at = cfg.find(&format!("protocol bgp {name} ")).unwrap();
            cfg[at..at + cfg[at..].find("\n}").unwrap()].to_owned()
        };
        assert!(session("gwb_v4").contains("bfd off;"));
        assert!(session("gwb_v6").contains("bfd off;"));
        assert!(session("gwa_v4").contains("bfd graceful;"));
        let file = std::env::temp_dir().join(format!("lr1-{}.conf", std::process::id()));
        std::fs::write(&file, &cfg).unwrap();
        let parsed = std::process::Command::new("bird")
            .args(["-p", "-c"])
            .arg(&file)
            .output()
            .expect("bird (Debian package bird2) is installed");
        let _ = std::fs::remove_file(&file);
        assert!(
            parsed.status.success(),
            "{}",
            String::from_utf8_lossy(&parsed.stderr)
        );
    }
}
