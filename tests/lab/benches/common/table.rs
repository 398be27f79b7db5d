//! A full table for the gateways to ingest: lr1 (BIRD) originates N IPv4 /32s from a static
//! protocol `bench4` that starts disabled; `enable bench4` announces it, `disable bench4`
//! withdraws it.

use lab::{GatewayMode, Lab, LabOptions, Node};

/// The bench's two positional arguments (cargo's own `--bench` flags skipped), each with
/// its default when absent or unreadable.
pub fn args<A: std::str::FromStr, B: std::str::FromStr>(a: A, b: B) -> (A, B) {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    (
        args.first().and_then(|s| s.parse().ok()).unwrap_or(a),
        args.get(1).and_then(|s| s.parse().ok()).unwrap_or(b),
    )
}

pub fn bird_protocol(n: u32) -> String {
    let mut s = String::with_capacity(n as usize * 40);
    s.push_str("protocol static bench4 { disabled; ipv4; ");
    for i in 0..n {
        let a = 0x0a00_0000u32 + i;
        s.push_str(&format!(
            "route {}.{}.{}.{}/32 blackhole; ",
            a >> 24,
            (a >> 16) & 255,
            (a >> 8) & 255,
            a & 255
        ));
    }
    s.push_str("}\n");
    s
}

/// lr1's kernel export as the lab writes it, and as these benches want it.
const KERNEL4: &str =
    "protocol kernel kernel4 { ipv4 { export where source ~ [RTS_BGP, RTS_STATIC]; }; }";
/// The table is announced, not installed in lr1's own kernel: a real line router's FIB
/// runs on its own CPUs, while here each insert into a 100,000-route trie may resize it,
/// milliseconds of non-preemptible kernel work on a CPU the gateways' BFD threads share
/// (seen with tests/lab/flight-recorder.sh: BIRD in `fib_table_insert` -> `resize` for
/// 8.6 ms while a woken SCHED_FIFO BFD thread waited, every session of both gateways Down).
const KERNEL4_WITHOUT_TABLE: &str = "protocol kernel kernel4 { ipv4 { export where source ~ [RTS_BGP, RTS_STATIC] && proto != \"bench4\"; }; }";

/// A crosslink lab whose lr1 holds an N-prefix table (disabled) that the gateways accept.
pub fn crosslink_lab_options(n: u32) -> LabOptions {
    let routes = bird_protocol(n);
    LabOptions::new(GatewayMode::Crosslink)
        .bird_hook(move |node, cfg| {
            if node == Node::Lr1 {
                assert!(cfg.contains(KERNEL4), "lr1's kernel export");
                format!("{}{routes}", cfg.replace(KERNEL4, KERNEL4_WITHOUT_TABLE))
            } else {
                cfg
            }
        })
        .crosslink_hook(|_, cfg| crosslink_accepts(cfg))
}

/// The crosslink config change that lets a gateway accept the table: 10/8 joins the far
/// site's aggregates and the prefix limit is lifted.
pub fn crosslink_accepts(cfg: String) -> String {
    cfg.replace(
        "prefixes = [\"198.18.2.0/24\", \"2001:db8:b::/64\"]",
        "prefixes = [\"198.18.2.0/24\", \"2001:db8:b::/64\"]\naggregates = [\"198.18.2.0/24\", \"2001:db8:b::/64\", \"10.0.0.0/8 le 32\"]",
    )
    .replace("priority = 10\n", "priority = 10\nmax_prefixes = 1000000\n")
}

/// Prefixes crosslink on gwa holds from lr1, per its status.
pub fn crosslink_received(lab: &Lab) -> u64 {
    let Ok(out) = lab.crosslink(Node::Gwa, &["status", "--json"]) else {
        return 0;
    };
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v["sites"][0]["paths"][0]["bgp"][0]["prefixes_received"]
        .as_u64()
        .unwrap_or(0)
}
