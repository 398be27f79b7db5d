//! Builds the topology (namespaces, veth links, addresses, static routes) and starts the
//! daemons of a `Lab`.

use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{Context, Result};

use crate::bird;
use crate::frr;
use crate::netns;
use crate::process::Proc;
use crate::topology::{cidr, network, Line, Node, Side, Tunnel, Uplink, ALL_NODES};
use crate::{GatewayMode, Lab, LineRouter};

/// Namespace-wide settings. DAD off so addresses work at once; IPv6 addresses kept when a
/// link goes down, so a healed link needs no re-addressing (as on a real router).
const COMMON_SYSCTLS: &[&str] = &[
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.all.keep_addr_on_down=1",
    "net.ipv6.conf.default.keep_addr_on_down=1",
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
];
const ROUTER_SYSCTLS: &[&str] = &["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"];
/// Gateways hash flows on L4 ports so ECMP over tunnels spreads them, and a nexthop
/// group replace does not also announce every route that uses the group (with
/// compatibility mode on, a switch of 100,000 routes takes ~72 ms instead of ~2.5 ms).
const GATEWAY_SYSCTLS: &[&str] = &[
    "net.ipv4.fib_multipath_hash_policy=1",
    "net.ipv6.fib_multipath_hash_policy=1",
    "net.ipv4.nexthop_compat_mode=0",
];

pub fn topology(lab: &mut Lab) -> Result<()> {
    for node in ALL_NODES {
        let ns = node.ns();
        netns::add(&ns)?;
        lab.namespaces.push(ns.clone());
        let mut args = vec!["sysctl", "-q", "-w"];
        args.extend_from_slice(COMMON_SYSCTLS);
        if !matches!(node, Node::Ha | Node::Hb) {
            args.extend_from_slice(ROUTER_SYSCTLS);
        }
        if matches!(node, Node::Gwa | Node::Gwb) {
            args.extend_from_slice(GATEWAY_SYSCTLS);
        }
        netns::exec(&ns, &args)?;
        netns::exec(&ns, &["ip", "link", "set", "dev", "lo", "up"])?;
    }
    for side in [Side::A, Side::B] {
        let gw = side.gateway();
        let host = side.host();
        link(gw, "lan", host, "eth0")?;
        for v6 in [false, true] {
            address(gw, "lan", side.gateway_lan_addr(v6))?;
            address(host, "eth0", side.host_addr(v6))?;
            let via = side.gateway_lan_addr(v6).to_string();
            netns::exec(
                &host.ns(),
                &[
                    "ip",
                    route_family(v6),
                    "route",
                    "add",
                    "default",
                    "via",
                    &via,
                ],
            )?;
        }
        for line in Line::ALL {
            link(gw, &line.ifname(), line.router(), gw.name())?;
            for v6 in [false, true] {
                address(gw, &line.ifname(), line.addr(side, false, v6))?;
                address(line.router(), gw.name(), line.addr(side, true, v6))?;
            }
        }
        // The far gateway's end of each line is reached across that line, for the
        // end-to-end BFD sessions (the line router forwards between its two segments).
        for line in Line::ALL {
            far_end_routes(side, line)?;
        }
        for up in Uplink::ALL {
            link(gw, &up.ifname(), Node::Inet, &up.inet_ifname(side))?;
            for v6 in [false, true] {
                address(gw, &up.ifname(), up.addr(side, false, v6))?;
                address(Node::Inet, &up.inet_ifname(side), up.addr(side, true, v6))?;
                // The other gateway's uplink K is reached over our uplink K.
                let far = network(up.addr(side.other(), false, v6));
                let via = up.addr(side, true, v6).to_string();
                netns::exec(
                    &gw.ns(),
                    &["ip", route_family(v6), "route", "add", &far, "via", &via],
                )?;
            }
        }
    }
    Ok(())
}

/// Routes `side`'s gateway to the far gateway's end of `line` across that line. The
/// kernel drops them when the line's link goes down, so healing a line puts them back.
pub(crate) fn far_end_routes(side: Side, line: Line) -> Result<()> {
    for v6 in [false, true] {
        let far = network(line.addr(side.other(), false, v6));
        let via = line.addr(side, true, v6).to_string();
        let dev = line.ifname();
        let args = [
            "ip",
            route_family(v6),
            "route",
            "replace",
            &far,
            "via",
            &via,
            "dev",
            &dev,
        ];
        netns::exec(&side.gateway().ns(), &args)?;
    }
    Ok(())
}

fn route_family(v6: bool) -> &'static str {
    if v6 {
        "-6"
    } else {
        "-4"
    }
}

