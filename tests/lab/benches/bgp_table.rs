//! Benchmark: a full table over BGP, until the gateway forwards to every prefix. lr1
//! originates N IPv4 /32s (default 100,000) to gwa over an established session. The clock
//! starts when lr1's static protocol holding the table is enabled (what a router sends right
//! after the session comes up, without the connection setup delays of either daemon) and is
//! read three times:
//!
//! - the gateway holds the whole table in its RIB (crosslink: `prefixes_received` in its
//!   status; BIRD: the routes imported from lr1), N + 1 with the far lan;
//! - every one of the N prefixes is a route in gwa's kernel: crosslink's main route
//!   (protocol 210, metric 20, through the line's nexthop group), BIRD's only route
//!   (`proto bird`, its kernel protocol exporting the BGP routes as in the lab's baseline);
//! - crosslink only: every prefix has its fallback route (metric 21) as well.
//!
//! Kernel routes are counted from a netlink route dump made inside gwa's namespace, not with
//! `ip route show`: printing 200,000 routes costs a third of a CPU second, on a machine
//! whose two cores the gateway and lr1 need. A dump is skipped while the kernel's FIB
//! (`/proc/net/fib_triestat`) holds too few routes for the table to be complete. The kernel
//! is polled at a pace that keeps counting below a twentieth of a core (50 to 250 ms apart,
//! see `POLL_COST`), the RIB every 50 ms on the daemon's control socket, so a figure is
//! late by up to one such pause plus the poll. The table goes to gwa only (lr1 keeps it
//! from gwb and from its own kernel), so no other daemon works on it meanwhile.
//!
//! Runs ROUNDS times (default 3) with crosslink on the gateways and as often with BIRD (the
//! baseline) in the same invocation, and prints each round, then the medians side by side
//! with the peak RSS (VmHWM) of gwa's daemon.
//!
//! `cargo bench -p crosslink-lab --bench bgp_table [-- PREFIXES [ROUNDS]]` (root; build the
//! release agent first). Prints figures; asserts nothing about speed.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crosslink::control::proto::Request;
use lab::{netns, GatewayMode, Lab, LabOptions, Node};

#[path = "common/table.rs"]
#[allow(dead_code)] // the shared lab options and `crosslink_received` are for the BFD benches
mod table;

/// Between two polls of the kernel, the pause is this many times what the last poll took,
/// within `POLL_MIN..=POLL_MAX`: counting takes at most a twenty-first of a core whatever
/// the table size (a FIB dump of 200,000 routes takes 85 ms), and small tables are still
/// timed finer than a poll every 250 ms would. The RIB, a request to the daemon, is polled
/// every `POLL_MIN`.
const POLL_COST: u32 = 20;
const POLL_MIN: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_millis(250);
/// For each of the RIB and the kernel.
const TIMEOUT: Duration = Duration::from_secs(300);
/// Polls that fit in `TIMEOUT`: the bound of every polling loop.
const MAX_POLLS: u32 = (TIMEOUT.as_millis() / POLL_MIN.as_millis()) as u32 + 1;
/// A dump at least this often, whatever the FIB count says: it is only a hint, wrong when
/// a route the lab had before the table went away meanwhile.
const DUMP_ANYWAY: Duration = Duration::from_secs(2);

/// The pause after a poll that took `took`.
fn pause(took: Duration) -> Duration {
    (took * POLL_COST).clamp(POLL_MIN, POLL_MAX)
}

/// Route protocol numbers, as `ip route` shows them (`/etc/iproute2/rt_protos`).
const PROTO_CROSSLINK: u8 = 210;
const PROTO_BIRD: u8 = 12;
/// crosslink's main and fallback routes (agent/src/fib/plan.rs).
const METRIC_MAIN: u32 = 20;
const METRIC_FALLBACK: u32 = 21;

/// The table's first prefix, 10.0.0.0/32 (see `table::bird_protocol`).
const FIRST: u32 = 0x0a00_0000;

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

/// Prefixes gwa holds from lr1. Asked on the daemons' control sockets from this process,
/// not with a `birdc` or `crosslink status` process each time: polling costs the machine
/// next to nothing (the daemon answers a request, as it would to the CLI).
fn received(lab: &Lab, mode: GatewayMode) -> u64 {
    match mode {
        GatewayMode::Crosslink => {
            let socket = lab.dir().join("gwa.crosslink.sock");
            let Ok(v) = crosslink::control::client::request(&socket, &Request::Status) else {
                return 0;
            };
            v["sites"][0]["paths"][0]["bgp"][0]["prefixes_received"]
                .as_u64()
                .unwrap_or(0)
        }
        GatewayMode::Bird => {
            // "Routes: N imported, ..." of the session with lr1.
            let out = bird_request(&lab.bird_socket(Node::Gwa), "show protocols all line1_v4")
                .unwrap_or_default();
            out.lines()
                .find_map(|l| l.trim().strip_prefix("Routes:"))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        }
    }
}

