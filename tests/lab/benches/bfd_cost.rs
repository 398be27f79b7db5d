//! Benchmark: what 16 BFD sessions at 10 ms x 3 cost. First BIRD on gwa and gwb runs 16
//! multi-hop sessions between 16 address pairs on the internet uplinks for N seconds
//! (default 60) and is stopped; then two crosslink BFD drivers run the same sessions for as
//! long. Prints each side's CPU% (of one core: the whole BIRD process, the crosslink BFD
//! thread), crosslink's p99 gap between periodic transmissions, and false Down events.
//!
//! `cargo bench -p crosslink-lab --bench bfd_cost [-- SECONDS]` (root). Prints figures only.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lab::{netns, GatewayMode, Lab, LabOptions, Node};
use probes::driver::{Bfd, DriverOptions, SessionSpec, SessionStatus};
use probes::wire::State;

const SESSIONS: u8 = 16;

/// CPU time (user + system) of every thread named `bfd` in this process, by thread id.
fn bfd_threads_cpu() -> Vec<(u32, Duration)> {
    let tick = 100.0; // USER_HZ on Linux
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != "bfd" {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the command name in parentheses; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let tid = t.file_name().to_string_lossy().parse().unwrap_or(0);
        out.push((tid, Duration::from_secs_f64(ticks / tick)));
    }
    out
}

/// CPU time (user + system) of process `pid`, all threads.
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Duration::from_secs_f64(ticks / 100.0)
}

fn addr(net: [u8; 3], i: u8) -> Ipv4Addr {
    Ipv4Addr::new(net[0], net[1], net[2], 11 + i)
}

const NET_A: [u8; 3] = [198, 18, 101];
const NET_B: [u8; 3] = [198, 18, 201];

/// The 16 sessions added to the gateway BIRD's `protocol bfd`.
fn bird_hook(node: Node, conf: String) -> String {
    let (local, peer) = match node {
        Node::Gwa => (NET_A, NET_B),
        Node::Gwb => (NET_B, NET_A),
        _ => return conf,
    };
    let mut extra = String::from("protocol bfd {\n  multihop { interval 10 ms; multiplier 3; };\n");
    for i in 0..SESSIONS {
        extra.push_str(&format!(
            "  neighbor {} local {} multihop yes;\n",
            addr(peer, i),
            addr(local, i)
        ));
    }
    conf.replacen("protocol bfd {\n", &extra, 1)
}

/// BIRD's multi-hop bench sessions: (peer, state, since).
fn bird_sessions(lab: &Lab, node: Node) -> Vec<(String, String, String)> {
    let out = lab.birdc(node, "show bfd sessions").unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let peer = *f.first()?;
            let ok = [NET_A, NET_B]
                .iter()
                .any(|n| peer.starts_with(&format!("{}.{}.{}.", n[0], n[1], n[2])));
            // Multi-hop sessions have no interface: "ADDR --- STATE SINCE ...".
            (ok && f.len() >= 4).then(|| (peer.to_owned(), f[2].to_owned(), f[3].to_owned()))
        })
        .collect()
}

