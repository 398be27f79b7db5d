//! Benchmark: throughput from ha to hb with iperf3, in one lab: the bare path over line 1
//! (the machine's limit); one crosslink tunnel (crosslink on both gateways); one
//! wireguard-go tunnel and one boringtun-cli tunnel (each on both gateways with `wg`, same
//! uplink; boringtun-cli only where installed: `cargo install boringtun-cli`); both
//! crosslink tunnels as a multipath route. Each with TCP, 1 and 8 streams (SECONDS each,
//! default 10), and UDP at the largest rate that loses under 1 % (found by doubling, then
//! halving the gap; 5 s a try). Prints the CPU each tunnel process used and what a gigabit
//! cost it, which is what limits a 2-core machine.
//!
//! `cargo bench -p crosslink-lab --bench wg_throughput [-- SECONDS] [--tcp-only=RUNS]`
//! (root). `--tcp-only=RUNS` measures one crosslink tunnel alone, TCP 1 and 8 streams
//! RUNS times each, and prints their medians: to compare two builds of the agent
//! (`CROSSLINK_BIN`) one after the other, on a machine whose speed drifts.

use std::time::{Duration, Instant};

use lab::{netns, GatewayMode, Lab, LabOptions, Node, Side, Tunnel, Uplink};

#[path = "common/sixteen.rs"]
#[allow(dead_code)]
mod sixteen;

/// Busy and total ticks of all CPUs together (`/proc/stat`: idle and iowait are not busy).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The machine's busy share over a run, as a CPU percentage (200 % is two busy cores), to
/// stand beside the processes' own.
fn machine_cpu(before: (u64, u64)) -> (String, f64) {
    let (busy, total) = machine_ticks();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let share = (busy - before.0) as f64 / (total - before.1).max(1) as f64;
    ("all CPUs".to_owned(), share * cpus * 100.0)
}

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
    let machine = machine_ticks();
    let t0 = Instant::now();
    let v = lab
        .iperf3(&["-t", &secs.to_string(), "-P", &streams.to_string()])
        .expect("iperf3");
    let wall = t0.elapsed().as_secs_f64();
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let mut cpu: Vec<(String, f64)> = watch
        .iter()
        .zip(before)
        .map(|((n, p), b)| (n.clone(), (pid_cpu(*p) - b).as_secs_f64() / wall * 100.0))
        .collect();
    cpu.push(machine_cpu(machine));
    (bps / 1e6, cpu)
}

/// UDP datagram payload: fits a 1,420-byte tunnel MTU without fragments.
const UDP_LEN: &str = "1372";
/// Loss a UDP rate may have to count.
const UDP_LOSS: f64 = 1.0;

