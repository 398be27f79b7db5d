//! Benchmark: BFD detection of a silent failure. The line between gwa and lr1 is silently
//! dropped (nftables, both directions, link up) N times (default 20) at 10 ms x 3 and at
//! 100 ms x 3. For each cut: time from the cut to crosslink declaring its session with lr1
//! Down (its event log, ms resolution), next to BIRD on lr1 declaring the same session
//! Down (the first Down packet it sends, from its debug log, µs resolution).
//!
//! `cargo bench -p crosslink-lab --bench bfd_detect [-- CUTS]` (root). Prints figures only.

use std::time::{Duration, SystemTime};

use lab::{Cut, GatewayMode, Lab, LabOptions, Line, Node, Side};

fn crosslink_down_after(lab: &Lab, peer: &str, after: SystemTime) -> Option<SystemTime> {
    let out = lab.crosslink(Node::Gwa, &["events", "--json"]).ok()?;
    let events: serde_json::Value = serde_json::from_str(&out).ok()?;
    events.as_array()?.iter().find_map(|e| {
        let msg = e["message"].as_str()?;
        if !(msg.starts_with(&format!("BFD with {peer} Up -> Down"))) {
            return None;
        }
        let at = humantime::parse_rfc3339(e["at"].as_str()?).ok()?;
        (at + Duration::from_millis(1) >= after).then_some(at)
    })
}

fn bird_down_after(lab: &Lab, gw_addr: &str, after: SystemTime) -> Option<SystemTime> {
    let log = std::fs::read_to_string(lab.dir().join("lr1.bird.log")).ok()?;
    let needle = format!("Sending CTL to {gw_addr} [Down]");
    log.lines().filter(|l| l.contains(&needle)).find_map(|l| {
        let ts = l.get(..26)?;
        let at = humantime::parse_rfc3339_weak(ts).ok()?;
        (at >= after).then_some(at)
    })
}

fn both_up(lab: &Lab, peer: &str, gw_addr: &str) -> anyhow::Result<bool> {
    let s: serde_json::Value =
        serde_json::from_str(&lab.crosslink(Node::Gwa, &["status", "--json"])?)?;
    let ours = s["sites"][0]["paths"][0]["bfd"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let up = ours
        .iter()
        .any(|b| b["neighbor"] == peer && b["kind"] == "single-hop" && b["state"] == "Up");
    let bird = lab.birdc(Node::Lr1, "show bfd sessions")?;
    let bird_up = bird
        .lines()
        .any(|l| l.split_whitespace().next() == Some(gw_addr) && l.contains(" Up "));
    Ok(up && bird_up)
}

fn stats(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let cuts: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    println!("silent drop of line 1 at gwa, {cuts} cuts per interval; detection = time from the cut to Down");
    let mut rows = Vec::new();
    for ms in [10u64, 100] {
        let mut opts = LabOptions::new(GatewayMode::Crosslink).bird_hook(|node, cfg| {
            if node != Node::Lr1 {
                return cfg;
            }
            cfg.replace(
                "timeformat protocol iso short;",
                "timeformat protocol iso short;\ntimeformat log \"%F %T.%6f\";",
            )
            .replace("protocol bfd {\n", "protocol bfd {\n  debug all;\n")
        });
        opts.bfd.interval = Duration::from_millis(ms);
        let lab = Lab::up(opts).expect("lab up");
        let peer = Line(1).addr(Side::A, true, false).to_string();
        let gw_addr = Line(1).addr(Side::A, false, false).to_string();
        let mut ours = Vec::new();
        let mut birds = Vec::new();
        for _ in 0..cuts {
            lab.wait_for("both ends up", Duration::from_secs(30), || {
                both_up(&lab, &peer, &gw_addr)
            })
            .expect("up");
            std::thread::sleep(Duration::from_millis(300));
            lab.cut(Side::A, Line(1), Cut::Blackhole).expect("cut");
            // The drop is in force once nft has returned: time from there.
            let cut_at = SystemTime::now();
            let limit = Duration::from_millis(ms * 3 * 10);
            let ours_at = lab.wait_for("crosslink Down", limit.max(Duration::from_secs(3)), || {
                Ok(crosslink_down_after(&lab, &peer, cut_at).is_some())
            });
            let bird_at = lab.wait_for("BIRD Down", limit.max(Duration::from_secs(3)), || {
                Ok(bird_down_after(&lab, &gw_addr, cut_at).is_some())
            });
            if ours_at.is_ok() {
                if let Some(t) = crosslink_down_after(&lab, &peer, cut_at) {
                    ours.push(t.duration_since(cut_at).unwrap_or_default().as_secs_f64() * 1000.0);
                }
            }
            if bird_at.is_ok() {
                if let Some(t) = bird_down_after(&lab, &gw_addr, cut_at) {
                    birds.push(t.duration_since(cut_at).unwrap_or_default().as_secs_f64() * 1000.0);
                }
            }
            lab.heal(Side::A, Line(1)).expect("heal");
        }
        let (om, ox) = stats(&mut ours);
        let (bm, bx) = stats(&mut birds);
        println!("  {ms} ms x 3: crosslink median {om:.1} ms max {ox:.1} ms ({} cuts); BIRD median {bm:.1} ms max {bx:.1} ms ({} cuts)", ours.len(), birds.len());
        rows.push((ms, om, ox, bm, bx));
    }
    println!("\n| BFD timers | crosslink median / max | BIRD 2 median / max |");
    println!("| --- | --- | --- |");
    for (ms, om, ox, bm, bx) in rows {
        println!(
            "| {ms} ms x 3 (detection {} ms) | {om:.1} / {ox:.1} ms | {bm:.1} / {bx:.1} ms |",
            ms * 3
        );
    }
}
