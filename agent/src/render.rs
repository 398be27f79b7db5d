//! Human-readable tables for `status` and `events`.

use std::fmt::Write as _;

use crosslink::control::proto::{BgpStatus, LogEntry, PathKind, PathStatus, Status};

pub fn status(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gateway {} AS{} router-id {}  (crosslink {}, up {}s)",
        s.gateway.name, s.gateway.asn, s.gateway.router_id, s.version, s.uptime_seconds
    );
    for site in &s.sites {
        let _ = writeln!(
            out,
            "\nsite {}  prefixes {}",
            site.name,
            site.prefixes.join(" ")
        );
        let active = site.active_path.as_deref().unwrap_or("-");
        let _ = writeln!(out, "  active: {active} ({})", site.active_reason);
        if let Some(f) = &site.fallback_path {
            let _ = writeln!(
                out,
                "  fallback: {f} (if the active paths all lose their link)"
            );
        }
        let _ = writeln!(
            out,
            "  learned over BGP: {} prefixes",
            site.learned_prefixes
        );
        let rows: Vec<(String, &PathStatus)> = site.paths.iter().map(|p| (signals(p), p)).collect();
        let w = rows.iter().map(|(s, _)| s.len()).max().unwrap_or(0).max(7);
        let _ = writeln!(
            out,
            "  {:<12} {:<7} {:<10} {:<8} {:<w$} REASON",
            "PATH", "KIND", "IFACE", "STATE", "SIGNALS"
        );
        for (signals, p) in rows {
            path(&mut out, p, &signals, w);
        }
    }
    out
}

/// A path's row and, under it, its policy, sessions and tunnel.
fn path(out: &mut String, p: &PathStatus, signals: &str, w: usize) {
    let kind = match p.kind {
        PathKind::Line => "line",
        PathKind::Tunnel => "tunnel",
    };
    let _ = writeln!(
        out,
        "  {:<12} {:<7} {:<10} {:<8} {:<w$} {}",
        p.name,
        kind,
        p.interface,
        p.state.as_str(),
        signals,
        p.reason
    );
    if let Some(line) = policy(p) {
        let _ = writeln!(out, "      policy {line}");
    }
    for b in &p.bfd {
        let rtt = b
            .rtt_ms
            .map_or(String::new(), |r| format!(" rtt {r:.2} ms"));
        let loss = b
            .loss
            .map_or(String::new(), |l| format!(" loss {:.1}%", l * 100.0));
        let diag = b
            .local_diag
            .as_deref()
            .filter(|d| *d != "no diagnostic")
            .map_or(String::new(), |d| format!(" ({d})"));
        let _ = writeln!(
            out,
            "      bfd {} {} {}{diag}{rtt}{loss}",
            b.kind, b.neighbor, b.state
        );
    }
    if let Some(t) = &p.tunnel {
        let hs = t
            .handshake_age_seconds
            .map_or("no handshake yet".to_owned(), |a| {
                format!("handshake {a}s ago")
            });
        let _ = writeln!(
            out,
            "      wireguard {} {hs}  rx {} B ({} pkts) tx {} B ({} pkts){}",
            t.endpoint.as_deref().unwrap_or("no endpoint"),
            t.rx_bytes,
            t.rx_packets,
            t.tx_bytes,
            t.tx_packets,
            t.error
                .as_deref()
                .map_or(String::new(), |e| format!("  error: {e}"))
        );
    }
    for b in &p.bgp {
        bgp(out, b);
    }
}

fn bgp(out: &mut String, b: &BgpStatus) {
    let up = b
        .established_seconds
        .map_or(String::new(), |s| format!(" for {s}s"));
    let err = b
        .last_error
        .as_deref()
        .map_or(String::new(), |e| format!("  last error: {e}"));
    let why = if b.rejected_by_reason.is_empty() {
        String::new()
    } else {
        let by: Vec<String> = b
            .rejected_by_reason
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        format!(" ({})", by.join(", "))
    };
    let _ = writeln!(
        out,
        "      bgp {} {}{up}  received {} rejected {}{why} advertised {}{err}",
        b.neighbor, b.state, b.prefixes_received, b.prefixes_rejected, b.prefixes_advertised
    );
}

/// The policy's hold on a path, when it has one: what an operator needs to know to tell
/// when traffic will return (hold-down, damping) and who took it out.
fn policy(p: &PathStatus) -> Option<String> {
    let v = p.policy.as_ref()?;
    let mut parts = Vec::new();
    // The reason names the operator's doing when that is what holds the path out.
    if v.operator != "none" && !v.reason.contains("operator") {
        parts.push(format!("operator {}", v.operator));
    }
    if let Some(left) = v.operator_seconds_left {
        let left = std::time::Duration::from_secs(left as u64);
        parts.push(format!(
            "timed test, back by itself in {}",
            humantime::format_duration(left)
        ));
    }
    if let Some(h) = v.hold_down_seconds {
        parts.push(format!("hold-down {h:.0}s left"));
    }
    if let Some(sup) = v.suppressed_seconds {
        parts.push(format!("suppressed by damping {sup:.0}s left"));
    }
    if v.penalty > 0.0 {
        parts.push(format!("damping penalty {:.0}", v.penalty));
    }
    if v.degraded {
        parts.push("degraded (probe loss)".to_owned());
    }
    if parts.is_empty() && v.admitted {
        return None;
    }
    let verdict = if v.admitted {
        "in service".to_owned()
    } else if v.reason.is_empty() {
        "out of service".to_owned()
    } else {
        format!("out of service: {}", v.reason)
    };
    parts.insert(0, verdict);
    Some(parts.join(", "))
}

/// After an operator command: where the traffic of each site `path` serves goes now, and
/// the path's own standing.
pub fn outcome(s: &Status, path: &str) -> String {
    let mut out = String::new();
    for site in &s.sites {
        let Some(p) = site.paths.iter().find(|p| p.name == path) else {
            continue;
        };
        let _ = writeln!(
            out,
            "site {}: traffic on {} ({})",
            site.name,
            site.active_path.as_deref().unwrap_or("nothing"),
            site.active_reason
        );
        let standing = policy(p).unwrap_or_else(|| "in service".to_owned());
        let _ = writeln!(out, "  {path}: {} — {standing}", p.state.as_str());
    }
    out
}

fn signals(p: &PathStatus) -> String {
    let all: Vec<String> = p
        .signals
        .iter()
        .map(|g| format!("{}={}", g.name, g.state.as_str()))
        .collect();
    all.join(" ")
}

pub fn events(events: &[LogEntry]) -> String {
    let mut out = String::new();
    for e in events {
        let _ = writeln!(
            out,
            "{}  {:<18} {:<10} {}",
            e.at,
            e.kind,
            e.path.as_deref().unwrap_or("-"),
            e.message
        );
    }
    out
}
