//! Steps 1-5 of the demo: crosslink on both gateways through a silent failure of line 1,
//! of both lines (and a hot upgrade of an agent while on the tunnels), the heal and
//! return, and a planned drain.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;

use super::figures::{self, first_on, fmt_ms, ms_after, DIRECTIONS};
use super::{
    both_on, cut, cut_figures, heal, marker, panel, print_cut, print_return, push_cut_markers,
    push_return_markers, DemoOptions, Probes, Steps, FORWARDER, RATE,
};
use super::{CrosslinkFigures, DrainFigures, UpgradeFigures};
use crate::timeline::{Marker, MarkerKind, Panel};
use crate::{GatewayMode, Lab, LabOptions, Line, Node};

fn options(opts: &DemoOptions) -> LabOptions {
    let hold = opts.hold_down.as_millis();
    let drain = opts.drain_delay.as_millis();
    let mut lab = LabOptions::new(GatewayMode::Crosslink).crosslink_hook(move |node, cfg| {
        // gwb's agent records its inputs and outputs (gwa's re-executes midway).
        let record = match node {
            Node::Gwb => format!("\n[debug]\nrecord = \"{RECORD}\"\n"),
            _ => String::new(),
        };
        format!("{cfg}\n[policy]\nhold_down = \"{hold}ms\"\ndrain_delay = \"{drain}ms\"\n{record}")
    });
    lab.bfd = opts.bfd;
    lab
}

/// gwb's record, beside its config in the lab's directory.
const RECORD: &str = "gwb.record.jsonl";

/// Steps 1-5; the picture's panel covers steps 2-4.
pub(super) fn run(
    opts: &DemoOptions,
    step: &mut Steps,
    out: &mut dyn Write,
) -> Result<(CrosslinkFigures, Panel)> {
    step.next(
        out,
        "the lab: crosslink on gwa and gwb; two lines through BIRD line routers lr1, lr2; two WireGuard tunnels inet1, inet2 over the internet",
    )?;
    let mut lab = Lab::up(options(opts))?;
    lab.mark_paths()?;
    both_on(&lab, Line(1), Duration::from_secs(60))?;
    wait_every_session(&lab)?;
    // BFD leaves its slow start (1 s packets) once up; RTTs come with the fast packets.
    std::thread::sleep(Duration::from_secs(2));
    writeln!(out, "$ crosslink status   (on gwa)")?;
    write!(out, "{}", lab.crosslink(Node::Gwa, &["status"])?)?;

    let mut f = CrosslinkFigures::default();
    step.next(
        out,
        &format!(
            "{} of line 1 at gwa, traffic {RATE} packets/s each way",
            opts.cut
        ),
    )?;
    let probes = Probes::start()?;
    std::thread::sleep(Duration::from_secs(1));
    let cut1 = cut(&lab, Line(1), opts.cut)?;
    both_on(&lab, Line(2), Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(1));
    f.line_cut = cut_figures(&probes.so_far(), cut1.0, Instant::now(), &["line2"]);
    f.line_cut.detected_ms = detections(&lab, cut1.1, "line1", out)?;
    print_cut(out, &f.line_cut)?;

    step.next(
        out,
        &format!("{} of line 2 as well: both lines down", opts.cut),
    )?;
    let cut2 = cut(&lab, Line(2), opts.cut)?;
    lab.wait_for(
        "both gateways on the tunnels",
        Duration::from_secs(10),
        || {
            Ok(active(&lab, Node::Gwa) == "inet1, inet2"
                && active(&lab, Node::Gwb) == "inet1, inet2")
        },
    )?;
    std::thread::sleep(Duration::from_secs(2));
    f.both_cut = cut_figures(
        &probes.so_far(),
        cut2.0,
        Instant::now(),
        &["inet1", "inet2"],
    );
    f.both_cut.detected_ms = detections(&lab, cut2.1, "line2", out)?;
    print_cut(out, &f.both_cut)?;
    control_path(&lab, out)?;
    f.upgrade = hot_upgrade(&mut lab, &probes, out)?;

    step.next(
        out,
        &format!(
            "both lines healed: back to line 1 after the hold-down ({} s)",
            opts.hold_down.as_secs_f64()
        ),
    )?;
    let healed = heal(&lab, &[Line(2), Line(1)])?;
    both_on(&lab, Line(1), opts.hold_down + Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(1));
    let traces = probes.stop()?;
    for (i, t) in traces.iter().enumerate() {
        f.ret.lost[i] = t.between(healed, t.last_send).lost;
        f.ret.back_ms[i] = first_on(t, "line1", healed).map(|b| ms_after(b, healed));
    }
    print_return(out, &f.ret)?;

    let origin = cut1.0;
    let mut markers: [Vec<Marker>; 2] = Default::default();
    for (i, m) in markers.iter_mut().enumerate() {
        m.push(marker(0.0, MarkerKind::Cut, "cut line1".into()));
        push_cut_markers(m, 0.0, &f.line_cut, i, "line2");
        let c2 = ms_after(cut2.0, origin);
        m.push(marker(c2, MarkerKind::Cut, "cut line2".into()));
        push_cut_markers(m, c2, &f.both_cut, i, "tunnels");
        push_return_markers(m, ms_after(healed, origin), "heal both", &f.ret, i);
    }
    let panel = panel("crosslink", &traces, origin, markers);

    step.next(
        out,
        "`crosslink drain line1 --for 1h` on gwa (a maintenance window), then `crosslink undrain line1`",
    )?;
    f.drain = drain(&lab, opts, out)?;
    f.replay = replay(&lab, out)?;
    Ok((f, panel))
}