/// One command on BIRD's control socket: the reply's lines, up to the one that ends it (a
/// four-digit code and a space, as `birdc` reads it).
fn bird_request(socket: &Path, cmd: &str) -> Result<String> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    // The greeting, "0001 BIRD 2.x ready."
    reader.read_line(&mut line)?;
    (&stream).write_all(format!("{cmd}\n").as_bytes())?;
    let mut out = String::new();
    for _ in 0..100_000 {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("BIRD closed its control socket");
        }
        out.push_str(&line);
        if ends_bird_reply(&line) {
            return Ok(out);
        }
    }
    bail!("BIRD's reply to `{cmd}` did not end")
}

/// A reply's last line starts with its code and a space; the others with a code and a
/// dash, or with a space.
fn ends_bird_reply(line: &str) -> bool {
    let b = line.trim_end().as_bytes();
    b.len() >= 4 && b[..4].iter().all(u8::is_ascii_digit) && b.get(4).is_none_or(|&c| c == b' ')
}

/// Routes in the kernel's main FIB trie ("Prefixes" counts every route, each metric of a
/// prefix too), from `fib_triestat` text.
fn fib_routes(triestat: &str) -> Option<u64> {
    triestat
        .lines()
        .skip_while(|l| !l.starts_with("Main:"))
        .find_map(|l| l.trim().strip_prefix("Prefixes:"))
        .and_then(|n| n.trim().parse().ok())
}

