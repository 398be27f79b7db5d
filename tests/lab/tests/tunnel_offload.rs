//! The tunnels' offloaded path carries data byte for byte: with every line failed over,
//! 48 MB of random bytes cross a crosslink tunnel over TCP each way (the sending gateway
//! reads them from its TUN as 64 KB super-packets and cuts them into packets), and what
//! arrives has the same SHA-256 as what left; UDP sent with UDP_SEGMENT (40 datagrams a
//! send) arrives datagram for datagram; fragments of datagrams larger than the tunnel's
//! MTU cross, IPv4 and IPv6. Needs root; never skipped.

use std::net::{IpAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use lab::{netns, GatewayMode, Lab, LabOptions, Node, Side};

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
fn byte_exact_both_ways(lab: &mut Lab, size: usize) {
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
    let want = sha256(lab, Node::Ha, &file);
    let ha = Side::A.host_addr(false).to_string();
    let there = transfer(lab, Node::Ha, Node::Hb, &hb.to_string(), &file, 5301);
    assert_eq!(sha256(lab, Node::Hb, &there), want, "ha -> hb");
    let back = transfer(lab, Node::Hb, Node::Ha, &ha, &file, 5302);
    assert_eq!(sha256(lab, Node::Ha, &back), want, "hb -> ha");
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
    let mut lab = Lab::up(LabOptions::new(GatewayMode::Crosslink)).expect("lab up");
    byte_exact_both_ways(&mut lab, 48 << 20);
    // The end-to-end BFD inside each tunnel came in by the real-time path: its datagrams
    // were marked CS6 by the sender and steered to the control socket by the receiver.
    for gw in [Node::Gwa, Node::Gwb] {
        let s = lab.status(gw).unwrap();
        for p in s["sites"][0]["paths"].as_array().unwrap() {
            if p["tunnel"].is_null() {
                continue;
            }
            let control = p["tunnel"]["rx_control"].as_u64().unwrap_or(0);
            assert!(
                control > 0,
                "{gw} {}: no datagram on the control path",
                p["name"]
            );
            let bfd_up = p["bfd"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["state"] == "Up");
            assert!(bfd_up, "{gw} {}: BFD {}", p["name"], p["bfd"]);
        }
    }
    for (from, to, port) in [(Node::Ha, Side::B, 5401), (Node::Hb, Side::A, 5402)] {
        let (received, corrupt) = udp_gso(from, to, port);
        assert_eq!(corrupt, 0, "{from} -> {to:?}: datagrams changed on the way");
        // UDP may lose a few to a full queue; a wrong checksum would lose them all.
        assert!(
            received * 100 >= UDP_SENDS * UDP_PER_SEND * 99,
            "{from} -> {to:?}: {received} of {} datagrams",
            UDP_SENDS * UDP_PER_SEND
        );
    }
    // Fragments cross too: IPv4 datagrams the host cuts (DF clear) and IPv6 ones the
    // source fragments, up to far larger than the tunnel's MTU.
    for to in [Side::B.host_addr(false), Side::B.host_addr(true)] {
        for size in ["1400", "4000", "20000"] {
            let to = to.to_string();
            let ping = [
                "ping", "-c", "3", "-i", "0.2", "-W", "2", "-M", "dont", "-s", size, &to,
            ];
            lab.exec(Node::Ha, &ping)
                .unwrap_or_else(|e| panic!("ping -s {size} {to}: {e:#}"));
        }
    }
}

/// UDP datagram payload in the GSO test, datagrams a send, sends.
const UDP_SEG: usize = 1200;
const UDP_PER_SEND: usize = 40;
const UDP_SENDS: usize = 400;

/// The bytes of datagram `n`: its number, then bytes no other datagram has in that order.
fn datagram(n: u64) -> Vec<u8> {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut d = n.to_be_bytes().to_vec();
    d.extend((8..UDP_SEG).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    d
}

/// Sends `UDP_SENDS` GSO sends of `UDP_PER_SEND` datagrams from `from` to the host of
/// `to`, one a millisecond; returns how many arrived intact and how many changed.
fn udp_gso(from: Node, to: Side, port: u16) -> (usize, usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    let to_node = if to == Side::A { Node::Ha } else { Node::Hb };
    let addr: IpAddr = to.host_addr(false);
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let rx = netns::spawn_in(&to_node.ns(), move || {
        let s = UdpSocket::bind((addr, port)).unwrap();
        // Room for the whole transfer: the datagrams are checked once it is over, so a
        // slow check (a debug build) loses none to a full socket.
        setsockopt(&s, sockopt::RcvBufForce, &(64 << 20)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        ready_tx.send(()).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = s.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        let total = (UDP_SENDS * UDP_PER_SEND) as u64;
        let mut seen = vec![false; total as usize];
        let (mut intact, mut corrupt) = (0, 0);
        for d in got {
            let i = d
                .get(..8)
                .map_or(u64::MAX, |b| u64::from_be_bytes(b.try_into().unwrap()));
            if i < total && d == datagram(i) && !seen[i as usize] {
                seen[i as usize] = true;
                intact += 1;
            } else {
                corrupt += 1;
            }
        }
        (intact, corrupt)
    });
    ready.recv().unwrap();
    netns::spawn_in(&from.ns(), move || {
        let s = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
        setsockopt(&s, sockopt::UdpGsoSegment, &(UDP_SEG as i32)).unwrap();
        for k in 0..UDP_SENDS {
            let first = (k * UDP_PER_SEND) as u64;
            let run: Vec<u8> = (first..first + UDP_PER_SEND as u64)
                .flat_map(datagram)
                .collect();
            s.send_to(&run, (addr, port)).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .join()
    .unwrap();
    rx.join().unwrap()
}

/// The smallest MTU IPv6 allows on the tunnel: every super-packet cut smaller.
#[test]
fn a_tunnel_mtu_of_1280_cuts_right_too() {
    let opts = LabOptions::new(GatewayMode::Crosslink)
        .crosslink_hook(|_, cfg| cfg.replace("listen_port = ", "mtu = 1280\nlisten_port = "));
    let mut lab = Lab::up(opts).expect("lab up");
    let mtu = lab
        .exec(Node::Gwa, &["cat", "/sys/class/net/gwa-t1/mtu"])
        .unwrap();
    assert_eq!(mtu.trim(), "1280");
    byte_exact_both_ways(&mut lab, 16 << 20);
}

/// Jumbo frames on the lans (9,000 bytes): the hosts' segments are larger than the
/// tunnel's; path MTU discovery brings them down, and nothing is lost or changed.
#[test]
fn jumbo_frames_on_the_lan_side_cross_the_tunnel_intact() {
    let mut lab = Lab::up(LabOptions::new(GatewayMode::Crosslink)).expect("lab up");
    for (gw, host) in [(Node::Gwa, Node::Ha), (Node::Gwb, Node::Hb)] {
        lab.exec(gw, &["ip", "link", "set", "lan", "mtu", "9000"])
            .unwrap();
        lab.exec(host, &["ip", "link", "set", "eth0", "mtu", "9000"])
            .unwrap();
    }
    byte_exact_both_ways(&mut lab, 16 << 20);
}
