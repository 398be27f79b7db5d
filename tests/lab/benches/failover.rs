//! Benchmark `failover`: how long traffic stops when line 1 fails, and what the return
//! costs, for crosslink and for the lab's BIRD baseline (BIRD BGP + BFD on the gateways,
//! wireguard-go backup) in the same run.
//!
//! Part 1, for BFD 10 ms × 3 and 100 ms × 3, CUTS cuts (default 10, 0 skips it) of each
//! kind on line 1: (a) carrier loss at gwa's end (`ip link set down`), (b) a silent drop
//! of everything with the link up (nftables) at gwa's end, (c) the same at gwb's end: the
//! far side of the line for gwa, whose line router and BGP session stay up: the line
//! routers' BGP with gwb ignores BFD here, as if each cloud had its own line router, so
//! only end-to-end BFD sees it (the baseline waits for the BGP hold time, 9 s). Outage: the longest gap seen by the traffic probe (1,000
//! packets/s each way between ha and hb), the worse direction; then the line is healed and
//! the packets lost while traffic returns are counted. `FAILOVER_KINDS=a,b,c` picks kinds.
//!
//! Part 2, with 100, 10,000 and 100,000 site prefixes (both line routers announce them,
//! BFD 10 ms × 3, TABLE_CUTS cuts each, default 3, 0 skips it; silent cuts, or carrier
//! cuts with `carrier`): the outage of a flow to the last prefix; for crosslink the switch
//! itself (the nexthop update's netlink time from its log), for BIRD the replacement of
//! every route one by one.
//!
//! `cargo bench -p crosslink-lab --bench failover [-- CUTS [TABLE_CUTS [carrier]]]` (root;
//! build the release agent first). `FAILOVER_INTERVALS=5,10` sets part 1's BFD intervals
//! in ms (default 10,100); `FAILOVER_TABLE_SIZES=10000` part 2's table sizes. Prints figures; asserts nothing about speed.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use lab::{Cut, GatewayMode, Lab, LabOptions, Line, Node, ProbeReport, Side, TrafficProbe};

#[path = "common/table.rs"]
#[allow(dead_code)]
mod table;

const RATE: u32 = 1000;

/// Short hold-down and fast-decaying damping, so that ten cuts in a row each return.
fn quick_return(cfg: String) -> String {
    format!("{cfg}\n[policy]\nhold_down = \"2s\"\n[policy.damping]\nhalf_life = \"1s\"\n")
}

fn options(mode: GatewayMode, interval_ms: u64) -> LabOptions {
    let mut opts = LabOptions::new(mode).crosslink_hook(|_, cfg| quick_return(cfg));
    opts.bfd.interval = Duration::from_millis(interval_ms);
    opts.bfd.multiplier = 3;
    // For (c): lr1 does not act on its BFD with gwb, so gwa hears of a failure at gwb's
    // end only from end-to-end BFD (the BIRD baseline has none: it waits for the BGP hold
    // time). Cuts at gwa's end are not affected.
    opts.line_bgp_ignores_bfd = Some(Side::B);
    opts
}

fn host(side: Side) -> IpAddr {
    side.host_addr(false)
}

/// Waits until both gateways send the far host's traffic over `line`.
fn wait_line(lab: &Lab, line: Line, timeout: Duration) -> anyhow::Result<Duration> {
    lab.wait_for(&format!("both gateways on {line:?}"), timeout, || {
        lab.both_on(line)
    })
}

fn both(lab: &Lab) -> (TrafficProbe, TrafficProbe) {
    (
        lab.probe(Side::A, false, RATE).expect("probe ha -> hb"),
        lab.probe(Side::B, false, RATE).expect("probe hb -> ha"),
    )
}

fn stop(p: (TrafficProbe, TrafficProbe)) -> (ProbeReport, ProbeReport) {
    (p.0.stop().expect("probe"), p.1.stop().expect("probe"))
}

