//! The control socket protocol: one JSON object per line each way. A request names a
//! `command`; the reply is `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`.
//! The `status` result is the documented schema behind `crosslink status --json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to the status document.
pub const STATUS_SCHEMA: u32 = 1;
/// Longest request line the agent reads; anything longer is refused, not buffered.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    Status,
    /// What the agent has asked the kernel for, per site, and whether the kernel has it.
    Routes,
    /// The transition log; with `since`, only the events numbered above it; with `by`,
    /// only the commands and reloads that user asked for.
    Events {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// `force` takes the last healthy line out too (refused otherwise).
    Failover {
        path: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
        /// A timed test: back by itself after this many seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        for_seconds: Option<u64>,
    },
    Restore {
        path: String,
    },
    Drain {
        path: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        for_seconds: Option<u64>,
    },
    Undrain {
        path: String,
    },
    /// Re-read the config file and apply it, as SIGHUP does; the reply says what changed,
    /// or carries the file's errors (FILE:LINE:COLUMN) when the new config is refused.
    Reload,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn ok(result: impl Serialize) -> Reply {
        match serde_json::to_value(result) {
            Ok(v) => Reply {
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => Reply::err(format!("internal error encoding the reply: {e}")),
        }
    }

    pub fn err(msg: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            result: None,
            error: Some(msg.into()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub schema: u32,
    pub version: String,
    pub gateway: GatewayStatus,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub uptime_seconds: u64,
    pub config_file: String,
    pub sites: Vec<SiteStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayStatus {
    pub name: String,
    pub asn: u32,
    pub router_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteStatus {
    pub name: String,
    pub prefixes: Vec<String>,
    /// The path carrying the site's traffic, when the agent knows it.
    pub active_path: Option<String>,
    pub active_reason: String,
    /// Where the fallback routes send the traffic if the active paths all lose their link
    /// at once (until the agent has moved the site); none when no other path is healthy.
    #[serde(default)]
    pub fallback_path: Option<String>,
    /// Distinct prefixes learned over BGP on the site's lines.
    pub learned_prefixes: usize,
    pub paths: Vec<PathStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    Line,
    Tunnel,
}

/// Health of a path or of one signal, as the core judges it (the same words on the wire).
pub use crate::core::signals::Health;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathStatus {
    pub name: String,
    pub kind: PathKind,
    pub interface: String,
    /// Lines: lower wins. Tunnels: share of failover traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
    pub state: Health,
    /// How long it has been in this state (since the agent started, at most).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_seconds: Option<u64>,
    pub reason: String,
    pub signals: Vec<SignalStatus>,
    /// Lines: one BGP session per neighbour address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bgp: Vec<BgpStatus>,
    /// Single-hop sessions with the line router, and the end-to-end session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bfd: Vec<BfdStatus>,
    /// Tunnels: the WireGuard side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelStatus>,
    /// The policy's verdict: whether the path may carry traffic, and what holds it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// May carry traffic (the selection picks among the admitted paths).
    pub admitted: bool,
    /// Why not, when it is not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_down_seconds: Option<f64>,
    /// Flap penalty now (RFC 2439 style; decays with the half-life).
    pub penalty: f64,
    /// Failures charged a penalty since the agent started (a path already out of service
    /// can fail again: each is a flap).
    #[serde(default)]
    pub flaps: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed_seconds: Option<f64>,
    pub degraded: bool,
    /// `none`, `failover`, `draining` or `drained`.
    pub operator: String,
    /// A timed test (`failover --for`): seconds until it ends by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_seconds_left: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TunnelStatus {
    /// False when the tunnel could not start (`error` says why).
    pub running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where the peer is reached now (a candidate from the config, or where it roamed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Seconds since the last completed handshake; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_age_seconds: Option<u64>,
    /// WireGuard datagram payloads, as `wg show` counts them.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Received packets dropped because the tunnel could not keep up (they waited in
    /// its queue too long); network control such as BFD is never among them.
    #[serde(default)]
    pub rx_shed: u64,
    /// Received datagrams the real-time path took: network control (BFD) marked by the
    /// far end, ahead of the bulk.
    #[serde(default)]
    pub rx_control: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BfdStatus {
    pub neighbor: String,
    /// `single-hop` (with the line router) or `end-to-end` (with the remote gateway).
    pub kind: String,
    /// RFC 5880 state, or `unknown` when the session could not start.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_diag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_diag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Fraction of the peer's packets lost over the policy's loss window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_seconds: Option<u64>,
    /// Since its state last changed (absent before the first change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_seconds: Option<u64>,
    /// 99th percentile and largest gap between our periodic transmissions (last 4,096):
    /// a gap near the detection time means our own sender is being starved, not the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_gap_p99_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_gap_max_ms: Option<f64>,
    /// Detections that waited once after the BFD thread itself was stalled (its wake-up
    /// late by a millisecond or more): each a Down that our own stall would have faked.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stall_graces: u64,
    /// Not one packet from the peer since the session started (see the path's reason).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unanswered: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BgpStatus {
    pub neighbor: String,
    /// RFC 4271 state name, or `unknown` before the session reported.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub established_seconds: Option<u64>,
    /// Since it last came up or went down (absent before either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_seconds: Option<u64>,
    pub prefixes_received: usize,
    pub prefixes_rejected: u64,
    /// The refusals by reason (`outside-site`, `too-specific`, `default-route`,
    /// `max-prefix`, `malformed`, `first-as`, `as-loop`, `next-hop-self`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub prefixes_advertised: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The neighbour's AS, as configured for the line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_as: Option<u32>,
    /// Prefixes accepted, by address family (`ipv4`, `ipv6`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub received_by_afi: BTreeMap<String, usize>,
    /// Messages sent and received since the session task started, by type (`open`,
    /// `update`, `notification`, `keepalive`, `route-refresh`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub messages_sent: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub messages_received: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignalStatus {
    /// `carrier`, `bfd`, `bgp`, `e2e-bfd`, `handshake`.
    pub name: String,
    pub state: Health,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogEntry {
    /// Numbers events from 1 in the order they happened, for `events --follow`.
    #[serde(default)]
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub message: String,
    /// Who asked, for an operator's command or a reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_by_command() {
        let r: Request = serde_json::from_str(r#"{"command":"drain","path":"line1"}"#).unwrap();
        assert_eq!(
            r,
            Request::Drain {
                path: "line1".into(),
                force: false,
                for_seconds: None
            }
        );
        let r: Request = serde_json::from_str(r#"{"command":"events"}"#).unwrap();
        assert_eq!(
            r,
            Request::Events {
                since: None,
                by: None
            }
        );
        assert_eq!(
            serde_json::to_string(&Request::Failover {
                path: "line1".into(),
                force: true,
                for_seconds: None
            })
            .unwrap(),
            r#"{"command":"failover","path":"line1","force":true}"#
        );
        let r: Request =
            serde_json::from_str(r#"{"command":"failover","path":"line1","for_seconds":300}"#)
                .unwrap();
        assert_eq!(
            r,
            Request::Failover {
                path: "line1".into(),
                force: false,
                for_seconds: Some(300)
            }
        );
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"command":"status"}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"reboot"}"#).is_err());
    }

    #[test]
    fn replies_carry_either_result_or_error() {
        let ok = serde_json::to_string(&Reply::ok(3)).unwrap();
        assert_eq!(ok, r#"{"ok":true,"result":3}"#);
        let err = serde_json::to_string(&Reply::err("no")).unwrap();
        assert_eq!(err, r#"{"ok":false,"error":"no"}"#);
    }
}
