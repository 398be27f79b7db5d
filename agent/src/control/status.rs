//! The status document (the control socket's wire type, `proto::Status`) rendered from
//! the agent's state: the supervisor builds one per view; nothing below the control
//! socket renders or reads it.

use std::collections::BTreeMap;

use crate::config::PathRef;
use crate::control::proto::{
    BfdStatus, BgpStatus, GatewayStatus, LogEntry, PathKind, PathStatus, PolicyStatus,
    SignalStatus, SiteStatus, Status, TunnelStatus, STATUS_SCHEMA,
};
use crate::core::events::Event;
use crate::sources::bfd::BfdView;
use crate::sources::bgp::NeighborState;
use crate::sources::tunnels::{handshake_age, TunnelView};
use crate::state::{AgentState, Now};

pub fn status(st: &AgentState) -> Status {
    let cfg = st.config();
    Status {
        schema: STATUS_SCHEMA,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        gateway: GatewayStatus {
            name: cfg.gateway.name.clone(),
            asn: *cfg.gateway.asn.get_ref(),
            router_id: cfg.gateway.router_id.to_string(),
        },
        started_at: humantime::format_rfc3339_seconds(st.started_at()).to_string(),
        uptime_seconds: st.uptime().as_secs(),
        config_file: st.config_file().display().to_string(),
        sites: cfg
            .sites
            .iter()
            .map(|s| site(st, s.name.get_ref()))
            .collect(),
    }
}

fn site(st: &AgentState, site: &str) -> SiteStatus {
    let cfg = st.config();
    let prefixes = cfg
        .sites
        .iter()
        .find(|s| s.name.get_ref() == site)
        .map(|s| s.prefixes.iter().map(|p| p.get_ref().to_string()).collect())
        .unwrap_or_default();
    SiteStatus {
        name: site.to_owned(),
        prefixes,
        active_path: st.active.get(site).and_then(paths_of),
        active_reason: st.active.get(site).map_or_else(
            || "routes not programmed yet".to_owned(),
            |c| c.reason.clone(),
        ),
        fallback_path: st.fallback.get(site).and_then(paths_of),
        learned_prefixes: st.learned_prefixes(site),
        paths: cfg.paths_of(site).map(|p| path(st, p)).collect(),
    }
}

pub fn path(st: &AgentState, path: PathRef<'_>) -> PathStatus {
    let name = path.name();
    let (kind, iface, priority, weight) = match path {
        PathRef::Line(l) => (
            PathKind::Line,
            l.interface.get_ref().as_str(),
            Some(l.priority),
            None,
        ),
        PathRef::Tunnel(t) => (
            PathKind::Tunnel,
            t.interface.get_ref().as_str(),
            None,
            Some(*t.weight.get_ref()),
        ),
    };
    let bgp: Vec<&NeighborState> = st.bgp.values().filter(|n| n.line == name).collect();
    let bfd: Vec<&BfdView> = st.bfd.values().filter(|v| v.line == name).collect();
    let (signals, verdict) = st.path_health(path);
    let line_asn = match path {
        PathRef::Line(l) => Some(*l.peer_asn.get_ref()),
        PathRef::Tunnel(_) => None,
    };
    PathStatus {
        name: name.to_owned(),
        kind,
        interface: iface.to_owned(),
        priority,
        weight,
        state: verdict.health,
        state_seconds: st
            .path_since
            .get(name)
            .map(|(_, t)| st.now().mono.saturating_duration_since(*t).as_secs()),
        reason: verdict.reason,
        signals: signals
            .iter()
            .map(|s| SignalStatus {
                name: s.kind.name().into(),
                state: s.health,
            })
            .collect(),
        bgp: bgp
            .iter()
            .map(|n| bgp_status(n, st.now(), line_asn))
            .collect(),
        bfd: bfd.iter().map(|v| bfd_status(v, st.now())).collect(),
        tunnel: (kind == PathKind::Tunnel)
            .then(|| st.tunnels.get(name))
            .flatten()
            .map(|v| tunnel_status(v, st.now().wall)),
        policy: st.policy.get(name).map(policy_status),
    }
}

