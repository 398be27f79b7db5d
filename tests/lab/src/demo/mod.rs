//! The lab demo: crosslink on both gateways through a silent failure of line 1, both lines
//! failing, the return after the hold-down and a drain; then the BIRD baseline through the
//! same failure; a table side by side and a timeline picture of both. `crosslink-lab demo`
//! runs it and so does the lab test `demo`, so what the README shows cannot go stale.
//!
//! Every figure printed is measured in this run: the traffic probe sends 1,000 packets/s
//! each way between ha and hb over 16 flows (so ECMP has something to spread), and each
//! gateway marks the packets it forwards with the path they came over (`paths`).

mod bird;
mod crosslink;
mod figures;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

use figures::{carried, first_on_any, fmt_ms, ms, ms_after, shares, DIRECTIONS};
pub use figures::{
    BirdFigures, CrosslinkFigures, CutFigures, DrainFigures, ReturnFigures, UpgradeFigures,
};

use crate::timeline::{Marker, MarkerKind, Panel, Series, Timeline};
use crate::traffic::Trace;
use crate::{BfdTimers, Cut, Lab, Line, Node, Side, TrafficProbe};

const RATE: u32 = 1000;
const FLOWS: u16 = 16;
const BIN_MS: u32 = 10;
/// Traffic shown before the cut in the picture.
const LEAD_MS: f64 = 500.0;

/// Which gateways the demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gateways {
    Both,
    Crosslink,
    Bird,
}

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub gateways: Gateways,
    pub cut: Cut,
    pub bfd: BfdTimers,
    pub hold_down: Duration,
    pub drain_delay: Duration,
    /// Where the picture goes; its data goes beside it as `.json`.
    pub plot: PathBuf,
}

impl Default for DemoOptions {
    /// Short enough for the whole demo to take about two minutes on two cores.
    fn default() -> DemoOptions {
        DemoOptions {
            gateways: Gateways::Both,
            cut: Cut::Blackhole,
            bfd: BfdTimers {
                interval: Duration::from_millis(10),
                multiplier: 3,
            },
            hold_down: Duration::from_secs(3),
            drain_delay: Duration::from_secs(2),
            plot: PathBuf::from("target/crosslink-demo/timeline.svg"),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    pub crosslink: Option<CrosslinkFigures>,
    pub bird: Option<BirdFigures>,
    /// The SVG written, when there was traffic to draw.
    pub plot: Option<PathBuf>,
}

/// Runs the demo, printing each step to `out`.
pub fn run(opts: &DemoOptions, out: &mut dyn Write) -> Result<DemoReport> {
    let mut report = DemoReport::default();
    let mut panels = Vec::new();
    let steps = match opts.gateways {
        Gateways::Both => 6,
        Gateways::Crosslink => 5,
        Gateways::Bird => 1,
    };
    let mut step = Steps { n: 0, of: steps };
    writeln!(
        out,
        "timers: BFD {} ms x {} (detection {} ms), hold-down {} s, drain delay {} s; cut: {}",
        ms(opts.bfd.interval),
        opts.bfd.multiplier,
        ms(opts.bfd.interval) * u128::from(opts.bfd.multiplier),
        opts.hold_down.as_secs_f64(),
        opts.drain_delay.as_secs_f64(),
        opts.cut,
    )?;
    if opts.gateways != Gateways::Bird {
        let (figures, panel) = crosslink::run(opts, &mut step, out)?;
        report.crosslink = Some(figures);
        panels.push(panel);
    }
    if opts.gateways != Gateways::Crosslink {
        let (figures, panel) = bird::run(opts, &mut step, out)?;
        report.bird = Some(figures);
        panels.push(panel);
    }
    if let (Some(ours), Some(bird)) = (&report.crosslink, &report.bird) {
        writeln!(
            out,
            "\nthe same {} of line 1 at gwa, side by side:\n{}",
            opts.cut,
            figures::side_by_side(ours, bird)
        )?;
        writeln!(
            out,
            "  (crosslink takes a healed line back after its hold-down, {} s here and 30 s by\n   default, once the line's table is re-learned; BIRD as soon as BFD and BGP are up)\n",
            opts.hold_down.as_secs_f64()
        )?;
    }
    let timeline = Timeline {
        bin_ms: BIN_MS,
        panels,
    };
    report.plot = Some(write_plot(&timeline, &opts.plot)?);
    writeln!(
        out,
        "timeline picture: {} (its data: {})",
        opts.plot.display(),
        opts.plot.with_extension("json").display()
    )?;
    Ok(report)
}

struct Steps {
    n: usize,
    of: usize,
}

impl Steps {
    fn next(&mut self, out: &mut dyn Write, title: &str) -> Result<()> {
        self.n += 1;
        writeln!(out, "\n==> {}/{} {title}", self.n, self.of)?;
        Ok(())
    }
}

fn write_plot(timeline: &Timeline, path: &std::path::Path) -> Result<PathBuf> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, timeline.to_svg()?)
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::write(
        path.with_extension("json"),
        serde_json::to_string(timeline)?,
    )?;
    Ok(path.to_path_buf())
}