/// One cut and return: (outage ms, packets lost on return), or None when the lab did
/// not settle (reported, not counted).
fn cycle(lab: &Lab, kind: Cut, at: Side) -> Option<(f64, u64)> {
    let p = both(lab);
    std::thread::sleep(Duration::from_millis(300));
    lab.cut(at, Line(1), kind).ok()?;
    // Past the BGP hold time (9 s), for the baseline's far-side cut.
    let moved = wait_line(lab, Line(2), Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(300));
    let (ab, ba) = stop(p);
    if let Err(e) = moved {
        eprintln!("  not moved: {e:#}");
        let _ = lab.heal(at, Line(1));
        // Back on line 1 before the next cut, whatever kept the traffic there.
        let _ = wait_line(lab, Line(1), Duration::from_secs(60));
        return None;
    }
    let outage = ab.longest_gap_ms.max(ba.longest_gap_ms);
    eprintln!(
        "  {kind:?}: ha -> hb {:.1} ms ({} lost), hb -> ha {:.1} ms ({} lost)",
        ab.longest_gap_ms, ab.lost, ba.longest_gap_ms, ba.lost
    );
    let p = both(lab);
    std::thread::sleep(Duration::from_millis(200));
    lab.heal(at, Line(1)).ok()?;
    let back = wait_line(lab, Line(1), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    let (ab, ba) = stop(p);
    if let Err(e) = back {
        eprintln!("  not back: {e:#}");
        return None;
    }
    if ab.lost + ba.lost > 0 {
        let at = |r: &ProbeReport| humantime::format_rfc3339_micros(r.longest_gap_at);
        eprintln!(
            "  return: ha -> hb {} lost, gap {:.1} ms from {}; hb -> ha {} lost, gap {:.1} ms from {}",
            ab.lost,
            ab.longest_gap_ms,
            at(&ab),
            ba.lost,
            ba.longest_gap_ms,
            at(&ba)
        );
    }
    // Let BFD and BGP settle at full rate before the next cut.
    std::thread::sleep(Duration::from_secs(1));
    Some((outage, ab.lost + ba.lost))
}

fn median_max(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    v.sort_by(f64::total_cmp);
    format!("{:.1} / {:.1}", v[v.len() / 2], v[v.len() - 1])
}

struct Cuts {
    outage: Vec<f64>,
    lost: Vec<f64>,
}

/// The kinds of part 1: label, fault, and where on line 1.
const KINDS: [(&str, Cut, Side); 3] = [
    ("a", Cut::Carrier, Side::A),
    ("b", Cut::Blackhole, Side::A),
    ("c", Cut::Blackhole, Side::B),
];

fn part1(
    mode: GatewayMode,
    interval_ms: u64,
    cuts: usize,
    kinds: &[&str],
) -> Vec<(&'static str, Cut, Cuts)> {
    let lab = Lab::up(options(mode, interval_ms)).expect("lab up");
    wait_line(&lab, Line(1), Duration::from_secs(90)).expect("lab on line 1");
    // Past the start-up transients (tunnels first, BFD slow start).
    std::thread::sleep(Duration::from_secs(3));
    let mut out = Vec::new();
    for (label, kind, at) in KINDS.into_iter().filter(|k| kinds.contains(&k.0)) {
        let mut c = Cuts {
            outage: Vec::new(),
            lost: Vec::new(),
        };
        for i in 0..cuts {
            if let Some((o, l)) = cycle(&lab, kind, at) {
                eprintln!("  {mode:?} {interval_ms} ms ({label}) {kind:?} #{i}: outage {o:.1} ms, lost on return {l}");
                c.outage.push(o);
                c.lost.push(l as f64);
            }
        }
        out.push((label, kind, c));
    }
    out
}

/// The prefixes of the table: /32s from 10.0.0.0 (see `table::bird_protocol`).
fn nth_prefix(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000u32 + i)
}

