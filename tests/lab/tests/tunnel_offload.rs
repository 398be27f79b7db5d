//! The tunnels' offloaded path carries data byte for byte: with every line failed over,
//! 48 MB of random bytes cross a crosslink tunnel over TCP each way (the sending gateway
//! reads them from its TUN as 64 KB super-packets and cuts them into packets), and what
//! arrives has the same SHA-256 as what left. Needs root; never skipped.

use std::path::Path;
use std::time::Duration;

use lab::{GatewayMode, Lab, LabOptions, Node, Side};

fn sha256(lab: &Lab, node: Node, file: &Path) -> String {
    let out = lab
        .exec(node, &["sha256sum", file.to_str().unwrap()])
        .unwrap();
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

/// Sends `file` from `from` to a listener on `to`'s host address, port `port`, as one TCP
/// stream; returns where it arrived.
fn transfer(
    lab: &mut Lab,
    from: Node,
    to: Node,
    to_addr: &str,
    file: &Path,
    port: u16,
) -> std::path::PathBuf {
    let got = lab.dir().join(format!("received-{port}"));
    let listen = format!("TCP-LISTEN:{port},reuseaddr");
    let create = format!("CREATE:{}", got.display());
    lab.spawn(
        &format!("sink-{port}"),
        to,
        &["socat", "-u", &listen, &create],
    )
    .unwrap();
    let source = format!("OPEN:{}", file.display());
    let connect = format!("TCP:{to_addr}:{port},retry=20,interval=0.2");
    lab.exec(from, &["timeout", "60", "socat", "-u", &source, &connect])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(20)));
    // The sink writes its last bytes after the sender closed: wait for the whole file.
    let want = std::fs::metadata(file).unwrap().len();
    lab.wait_for("the whole file arrived", Duration::from_secs(20), || {
        Ok(std::fs::metadata(&got).map(|m| m.len()).unwrap_or(0) == want)
    })
    .unwrap();
    got
}

/// Every line failed over on both gateways, then `size` random bytes over TCP each way,
/// compared by SHA-256.
fn byte_exact_both_ways(mut lab: Lab, size: usize) {
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_for("both tunnels up", Duration::from_secs(60), || {
            let s = lab.status(gw)?;
            Ok(s["sites"][0]["paths"]
                .as_array()
                .is_some_and(|p| p.iter().all(|p| p["state"] == "up")))
        })
        .unwrap();
        for line in ["line1", "line2"] {
            lab.crosslink(gw, &["failover", line, "--force"]).unwrap();
        }
    }
    let hb = Side::B.host_addr(false);
    lab.wait_for(
        "gwa routes hb over a tunnel",
        Duration::from_secs(10),
        || Ok(lab.route_get(Node::Gwa, hb)?.contains("dev gwa-t")),
    )
    .unwrap();
    let file = lab.dir().join("random.bin");
    let data: Vec<u8> = {
        // xorshift: random enough that no two segments look alike, and no dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    std::fs::write(&file, &data).unwrap();
    let want = sha256(&lab, Node::Ha, &file);
    let ha = Side::A.host_addr(false).to_string();
    let there = transfer(&mut lab, Node::Ha, Node::Hb, &hb.to_string(), &file, 5301);
    assert_eq!(sha256(&lab, Node::Hb, &there), want, "ha -> hb");
    let back = transfer(&mut lab, Node::Hb, Node::Ha, &ha, &file, 5302);
    assert_eq!(sha256(&lab, Node::Ha, &back), want, "hb -> ha");
    // It went through the tunnels, not around them (the counters are polled every
    // second: the status may trail the transfer by that much).
    let tunnels_sent = || -> u64 {
        let t = lab.status(Node::Gwa).unwrap_or_default();
        t["sites"][0]["paths"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["tunnel"]["tx_bytes"].as_u64())
            .sum()
    };
    lab.wait_for("the tunnels' counters", Duration::from_secs(5), || {
        Ok(tunnels_sent() as usize > size)
    })
    .unwrap_or_else(|e| panic!("{e:#}: tunnels sent {} bytes", tunnels_sent()));
}

#[test]
fn tcp_through_the_offloaded_tunnel_is_byte_exact_both_ways() {
    let lab = Lab::up(LabOptions::new(GatewayMode::Crosslink)).expect("lab up");
    byte_exact_both_ways(lab, 48 << 20);
}

/// The smallest MTU IPv6 allows on the tunnel: every super-packet cut smaller.
#[test]
fn a_tunnel_mtu_of_1280_cuts_right_too() {
    let opts = LabOptions::new(GatewayMode::Crosslink)
        .crosslink_hook(|_, cfg| cfg.replace("listen_port = ", "mtu = 1280\nlisten_port = "));
    let lab = Lab::up(opts).expect("lab up");
    let mtu = lab
        .exec(Node::Gwa, &["cat", "/sys/class/net/gwa-t1/mtu"])
        .unwrap();
    assert_eq!(mtu.trim(), "1280");
    byte_exact_both_ways(lab, 16 << 20);
}

/// Jumbo frames on the lans (9,000 bytes): the hosts' segments are larger than the
/// tunnel's; path MTU discovery brings them down, and nothing is lost or changed.
#[test]
fn jumbo_frames_on_the_lan_side_cross_the_tunnel_intact() {
    let lab = Lab::up(LabOptions::new(GatewayMode::Crosslink)).expect("lab up");
    for (gw, host) in [(Node::Gwa, Node::Ha), (Node::Gwb, Node::Hb)] {
        lab.exec(gw, &["ip", "link", "set", "lan", "mtu", "9000"])
            .unwrap();
        lab.exec(host, &["ip", "link", "set", "eth0", "mtu", "9000"])
            .unwrap();
    }
    byte_exact_both_ways(lab, 16 << 20);
}