/// The probes in both directions, `DIRECTIONS` order.
struct Probes([TrafficProbe; 2]);

impl Probes {
    fn start() -> Result<Probes> {
        let one = |from: Side| {
            let to = from.other();
            TrafficProbe::start_flows(
                &from.host().ns(),
                &to.host().ns(),
                to.host_addr(false),
                RATE,
                FLOWS,
            )
        };
        Ok(Probes([one(Side::A)?, one(Side::B)?]))
    }

    /// Both traces so far; the probes go on.
    fn so_far(&self) -> [Trace; 2] {
        [self.0[0].so_far(), self.0[1].so_far()]
    }

    fn stop(self) -> Result<[Trace; 2]> {
        let [a, b] = self.0;
        Ok([a.stop_trace()?, b.stop_trace()?])
    }
}

/// The gateway that forwards each direction: ha -> hb leaves through gwa.
const FORWARDER: [Node; 2] = [Node::Gwa, Node::Gwb];

fn both_on(lab: &Lab, line: Line, timeout: Duration) -> Result<Duration> {
    lab.wait_for(&format!("both gateways on {line:?}"), timeout, || {
        lab.both_on(line)
    })
}

/// The figures of a cut at `cut` whose traffic moved to `to`, measured until `until`.
fn cut_figures(traces: &[Trace; 2], cut: Instant, until: Instant, to: &[&str]) -> CutFigures {
    // The last packets before `until` may still have been on their way.
    let until = until - Duration::from_millis(20);
    let mut f = CutFigures::default();
    for (i, t) in traces.iter().enumerate() {
        let r = t.between(cut, until);
        f.outage_ms[i] = r.longest_gap_ms;
        f.lost[i] = r.lost;
        let switched = first_on_any(t, to, cut);
        f.switched_ms[i] = switched.map(|s| ms_after(s, cut));
        f.carried[i] = carried(t, switched.unwrap_or(until), until);
    }
    f
}

fn print_cut(out: &mut dyn Write, f: &CutFigures) -> Result<()> {
    for (i, dir) in DIRECTIONS.iter().enumerate() {
        writeln!(
            out,
            "    {dir}: outage {:.1} ms, {} packets lost; first packet on the new path after {}; then {}",
            f.outage_ms[i],
            f.lost[i],
            fmt_ms(f.switched_ms[i]),
            shares(&f.carried[i]),
        )?;
    }
    Ok(())
}

fn print_return(out: &mut dyn Write, f: &ReturnFigures) -> Result<()> {
    for (i, dir) in DIRECTIONS.iter().enumerate() {
        writeln!(
            out,
            "    {dir}: back on line1 {} after the heal, {} packets lost on the way back",
            fmt_ms(f.back_ms[i]),
            f.lost[i],
        )?;
    }
    Ok(())
}

/// Cuts `line` at gwa's end; returns when the fault is in place (the command that puts it
/// there takes milliseconds to start), on both clocks.
fn cut(lab: &Lab, line: Line, how: Cut) -> Result<(Instant, SystemTime)> {
    lab.cut(Side::A, line, how)?;
    Ok((Instant::now(), SystemTime::now()))
}

/// Heals `lines` at gwa's end; returns when the last is healed.
fn heal(lab: &Lab, lines: &[Line]) -> Result<Instant> {
    for line in lines {
        lab.heal(Side::A, *line)?;
    }
    Ok(Instant::now())
}

fn marker(at_ms: f64, kind: MarkerKind, label: String) -> Marker {
    Marker { at_ms, kind, label }
}

/// Detection and switch of direction `i` of a cut at `at` ms.
fn push_cut_markers(m: &mut Vec<Marker>, at: f64, f: &CutFigures, i: usize, to: &str) {
    if let Some(d) = f.detected_ms[i] {
        m.push(marker(
            at + d,
            MarkerKind::Detection,
            format!("detection +{d:.0} ms"),
        ));
    }
    if let Some(s) = f.switched_ms[i] {
        m.push(marker(
            at + s,
            MarkerKind::Switch,
            format!("switch to {to} +{s:.0} ms"),
        ));
    }
}

/// The heal at `at` ms and the return of direction `i`.
fn push_return_markers(m: &mut Vec<Marker>, at: f64, label: &str, f: &ReturnFigures, i: usize) {
    m.push(marker(at, MarkerKind::Heal, label.into()));
    if let Some(b) = f.back_ms[i] {
        m.push(marker(
            at + b,
            MarkerKind::Return,
            format!("return to line1 +{:.2} s", b / 1000.0),
        ));
    }
}

/// The picture's panel: each direction from just before the cut to the end of its trace.
fn panel(title: &str, traces: &[Trace; 2], origin: Instant, markers: [Vec<Marker>; 2]) -> Panel {
    let series = traces
        .iter()
        .zip(markers)
        .zip(DIRECTIONS)
        .map(|((t, m), dir)| {
            let end = ms_after(t.last_send, origin);
            let mut s = Series::from_trace(dir, t, origin, (-LEAD_MS, end), BIN_MS);
            s.markers = m;
            s
        })
        .collect();
    Panel {
        title: title.to_owned(),
        series,
    }
}