/// Both line routers announce the table, each with the far gateway as next hop, so
/// either line can carry it.
fn table_options(mode: GatewayMode, n: u32) -> LabOptions {
    let mut opts = options(mode, 10);
    opts = opts.bird_hook(move |node, cfg| {
        let line = match node {
            Node::Lr1 => Line(1),
            Node::Lr2 => Line(2),
            _ => return cfg,
        };
        let via = line.addr(Side::B, false, false).to_string();
        let routes = table::bird_protocol(n)
            .replace(
                "protocol static bench4 { disabled;",
                "protocol static bench4 {",
            )
            .replace("blackhole;", &format!("via {via};"));
        format!("{cfg}{routes}")
    });
    opts.crosslink_hook(|_, cfg| {
        quick_return(
            table::crosslink_accepts(cfg)
                .replace("priority = 20\n", "priority = 20\nmax_prefixes = 1000000\n"),
        )
    })
}

/// gwa's routes of the table, of its protocol (crosslink: each prefix twice, the main route
/// and the fallback route, see `FALLBACK_METRIC` in agent/src/fib/plan.rs).
fn kernel_routes(lab: &Lab, mode: GatewayMode) -> usize {
    let proto = match mode {
        GatewayMode::Crosslink => "210",
        GatewayMode::Bird => "bird",
    };
    lab.exec(Node::Gwa, &["ip", "-4", "route", "show", "proto", proto])
        .map(|o| o.lines().filter(|l| l.starts_with("10.")).count())
        .unwrap_or(0)
}

