//! `crosslink-lab`: bring the two-cloud lab up and run the failover demo, or keep it up for
//! exploring, or clean up a lab left by a killed run.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use lab::{Cut, GatewayMode, Lab, LabOptions, Line, Node, Side};

#[derive(Parser)]
#[command(about = "The crosslink network-namespace lab")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// BIRD 2 on the gateways: the baseline an engineer would build instead.
    Bird,
    /// crosslink on the gateways.
    Crosslink,
}

#[derive(Clone, Copy, ValueEnum)]
enum CutKind {
    Carrier,
    Blackhole,
    Loss,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring the lab up, send traffic, cut line 1, show the failover, heal it, show the return.
    Demo {
        #[arg(long, value_enum, default_value_t = Mode::Bird)]
        mode: Mode,
        #[arg(long, value_enum, default_value_t = CutKind::Blackhole)]
        cut: CutKind,
        /// Percentage dropped with --cut loss.
        #[arg(long, default_value_t = 10)]
        loss: u8,
        /// BFD transmit interval in milliseconds (detection = interval x multiplier).
        #[arg(long, default_value_t = 100)]
        bfd_ms: u64,
        #[arg(long, default_value_t = 3)]
        bfd_multiplier: u8,
    },
    /// Bring the lab up and keep it until Ctrl-C (explore with `ip netns exec xl-gwa ...`).
    Up {
        #[arg(long, value_enum, default_value_t = Mode::Bird)]
        mode: Mode,
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
        } => {
            let mut opts = options(mode);
            opts.bfd.interval = Duration::from_millis(bfd_ms);
            opts.bfd.multiplier = bfd_multiplier;
            let cut = match cut {
                CutKind::Carrier => Cut::Carrier,
                CutKind::Blackhole => Cut::Blackhole,
                CutKind::Loss => Cut::Loss(loss),
            };
            demo(opts, cut)
        }
        Cmd::Up { mode } => up(options(mode)),
        Cmd::Clean => {
            // Taking the lab lock removes stale namespaces; the lab built then is dropped.
            drop(Lab::up(options(Mode::Bird))?);
            println!("no lab left on this machine");
            Ok(())
        }
    }
}

fn options(mode: Mode) -> LabOptions {
    LabOptions::new(match mode {
        Mode::Bird => GatewayMode::Bird,
        Mode::Crosslink => GatewayMode::Crosslink,
    })
}

fn step(msg: &str) {
    println!("\n==> {msg}");
}

fn up(opts: LabOptions) -> Result<()> {
    let lab = Lab::up(opts)?;
    lab.wait_bird_established(Duration::from_secs(60))?;
    println!(
        "lab is up; files in {}. Press Ctrl-C to tear it down.",
        lab.dir().display()
    );
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

fn demo(opts: LabOptions, cut: Cut) -> Result<()> {
    let mode = opts.mode;
    step(&format!(
        "bringing up the lab (gateways run {})",
        if mode == GatewayMode::Bird {
            "BIRD 2"
        } else {
            "crosslink"
        }
    ));
    let lab = Lab::up(opts)?;
    let hb = Side::B.host_addr(false);
    if mode == GatewayMode::Crosslink {
        // The agent does not speak BGP or program routes yet: show what it observes.
        step("crosslink status on gwa");
        print!("{}", lab.crosslink(Node::Gwa, &["status"])?);
        step(&format!("cutting line 1 at gwa ({cut})"));
        lab.cut(Side::A, Line(1), cut)?;
        std::thread::sleep(Duration::from_millis(300));
        print!("{}", lab.crosslink(Node::Gwa, &["status"])?);
        lab.heal(Side::A, Line(1))?;
        println!("\ncrosslink does not route traffic yet (BGP, BFD and route switching are later issues); run `--mode bird` for the traffic demo.");
        return Ok(());
    }
    lab.wait_bird_established(Duration::from_secs(60))?;
    step("BGP and BFD on gwa");
    print!("{}", lab.birdc(Node::Gwa, "show protocols")?);
    print!("{}", lab.birdc(Node::Gwa, "show bfd sessions")?);
    lab.wait_for(
        "gwa's route to hb over line 1",
        Duration::from_secs(30),
        || Ok(lab.line_towards(Node::Gwa, hb)? == Some(Line(1))),
    )?;
    step("gwa's route to hb (learned over BGP)");
    print!(
        "{}",
        lab.exec(Node::Gwa, &["ip", "-4", "route", "show", "198.18.2.0/24"])?
    );
    print!(
        "{}",
        lab.exec(Node::Gwa, &["ip", "-6", "route", "show", "2001:db8:b::/64"])?
    );

    step(&format!(
        "traffic ha -> hb at 1000 packets/s; cutting line 1 at gwa ({cut})"
    ));
    let probe = lab.probe(Side::A, false, 1000)?;
    std::thread::sleep(Duration::from_secs(1));
    lab.cut(Side::A, Line(1), cut)?;
    let moved = lab.wait_for(
        "the route to move to line 2",
        Duration::from_secs(10),
        || Ok(lab.line_towards(Node::Gwa, hb)? == Some(Line(2))),
    );
    std::thread::sleep(Duration::from_secs(1));
    let report = probe.stop()?;
    match moved {
        Ok(t) => println!(
            "BIRD moved to line 2 after {:.0} ms",
            t.as_secs_f64() * 1000.0
        ),
        Err(e) => println!("traffic stayed on line 1: {e:#}"),
    }
    println!("failover: {report}  (outage = longest gap)");

    step("healing line 1; BIRD returns once BFD and BGP are back");
    let probe = lab.probe(Side::A, false, 1000)?;
    lab.heal(Side::A, Line(1))?;
    let back = lab.wait_for(
        "the route to return to line 1",
        Duration::from_secs(60),
        || Ok(lab.line_towards(Node::Gwa, hb)? == Some(Line(1))),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let report = probe.stop()?;
    println!("back on line 1 after {:.1} s", back.as_secs_f64());
    println!("return: {report}");
    if report.received == 0 {
        bail!("no traffic reached hb after the heal");
    }
    step("done; the lab is torn down");
    Ok(())
}
