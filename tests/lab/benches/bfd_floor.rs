//! Benchmark: the BFD stability floor. crosslink on both gateways, BIRD on the line
//! routers, every BFD session at INTERVAL x 3: with each line router (single-hop, IPv4 and
//! IPv6 neighbours) and crosslink to crosslink end to end over both lines and both
//! tunnels. For MINUTES (default 10) lr1 announces and withdraws a 100,000-prefix table to
//! gwa's agent in a loop while iperf3 pushes TCP from ha to hb through tunnel inet1. Counts
//! every Down event, per kind of session, on both agents; and BIRD's sessions that
//! flapped. Run it at several intervals to find the floor.
//!
//! `cargo bench -p crosslink-lab --bench bfd_floor [-- INTERVAL_MS [MINUTES]]` (root).

use std::time::{Duration, Instant};

use lab::{Lab, Node, Side, Tunnel};

#[path = "common/table.rs"]
mod table;

/// BIRD's BFD sessions on a line router: (peer, state, since).
fn bird_sessions(lab: &Lab, node: Node) -> Vec<(String, String, String)> {
    let out = lab.birdc(node, "show bfd sessions").unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5 && (f[2] == "Up" || f[2] == "Down" || f[2] == "Init"))
                .then(|| (f[0].to_owned(), f[2].to_owned(), f[3].to_owned()))
        })
        .collect()
}

/// Every `bfd-down` event of one agent, gathered by asking it after every table cycle:
/// its event log keeps the last 1,024 events, which a busy ten minutes can pass, so one
/// read at the end could miss the Downs of the first minutes.
#[derive(Default)]
struct DownLog {
    /// (at, path, message): an event read twice is one.
    seen: std::collections::BTreeSet<(String, String, String)>,
    /// The newest event time read so far.
    newest: Option<String>,
    /// The log had moved past everything read before: events in between were not seen.
    gap: bool,
}

impl DownLog {
    /// Panics when the agent cannot be asked: a count it could not read is not a zero.
    fn poll(&mut self, lab: &Lab, gw: Node) {
        let out = lab
            .crosslink(gw, &["events", "--json"])
            .unwrap_or_else(|e| panic!("{gw}: crosslink events: {e:#}"));
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{gw}: crosslink events: {e}"));
        let events = v.as_array().cloned().unwrap_or_default();
        let at = |e: &serde_json::Value| e["at"].as_str().unwrap_or("").to_owned();
        if let (Some(newest), Some(oldest)) = (&self.newest, events.first()) {
            self.gap |= at(oldest) > *newest;
        }
        if let Some(last) = events.last() {
            self.newest = Some(at(last));
        }
        for e in events.iter().filter(|e| e["kind"] == "bfd-down") {
            let field = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            self.seen.insert((at(e), field("path"), field("message")));
        }
    }

    /// The Downs from `since` (seconds of the day, UTC) on: (path, message, seconds of
    /// the day). Sessions that flapped while the lab came up are not the floor's to count.
    fn since(&self, since: f64) -> Vec<(String, String, f64)> {
        self.seen
            .iter()
            .map(|(at, p, m)| (p.clone(), m.clone(), seconds_of_day(at)))
            .filter(|(_, _, at)| *at >= since)
            .collect()
    }
}

/// Now, in seconds of the day (UTC), as `seconds_of_day` reads the agent's events.
fn now_of_day() -> f64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_secs_f64() % 86_400.0
}

/// `2026-11-24T09:10:11.123Z` -> 33011.123.
fn seconds_of_day(at: &str) -> f64 {
    let t = at.split('T').nth(1).unwrap_or("").trim_end_matches('Z');
    t.split(':')
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .fold(0.0, |acc, f| acc * 60.0 + f)
}

/// Down events within 50 ms of each other are one moment: a moment that takes sessions
/// on unrelated paths (and both gateways) points at the machine (a vCPU stall, steal),
/// a lone Down at the path or a sender. Each moment: the sessions in it, `gw path`.
fn moments(mut at: Vec<(f64, String)>) -> Vec<Vec<String>> {
    at.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut last = f64::NEG_INFINITY;
    for (t, who) in at {
        match out.last_mut() {
            Some(m) if t - last <= 0.05 => m.push(who),
            _ => out.push(vec![who]),
        }
        last = t;
    }
    out
}

