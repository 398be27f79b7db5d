//! Benchmark: a full table over BGP. lr1 originates N IPv4 /32s (default 100,000) over an
//! established session: the clock starts when lr1's static protocol holding the table is
//! enabled (what a router sends right after the session comes up, without the connection
//! setup delays of either daemon) and stops when the gateway holds the whole table. Runs once with crosslink on the gateways and once with BIRD (the
//! baseline) in the same invocation, and prints time and peak RSS side by side.
//!
//! `cargo bench -p crosslink-lab --bench bgp_table [-- PREFIXES [ROUNDS]]` (root).
//! Prints figures; asserts nothing about speed.

use std::time::{Duration, Instant};

use lab::{GatewayMode, Lab, LabOptions, Node};

#[path = "common/table.rs"]
#[allow(dead_code)] // the shared lab options are for the BFD benches
mod table;

/// Peak resident set (VmHWM) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn received(lab: &Lab, mode: GatewayMode) -> u64 {
    match mode {
        GatewayMode::Crosslink => table::crosslink_received(lab),
        GatewayMode::Bird => {
            // "Routes: N imported, ..." of the session with lr1.
            let out = lab
                .birdc(Node::Gwa, "show protocols all line1_v4")
                .unwrap_or_default();
            out.lines()
                .find_map(|l| l.trim().strip_prefix("Routes:"))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        }
    }
}

struct Run {
    seconds: f64,
    rss_mib: f64,
}

fn run(mode: GatewayMode, n: u32) -> Run {
    let routes = table::bird_protocol(n);
    let opts = LabOptions::new(mode)
        .bird_hook(move |node, cfg| {
            // No BFD here: BIRD would hold its BGP session until BFD is up (a second at
            // BFD's slow start rate), which measures BFD, not the table transfer.
            let cfg = cfg.replace("  bfd on;\n", "");
            if node == Node::Gwa {
                // crosslink does not program the kernel yet: compare RIB ingest with RIB
                // ingest, not with BIRD writing 100,000 kernel routes as well.
                return cfg.replace(
                    "protocol kernel kernel4 { ipv4 { export where source = RTS_BGP; }; }",
                    "protocol kernel kernel4 { ipv4 { export none; }; }",
                );
            }
            if node != Node::Lr1 {
                return cfg;
            }
            // The table starts disabled: enabling it starts the clock.
            format!("{cfg}{routes}")
        })
        .crosslink_hook(|_, cfg| table::crosslink_accepts(cfg));
    let mut lab = Lab::up(opts).expect("lab up");
    lab.wait_for("sessions up", Duration::from_secs(60), || {
        for node in [Node::Lr1, Node::Lr2] {
            if !lab
                .bird_protocols(node)?
                .iter()
                .all(|(name, state, _)| state == "up" || name == "bench4")
            {
                return Ok(false);
            }
        }
        Ok(received(&lab, mode) >= 1)
    })
    .expect("lab settled");
    let start = Instant::now();
    lab.birdc(Node::Lr1, "enable bench4").expect("enable");
    // Both gateways also learn gwb's own prefix over line 1: the table is N + 1.
    let want = u64::from(n) + 1;
    lab.wait_for("the full table", Duration::from_secs(300), || {
        Ok(received(&lab, mode) >= want)
    })
    .expect("full table");
    let seconds = start.elapsed().as_secs_f64();
    let name = match mode {
        GatewayMode::Crosslink => "crosslink-gwa",
        GatewayMode::Bird => "bird-gwa",
    };
    let pid = lab.process(name).expect("gateway process").pid();
    Run {
        seconds,
        rss_mib: peak_rss_mib(pid),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let (n, rounds) = table::args(100_000u32, 3usize);
    println!("full table over BGP: {n} IPv4 /32s from lr1 (BIRD 2) to gwa, {rounds} rounds each");
    let mut rows = Vec::new();
    for mode in [GatewayMode::Crosslink, GatewayMode::Bird] {
        let mut secs = Vec::new();
        let mut rss = Vec::new();
        for round in 1..=rounds {
            let r = run(mode, n);
            println!(
                "  {mode:?} round {round}: {:.3} s, peak RSS {:.1} MiB",
                r.seconds, r.rss_mib
            );
            secs.push(r.seconds);
            rss.push(r.rss_mib);
        }
        rows.push((mode, median(&mut secs), median(&mut rss)));
    }
    println!("\n| gateway | session up -> full table (median) | peak RSS (median) |");
    println!("| --- | --- | --- |");
    for (mode, s, m) in rows {
        println!("| {mode:?} | {s:.3} s | {m:.1} MiB |");
    }
}