/// The policy's verdict on a path as status shows it.
fn policy_status(v: &crate::policy::Verdict) -> PolicyStatus {
    let p = &v.policy;
    PolicyStatus {
        admitted: p.admitted,
        reason: if p.admitted {
            String::new()
        } else {
            v.why.clone()
        },
        hold_down_seconds: p.hold_down_left.map(|d| d.as_secs_f64()),
        penalty: (p.penalty * 10.0).round() / 10.0,
        flaps: p.flaps,
        suppressed_seconds: p.suppressed_for.map(|d| d.as_secs_f64()),
        degraded: p.degraded,
        operator: p.operator.to_owned(),
        operator_seconds_left: p.operator_left.map(|d| d.as_secs_f64().ceil()),
    }
}

/// The paths of a choice, comma-separated; none when it has none.
fn paths_of(c: &crate::select::Choice) -> Option<String> {
    let names: Vec<&str> = c.members.iter().map(|(n, _)| n.as_str()).collect();
    (!names.is_empty()).then(|| names.join(", "))
}

fn bgp_status(n: &NeighborState, now: Now, peer_as: Option<u32>) -> BgpStatus {
    BgpStatus {
        neighbor: n.peer.to_string(),
        state: n.state_name().to_owned(),
        established_seconds: n.established_at.map(|t| now.since(t).as_secs()),
        state_seconds: n.changed_at.map(|t| now.since(t).as_secs()),
        prefixes_received: n.learned.len(),
        prefixes_rejected: n.rejected,
        rejected_by_reason: n
            .refused
            .by_reason
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        prefixes_advertised: n.advertised,
        last_error: n.last_error.clone(),
        peer_as,
        received_by_afi: {
            let v4 = n.learned.keys().filter(|p| p.addr().is_ipv4()).count();
            [("ipv4", v4), ("ipv6", n.learned.len() - v4)]
                .into_iter()
                .filter(|(_, c)| *c > 0)
                .map(|(a, c)| (a.to_owned(), c))
                .collect()
        },
        messages_sent: by_type(&n.sent),
        messages_received: by_type(&n.received),
    }
}

fn by_type(c: &bgp::driver::MessageCounts) -> BTreeMap<String, u64> {
    c.by_type()
        .into_iter()
        .map(|(t, n)| (t.to_owned(), n))
        .collect()
}

fn bfd_status(v: &BfdView, now: Now) -> BfdStatus {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let s = v.detail.as_ref();
    BfdStatus {
        neighbor: v.peer.to_string(),
        kind: if v.end_to_end {
            "end-to-end"
        } else {
            "single-hop"
        }
        .into(),
        state: v.state.map_or("unknown".into(), |s| s.as_str().to_owned()),
        local_diag: v.local_diag.map(|d| d.to_string()),
        remote_diag: v.remote_diag.map(|d| d.to_string()),
        detection_ms: s.map(|s| ms(s.detection_time)),
        rtt_ms: s.and_then(|s| s.rtt).map(ms),
        loss: s.and_then(|s| s.loss),
        up_seconds: s.and_then(|s| s.up_for).map(|d| d.as_secs()),
        state_seconds: v.changed_at.map(|t| now.since(t).as_secs()),
        tx_gap_p99_ms: s.and_then(|s| s.tx_gap_p99).map(ms),
        tx_gap_max_ms: s.and_then(|s| s.tx_gap_max).map(ms),
        stall_graces: s.map_or(0, |s| s.stall_graces),
        unanswered: v.unanswered(),
    }
}

fn tunnel_status(v: &TunnelView, now: std::time::SystemTime) -> TunnelStatus {
    let s = v.stats.as_ref();
    TunnelStatus {
        running: v.error.is_none() && s.is_some(),
        error: v.error.clone(),
        endpoint: s.and_then(|s| s.endpoint).map(|e| e.to_string()),
        handshake_age_seconds: s.and_then(|s| handshake_age(s, now)).map(|d| d.as_secs()),
        rx_bytes: s.map_or(0, |s| s.rx_bytes),
        tx_bytes: s.map_or(0, |s| s.tx_bytes),
        rx_packets: s.map_or(0, |s| s.rx_packets),
        tx_packets: s.map_or(0, |s| s.tx_packets),
        rx_shed: s.map_or(0, |s| s.rx_shed),
        rx_control: s.map_or(0, |s| s.rx_control),
    }
}

/// An event as `crosslink events` shows it.
pub fn log_entry(e: &Event) -> LogEntry {
    LogEntry {
        seq: e.seq,
        at: humantime::format_rfc3339_millis(e.at).to_string(),
        kind: e.kind.as_str().to_owned(),
        path: e.path.clone(),
        message: e.message.clone(),
        by: e.by.clone(),
    }
}