/// The first "nexthop groups updated" the agent logged after `skip` lines: its netlink time.
fn switch_us(lab: &Lab, skip: usize) -> Option<f64> {
    let log = std::fs::read_to_string(lab.dir().join("gwa.crosslink.log")).ok()?;
    log.lines()
        .skip(skip)
        .filter(|l| l.contains("nexthop groups updated"))
        .find_map(|l| {
            let plain = strip_ansi(l);
            let v = plain.split("took_us=").nth(1)?;
            v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
}

/// The text without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn log_lines(lab: &Lab) -> usize {
    std::fs::read_to_string(lab.dir().join("gwa.crosslink.log"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

struct TableRun {
    outage: Vec<f64>,
    switch_ms: Vec<f64>,
    loaded_s: f64,
}

fn part2(mode: GatewayMode, n: u32, cuts: usize, kind: Cut) -> TableRun {
    let started = Instant::now();
    let lab = Lab::up(table_options(mode, n)).expect("lab up");
    wait_line(&lab, Line(1), Duration::from_secs(120)).expect("lab on line 1");
    lab.wait_for(
        "the table in gwa's kernel",
        Duration::from_secs(600),
        || {
            let per_prefix = if mode == GatewayMode::Crosslink { 2 } else { 1 };
            Ok(kernel_routes(&lab, mode) >= per_prefix * n as usize)
        },
    )
    .expect("table installed");
    let loaded_s = started.elapsed().as_secs_f64();
    let last = nth_prefix(n - 1);
    // The last prefix lives on hb; gwb sends it there (ahead of any route BIRD learned).
    lab.exec(
        Node::Hb,
        &["ip", "addr", "add", &format!("{last}/32"), "dev", "lo"],
    )
    .expect("address on hb");
    let hb = host(Side::B).to_string();
    lab.exec(
        Node::Gwb,
        &[
            "ip",
            "route",
            "replace",
            &format!("{last}/32"),
            "via",
            &hb,
            "metric",
            "1",
        ],
    )
    .expect("route on gwb");
    std::thread::sleep(Duration::from_secs(2));
    let mut run = TableRun {
        outage: Vec::new(),
        switch_ms: Vec::new(),
        loaded_s,
    };
    let towards = |line: Line| {
        lab.wait_for(
            &format!("gwa sends {last} over {line:?}"),
            Duration::from_secs(120),
            || Ok(lab.line_towards(Node::Gwa, IpAddr::V4(last))? == Some(line)),
        )
    };
    for i in 0..cuts {
        let probe = TrafficProbe::start(
            &Side::A.host().ns(),
            &Side::B.host().ns(),
            IpAddr::V4(last),
            RATE,
        )
        .expect("probe to the last prefix");
        std::thread::sleep(Duration::from_millis(500));
        let skip = log_lines(&lab);
        lab.cut(Side::A, Line(1), kind).expect("cut");
        let moved = towards(Line(2));
        std::thread::sleep(Duration::from_millis(500));
        let r = probe.stop().expect("probe");
        if let Err(e) = moved {
            eprintln!("  not moved: {e:#}");
        } else {
            eprintln!("  {mode:?} {n} prefixes #{i}: {r}");
            run.outage.push(r.longest_gap_ms);
            if mode == GatewayMode::Crosslink {
                if let Some(us) = switch_us(&lab, skip) {
                    run.switch_ms.push(us / 1000.0);
                }
            }
        }
        lab.heal(Side::A, Line(1)).expect("heal");
        if let Err(e) = towards(Line(1)) {
            eprintln!("  not back: {e:#}");
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    run
}

fn main() {
    let (cuts, table_cuts): (usize, usize) = table::args(10, 3);
    println!("failover benchmark: {cuts} cuts per kind and interval, {table_cuts} per table size");
    let mut rows = Vec::new();
    // `carrier` anywhere on the command line: part 2 cuts the carrier instead.
    let table_kind = if std::env::args().any(|a| a == "carrier") {
        Cut::Carrier
    } else {
        Cut::Blackhole
    };
    let intervals: Vec<u64> = match std::env::var("FAILOVER_INTERVALS") {
        _ if cuts == 0 => Vec::new(),
        Ok(list) => list
            .split(',')
            .map(|v| {
                v.trim()
                    .parse()
                    .expect("FAILOVER_INTERVALS: milliseconds, e.g. 5,10")
            })
            .collect(),
        Err(_) => vec![10, 100],
    };
    let kinds_env = std::env::var("FAILOVER_KINDS").unwrap_or_else(|_| "a,b,c".into());
    let kinds: Vec<&str> = kinds_env.split(',').map(str::trim).collect();
    for &ms in &intervals {
        let ours = part1(GatewayMode::Crosslink, ms, cuts, &kinds);
        let bird = part1(GatewayMode::Bird, ms, cuts, &kinds);
        for ((label, kind, mut c), (_, _, mut b)) in ours.into_iter().zip(bird) {
            rows.push(format!(
                "| ({label}) {:<8} | {ms:>3} ms × 3 | {:>15} | {:>15} | {:>11} | {:>11} |",
                format!("{kind:?}").to_lowercase(),
                median_max(&mut c.outage),
                median_max(&mut b.outage),
                median_max(&mut c.lost),
                median_max(&mut b.lost),
            ));
        }
    }
    let mut table_rows = Vec::new();
    // `FAILOVER_TABLE_SIZES=10000` picks table sizes (default 100, 10,000 and 100,000).
    let sizes: Vec<u32> = match std::env::var("FAILOVER_TABLE_SIZES") {
        _ if table_cuts == 0 => Vec::new(),
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => vec![100, 10_000, 100_000],
    };
    for &n in &sizes {
        let mut ours = part2(GatewayMode::Crosslink, n, table_cuts, table_kind);
        let mut bird = part2(GatewayMode::Bird, n, table_cuts, table_kind);
        table_rows.push(format!(
            "| {n:>7} | {:>15} | {:>15} | {:>15} | {:>6.0} s / {:>4.0} s |",
            median_max(&mut ours.switch_ms),
            median_max(&mut ours.outage),
            median_max(&mut bird.outage),
            ours.loaded_s,
            bird.loaded_s,
        ));
    }
    println!();
    println!("| cut | BFD | crosslink outage ms (median / max) | BIRD baseline outage ms | crosslink lost on return | BIRD lost on return |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!();
    println!("| prefixes | crosslink switch (netlink) ms | crosslink outage to the last prefix ms | BIRD (route by route) outage ms | lab ready (crosslink / BIRD) |");
    println!("|---|---|---|---|---|");
    for r in table_rows {
        println!("{r}");
    }
}
