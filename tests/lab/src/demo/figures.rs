//! What the demo measured, how it reads the gateways' own accounts of a failure (crosslink's
//! event log, BIRD's log file), and the side-by-side table.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use crate::paths;
use crate::traffic::Trace;

/// The two directions of traffic, in the order every `[_; 2]` below holds them.
pub const DIRECTIONS: [&str; 2] = ["ha -> hb", "hb -> ha"];

/// One failure as the traffic felt it, per direction.
#[derive(Debug, Clone, Default)]
pub struct CutFigures {
    /// The longest time without an arrival around the cut.
    pub outage_ms: [f64; 2],
    pub lost: [u64; 2],
    /// When the gateway forwarding that direction reported the failure, ms after the cut.
    pub detected_ms: [Option<f64>; 2],
    /// When the first packet arrived over the new path, ms after the cut.
    pub switched_ms: [Option<f64>; 2],
    /// Packets per path once moved, most first.
    pub carried: [Vec<(String, u64)>; 2],
}

/// A healed line taking its traffic back, per direction.
#[derive(Debug, Clone, Default)]
pub struct ReturnFigures {
    pub lost: [u64; 2],
    /// From the heal to the first packet over line 1 again.
    pub back_ms: [Option<f64>; 2],
}

/// `crosslink drain line1` and `undrain`, per direction.
#[derive(Debug, Clone, Default)]
pub struct DrainFigures {
    /// From the command to the first packet over line 2.
    pub moved_ms: [Option<f64>; 2],
    pub lost: [u64; 2],
    pub undrain_lost: [u64; 2],
}

/// A hot upgrade of gwa's agent (SIGUSR2) with the traffic on the tunnels, per direction.
#[derive(Debug, Clone, Default)]
pub struct UpgradeFigures {
    pub lost: [u64; 2],
    pub longest_gap_ms: [f64; 2],
}

#[derive(Debug, Clone, Default)]
pub struct CrosslinkFigures {
    pub line_cut: CutFigures,
    pub both_cut: CutFigures,
    pub upgrade: UpgradeFigures,
    pub ret: ReturnFigures,
    pub drain: DrainFigures,
    /// `crosslink replay` of gwb's record: what it said.
    pub replay: String,
}

#[derive(Debug, Clone, Default)]
pub struct BirdFigures {
    pub line_cut: CutFigures,
    pub ret: ReturnFigures,
}

/// `t` as ms after `origin` (negative before it).
pub fn ms_after(t: Instant, origin: Instant) -> f64 {
    crate::timeline::signed_ms(t, origin)
}

/// A wall-clock time as ms after `origin`, `origin_wall` being the wall clock read at
/// `origin`. The gateways stamp their logs with the wall clock; the probes use `Instant`.
pub fn wall_ms_after(t: SystemTime, origin_wall: SystemTime) -> f64 {
    match t.duration_since(origin_wall) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -(e.duration().as_secs_f64() * 1000.0),
    }
}

/// The packets of `trace` per path in `[from, to)`, most first, named.
pub fn carried(trace: &Trace, from: Instant, to: Instant) -> Vec<(String, u64)> {
    trace
        .ttls_between(from, to)
        .into_iter()
        .map(|(ttl, n)| {
            let name = paths::of_ttl(ttl).unwrap_or(crate::timeline::UNMARKED);
            (name.to_owned(), n)
        })
        .collect()
}

