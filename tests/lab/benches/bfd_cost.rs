//! Benchmark: what 16 BFD sessions at 10 ms x 3 cost. First BIRD on gwa and gwb runs 16
//! multi-hop sessions between 16 address pairs on the internet uplinks for N seconds
//! (default 60) and is stopped; then two crosslink BFD drivers run the same sessions for as
//! long. Prints each side's CPU% (of one core: the whole BIRD process, the crosslink BFD
//! thread), crosslink's p99 gap between periodic transmissions, and false Down events.
//!
//! `cargo bench -p crosslink-lab --bench bfd_cost [-- SECONDS]` (root). Prints figures only.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use lab::{GatewayMode, Lab, LabOptions, Node};

#[path = "common/sixteen.rs"]
mod sixteen;
use sixteen::{addr, NET_A, NET_B, SESSIONS};

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
    let before: Vec<Duration> = pids
        .iter()
        .map(|p| sixteen::stat_cpu(std::path::Path::new(&format!("/proc/{p}/stat"))))
        .collect();
    let t0 = Instant::now();
    std::thread::sleep(run);
    let after: Vec<Duration> = pids
        .iter()
        .map(|p| sixteen::stat_cpu(std::path::Path::new(&format!("/proc/{p}/stat"))))
        .collect();
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

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    let run = Duration::from_secs(secs);
    let mut lab = Lab::up(LabOptions::new(GatewayMode::Bird).bird_hook(bird_hook)).expect("lab up");
    sixteen::add_addresses(&lab);
    let (bird_a, bird_b, bird_flaps) = bird_phase(&mut lab, run);

    let (ready_tx, ready) = mpsc::channel();
    let a = sixteen::start(Node::Gwa, ready_tx.clone());
    let b = sixteen::start(Node::Gwb, ready_tx);
    ready.recv().expect("gwa up");
    ready.recv().expect("gwb up");
    let before = sixteen::bfd_threads_cpu();
    let t0 = Instant::now();
    std::thread::sleep(run);
    let after = sixteen::bfd_threads_cpu();
    let wall = t0.elapsed();
    let (oa, ob) = (a.finish(), b.finish());

    println!("{SESSIONS} multi-hop sessions at 10 ms x 3 between gwa and gwb, {secs} s");
    println!("  BIRD process gwa: {bird_a:.2}% of one core, gwb: {bird_b:.2}%; {bird_flaps} sessions flapped or not Up");
    sixteen::print_cpu("crosslink BFD thread", &before, &after, wall);
    sixteen::report("crosslink gwa", &oa);
    sixteen::report("crosslink gwb", &ob);
    drop(lab);
}
