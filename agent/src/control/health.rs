//! `crosslink check-health`: the rollout's health gate, also usable by any monitoring that
//! runs a command. Healthy means every line is up and in service and no site's traffic is
//! on the tunnels: the state a change must leave a gateway in before the next one is
//! touched.

use super::proto::{Health, PathKind, Status};

/// What is unhealthy about the gateway; empty when it is healthy.
pub fn problems(s: &Status) -> Vec<String> {
    let mut out = Vec::new();
    for site in &s.sites {
        let lines: Vec<&str> = site
            .paths
            .iter()
            .filter(|p| p.kind == PathKind::Line)
            .map(|p| p.name.as_str())
            .collect();
        match site.active_path.as_deref() {
            None => out.push(format!(
                "site {}: no route programmed ({})",
                site.name, site.active_reason
            )),
            Some(active) if !active.split(", ").any(|p| lines.contains(&p)) => out.push(format!(
                "site {}: failover active, traffic on {active} ({})",
                site.name, site.active_reason
            )),
            Some(_) => {}
        }
        for p in site.paths.iter().filter(|p| p.kind == PathKind::Line) {
            if p.state != Health::Up {
                out.push(format!(
                    "line {} is {}: {}",
                    p.name,
                    p.state.as_str(),
                    p.reason
                ));
            } else if let Some(v) = p.policy.as_ref().filter(|v| !v.admitted) {
                out.push(format!("line {} is out of service: {}", p.name, v.reason));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(active: Option<&str>, line2: &str, admitted: bool) -> Status {
        serde_json::from_value(serde_json::json!({
            "schema": 1, "version": "0", "started_at": "", "uptime_seconds": 0,
            "config_file": "",
            "gateway": {"name": "gwa", "asn": 1, "router_id": "192.0.2.1"},
            "sites": [{
                "name": "cloud-b", "prefixes": [], "active_path": active,
                "active_reason": "why", "learned_prefixes": 0,
                "paths": [
                    {"name": "line1", "kind": "line", "interface": "x", "state": "up",
                     "reason": "", "signals": []},
                    {"name": "line2", "kind": "line", "interface": "y", "state": line2,
                     "reason": "BFD down", "signals": [],
                     "policy": {"admitted": admitted, "reason": "hold-down", "penalty": 0.0,
                                "degraded": false, "operator": "none"}},
                    {"name": "inet1", "kind": "tunnel", "interface": "t", "state": "down",
                     "reason": "", "signals": []}
                ]
            }]
        }))
        .unwrap()
    }

    #[test]
    fn healthy_means_every_line_in_service_and_traffic_on_a_line() {
        assert!(problems(&status(Some("line1"), "up", true)).is_empty());
        assert_eq!(
            problems(&status(Some("line1"), "down", false)),
            ["line line2 is down: BFD down"]
        );
        assert_eq!(
            problems(&status(Some("line1"), "up", false)),
            ["line line2 is out of service: hold-down"]
        );
        assert_eq!(
            problems(&status(Some("inet1"), "up", true)),
            ["site cloud-b: failover active, traffic on inet1 (why)"]
        );
        assert_eq!(
            problems(&status(None, "up", true)),
            ["site cloud-b: no route programmed (why)"]
        );
    }
}
