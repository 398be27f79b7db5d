//! Soak: a crosslink tunnel against wireguard-go for minutes (default 5), ping every
//! 50 ms both ways, long enough for WireGuard to rekey (every 2 minutes while traffic
//! flows) and to retire sessions (after 3): prints packets sent and lost each way and the
//! handshakes each end saw. Against another implementation, rekeying is where a protocol
//! written anew would fail first, and no test runs that long.
//!
//! `cargo bench -p crosslink-lab --bench wg_soak [-- MINUTES]` (root).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lab::{GatewayMode, Lab, LabOptions, Node};

#[path = "common/wg_pair.rs"]
#[allow(dead_code)] // the soak reads none of the pair's addresses
mod wg_pair;

fn latest_handshake(lab: &Lab, node: Node, iface: &str) -> Option<u64> {
    let out = lab
        .exec(node, &["wg", "show", iface, "latest-handshakes"])
        .ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

/// `ping`'s "N packets transmitted, M received" as (N, M).
fn ping_counts(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.contains("transmitted"))
        .unwrap_or("");
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
    )
}

fn main() {
    let minutes: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let mut lab = Lab::up(LabOptions::new(GatewayMode::Bird)).expect("lab up");
    let pair = wg_pair::start(&mut lab, None);
    lab.wait_for("the first handshake", Duration::from_secs(15), || {
        Ok(lab
            .exec(Node::Gwa, &["ping", "-c", "1", "-W", "1", "10.77.0.2"])
            .is_ok())
    })
    .unwrap();
    let count = (minutes * 60 * 20).to_string();
    let pings: Vec<_> = [(Node::Gwa, "10.77.0.2"), (Node::Gwb, "10.77.0.1")]
        .into_iter()
        .map(|(node, to)| {
            let ns = node.ns();
            let count = count.clone();
            std::thread::spawn(move || {
                let out = std::process::Command::new("ip")
                    .args(["netns", "exec", &ns, "ping", "-q", "-i", "0.05", "-W", "1"])
                    .args(["-c", &count, to])
                    .output()
                    .expect("ping");
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
        })
        .collect();
    let started = Instant::now();
    let mut seen: [BTreeSet<u64>; 2] = Default::default();
    while started.elapsed() < Duration::from_secs(minutes * 60 + 5) {
        for (i, (node, iface)) in [(Node::Gwa, "xla-t1"), (Node::Gwb, "xlb-t1")]
            .into_iter()
            .enumerate()
        {
            if let Some(t) = latest_handshake(&lab, node, iface) {
                seen[i].insert(t);
            }
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    println!("crosslink tunnel against wireguard-go, {minutes} min, ping every 50 ms both ways");
    for (who, p) in ["crosslink -> wireguard-go", "wireguard-go -> crosslink"]
        .iter()
        .zip(pings)
    {
        let (sent, got) = ping_counts(&p.join().unwrap());
        println!(
            "  {who:28} sent {sent:6}  lost {}",
            sent.saturating_sub(got)
        );
    }
    println!(
        "  handshakes seen: crosslink {}, wireguard-go {}",
        seen[0].len(),
        seen[1].len()
    );
    drop(pair);
    drop(lab);
}
