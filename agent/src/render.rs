//! Human-readable tables for `status` and `events`.

use std::fmt::Write as _;

use crosslink::control::proto::{Event, Status};

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
        let _ = writeln!(
            out,
            "  {:<12} {:<7} {:<10} {:<8} {:<40} REASON",
            "PATH", "KIND", "IFACE", "STATE", "SIGNALS"
        );
        for p in &site.paths {
            let kind = match p.kind {
                crosslink::control::proto::PathKind::Line => "line",
                crosslink::control::proto::PathKind::Tunnel => "tunnel",
            };
            let signals: Vec<String> = p
                .signals
                .iter()
                .map(|g| format!("{}={}", g.name, g.state.as_str()))
                .collect();
            let _ = writeln!(
                out,
                "  {:<12} {:<7} {:<10} {:<8} {:<40} {}",
                p.name,
                kind,
                p.interface,
                p.state.as_str(),
                signals.join(" "),
                p.reason
            );
        }
    }
    out
}

pub fn events(events: &[Event]) -> String {
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