/// One UDP try at `mbps`: (Mbit/s received, loss %, CPU% of each watched process).
fn udp_try(lab: &Lab, mbps: f64, watch: &[(String, u32)]) -> (f64, f64, Vec<(String, f64)>) {
    let before: Vec<Duration> = watch.iter().map(|(_, p)| pid_cpu(*p)).collect();
    let t0 = Instant::now();
    let rate = format!("{}M", mbps.round());
    let v = lab
        .iperf3(&["-u", "-b", &rate, "-l", UDP_LEN, "-t", "5"])
        .expect("iperf3 -u");
    let wall = t0.elapsed().as_secs_f64();
    let sent = v["end"]["sum"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6;
    let loss = v["end"]["sum"]["lost_percent"].as_f64().unwrap_or(100.0);
    let cpu = watch
        .iter()
        .zip(before)
        .map(|((n, p), b)| (n.clone(), (pid_cpu(*p) - b).as_secs_f64() / wall * 100.0))
        .collect();
    (sent * (1.0 - loss / 100.0), loss, cpu)
}

/// The largest UDP rate that loses under `UDP_LOSS` %: doubled from 500 Mbit/s until it
/// loses, then the gap halved three times. Returns the best try's (received, loss, CPU).
fn udp_max(lab: &Lab, watch: &[(String, u32)]) -> (f64, f64, Vec<(String, f64)>) {
    let (mut good, mut bad) = (None::<(f64, (f64, f64, Vec<(String, f64)>))>, None::<f64>);
    let mut rate = 500.0;
    for _ in 0..12 {
        let t = udp_try(lab, rate, watch);
        if t.1 < UDP_LOSS {
            good = Some((rate, t));
        } else {
            bad = Some(rate);
        }
        rate = match (good.as_ref().map(|g| g.0), bad) {
            (Some(g), None) if g < 32_000.0 => g * 2.0,
            (Some(g), Some(b)) if b - g > g / 8.0 => (g + b) / 2.0,
            (None, Some(b)) if b > 50.0 => b / 2.0,
            _ => break,
        };
    }
    good.map_or((0.0, 100.0, Vec::new()), |g| g.1)
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
    println!("  {label:<40} {mbps:>8.0} Mbit/s   CPU: {}", cpu.join(", "));
}

/// TCP with 1 and 8 streams and the UDP row through what the lan routes point at now;
/// returns the TCP figures.
fn rows(lab: &Lab, secs: u64, name: &str, watch: &[(String, u32)]) -> (f64, f64) {
    let (one, cpu) = iperf(lab, secs, 1, watch);
    show(name, one, &cpu);
    let (eight, cpu) = iperf(lab, secs, 8, watch);
    show(&format!("{name}, 8 streams"), eight, &cpu);
    let (udp, loss, cpu) = udp_max(lab, watch);
    show(&format!("{name}, UDP ({loss:.2} % lost)"), udp, &cpu);
    (one, eight)
}

/// One crosslink tunnel with TCP, 1 and 8 streams, `runs` times each in turn: each
/// figure, then the medians.
fn tcp_medians(lab: &Lab, secs: u64, runs: usize, watch: &[(String, u32)]) {
    let (mut ones, mut eights) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (streams, all) in [(1, &mut ones), (8, &mut eights)] {
            let (mbps, cpu) = iperf(lab, secs, streams, watch);
            show(
                &format!("one crosslink tunnel, {streams} stream(s)"),
                mbps,
                &cpu,
            );
            all.push(mbps);
        }
    }
    for (streams, mut all) in [(1, ones), (8, eights)] {
        all.sort_by(f64::total_cmp);
        let median = all.get(all.len() / 2).copied().unwrap_or(0.0);
        println!("  median of {runs}, {streams} stream(s): {median:.0} Mbit/s");
    }
}

/// A foreign WireGuard (wireguard-go or boringtun-cli, by `argv`) on both gateways over
/// uplink 1, configured with `wg` as an operator would, the lan routes pointed at it.
/// Returns its processes.
fn foreign(lab: &mut Lab, tag: &str, argv: &[&str], net: u8) -> Vec<(String, u32)> {
    let dir = lab.dir().to_path_buf();
    let keys: Vec<(String, String)> = ["a", "b"]
        .iter()
        .map(|n| {
            let key = dir.join(format!("{tag}{n}.key"));
            let public = lab::wg_keypair(&key).expect("key pair");
            (key.display().to_string(), public)
        })
        .collect();
    let port = format!("{}", 51_900 + u16::from(net));
    let mut procs = Vec::new();
    for (i, (node, side)) in [(Node::Gwa, Side::A), (Node::Gwb, Side::B)]
        .into_iter()
        .enumerate()
    {
        let iface = format!("xg{}-{tag}", ["a", "b"][i]);
        let name = format!("{tag}-{node}");
        let mut args = argv.to_vec();
        args.push(&iface);
        lab.spawn(&name, node, &args).unwrap();
        let sock = format!("/var/run/wireguard/{iface}.sock");
        lab.wait_for(tag, Duration::from_secs(10), || {
            Ok(std::path::Path::new(&sock).exists())
        })
        .unwrap();
        procs.push((name.clone(), lab.process(&name).unwrap().pid()));
        let endpoint = format!("{}:{port}", Uplink(1).addr(side.other(), false, false));
        let lan = format!("{}", side.other().host_addr(false)).replace(".10", ".0/24");
        let allowed = format!("10.{net}.0.0/30,{lan}");
        let wg = [
            "wg",
            "set",
            &iface,
            "private-key",
            &keys[i].0,
            "listen-port",
            &port,
            "peer",
            &keys[1 - i].1,
            "endpoint",
            &endpoint,
            "allowed-ips",
            &allowed,
        ];
        netns::exec(&node.ns(), &wg).unwrap();
        let addr = format!("10.{net}.0.{}/30", i + 1);
        lab.exec(node, &["ip", "addr", "add", &addr, "dev", &iface])
            .unwrap();
        lab.exec(
            node,
            &["ip", "link", "set", "dev", &iface, "mtu", "1420", "up"],
        )
        .unwrap();
    }
    let far = format!("10.{net}.0.2");
    lab.wait_for(tag, Duration::from_secs(20), || {
        Ok(lab
            .exec(Node::Gwa, &["ping", "-c", "1", "-W", "1", &far])
            .is_ok())
    })
    .unwrap();
    let (a, b) = (format!("xga-{tag}"), format!("xgb-{tag}"));
    route_lans(lab, &["dev", &a], &["dev", &b]);
    procs
}