/// A veth pair between two namespaces, both ends up.
fn link(a: Node, a_if: &str, b: Node, b_if: &str) -> Result<()> {
    netns::exec(
        &a.ns(),
        &[
            "ip",
            "link",
            "add",
            "name",
            a_if,
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            &b.ns(),
        ],
    )
    .with_context(|| format!("linking {a}:{a_if} to {b}:{b_if}"))?;
    netns::exec(&a.ns(), &["ip", "link", "set", "dev", a_if, "up"])?;
    netns::exec(&b.ns(), &["ip", "link", "set", "dev", b_if, "up"])?;
    Ok(())
}

fn address(node: Node, iface: &str, addr: IpAddr) -> Result<()> {
    let c = cidr(addr);
    let mut args = vec!["ip", "addr", "add", c.as_str(), "dev", iface];
    if addr.is_ipv6() {
        args.push("nodad");
    }
    netns::exec(&node.ns(), &args).map(drop)
}

pub fn daemons(lab: &mut Lab) -> Result<()> {
    let bfd = lab.opts.bfd;
    for line in Line::ALL {
        let node = line.router();
        match lab.opts.line_router {
            LineRouter::Bird => {
                let log = lab.dir.join(format!("{node}.bird.log"));
                let cfg = bird::line_router_config(line, &log, bfd, lab.opts.line_bgp_ignores_bfd);
                start_bird(lab, node, &cfg)?;
            }
            LineRouter::Frr => start_frr(lab, line)?,
        }
    }
    for side in [Side::A, Side::B] {
        let gw = side.gateway();
        match lab.opts.mode {
            GatewayMode::Bird => {
                // The backup tunnels first: BIRD's static routes point into them.
                for t in Tunnel::ALL {
                    crate::wggo::start(lab, side, t)?;
                }
                let log = lab.dir.join(format!("{gw}.bird.log"));
                start_bird(lab, gw, &bird::gateway_config(side, &log, bfd))?;
            }
            GatewayMode::Crosslink => start_crosslink(lab, side)?,
        }
    }
    Ok(())
}

fn start_frr(lab: &mut Lab, line: Line) -> Result<()> {
    frr::prepare(line, &lab.dir, lab.opts.bfd, lab.opts.line_bgp_ignores_bfd)?;
    start_frr_again(lab, line)
}

/// FRR's daemons on `line`'s router with the configs already written, zebra first;
/// returns once bgpd answers vtysh.
pub fn start_frr_again(lab: &mut Lab, line: Line) -> Result<()> {
    let node = line.router();
    for daemon in frr::DAEMONS {
        let args = frr::command(daemon, node, &lab.dir);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = lab.dir.join(format!("{node}.{daemon}.out"));
        lab.procs.push(Proc::spawn(
            &format!("{daemon}-{node}"),
            &node.ns(),
            &args,
            &out,
        )?);
        let sock = frr::run_dir(node).join(format!("{daemon}.vty"));
        lab.wait_for(
            &format!("{daemon} of {node}"),
            std::time::Duration::from_secs(10),
            || Ok(sock.exists()),
        )?;
    }
    lab.wait_for(
        &format!("bgpd of {node} answering"),
        std::time::Duration::from_secs(10),
        || Ok(frr::vtysh(node, "show bgp summary").is_ok()),
    )?;
    Ok(())
}

fn start_bird(lab: &mut Lab, node: Node, config: &str) -> Result<()> {
    let conf = lab.dir.join(format!("{node}.bird.conf"));
    let config = match &lab.opts.bird_hook {
        Some(hook) => hook(node, config.to_owned()),
        None => config.to_owned(),
    };
    std::fs::write(&conf, config)?;
    start_bird_again(lab, node)
}

/// Starts `node`'s BIRD with the config already written for it.
pub fn start_bird_again(lab: &mut Lab, node: Node) -> Result<()> {
    let conf = lab.dir.join(format!("{node}.bird.conf"));
    let sock = lab.bird_socket(node);
    let pid = lab.dir.join(format!("{node}.bird.pid"));
    let out = lab.dir.join(format!("{node}.bird.out"));
    let args = [
        "bird",
        "-f",
        "-c",
        conf.to_str().unwrap_or_default(),
        "-s",
        sock.to_str().unwrap_or_default(),
        "-P",
        pid.to_str().unwrap_or_default(),
    ];
    // `bird -p` parses the config and exits: a config error is reported here, plainly.
    netns::exec(
        &node.ns(),
        &["bird", "-p", "-c", conf.to_str().unwrap_or_default()],
    )
    .with_context(|| format!("BIRD config for {node}"))?;
    lab.procs.push(Proc::spawn(
        &format!("bird-{node}"),
        &node.ns(),
        &args,
        &out,
    )?);
    lab.wait_for(
        &format!("BIRD control socket of {node}"),
        std::time::Duration::from_secs(10),
        || Ok(sock.exists()),
    )?;
    Ok(())
}