/// "line2 100 %" or "inet1 52 %, inet2 48 %".
pub fn shares(carried: &[(String, u64)]) -> String {
    let total: u64 = carried.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return "nothing arrived".into();
    }
    carried
        .iter()
        .map(|(p, n)| format!("{p} {:.0} %", *n as f64 * 100.0 / total as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first arrival over `path` at or after `after`.
pub fn first_on(trace: &Trace, path: &str, after: Instant) -> Option<Instant> {
    first_on_any(trace, &[path], after)
}

/// The first arrival over any of `names` at or after `after`, in one pass.
pub fn first_on_any(trace: &Trace, names: &[&str], after: Instant) -> Option<Instant> {
    let ttls: Vec<u8> = names.iter().filter_map(|n| paths::ttl_of(n)).collect();
    trace.first_arrival(after, |t| ttls.contains(&t))
}

/// The events of `crosslink events` (text) stamped at or after `since` whose kind is
/// `kind` and whose path is `path`: the lines as the CLI prints them.
pub fn event_lines(events: &str, since: SystemTime, kind: &str, path: &str) -> Vec<String> {
    events
        .lines()
        .filter(|l| {
            let mut words = l.split_whitespace();
            let at = words.next().and_then(|w| humantime::parse_rfc3339(w).ok());
            at.is_some_and(|t| t >= since)
                && words.next() == Some(kind)
                && words.next() == Some(path)
        })
        .map(str::to_owned)
        .collect()
}

/// When an event line was stamped.
pub fn event_time(line: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(line.split_whitespace().next()?).ok()
}

/// The first line of a BIRD log stamped at or after `since` that `pick` accepts, with its
/// time. BIRD stamps its log in local time, `2026-12-06 02:45:55.861`; the lab runs on
/// hosts kept in UTC.
pub fn bird_log_line(
    log: &str,
    since: SystemTime,
    pick: impl Fn(&str) -> bool,
) -> Option<(SystemTime, String)> {
    log.lines().find_map(|l| {
        let stamp = l.get(..23)?;
        let t = humantime::parse_rfc3339_weak(stamp).ok()?;
        (t >= since && pick(l)).then(|| (t, l.to_owned()))
    })
}

/// "29.4 ms", "3.76 s", or a dash when nothing was measured.
pub fn fmt_ms(v: Option<f64>) -> String {
    match v {
        Some(ms) if ms >= 1000.0 => format!("{:.2} s", ms / 1000.0),
        Some(ms) => format!("{ms:.1} ms"),
        None => "–".into(),
    }
}

/// The table that closes the demo: the same silent drop of line 1 on both.
pub fn side_by_side(ours: &CrosslinkFigures, bird: &BirdFigures) -> String {
    let mut out = String::new();
    let row = |out: &mut String, what: &str, a: String, b: String| {
        let _ = writeln!(out, "  {what:<34} {a:>18} {b:>18}");
    };
    row(&mut out, "", "crosslink".into(), "BIRD".into());
    for (i, dir) in DIRECTIONS.iter().enumerate() {
        row(
            &mut out,
            &format!("outage {dir}"),
            format!("{:.1} ms", ours.line_cut.outage_ms[i]),
            format!("{:.1} ms", bird.line_cut.outage_ms[i]),
        );
    }
    for (i, dir) in DIRECTIONS.iter().enumerate() {
        row(
            &mut out,
            &format!("lost in the cut {dir}"),
            ours.line_cut.lost[i].to_string(),
            bird.line_cut.lost[i].to_string(),
        );
    }
    row(
        &mut out,
        "lost on return (both directions)",
        (ours.ret.lost[0] + ours.ret.lost[1]).to_string(),
        (bird.ret.lost[0] + bird.ret.lost[1]).to_string(),
    );
    let back = |r: &ReturnFigures| {
        let worst = r
            .back_ms
            .iter()
            .flatten()
            .copied()
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
        fmt_ms(worst)
    };
    row(
        &mut out,
        "heal -> back on line 1",
        back(&ours.ret),
        back(&bird.ret),
    );
    out
}

/// Milliseconds of a duration, for printing settings.
pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_pick_kind_path_and_time() {
        let events = "\
2026-12-06T02:42:04.708Z  path-change        -          site cloud-b: line line1 healthy (priority 10)
2026-12-06T02:42:33.684Z  path-down          line1      line1: BFD with 198.19.11.2 is Down (control detection time expired)
2026-12-06T02:42:33.690Z  path-down          line2      line2: BFD with 198.19.21.2 is Down
";
        let since = humantime::parse_rfc3339("2026-12-06T02:42:30Z").unwrap();
        let got = event_lines(events, since, "path-down", "line1");
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("control detection time expired"));
        let at = event_time(&got[0]).unwrap();
        assert_eq!(
            wall_ms_after(at, since).round(),
            3684.0,
            "ms after the origin"
        );
        let later = humantime::parse_rfc3339("2026-12-06T02:42:34Z").unwrap();
        assert!(event_lines(events, later, "path-down", "line1").is_empty());
    }

    #[test]
    fn bird_log_lines_are_found_after_a_time() {
        let log = "\
2026-12-06 02:45:55.861 <INFO> Started
2026-12-06 02:46:15.380 <TRACE> line1_v4: State changed to stop
2026-12-06 02:46:15.381 <TRACE> line1_v4: State changed to down
";
        let since = humantime::parse_rfc3339("2026-12-06T02:46:15.348Z").unwrap();
        let (t, line) = bird_log_line(log, since, |l| l.ends_with("changed to stop")).unwrap();
        assert_eq!(wall_ms_after(t, since).round(), 32.0);
        assert!(line.contains("line1_v4"));
        assert!(bird_log_line(log, since, |l| l.contains("Started")).is_none());
    }

    #[test]
    fn shares_are_percentages_of_what_arrived() {
        let c = vec![("inet1".to_owned(), 52), ("inet2".to_owned(), 48)];
        assert_eq!(shares(&c), "inet1 52 %, inet2 48 %");
        assert_eq!(shares(&[]), "nothing arrived");
    }

    #[test]
    fn the_table_puts_both_gateways_side_by_side() {
        let mut ours = CrosslinkFigures::default();
        ours.line_cut.outage_ms = [29.0, 31.0];
        ours.ret.back_ms = [Some(3400.0), Some(3450.0)];
        let mut bird = BirdFigures::default();
        bird.line_cut.outage_ms = [30.0, 6700.0];
        bird.ret.lost = [2, 1];
        let t = side_by_side(&ours, &bird);
        assert!(t.contains("outage ha -> hb"), "{t}");
        assert!(t.contains("29.0 ms") && t.contains("6700.0 ms"), "{t}");
        assert!(t.contains("3.45 s"), "{t}");
        let lost_line = t.lines().find(|l| l.contains("lost on return")).unwrap();
        assert!(lost_line.trim_end().ends_with('3'), "{t}");
    }
}