/// Time the hypervisor ran something else on our vCPUs, in clock ticks (`/proc/stat`).
fn steal_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(8))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Each BFD session's largest and 99th-percentile transmit gap: (path, neighbor, p99, max).
fn tx_gaps(lab: &Lab, gw: Node) -> Vec<(String, String, f64, f64)> {
    let s = lab
        .status(gw)
        .unwrap_or_else(|e| panic!("{gw}: crosslink status: {e:#}"));
    let mut v = Vec::new();
    for p in s["sites"][0]["paths"].as_array().into_iter().flatten() {
        for b in p["bfd"].as_array().into_iter().flatten() {
            v.push((
                p["name"].as_str().unwrap_or("").to_owned(),
                b["neighbor"].as_str().unwrap_or("").to_owned(),
                b["tx_gap_p99_ms"].as_f64().unwrap_or(f64::NAN),
                b["tx_gap_max_ms"].as_f64().unwrap_or(f64::NAN),
            ));
        }
    }
    v
}

/// Detections that waited once because the gateway's BFD thread had been stalled.
fn stall_graces(lab: &Lab, gw: Node) -> u64 {
    let s = lab
        .status(gw)
        .unwrap_or_else(|e| panic!("{gw}: crosslink status: {e:#}"));
    s["sites"][0]["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["bfd"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| b["stall_graces"].as_u64())
        .sum()
}

fn all_up(lab: &Lab, gw: Node) -> bool {
    let Ok(out) = lab.crosslink(gw, &["status", "--json"]) else {
        return false;
    };
    let s: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    s["sites"][0]["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["bfd"].as_array().cloned().unwrap_or_default())
        .all(|b| b["state"] == "Up")
}

fn main() {
    let (ms, minutes) = table::args(3u64, 10u64);
    let mut opts = table::crosslink_lab_options(100_000);
    opts.bfd.interval = Duration::from_millis(ms);
    let mut lab = Lab::up(opts).expect("lab up");
    lab.wait_for("every BFD session up", Duration::from_secs(60), || {
        Ok(all_up(&lab, Node::Gwa) && all_up(&lab, Node::Gwb))
    })
    .expect("sessions up");
    let birds_before = [
        bird_sessions(&lab, Node::Lr1),
        bird_sessions(&lab, Node::Lr2),
    ];

    // iperf3 through tunnel inet1, both directions routed over it.
    let lan_b = Side::B.host_addr(false).to_string().replace(".10", ".0/24");
    let lan_a = Side::A.host_addr(false).to_string().replace(".10", ".0/24");
    let (ta, tb) = (Tunnel(1).ifname(Side::A), Tunnel(1).ifname(Side::B));
    lab.exec(Node::Gwa, &["ip", "route", "replace", &lan_b, "dev", &ta])
        .unwrap();
    lab.exec(Node::Gwb, &["ip", "route", "replace", &lan_a, "dev", &tb])
        .unwrap();
    lab.spawn("iperf3-hb", Node::Hb, &["iperf3", "-s"]).unwrap();
    let secs = (minutes * 60).to_string();
    let to = Side::B.host_addr(false).to_string();
    lab.spawn("iperf3-ha", Node::Ha, &["iperf3", "-c", &to, "-t", &secs])
        .unwrap();

    println!("BFD at {ms} ms x 3 for {minutes} min, table churn on gwa and iperf3 through inet1");
    let start = Instant::now();
    let since = now_of_day();
    let steal0 = steal_ticks();
    let run = Duration::from_secs(minutes * 60);
    let mut churns = 0;
    let mut logs = [DownLog::default(), DownLog::default()];
    while start.elapsed() < run {
        let full = 100_001;
        let _ = lab.birdc(Node::Lr1, "enable bench4");
        let _ = lab.wait_for("table", Duration::from_secs(60), || {
            Ok(table::crosslink_received(&lab) >= full)
        });
        let _ = lab.birdc(Node::Lr1, "disable bench4");
        let _ = lab.wait_for("withdrawn", Duration::from_secs(60), || {
            Ok(table::crosslink_received(&lab) <= 1)
        });
        churns += 1;
        for (log, gw) in logs.iter_mut().zip([Node::Gwa, Node::Gwb]) {
            log.poll(&lab, gw);
        }
    }
    let birds_after = [
        bird_sessions(&lab, Node::Lr1),
        bird_sessions(&lab, Node::Lr2),
    ];
    let bird_flaps = birds_before
        .iter()
        .flatten()
        .filter(|s| !birds_after.iter().flatten().any(|a| a == *s))
        .count();
    let steal = steal_ticks().saturating_sub(steal0);
    // USER_HZ is 100 on every Linux we run on; two vCPUs.
    let steal_pct = steal as f64 / (start.elapsed().as_secs_f64() * 100.0 * 2.0) * 100.0;
    println!("  {churns} full-table announce/withdraw cycles; steal {steal_pct:.2} % of the vCPUs");
    let mut all_at = Vec::new();
    for (log, gw) in logs.iter_mut().zip([Node::Gwa, Node::Gwb]) {
        log.poll(&lab, gw);
        let d = log.since(since);
        let before = log.since(0.0).len() - d.len();
        let with_router = d
            .iter()
            .filter(|(_, m, _)| m.starts_with("BFD with"))
            .count();
        let e2e_line = d
            .iter()
            .filter(|(p, m, _)| m.starts_with("end-to-end") && p.starts_with("line"))
            .count();
        let e2e_tunnel = d
            .iter()
            .filter(|(p, m, _)| m.starts_with("end-to-end") && p.starts_with("inet"))
            .count();
        println!(
            "  {gw}: Down events: {with_router} with the line routers, {e2e_line} end to end over lines, {e2e_tunnel} end to end over tunnels"
        );
        if before > 0 {
            println!("    ({before} more while the lab came up, not counted)");
        }
        if log.gap {
            println!("    (its event log moved on faster than it was read: Downs may be missing)");
        }
        // Which session and why (timed out here, or the far end saw the silence first).
        let mut by: std::collections::BTreeMap<String, usize> = Default::default();
        for (p, m, at) in &d {
            all_at.push((*at, format!("{gw} {p}")));
            let why = if m.to_lowercase().contains("neighbor signaled") {
                "far end"
            } else {
                "here"
            };
            *by.entry(format!("{p} ({why})")).or_default() += 1;
        }
        if !by.is_empty() {
            println!("    {by:?}");
        }
        let gaps = tx_gaps(&lab, gw);
        let worst = gaps.iter().map(|g| g.3).fold(0.0, f64::max);
        let p99 = gaps.iter().map(|g| g.2).fold(0.0, f64::max);
        println!(
            "    transmit gaps (last 4,096 per session): worst p99 {p99:.2} ms, max {worst:.2} ms; \
             {} detections waited for the stalled BFD thread",
            stall_graces(&lab, gw)
        );
        for (path, peer, p99, max) in gaps.iter().filter(|g| g.3 > ms as f64 * 2.0) {
            println!("      {path} {peer}: p99 {p99:.2} ms, max {max:.2} ms");
        }
    }
    let m = moments(all_at);
    // How many moments took how many sessions: one list per moment is unreadable when
    // BIRD's sessions flap by the hundred.
    let mut sizes: std::collections::BTreeMap<usize, usize> = Default::default();
    for w in &m {
        *sizes.entry(w.len()).or_default() += 1;
    }
    let sizes: Vec<String> = sizes.iter().map(|(k, n)| format!("{n} of {k}")).collect();
    println!(
        "  Down events fall in {} moments (50 ms apart): {}",
        m.len(),
        sizes.join(", ")
    );
    // Which sessions went down together: a tunnel's Down beside a line's is the machine's.
    for (i, who) in m
        .iter()
        .enumerate()
        .filter(|(_, w)| w.iter().any(|w| w.contains("inet")))
    {
        println!("    moment {}: {}", i + 1, who.join(", "));
    }
    println!("  BIRD (lr1, lr2): {bird_flaps} sessions flapped");
    drop(lab);
}
