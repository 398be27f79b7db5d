//! The README's first command, `tests/lab/demo.sh`, runs `crosslink-lab demo`: this runs the
//! same code (`lab::demo::run`) with the same defaults, so what the README shows cannot go
//! stale. Asserts what the demo shows, not how fast (the figures are printed). Needs root.

use lab::demo::{self, DemoOptions};

#[test]
fn the_demo_shows_crosslink_failing_over_and_back_beside_the_bird_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        plot: dir.path().join("timeline.svg"),
        ..DemoOptions::default()
    };
    let mut out = Vec::new();
    let result = demo::run(&opts, &mut out);
    let printed = String::from_utf8_lossy(&out).into_owned();
    println!("{printed}");
    let report = result.unwrap_or_else(|e| panic!("{e:#}\n{printed}"));
    let ours = report.crosslink.expect("crosslink ran");
    let bird = report.bird.expect("the baseline ran");
    let first = |c: &[(String, u64)]| c.first().map(|(p, _)| p.clone()).unwrap_or_default();
    for i in 0..2 {
        // Line 1 cut: each direction moved to line 2, and the agent said why.
        assert_eq!(first(&ours.line_cut.carried[i]), "line2", "{printed}");
        assert!(ours.line_cut.detected_ms[i].is_some(), "{printed}");
        // Both lines cut: both tunnels carry (16 flows over an ECMP group).
        let tunnels: Vec<&str> = ours.both_cut.carried[i]
            .iter()
            .map(|(p, _)| p.as_str())
            .collect();
        assert!(
            tunnels.contains(&"inet1") && tunnels.contains(&"inet2"),
            "{tunnels:?}\n{printed}"
        );
        // A hot upgrade on the tunnels loses nothing either way.
        assert_eq!(ours.upgrade.lost[i], 0, "{printed}");
        // The return loses nothing.
        assert!(ours.ret.back_ms[i].is_some(), "{printed}");
        assert_eq!(ours.ret.lost[i], 0, "{printed}");
        // A drain loses nothing either way.
        assert!(ours.drain.moved_ms[i].is_some(), "{printed}");
        assert_eq!(ours.drain.lost[i], 0, "{printed}");
        assert_eq!(ours.drain.undrain_lost[i], 0, "{printed}");
        // gwb's record of the run replays to the same decisions.
        assert!(
            ours.replay.contains("every turn answered as recorded"),
            "{printed}"
        );
        // The baseline went through the same cut.
        assert_eq!(first(&bird.line_cut.carried[i]), "line2", "{printed}");
    }
    // The far side (gwb, sending hb -> ha) moved before our routes did.
    assert!(
        ours.drain.moved_ms[1] < ours.drain.moved_ms[0],
        "{:?}\n{printed}",
        ours.drain.moved_ms
    );
    for line in [
        "outage ha -> hb",
        "lost on return",
        "heal -> back on line 1",
    ] {
        assert!(printed.contains(line), "no {line:?} in\n{printed}");
    }
    let plot = report.plot.expect("a picture");
    let svg = std::fs::read_to_string(&plot).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    let text: String = doc
        .descendants()
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("\n");
    for word in [
        "crosslink",
        "BIRD baseline",
        "cut line1",
        "return to line1",
        "inet2",
    ] {
        assert!(text.contains(word), "no {word:?} in the picture");
    }
    assert!(plot.with_extension("json").is_file());
}