/// One netlink dump of the IPv4 routes of the calling thread's namespace: how many of the
/// table's N prefixes have a route of protocol `proto` with metric `METRIC_MAIN` (any metric
/// with `any_metric`) and how many with `METRIC_FALLBACK`. Prefixes are counted once each,
/// since a dump that races with route changes may repeat some.
fn dump_count(proto: u8, n: u32, any_metric: bool) -> Result<(u32, u32)> {
    use nix::sys::socket::{
        bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr,
        SockFlag, SockProtocol, SockType,
    };
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const RTM_NEWROUTE: u16 = 24;
    const RTM_GETROUTE: u16 = 26;
    const NLM_F_REQUEST_DUMP: u16 = 0x301;
    const RTA_DST: u16 = 1;
    const RTA_PRIORITY: u16 = 6;
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    // A dump that stops answering ends the poll, not the bench.
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(5, 0),
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    // nlmsghdr, then an rtmsg of family AF_INET and nothing else.
    let mut req = Vec::with_capacity(28);
    req.extend_from_slice(&28u32.to_ne_bytes());
    req.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    req.extend_from_slice(&NLM_F_REQUEST_DUMP.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    let af_inet = AddressFamily::Inet as i32 as u8;
    req.extend_from_slice(&[af_inet, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    send(fd.as_raw_fd(), &req, MsgFlags::empty())?;
    let mut main = vec![false; n as usize];
    let mut fallback = vec![false; n as usize];
    let mut buf = vec![0u8; 1 << 16];
    let u16_at = |b: &[u8], i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
    let u32_at = |b: &[u8], i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    // Each read carries at least one route; the whole FIB of a lab is far below this.
    'dump: for _ in 0..4_000_000 {
        let len = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).context("route dump")?;
        let mut off = 0;
        while off + 16 <= len {
            let msg_len = (u32_at(&buf, off) as usize).min(len - off);
            if msg_len < 16 {
                bail!("route dump: bad message length");
            }
            match u16_at(&buf, off + 4) {
                NLMSG_DONE => break 'dump,
                NLMSG_ERROR => bail!("route dump: netlink error"),
                RTM_NEWROUTE if msg_len >= 16 + 12 => {
                    let rt = &buf[off + 16..off + msg_len];
                    // rtm_dst_len, rtm_protocol
                    if rt[1] == 32 && rt[5] == proto {
                        let (mut dst, mut metric) = (None, 0);
                        let mut a = 12;
                        while a + 4 <= rt.len() {
                            let attr_len = u16_at(rt, a) as usize;
                            if attr_len < 4 || a + attr_len > rt.len() {
                                break;
                            }
                            match u16_at(rt, a + 2) {
                                RTA_DST if attr_len == 8 => {
                                    dst = Some(u32::from_be_bytes([
                                        rt[a + 4],
                                        rt[a + 5],
                                        rt[a + 6],
                                        rt[a + 7],
                                    ]));
                                }
                                RTA_PRIORITY if attr_len == 8 => metric = u32_at(rt, a + 4),
                                _ => {}
                            }
                            a += (attr_len + 3) & !3;
                        }
                        if let Some(i) = dst.and_then(|d| d.checked_sub(FIRST)).filter(|&i| i < n) {
                            if any_metric || metric == METRIC_MAIN {
                                main[i as usize] = true;
                            } else if metric == METRIC_FALLBACK {
                                fallback[i as usize] = true;
                            }
                        }
                    }
                }
                _ => {}
            }
            off += (msg_len + 3) & !3;
        }
    }
    let count = |v: &[bool]| v.iter().filter(|&&b| b).count() as u32;
    Ok((count(&main), count(&fallback)))
}

/// When the kernel held every prefix's main route and every fallback route, in seconds
/// from `start`, and the last counts seen.
struct Kernel {
    main: Option<f64>,
    fallback: Option<f64>,
    counts: (u32, u32),
}

/// Polls the kernel of the calling thread's namespace (gwa's) until every prefix has its
/// routes or `TIMEOUT` passes. `fib_base`: the FIB's route count before the table came.
fn watch_kernel(mode: GatewayMode, n: u32, start: Instant, fib_base: Option<u64>) -> Kernel {
    let (proto, with_fallback) = match mode {
        GatewayMode::Crosslink => (PROTO_CROSSLINK, true),
        GatewayMode::Bird => (PROTO_BIRD, false),
    };
    let mut k = Kernel {
        main: None,
        fallback: None,
        counts: (0, 0),
    };
    let mut last_dump = start;
    let mut wait = POLL_MIN;
    for _ in 0..MAX_POLLS {
        if start.elapsed() >= TIMEOUT {
            break;
        }
        std::thread::sleep(wait);
        let began = Instant::now();
        // Routes the table needs for the next figure; the fallback routes come after the
        // main ones, or with them.
        let need = if k.main.is_none() { n } else { 2 * n };
        let fib = std::fs::read_to_string("/proc/thread-self/net/fib_triestat")
            .ok()
            .and_then(|s| fib_routes(&s));
        let too_few =
            matches!((fib_base, fib), (Some(base), Some(fib)) if fib < base + u64::from(need));
        if too_few && last_dump.elapsed() < DUMP_ANYWAY {
            wait = pause(began.elapsed());
            continue;
        }
        last_dump = Instant::now();
        let counted = dump_count(proto, n, !with_fallback);
        wait = pause(began.elapsed());
        let (main, fallback) = match counted {
            Ok(c) => c,
            Err(e) => {
                eprintln!("  kernel poll: {e:#}");
                continue;
            }
        };
        let at = start.elapsed().as_secs_f64();
        k.counts = (main, fallback);
        if k.main.is_none() && main >= n {
            k.main = Some(at);
        }
        if with_fallback && k.fallback.is_none() && fallback >= n {
            k.fallback = Some(at);
        }
        if k.main.is_some() && (k.fallback.is_some() || !with_fallback) {
            break;
        }
    }
    k
}

/// lr1's config with the table (disabled) that only gwa hears of: gwb would spend the
/// lab's two cores on it too, and lr1 itself on writing it into its own kernel.
fn lr1_with_table(cfg: String, routes: &str) -> String {
    let kernel =
        "protocol kernel kernel4 { ipv4 { export where source ~ [RTS_BGP, RTS_STATIC]; }; }";
    assert!(cfg.contains(kernel), "lr1's kernel4 changed:\n{cfg}");
    let mut cfg = cfg.replace(
        kernel,
        "protocol kernel kernel4 { ipv4 { export where source ~ [RTS_BGP, RTS_STATIC] && proto != \"bench4\"; }; }",
    );
    let at = cfg
        .find("protocol bgp gwb_v4 {")
        .and_then(|at| Some(at + cfg[at..].find("export all;")?))
        .unwrap_or_else(|| panic!("lr1's session with gwb changed:\n{cfg}"));
    cfg.replace_range(
        at..at + "export all;".len(),
        "export where proto != \"bench4\";",
    );
    format!("{cfg}{routes}")
}

/// Seconds from `enable` to each figure.
struct Run {
    rib: f64,
    main: f64,
    /// crosslink only.
    fallback: Option<f64>,
    rss_mib: f64,
}

fn run(mode: GatewayMode, n: u32, show_routes: bool) -> Run {
    let routes = table::bird_protocol(n);
    let opts = LabOptions::new(mode)
        .bird_hook(move |node, cfg| {
            // No BFD here: BIRD would hold its BGP session until BFD is up (a second at
            // BFD's slow start rate), which measures BFD, not the table transfer.
            let cfg = cfg.replace("  bfd on;\n", "");
            match node {
                // The table starts disabled: enabling it starts the clock.
                Node::Lr1 => lr1_with_table(cfg, &routes),
                _ => cfg,
            }
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
    // Start-up work (tunnel handshakes, the far lan's routes) out of the measured window.
    std::thread::sleep(Duration::from_secs(2));
    let fib_base = lab
        .exec(Node::Gwa, &["cat", "/proc/net/fib_triestat"])
        .ok()
        .and_then(|s| fib_routes(&s));
    let start = Instant::now();
    lab.birdc(Node::Lr1, "enable bench4").expect("enable");
    let kernel = netns::spawn_in(&Node::Gwa.ns(), move || {
        watch_kernel(mode, n, start, fib_base)
    });
    // Both gateways also learn gwb's own prefix over line 1: the table is N + 1.
    let want = u64::from(n) + 1;
    let mut rib = None;
    let mut got = 0;
    for _ in 0..MAX_POLLS {
        got = received(&lab, mode);
        if got >= want {
            rib = Some(start.elapsed().as_secs_f64());
            break;
        }
        if start.elapsed() >= TIMEOUT {
            break;
        }
        std::thread::sleep(POLL_MIN);
    }
    let kernel = kernel.join().expect("kernel poller");
    let rib = rib.unwrap_or_else(|| panic!("{mode:?}: {got} of {want} prefixes in the RIB"));
    let (main, fallback) = kernel.counts;
    let missing =
        || panic!("{mode:?}: {main} main and {fallback} fallback kernel routes of {n} prefixes");
    let main = kernel.main.unwrap_or_else(missing);
    if mode == GatewayMode::Crosslink && kernel.fallback.is_none() {
        missing();
    }
    if show_routes {
        let last = std::net::Ipv4Addr::from(FIRST + n - 1);
        let shown = lab
            .exec(
                Node::Gwa,
                &["ip", "-4", "route", "show", "exact", &format!("{last}/32")],
            )
            .unwrap_or_else(|e| format!("{e:#}"));
        println!("  gwa's kernel routes to {last}:");
        for l in shown.lines() {
            println!("    {l}");
        }
    }
    let name = match mode {
        GatewayMode::Crosslink => "crosslink-gwa",
        GatewayMode::Bird => "bird-gwa",
    };
    let pid = lab.process(name).expect("gateway process").pid();
    Run {
        rib,
        main,
        fallback: kernel.fallback,
        rss_mib: peak_rss_mib(pid),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let (n, rounds) = table::args(100_000u32, 3usize);
    assert!(n >= 1 && rounds >= 1, "PREFIXES and ROUNDS start at 1");
    println!(
        "full table over BGP: {n} IPv4 /32s from lr1 (BIRD 2) to gwa, {rounds} rounds each; \
         seconds from `enable` on lr1 to the first poll that saw it done (kernel polls {}-{} ms apart)",
        POLL_MIN.as_millis(),
        POLL_MAX.as_millis()
    );
    let mut rows = Vec::new();
    for mode in [GatewayMode::Crosslink, GatewayMode::Bird] {
        let (mut rib, mut main, mut fallback, mut rss) = (vec![], vec![], vec![], vec![]);
        for round in 1..=rounds {
            let r = run(mode, n, round == 1);
            let fallback_s = r.fallback.map(|s| format!(", incl. fallback {s:.3} s"));
            println!(
                "  {mode:?} round {round}: RIB {:.3} s, kernel {:.3} s{}, peak RSS {:.1} MiB",
                r.rib,
                r.main,
                fallback_s.unwrap_or_default(),
                r.rss_mib
            );
            rib.push(r.rib);
            main.push(r.main);
            if let Some(s) = r.fallback {
                fallback.push(s);
            }
            rss.push(r.rss_mib);
        }
        let fallback = if fallback.is_empty() {
            "–".to_owned()
        } else {
            format!("{:.3} s", median(&mut fallback))
        };
        rows.push((
            mode,
            median(&mut rib),
            median(&mut main),
            fallback,
            median(&mut rss),
        ));
    }
    println!("\nmedians of {rounds} rounds, {n} prefixes:\n");
    println!("| gateway | enable -> full table in RIB | -> every prefix a kernel route (main) | -> incl. fallback routes | peak RSS |");
    println!("| --- | --- | --- | --- | --- |");
    for (mode, rib, main, fallback, rss) in rows {
        println!("| {mode:?} | {rib:.3} s | {main:.3} s | {fallback} | {rss:.1} MiB |");
    }
}
