//! Human-readable tables for `status` and `events`.

use std::fmt::Write as _;

use crosslink::control::proto::{Event, PathKind, PathStatus, Status};

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
                let up = b
                    .established_seconds
                    .map_or(String::new(), |s| format!(" for {s}s"));
                let err = b
                    .last_error
                    .as_deref()
                    .map_or(String::new(), |e| format!("  last error: {e}"));
                let _ = writeln!(
                    out,
                    "      bgp {} {}{up}  received {} rejected {} advertised {}{err}",
                    b.neighbor,
                    b.state,
                    b.prefixes_received,
                    b.prefixes_rejected,
                    b.prefixes_advertised
                );
            }
        }
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
