//! Benchmark: TCP throughput from ha to hb (iperf3, 10 s each), in one lab: the bare path
//! over line 1 (the machine's limit); one crosslink tunnel (crosslink on both gateways) and
//! one wireguard-go tunnel (wireguard-go + wg on both gateways, same uplink), each with 1
//! and 8 streams, ratios printed; then both crosslink tunnels as a multipath route with 8
//! streams. Prints the CPU each tunnel process used and what a gigabit cost it, which is
//! what limits a 2-core machine.
//!
//! `cargo bench -p crosslink-lab --bench wg_throughput [-- SECONDS]` (root).

use std::time::{Duration, Instant};

use lab::{netns, GatewayMode, Lab, LabOptions, Node, Side, Tunnel, Uplink};

#[path = "common/sixteen.rs"]
#[allow(dead_code)]
mod sixteen;

fn pid_cpu(pid: u32) -> Duration {
    sixteen::stat_cpu(std::path::Path::new(&format!("/proc/{pid}/stat")))
}

/// Routes each gateway's view of the far lan through `via` (a `nexthop ...` list).
fn route_lans(lab: &Lab, a_via: &[&str], b_via: &[&str]) {
    for (node, side, via) in [(Node::Gwa, Side::B, a_via), (Node::Gwb, Side::A, b_via)] {
        let lan = format!("{}/24", side.host_addr(false));
        let lan = lan.replace(".10/24", ".0/24");
        let mut args = vec!["ip", "route", "replace", &lan];
        args.extend_from_slice(via);
        lab.exec(node, &args).expect("route");
    }
}

/// iperf3 from ha to hb; returns Mbit/s received and the CPU% of each watched process.
fn iperf(lab: &Lab, secs: u64, streams: u32, watch: &[(String, u32)]) -> (f64, Vec<(String, f64)>) {
    let before: Vec<Duration> = watch.iter().map(|(_, p)| pid_cpu(*p)).collect();
    let t0 = Instant::now();
    let v = lab
        .iperf3(&["-t", &secs.to_string(), "-P", &streams.to_string()])
        .expect("iperf3");
    let wall = t0.elapsed().as_secs_f64();
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let cpu = watch
        .iter()
        .zip(before)
        .map(|((n, p), b)| (n.clone(), (pid_cpu(*p) - b).as_secs_f64() / wall * 100.0))
        .collect();
    (bps / 1e6, cpu)
}