fn stop(lab: &mut Lab, procs: &[(String, u32)]) {
    for (name, _) in procs {
        if let Some(p) = lab.process(name) {
            p.stop(Duration::from_secs(2));
        }
    }
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let tcp_only: Option<usize> =
        std::env::args().find_map(|a| a.strip_prefix("--tcp-only=").and_then(|n| n.parse().ok()));
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
    println!(
        "ha to hb, iperf3: TCP {secs} s per run, UDP the largest rate under {UDP_LOSS} % loss"
    );

    // The limit of this machine: the same hosts over line 1's veths, no tunnel at all.
    lab.wait_for("both gateways on line 1", Duration::from_secs(60), || {
        lab.both_on(lab::Line(1))
    })
    .expect("the lines up");
    let (bare, _) = iperf(&lab, secs, 1, &[]);
    show("bare path (line 1, no tunnel)", bare, &[]);
    let (udp, loss, _) = udp_max(&lab, &[]);
    show(&format!("bare path, UDP ({loss:.2} % lost)"), udp, &[]);

    let (t1a, t1b) = (Tunnel(1).ifname(Side::A), Tunnel(1).ifname(Side::B));
    route_lans(&lab, &["dev", &t1a], &["dev", &t1b]);
    if let Some(runs) = tcp_only {
        tcp_medians(&lab, secs, runs, &agents);
        return;
    }
    let (one, one8) = rows(&lab, secs, "one crosslink tunnel", &agents);

    let go = foreign(&mut lab, "go", &["wireguard-go", "-f"], 78);
    let (go1, go8) = rows(&lab, secs, "one wireguard-go tunnel", &go);
    stop(&mut lab, &go);
    println!(
        "  ratio crosslink / wireguard-go: {:.2} (1 stream), {:.2} (8 streams)",
        one / go1,
        one8 / go8
    );
    let boringtun = ["boringtun-cli", "-f", "--disable-drop-privileges"];
    if std::process::Command::new("boringtun-cli")
        .arg("--version")
        .output()
        .is_ok()
    {
        let bt = foreign(&mut lab, "bt", &boringtun, 79);
        let (bt1, bt8) = rows(&lab, secs, "one boringtun-cli tunnel", &bt);
        stop(&mut lab, &bt);
        println!(
            "  ratio crosslink / boringtun-cli: {:.2} (1 stream), {:.2} (8 streams)",
            one / bt1,
            one8 / bt8
        );
    } else {
        println!("  boringtun-cli: not installed (cargo install boringtun-cli), row skipped");
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
