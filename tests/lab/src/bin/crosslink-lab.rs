//! `crosslink-lab`: run the failover demo (`lab::demo`), or keep a lab up for exploring, or
//! clean up a lab left by a killed run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use lab::demo::{self, DemoOptions, Gateways};
use lab::topology::ALL_NODES;
use lab::{Cut, GatewayMode, Lab, LabOptions, Line, LineRouter, Node, Side};

#[derive(Parser)]
#[command(about = "The crosslink network-namespace lab")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// crosslink on the gateways, then the BIRD baseline, side by side.
    Both,
    /// BIRD 2 on the gateways: the baseline an engineer would build instead.
    Bird,
    /// crosslink on the gateways.
    Crosslink,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Router {
    /// BIRD 2.
    Bird,
    /// FRR: zebra, bgpd and bfdd.
    Frr,
}

#[derive(Clone, Copy, ValueEnum)]
enum CutKind {
    Carrier,
    Blackhole,
    Loss,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring the lab up, send traffic, cut line 1, then both lines, heal them, drain a line;
    /// then the same cut on the BIRD baseline; print the figures and draw a timeline.
    Demo {
        #[arg(long, value_enum, default_value_t = Mode::Both)]
        mode: Mode,
        #[arg(long, value_enum, default_value_t = CutKind::Blackhole)]
        cut: CutKind,
        /// Percentage dropped with --cut loss.
        #[arg(long, default_value_t = 10)]
        loss: u8,
        /// BFD transmit interval in milliseconds (detection = interval x multiplier).
        #[arg(long, default_value_t = 10)]
        bfd_ms: u64,
        #[arg(long, default_value_t = 3)]
        bfd_multiplier: u8,
        /// crosslink's hold-down before a healed line carries traffic again, in seconds.
        #[arg(long, default_value_t = 3)]
        hold_down: u64,
        /// Where to write the timeline picture (SVG; its data goes beside it as .json).
        #[arg(long, default_value = "target/crosslink-demo/timeline.svg")]
        plot: PathBuf,
    },
    /// Bring the lab up and keep it until Ctrl-C (explore with `ip netns exec xl-gwa ...`).
    Up {
        #[arg(long, value_enum, default_value_t = Mode::Crosslink)]
        mode: Mode,
        /// What the line routers run.
        #[arg(long, value_enum, default_value_t = Router::Bird)]
        line_router: Router,
    },
    /// Remove a lab left behind by a killed run.
    Clean,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Demo {
            mode,
            cut,
            loss,
            bfd_ms,
            bfd_multiplier,
            hold_down,
            plot,
        } => {
            let mut opts = DemoOptions {
                gateways: match mode {
                    Mode::Both => Gateways::Both,
                    Mode::Bird => Gateways::Bird,
                    Mode::Crosslink => Gateways::Crosslink,
                },
                cut: match cut {
                    CutKind::Carrier => Cut::Carrier,
                    CutKind::Blackhole => Cut::Blackhole,
                    CutKind::Loss => Cut::Loss(loss),
                },
                plot,
                ..DemoOptions::default()
            };
            opts.bfd.interval = Duration::from_millis(bfd_ms);
            opts.bfd.multiplier = bfd_multiplier;
            opts.hold_down = Duration::from_secs(hold_down);
            let report = demo::run(&opts, &mut std::io::stdout())?;
            if let Some(c) = &report.crosslink {
                let lost = c.ret.lost[0] + c.ret.lost[1];
                if lost > 0 {
                    bail!("crosslink lost {lost} packets on the return to line 1");
                }
            }
            Ok(())
        }
        Cmd::Up { mode, line_router } => {
            let mut opts = LabOptions::new(if mode == Mode::Bird {
                GatewayMode::Bird
            } else {
                GatewayMode::Crosslink
            });
            if line_router == Router::Frr {
                opts.line_router = LineRouter::Frr;
            }
            up(opts)
        }
        Cmd::Clean => {
            // Taking the lab lock removes stale namespaces; the lab built then is dropped.
            drop(Lab::up(LabOptions::new(GatewayMode::Bird))?);
            println!("no lab left on this machine");
            Ok(())
        }
    }
}

fn up(opts: LabOptions) -> Result<()> {
    let mode = opts.mode;
    let lab = Lab::up(opts)?;
    lab.wait_bird_established(Duration::from_secs(60))?;
    lab.wait_for("both gateways on line 1", Duration::from_secs(60), || {
        lab.both_on(Line(1))
    })?;
    println!(
        "lab is up; its configs, sockets and logs are in {}",
        lab.dir().display()
    );
    println!("namespaces: {}", ALL_NODES.map(|n| n.ns()).join(" "));
    println!("explore it (as root, in another terminal):");
    for gw in [Node::Gwa, Node::Gwb] {
        match mode {
            GatewayMode::Crosslink => println!(
                "  ip netns exec {} {} --config {} status",
                gw.ns(),
                lab.crosslink_bin()?.display(),
                lab.crosslink_config(gw).display()
            ),
            GatewayMode::Bird => println!(
                "  ip netns exec {} birdc -s {} show protocols",
                gw.ns(),
                lab.bird_socket(gw).display()
            ),
        }
    }
    for lr in [Node::Lr1, Node::Lr2] {
        match lab.line_router() {
            LineRouter::Bird => println!(
                "  ip netns exec {} birdc -s {} show route",
                lr.ns(),
                lab.bird_socket(lr).display()
            ),
            LineRouter::Frr => println!(
                "  ip netns exec {} vtysh -N {} -c 'show bgp summary' -c 'show bfd peers'",
                lr.ns(),
                lr.name()
            ),
        }
    }
    println!(
        "  ip netns exec xl-gwa ip route get {}",
        Side::B.host_addr(false)
    );
    println!("  ip netns exec xl-ha ping {}", Side::B.host_addr(false));
    println!("Press Ctrl-C to tear it down.");
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc_channel(tx)?;
    let _ = rx.recv();
    Ok(())
}

/// Blocks SIGINT/SIGTERM and waits for them on a thread, so the lab's Drop runs on Ctrl-C.
fn ctrlc_channel(tx: std::sync::mpsc::Sender<()>) -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()?;
    std::thread::spawn(move || {
        let _ = set.wait();
        let _ = tx.send(());
    });
    Ok(())
}