/// A row: throughput, and per watched process its CPU and what a gigabit cost it
/// (CPU-seconds per gigabit carried).
fn show(label: &str, mbps: f64, cpu: &[(String, f64)]) {
    let cpu: Vec<String> = cpu
        .iter()
        .map(|(n, c)| {
            let per_gbit = c / 100.0 / (mbps / 1000.0).max(1e-9);
            format!("{n} {c:.0}% ({per_gbit:.2} CPU-s/Gbit)")
        })
        .collect();
    println!("  {label:<34} {mbps:>8.0} Mbit/s   CPU: {}", cpu.join(", "));
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let mut lab = Lab::up(LabOptions::new(GatewayMode::Crosslink)).expect("lab up");
    lab.spawn("iperf3-hb", Node::Hb, &["iperf3", "-s"]).unwrap();
    let agents: Vec<(String, u32)> = ["crosslink-gwa", "crosslink-gwb"]
        .iter()
        .map(|n| (n.to_string(), lab.process(n).unwrap().pid()))
        .collect();
    for t in Tunnel::ALL {
        let far = t.addr(Side::B, false).to_string();
        lab.wait_for("tunnel up", Duration::from_secs(30), || {
            Ok(lab
                .exec(Node::Gwa, &["ping", "-c", "1", "-W", "1", &far])
                .is_ok())
        })
        .unwrap();
    }
    println!("TCP from ha to hb, iperf3, {secs} s per run");

    // The limit of this machine: the same hosts over line 1's veths, no tunnel at all.
    lab.wait_for("both gateways on line 1", Duration::from_secs(60), || {
        lab.both_on(lab::Line(1))
    })
    .expect("the lines up");
    let (bare, _) = iperf(&lab, secs, 1, &[]);
    show("bare path (line 1, no tunnel)", bare, &[]);

    let (t1a, t1b) = (Tunnel(1).ifname(Side::A), Tunnel(1).ifname(Side::B));
    route_lans(&lab, &["dev", &t1a], &["dev", &t1b]);
    let (one, cpu) = iperf(&lab, secs, 1, &agents);
    show("one crosslink tunnel", one, &cpu);
    let (one8, cpu) = iperf(&lab, secs, 8, &agents);
    show("one crosslink tunnel, 8 streams", one8, &cpu);

    // wireguard-go between the same uplinks, its own port and interfaces.
    let dir = lab.dir().to_path_buf();
    let mut go = Vec::new();
    let keys: Vec<(String, String)> = ["goa", "gob"]
        .iter()
        .map(|n| {
            let key = dir.join(format!("{n}.key"));
            let public = lab::wg_keypair(&key).expect("key pair");
            (key.display().to_string(), public)
        })
        .collect();
    for (i, (node, side, iface, addr)) in [
        (Node::Gwa, Side::A, "xga-go", "10.78.0.1/30"),
        (Node::Gwb, Side::B, "xgb-go", "10.78.0.2/30"),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("wireguard-go-{node}");
        lab.spawn(&name, node, &["wireguard-go", "-f", iface])
            .unwrap();
        let sock = format!("/var/run/wireguard/{iface}.sock");
        lab.wait_for("wireguard-go", Duration::from_secs(10), || {
            Ok(std::path::Path::new(&sock).exists())
        })
        .unwrap();
        go.push((name.clone(), lab.process(&name).unwrap().pid()));
        let peer = &keys[1 - i].1;
        let endpoint = format!("{}:51900", Uplink(1).addr(side.other(), false, false));
        let lan = format!("{}", side.other().host_addr(false)).replace(".10", ".0/24");
        let allowed = format!("10.78.0.0/30,{lan}");
        netns::exec(
            &node.ns(),
            &[
                "wg",
                "set",
                iface,
                "private-key",
                &keys[i].0,
                "listen-port",
                "51900",
                "peer",
                peer,
                "endpoint",
                &endpoint,
                "allowed-ips",
                &allowed,
            ],
        )
        .unwrap();
        lab.exec(node, &["ip", "addr", "add", addr, "dev", iface])
            .unwrap();
        lab.exec(
            node,
            &["ip", "link", "set", "dev", iface, "mtu", "1420", "up"],
        )
        .unwrap();
    }
    lab.wait_for("wireguard-go tunnel", Duration::from_secs(20), || {
        Ok(lab
            .exec(Node::Gwa, &["ping", "-c", "1", "-W", "1", "10.78.0.2"])
            .is_ok())
    })
    .unwrap();
    route_lans(&lab, &["dev", "xga-go"], &["dev", "xgb-go"]);
    let (reference, cpu) = iperf(&lab, secs, 1, &go);
    show("one wireguard-go tunnel", reference, &cpu);
    let (reference8, cpu) = iperf(&lab, secs, 8, &go);
    show("one wireguard-go tunnel, 8 streams", reference8, &cpu);
    println!(
        "  ratio crosslink / wireguard-go: {:.2} (1 stream), {:.2} (8 streams)",
        one / reference,
        one8 / reference8
    );
    for (name, _) in &go {
        if let Some(p) = lab.process(name) {
            p.stop(Duration::from_secs(2));
        }
    }

    let (t2a, t2b) = (Tunnel(2).ifname(Side::A), Tunnel(2).ifname(Side::B));
    route_lans(
        &lab,
        &["nexthop", "dev", &t1a, "nexthop", "dev", &t2a],
        &["nexthop", "dev", &t1b, "nexthop", "dev", &t2b],
    );
    let (two, cpu) = iperf(&lab, secs, 8, &agents);
    show("two crosslink tunnels, 8 streams", two, &cpu);
    println!("  ratio two / one (8 streams each): {:.2}", two / one8);
    drop(lab);
}
