//! Step 6 of the demo: the baseline an engineer would build instead (BIRD 2 on the
//! gateways, BGP + BFD with the line routers, wireguard-go tunnels as a static backup)
//! through the same failure of line 1.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::figures::{self, first_on, ms, ms_after};
use super::{
    both_on, cut, cut_figures, heal, marker, panel, print_cut, print_return, push_cut_markers,
    push_return_markers, BirdFigures, DemoOptions, Probes, ReturnFigures, Steps, FORWARDER,
};
use crate::timeline::{Marker, MarkerKind, Panel};
use crate::{GatewayMode, Lab, LabOptions, Line, Node};

fn options(opts: &DemoOptions) -> LabOptions {
    // BIRD logs a session's state changes only when asked to.
    let mut lab = LabOptions::new(GatewayMode::Bird).bird_hook(|node, cfg| {
        if matches!(node, Node::Gwa | Node::Gwb) {
            // A default for the protocols defined after it.
            format!("debug protocols {{ states }};\n{cfg}")
        } else {
            cfg
        }
    });
    lab.bfd = opts.bfd;
    lab
}

pub(super) fn run(
    opts: &DemoOptions,
    step: &mut Steps,
    out: &mut dyn Write,
) -> Result<(BirdFigures, Panel)> {
    step.next(
        out,
        &format!(
            "the BIRD baseline: BIRD 2 on gwa and gwb (BGP + BFD {} ms x {}, wireguard-go tunnels as static backup), the same {} of line 1",
            ms(opts.bfd.interval),
            opts.bfd.multiplier,
            opts.cut
        ),
    )?;
    let lab = Lab::up(options(opts))?;
    lab.mark_paths()?;
    lab.wait_bird_established(Duration::from_secs(60))?;
    both_on(&lab, Line(1), Duration::from_secs(30))?;
    // BFD leaves its slow start a second after it comes up.
    std::thread::sleep(Duration::from_secs(2));
    let probes = Probes::start()?;
    std::thread::sleep(Duration::from_secs(1));
    let (origin, origin_wall) = cut(&lab, Line(1), opts.cut)?;
    // The far side (gwb) waits for lr1's BGP hold time when BFD with lr1 stays up.
    both_on(&lab, Line(2), Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_secs(1));
    let until = Instant::now();
    let healed = heal(&lab, &[Line(1)])?;
    both_on(&lab, Line(1), Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(1));
    let traces = probes.stop()?;
    let mut f = BirdFigures {
        line_cut: cut_figures(&traces, origin, until, &["line2"]),
        ret: ReturnFigures::default(),
    };
    let mut markers: [Vec<Marker>; 2] = Default::default();
    for (i, gw) in FORWARDER.iter().enumerate() {
        let log =
            std::fs::read_to_string(lab.dir().join(format!("{gw}.bird.log"))).unwrap_or_default();
        // BIRD closes the line's BGP sessions when BFD goes down; gwb's stay up in this
        // cut, it moves when lr1 withdraws (BIRD logs no state change for that).
        let closed = |l: &str| l.contains(" line1_v") && l.ends_with("State changed to stop");
        if let Some((t, line)) = figures::bird_log_line(&log, origin_wall, closed) {
            writeln!(out, "  {gw}'s BIRD log: {line}")?;
            f.line_cut.detected_ms[i] = Some(figures::wall_ms_after(t, origin_wall));
        }
        let t = &traces[i];
        f.ret.lost[i] = t.between(healed, t.last_send).lost;
        f.ret.back_ms[i] = first_on(t, "line1", healed).map(|b| ms_after(b, healed));
        let m = &mut markers[i];
        m.push(marker(0.0, MarkerKind::Cut, "cut line1".into()));
        push_cut_markers(m, 0.0, &f.line_cut, i, "line2");
        push_return_markers(m, ms_after(healed, origin), "heal", &f.ret, i);
    }
    print_cut(out, &f.line_cut)?;
    print_return(out, &f.ret)?;
    Ok((f, panel("BIRD baseline", &traces, origin, markers)))
}