/// The agent's config for one gateway of the lab: the other cloud is its site, reached over
/// both lines.
pub fn crosslink_config(lab: &Lab, side: Side) -> Result<String> {
    let other = side.other();
    let gw = side.gateway();
    let mut out = String::new();
    let _ = write!(
        out,
        "[gateway]
name = \"{gw}\"
asn = {asn}
router_id = \"{rid}\"
announce = [\"{a4}\", \"{a6}\"]

[control]
socket = \"{sock}\"
state_file = \"{state}\"

[[site]]
name = \"cloud-{site}\"
prefixes = [\"{p4}\", \"{p6}\"]
",
        asn = side.asn(),
        rid = Line(1).addr(side, false, false),
        a4 = network(side.host_addr(false)),
        a6 = network(side.host_addr(true)),
        sock = lab.dir.join(format!("{gw}.crosslink.sock")).display(),
        state = lab.dir.join(format!("{gw}.operator.json")).display(),
        site = other.gateway().name().trim_start_matches("gw"),
        p4 = network(other.host_addr(false)),
        p6 = network(other.host_addr(true)),
    );
    for line in Line::ALL {
        let _ = write!(
            out,
            "
[[line]]
name = \"{ifname}\"
site = \"cloud-{site}\"
interface = \"{ifname}\"
neighbors = [\"{n4}\", \"{n6}\"]
peer_asn = {peer_asn}
priority = {prio}
hold_time = \"3s\"
probe_target = \"{target}\"
[line.bfd]
interval = \"{ms}ms\"
multiplier = {mult}
",
            ifname = line.ifname(),
            site = other.gateway().name().trim_start_matches("gw"),
            n4 = line.addr(side, true, false),
            n6 = line.addr(side, true, true),
            peer_asn = line.asn(),
            prio = u32::from(line.0) * 10,
            target = line.addr(other, false, false),
            ms = lab.opts.bfd.interval.as_millis().max(1),
            mult = lab.opts.bfd.multiplier,
        );
    }
    for t in Tunnel::ALL {
        let (key, _) = tunnel_key(lab, side, t)?;
        let (_, peer_public) = tunnel_key(lab, other, t)?;
        let uplink = Uplink(t.0);
        let _ = write!(
            out,
            "
[[tunnel]]
name = \"{name}\"
site = \"cloud-{site}\"
interface = \"{ifname}\"
uplink = \"{up}\"
listen_port = {port}
private_key_file = \"{key}\"
peer_public_key = \"{peer_public}\"
endpoints = [\"{e4}:{port}\", \"[{e6}]:{port}\"]
addresses = [\"{a4}/31\", \"{a6}/127\"]
probe_target = \"{target}\"
",
            name = t.name(),
            site = other.gateway().name().trim_start_matches("gw"),
            ifname = t.ifname(side),
            up = uplink.ifname(),
            port = t.port(),
            key = key.display(),
            e4 = uplink.addr(other, false, false),
            e6 = uplink.addr(other, false, true),
            a4 = t.addr(side, false),
            a6 = t.addr(side, true),
            target = t.addr(other, false),
        );
    }
    Ok(out)
}

/// The private key file of `side`'s end of tunnel `t` and its public key.
pub(crate) fn tunnel_key(lab: &Lab, side: Side, t: Tunnel) -> Result<(std::path::PathBuf, String)> {
    let path = lab.dir.join(format!("{}-t{}.key", side.gateway(), t.0));
    let public = crate::wg_keypair(&path)?;
    Ok((path, public))
}

fn start_crosslink(lab: &mut Lab, side: Side) -> Result<()> {
    let gw = side.gateway();
    let conf = lab.crosslink_config(gw);
    let text = crosslink_config(lab, side)?;
    let text = match &lab.opts.crosslink_hook {
        Some(hook) => hook(gw, text),
        None => text,
    };
    std::fs::write(&conf, text)?;
    launch_crosslink(lab, side)
}

/// Starts `side`'s agent with the config already written for it.
pub fn launch_crosslink(lab: &mut Lab, side: Side) -> Result<()> {
    let gw = side.gateway();
    let conf = lab.crosslink_config(gw);
    let bin = lab.crosslink_bin()?;
    let log = lab.dir.join(format!("{gw}.crosslink.log"));
    let args = [
        bin.to_str().unwrap_or_default(),
        "--config",
        conf.to_str().unwrap_or_default(),
        "--log-format",
        "text",
        "run",
    ];
    lab.procs.push(Proc::spawn(
        &format!("crosslink-{gw}"),
        &gw.ns(),
        &args,
        &log,
    )?);
    let sock = lab.dir.join(format!("{gw}.crosslink.sock"));
    lab.wait_for(
        &format!("crosslink control socket of {gw}"),
        std::time::Duration::from_secs(10),
        || Ok(sock.exists()),
    )?;
    Ok(())
}