/// A hot upgrade of gwa's agent with the traffic on the tunnels: it re-executes its binary
/// (SIGUSR2), the tunnels' descriptors and WireGuard sessions kept across the exec.
fn hot_upgrade(lab: &mut Lab, probes: &Probes, out: &mut dyn Write) -> Result<UpgradeFigures> {
    writeln!(
        out,
        "  $ kill -USR2 $(pidof crosslink)   (on gwa: a hot upgrade while on the tunnels)"
    )?;
    let log = lab.dir().join("gwa.crosslink.log");
    let before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let at = Instant::now();
    lab.signal_crosslink(Node::Gwa, nix::sys::signal::Signal::SIGUSR2)?;
    lab.wait_for(
        "gwa's agent answering again",
        Duration::from_secs(10),
        || Ok(lab.status(Node::Gwa).is_ok()),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let text = std::fs::read(&log).unwrap_or_default();
    let new = String::from_utf8_lossy(text.get(before as usize..).unwrap_or_default());
    let taken = new.matches("WireGuard sessions taken over").count();
    writeln!(
        out,
        "  gwa's log: the new image took over the tunnels' descriptors and the WireGuard sessions of {taken} tunnels (no handshake)"
    )?;
    let traces = probes.so_far();
    let mut f = UpgradeFigures::default();
    for (i, dir) in DIRECTIONS.iter().enumerate() {
        let r = traces[i].between(at, Instant::now() - Duration::from_millis(500));
        f.lost[i] = r.lost;
        f.longest_gap_ms[i] = r.longest_gap_ms;
        writeln!(
            out,
            "    {dir}: {} packets lost across the upgrade, longest gap {:.1} ms",
            r.lost, r.longest_gap_ms
        )?;
    }
    Ok(f)
}

/// How many datagrams each gateway's tunnels took by the real-time path: the end-to-end
/// BFD inside them, marked network control by the far end and steered past the bulk.
fn control_path(lab: &Lab, out: &mut dyn Write) -> Result<()> {
    let mut taken = Vec::new();
    for gw in [Node::Gwa, Node::Gwb] {
        let s = lab.status(gw)?;
        let n: u64 = s["sites"][0]["paths"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["tunnel"]["rx_control"].as_u64())
            .sum();
        taken.push(format!("{gw} {n}"));
    }
    writeln!(
        out,
        "    BFD inside the tunnels came by their real-time path (datagrams so far): {}",
        taken.join(", ")
    )?;
    Ok(())
}

/// The site's active path on `gw`, as status says.
fn active(lab: &Lab, gw: Node) -> String {
    lab.status(gw)
        .ok()
        .and_then(|s| s["sites"][0]["active_path"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Every BFD session of both agents up, the tunnels' too: a cut before the tunnels' probes
/// are up would leave the far gateway no witness of ours being alive.
fn wait_every_session(lab: &Lab) -> Result<()> {
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_for("every BFD session up", Duration::from_secs(30), || {
            let s = lab.status(gw)?;
            Ok(s["sites"][0]["paths"].as_array().is_some_and(|paths| {
                paths.iter().all(|p| {
                    p["state"] == "up"
                        && p["bfd"]
                            .as_array()
                            .is_some_and(|b| b.iter().all(|b| b["state"] == "Up"))
                })
            }))
        })?;
    }
    Ok(())
}

/// How long after `since` each forwarding gateway's agent declared `path` down; prints the
/// event lines as `crosslink events` shows them.
fn detections(
    lab: &Lab,
    since: SystemTime,
    path: &str,
    out: &mut dyn Write,
) -> Result<[Option<f64>; 2]> {
    let mut found = [None; 2];
    for (i, gw) in FORWARDER.iter().enumerate() {
        let events = lab.crosslink(*gw, &["events"])?;
        writeln!(
            out,
            "  $ crosslink events   (on {gw}; what moved the traffic)"
        )?;
        match figures::event_lines(&events, since, "path-down", path).first() {
            Some(l) => {
                writeln!(out, "  {l}")?;
                found[i] = figures::event_time(l).map(|t| figures::wall_ms_after(t, since));
            }
            None => writeln!(out, "  (no path-down event for {path})")?,
        }
        for l in figures::event_lines(&events, since, "path-change", "-")
            .iter()
            .chain(&figures::event_lines(&events, since, "failover", "-"))
            .take(1)
        {
            writeln!(out, "  {l}")?;
        }
    }
    Ok(found)
}

/// Step 5: a planned drain, as a maintenance window (`--for`: it would end by itself). The
/// far side moves first (it hears the drain over BGP), ours after the drain delay; what
/// the kernel routes then (`crosslink routes`); undrain brings line 1 back sooner; and the
/// audit trail says who did both.
fn drain(lab: &Lab, opts: &DemoOptions, out: &mut dyn Write) -> Result<DrainFigures> {
    let mut f = DrainFigures::default();
    let probes = Probes::start()?;
    std::thread::sleep(Duration::from_millis(500));
    let drained = Instant::now();
    let drained_wall = SystemTime::now();
    writeln!(out, "$ crosslink drain line1 --for 1h")?;
    write!(
        out,
        "{}",
        lab.crosslink(Node::Gwa, &["drain", "line1", "--for", "1h"])?
    )?;
    lab.wait_for(
        "gwa on line 2",
        opts.drain_delay + Duration::from_secs(10),
        || Ok(active(lab, Node::Gwa) == "line2"),
    )?;
    // The far side heard it over BGP: lr1 passed our routes on with GRACEFUL_SHUTDOWN.
    let events = lab.crosslink(Node::Gwb, &["events"])?;
    if let Some(l) = figures::event_lines(&events, drained_wall, "path-change", "-").first() {
        writeln!(out, "  $ crosslink events   (on gwb, the far side)\n  {l}")?;
    }
    writeln!(out, "$ crosslink routes   (on gwa, drained)")?;
    for l in lab.crosslink(Node::Gwa, &["routes"])?.lines().take(9) {
        writeln!(out, "  {l}")?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let undrained = Instant::now();
    writeln!(out, "$ crosslink undrain line1")?;
    write!(out, "{}", lab.crosslink(Node::Gwa, &["undrain", "line1"])?)?;
    both_on(lab, Line(1), Duration::from_secs(15))?;
    writeln!(out, "$ crosslink events --by root   (on gwa: who asked)")?;
    let audit = lab.crosslink(Node::Gwa, &["events", "--by", "root"])?;
    for l in audit
        .lines()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        writeln!(out, "  {l}")?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let traces = probes.stop()?;
    for (i, dir) in DIRECTIONS.iter().enumerate() {
        let t = &traces[i];
        f.moved_ms[i] = first_on(t, "line2", drained).map(|m| ms_after(m, drained));
        f.lost[i] = t.between(drained, undrained).lost;
        f.undrain_lost[i] = t.between(undrained, t.last_send).lost;
        writeln!(
            out,
            "    {dir} (sent by {}): on line2 {} after the drain; {} lost while draining, {} on undrain",
            FORWARDER[i],
            fmt_ms(f.moved_ms[i]),
            f.lost[i],
            f.undrain_lost[i],
        )?;
    }
    Ok(f)
}

/// gwb's record of this run (every input its supervisor took, every answer it gave) fed
/// again to a new engine: each decision must come out as it did.
fn replay(lab: &Lab, out: &mut dyn Write) -> Result<String> {
    let record = lab.dir().join(RECORD);
    let record = record.to_str().unwrap_or_default();
    writeln!(
        out,
        "  $ crosslink replay {RECORD}   (on gwb: its agent's inputs of this run, fed again to a new engine)"
    )?;
    let said = lab.crosslink(Node::Gwb, &["replay", record])?;
    let said = said.trim().replacen(record, RECORD, 1);
    writeln!(out, "    {said}")?;
    Ok(said)
}
