//! Sixteen multi-hop BFD sessions at 10 ms x 3 between gwa and gwb over the internet
//! uplinks, one crosslink BFD driver per side, each on its own thread inside its gateway's
//! namespace. Shared by the benchmarks that measure what such sessions cost and whether
//! they hold under load.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use lab::{netns, Lab, Node};
use probes::driver::{Bfd, DriverOptions, SessionSpec, SessionStatus};
use probes::wire::State;

pub const SESSIONS: u8 = 16;
pub const NET_A: [u8; 3] = [198, 18, 101];
pub const NET_B: [u8; 3] = [198, 18, 201];
/// Ports of their own, out of the way of any BFD the gateways run (3784/4784).
const PORT_A: u16 = 14784;
const PORT_B: u16 = 24784;

pub fn addr(net: [u8; 3], i: u8) -> Ipv4Addr {
    Ipv4Addr::new(net[0], net[1], net[2], 11 + i)
}

/// One address per session on each gateway's first uplink.
pub fn add_addresses(lab: &Lab) {
    for i in 0..SESSIONS {
        for (node, net) in [(Node::Gwa, NET_A), (Node::Gwb, NET_B)] {
            let a = format!("{}/24", addr(net, i));
            lab.exec(node, &["ip", "addr", "add", &a, "dev", "up1"])
                .expect("address");
        }
    }
}

/// CPU time (user + system) of every thread named `bfd` in this process, by thread id.
pub fn bfd_threads_cpu() -> Vec<(u32, Duration)> {
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
        let tid = t.file_name().to_string_lossy().parse().unwrap_or(0);
        out.push((tid, stat_cpu(&t.path().join("stat"))));
    }
    out
}

/// Prints each BFD thread's CPU between two `bfd_threads_cpu` samples `wall` apart.
pub fn print_cpu(
    label: &str,
    before: &[(u32, Duration)],
    after: &[(u32, Duration)],
    wall: Duration,
) {
    for (tid, cpu) in after {
        let was = before
            .iter()
            .find(|(t, _)| t == tid)
            .map_or(Duration::ZERO, |(_, c)| *c);
        println!(
            "  {label} {tid}: {:.2}% of one core",
            (*cpu - was).as_secs_f64() / wall.as_secs_f64() * 100.0
        );
    }
}

/// utime + stime from a `/proc/.../stat` file.
pub fn stat_cpu(path: &std::path::Path) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name in parentheses; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Duration::from_secs_f64(ticks / 100.0) // USER_HZ on Linux
}

/// What one side saw: its sessions at the end, and Up -> Down transitions after all were Up.
pub struct Outcome {
    pub status: Vec<SessionStatus>,
    pub false_downs: usize,
}

/// A running side. `ready` gets a message once all its sessions are Up; the side then
/// runs until `stop` gets one.
pub struct Running {
    thread: JoinHandle<Outcome>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Running {
    pub fn finish(self) -> Outcome {
        let _ = self.stop.send(());
        self.thread.join().expect("BFD side")
    }
}

pub fn start(node: Node, ready: mpsc::Sender<()>) -> Running {
    let (local_net, peer_net, port, peer_port) = match node {
        Node::Gwa => (NET_A, NET_B, PORT_A, PORT_B),
        _ => (NET_B, NET_A, PORT_B, PORT_A),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let thread = netns::spawn_in(&node.ns(), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel();
            let opts = DriverOptions {
                single_hop_port: port,
                multi_hop_port: port + 1,
                bind_v6: None,
                ..DriverOptions::default()
            };
            let bfd = Bfd::start(opts, etx).expect("BFD driver");
            for i in 0..SESSIONS {
                let mut spec = SessionSpec::multi_hop(
                    &format!("s{i}"),
                    IpAddr::V4(addr(peer_net, i)),
                    Some(IpAddr::V4(addr(local_net, i))),
                    Duration::from_millis(10),
                    3,
                );
                spec.peer_port = peer_port + 1;
                bfd.add(spec).await.expect("session");
            }
            let mut up = 0;
            while up < SESSIONS {
                match tokio::time::timeout(Duration::from_secs(30), erx.recv()).await {
                    Ok(Some(e)) if e.to == State::Up => up += 1,
                    Ok(Some(_)) => {}
                    _ => panic!("sessions did not come up"),
                }
            }
            let _ = ready.send(());
            let mut false_downs = 0;
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    e = erx.recv() => match e {
                        Some(e) if e.from == State::Up => false_downs += 1,
                        Some(_) => {}
                        None => break,
                    },
                }
            }
            Outcome {
                status: bfd.status(Duration::from_secs(10)).await,
                false_downs,
            }
        })
    });
    Running { thread, stop }
}

/// One line per side: sessions Up, false Downs, p99 and largest transmit gaps.
pub fn report(name: &str, o: &Outcome) {
    let mut p99: Vec<f64> = o
        .status
        .iter()
        .filter_map(|s| s.tx_gap_p99)
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    p99.sort_by(f64::total_cmp);
    let max = o
        .status
        .iter()
        .filter_map(|s| s.tx_gap_max)
        .max()
        .unwrap_or_default();
    let up = o.status.iter().filter(|s| s.state == State::Up).count();
    println!(
        "  {name}: {up}/{SESSIONS} Up at the end, {} false Down events, p99 transmit gap median {:.2} ms, worst {:.2} ms; largest gap {:.2} ms",
        o.false_downs,
        p99.get(p99.len() / 2).copied().unwrap_or(f64::NAN),
        p99.last().copied().unwrap_or(f64::NAN),
        max.as_secs_f64() * 1000.0
    );
}
