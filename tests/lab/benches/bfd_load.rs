//! Benchmark: BFD under load. The crosslink agent for gwa runs inside this process, beside
//! 16 multi-hop BFD sessions at 10 ms x 3 to gwb (as the agent's own sessions run: a
//! dedicated thread in the agent's process), while lr1 announces and withdraws a table of N
//! IPv4 /32s (default 100,000) to it R times (default 3). Prints the time of each ingest and
//! withdrawal, false Down events and the transmit gaps (p99, largest) on both sides.
//!
//! `cargo bench -p crosslink-lab --bench bfd_load [-- PREFIXES [ROUNDS]]` (root).
//! Prints figures; asserts nothing about speed.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use lab::{netns, Lab, Node};

#[path = "common/sixteen.rs"]
mod sixteen;
#[path = "common/table.rs"]
mod table;

fn main() {
    let (n, rounds) = table::args(100_000u32, 3usize);
    let opts = table::crosslink_lab_options(n);
    let mut lab = Lab::up(opts).expect("lab up");

    // gwa's agent moves into this process: same code, same config, same namespace.
    lab.process("crosslink-gwa")
        .expect("gwa agent")
        .stop(Duration::from_secs(5));
    let path = lab.crosslink_config(Node::Gwa);
    let cfg = crosslink::config::load(&path).expect("gwa config");
    let (stop_agent, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = netns::spawn_in(&Node::Gwa.ns(), move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(crosslink::run(cfg, &path, async {
            let _ = stopped.await;
        }))
    });
    lab.wait_for("gwa's agent hears lr1", Duration::from_secs(60), || {
        Ok(table::crosslink_received(&lab) >= 1)
    })
    .expect("BGP with lr1");

    sixteen::add_addresses(&lab);
    let (ready_tx, ready) = mpsc::channel();
    let a = sixteen::start(Node::Gwa, ready_tx.clone());
    let b = sixteen::start(Node::Gwb, ready_tx);
    ready.recv().expect("gwa up");
    ready.recv().expect("gwb up");

    println!(
        "{} multi-hop BFD sessions at 10 ms x 3 while gwa's agent ingests and withdraws {n} prefixes from lr1, {rounds} times",
        sixteen::SESSIONS
    );
    let cpu_before = sixteen::bfd_threads_cpu();
    let t0 = Instant::now();
    // Gwb's own prefix also arrives over line 1: the full table is N + 1.
    let full = u64::from(n) + 1;
    for round in 1..=rounds {
        let start = Instant::now();
        lab.birdc(Node::Lr1, "enable bench4").expect("enable");
        lab.wait_for("the full table", Duration::from_secs(300), || {
            Ok(table::crosslink_received(&lab) >= full)
        })
        .expect("full table");
        let ingest = start.elapsed();
        let start = Instant::now();
        lab.birdc(Node::Lr1, "disable bench4").expect("disable");
        lab.wait_for("the table withdrawn", Duration::from_secs(300), || {
            Ok(table::crosslink_received(&lab) <= 1)
        })
        .expect("withdrawn");
        println!(
            "  round {round}: ingest {:.3} s, withdrawal {:.3} s",
            ingest.as_secs_f64(),
            start.elapsed().as_secs_f64()
        );
    }
    let loaded = t0.elapsed();
    let cpu_after = sixteen::bfd_threads_cpu();
    let (oa, ob) = (a.finish(), b.finish());
    println!("  under load for {:.1} s", loaded.as_secs_f64());
    // The agent's own BFD thread (its line sessions) is among them.
    sixteen::print_cpu("BFD thread", &cpu_before, &cpu_after, loaded);
    sixteen::report("gwa (beside the agent)", &oa);
    sixteen::report("gwb", &ob);
    let _ = stop_agent.send(());
    let _ = agent.join();
    drop(lab);
}