/// BIRD's side: returns (CPU% of gwa's BIRD, of gwb's, sessions that flapped or are not Up).
fn bird_phase(lab: &mut Lab, run: Duration) -> (f64, f64, usize) {
    for node in [Node::Gwa, Node::Gwb] {
        // The sessions were configured before their local addresses existed.
        lab.birdc(node, "restart bfd1").unwrap();
    }
    let all_up = |lab: &Lab| {
        [Node::Gwa, Node::Gwb].iter().all(|n| {
            let s = bird_sessions(lab, *n);
            s.len() == SESSIONS as usize && s.iter().all(|(_, st, _)| st == "Up")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !all_up(lab) {
        assert!(Instant::now() < deadline, "BIRD's sessions did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pids: Vec<u32> = ["bird-gwa", "bird-gwb"]
        .iter()
        .map(|n| lab.process(n).expect("gateway BIRD").pid())
        .collect();
    let before_sessions = [bird_sessions(lab, Node::Gwa), bird_sessions(lab, Node::Gwb)];
    let before: Vec<Duration> = pids.iter().map(|p| process_cpu(*p)).collect();
    let t0 = Instant::now();
    std::thread::sleep(run);
    let after: Vec<Duration> = pids.iter().map(|p| process_cpu(*p)).collect();
    let wall = t0.elapsed();
    let after_sessions = [bird_sessions(lab, Node::Gwa), bird_sessions(lab, Node::Gwb)];
    let flapped = before_sessions
        .iter()
        .flatten()
        .filter(|s| !after_sessions.iter().flatten().any(|a| a == *s))
        .count();
    for node in [Node::Gwa, Node::Gwb] {
        // Out of the way of the crosslink phase.
        let _ = lab.birdc(node, "down");
    }
    let pct = |i: usize| (after[i] - before[i]).as_secs_f64() / wall.as_secs_f64() * 100.0;
    (pct(0), pct(1), flapped)
}

struct Side {
    local_net: [u8; 3],
    peer_net: [u8; 3],
    port: u16,
    peer_port: u16,
}

/// Runs one side's driver for `run` once every session is Up; returns the final status
/// and the number of Up -> Down transitions seen after that. Call it inside the side's
/// namespace.
fn side(
    s: Side,
    run: Duration,
    ready: mpsc::Sender<()>,
    go: mpsc::Receiver<()>,
) -> (Vec<SessionStatus>, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel();
        let opts = DriverOptions {
            single_hop_port: s.port,
            multi_hop_port: s.port + 1,
            bind_v6: None,
            ..DriverOptions::default()
        };
        let bfd = Bfd::start(opts, etx).unwrap();
        for i in 0..SESSIONS {
            let local = IpAddr::V4(addr(s.local_net, i));
            let peer = IpAddr::V4(addr(s.peer_net, i));
            let mut spec = SessionSpec::multi_hop(
                &format!("s{i}"),
                peer,
                Some(local),
                Duration::from_millis(10),
                3,
            );
            spec.peer_port = s.peer_port + 1;
            bfd.add(spec).await.unwrap();
        }
        let mut up = 0;
        while up < SESSIONS {
            match tokio::time::timeout(Duration::from_secs(30), erx.recv()).await {
                Ok(Some(e)) if e.to == State::Up => up += 1,
                Ok(Some(_)) => {}
                _ => panic!("sessions did not come up"),
            }
        }
        ready.send(()).unwrap();
        tokio::task::spawn_blocking(move || go.recv())
            .await
            .unwrap()
            .unwrap();
        let start = Instant::now();
        let mut downs = 0;
        while let Some(left) = run.checked_sub(start.elapsed()) {
            if let Ok(Some(e)) = tokio::time::timeout(left, erx.recv()).await {
                if e.from == State::Up {
                    downs += 1;
                }
            }
        }
        (bfd.status(Duration::from_secs(10)).await, downs)
    })
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    let run = Duration::from_secs(secs);
    let mut lab = Lab::up(LabOptions::new(GatewayMode::Bird).bird_hook(bird_hook)).expect("lab up");
    for i in 0..SESSIONS {
        lab.exec(
            Node::Gwa,
            &[
                "ip",
                "addr",
                "add",
                &format!("198.18.101.{}/24", 11 + i),
                "dev",
                "up1",
            ],
        )
        .unwrap();
        lab.exec(
            Node::Gwb,
            &[
                "ip",
                "addr",
                "add",
                &format!("198.18.201.{}/24", 11 + i),
                "dev",
                "up1",
            ],
        )
        .unwrap();
    }
    let (bird_a, bird_b, bird_flaps) = bird_phase(&mut lab, run);
    let (rtx, rrx) = mpsc::channel();
    let (gotx_a, gorx_a) = mpsc::channel();
    let (gotx_b, gorx_b) = mpsc::channel();
    let start = |node: Node, local_net, peer_net, port, peer_port, ready, go| {
        netns::spawn_in(&node.ns(), move || {
            side(
                Side {
                    local_net,
                    peer_net,
                    port,
                    peer_port,
                },
                run,
                ready,
                go,
            )
        })
    };
    let a = start(
        Node::Gwa,
        NET_A,
        NET_B,
        14784,
        24784,
        rtx.clone(),
        gorx_a,
    );
    let b = start(
        Node::Gwb,
        NET_B,
        NET_A,
        24784,
        14784,
        rtx,
        gorx_b,
    );
    rrx.recv().unwrap();
    rrx.recv().unwrap();
    let before = bfd_threads_cpu();
    let t0 = Instant::now();
    gotx_a.send(()).unwrap();
    gotx_b.send(()).unwrap();
    // Sample while the drivers still run (they stop at the end of `run`).
    std::thread::sleep(run.saturating_sub(Duration::from_millis(300)));
    let after = bfd_threads_cpu();
    let wall = t0.elapsed();
    let (sa, downs_a) = a.join().unwrap();
    let (sb, downs_b) = b.join().unwrap();
    println!("{SESSIONS} multi-hop sessions at 10 ms x 3 between gwa and gwb, {secs} s");
    println!("  BIRD process gwa: {bird_a:.2}% of one core, gwb: {bird_b:.2}%; {bird_flaps} sessions flapped or not Up");
    for (tid, cpu) in &after {
        let was = before
            .iter()
            .find(|(t, _)| t == tid)
            .map_or(Duration::ZERO, |(_, c)| *c);
        println!(
            "  BFD thread {tid}: {:.2}% of one core",
            (*cpu - was).as_secs_f64() / wall.as_secs_f64() * 100.0
        );
    }
    for (name, st, downs) in [("gwa", &sa, downs_a), ("gwb", &sb, downs_b)] {
        let mut p99: Vec<f64> = st
            .iter()
            .filter_map(|s| s.tx_gap_p99)
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        p99.sort_by(f64::total_cmp);
        let up = st.iter().filter(|s| s.state == State::Up).count();
        println!(
            "  {name}: {up}/{SESSIONS} Up at the end, {downs} false Down events, p99 transmit gap median {:.2} ms, worst {:.2} ms",
            p99[p99.len() / 2],
            p99[p99.len() - 1]
        );
    }
    drop(lab);
}
