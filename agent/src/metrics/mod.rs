//! Prometheus metrics. Two kinds: what happens between scrapes (path transitions,
//! failovers, how long a switch took) is counted as it happens in `Recorder`, so a flap
//! between two scrapes is never missed; what the agent sees now (path, BFD, BGP and tunnel
//! state) is read from the status document at each scrape, so it can never disagree with
//! `crosslink status`.

pub mod http;

use prometheus::proto::MetricFamily;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::control::proto::{Health, PathKind, Status};

/// Why a path left service or what moved a site's traffic, as a bounded label value: the
/// signal that failed (`carrier`, `bfd`, `bgp`, `e2e-bfd`, `handshake`), `loss` (degraded),
/// `operator`, `healthy` (back in service) or `other`.
pub type Reason = &'static str;

/// Switch times, from half a millisecond to seconds: a nexthop group replace takes well
/// under a millisecond; anything near a second means netlink or the agent was stuck.
const SWITCH_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A count the engine made as things happened; the supervisor applies it to the
/// `Recorder` (the engine has no metrics of its own, and a replay compares them).
#[derive(Debug, Clone, PartialEq)]
pub enum Count {
    /// A path (`kind` line or tunnel) left service (`up` false) or came back.
    Transition {
        path: String,
        kind: &'static str,
        up: bool,
        reason: Reason,
    },
    /// A site's traffic moved off its lines.
    Failover { site: String, reason: Reason },
    /// From the decision that moved a site's traffic to the kernel forwarding on it.
    Switched {
        site: String,
        took: std::time::Duration,
    },
}

/// The metrics counted as things happen.
#[derive(Clone)]
pub struct Recorder {
    registry: Registry,
    transitions: IntCounterVec,
    failovers: IntCounterVec,
    switch: HistogramVec,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        let registry = Registry::new();
        let transitions = IntCounterVec::new(
            Opts::new(
                "crosslink_path_transitions_total",
                "Paths entering or leaving service, by the reason (failed signal, loss, operator, return); a path out of service that fails again (charged another flap penalty) counts as leaving it again.",
            ),
            &["path", "kind", "to", "reason"],
        )
        .expect("valid metric");
        let failovers = IntCounterVec::new(
            Opts::new(
                "crosslink_failovers_total",
                "Moves of a site's traffic off its lines onto the tunnels (or to nothing healthy), by reason.",
            ),
            &["site", "reason"],
        )
        .expect("valid metric");
        let switch = HistogramVec::new(
            HistogramOpts::new(
                "crosslink_failover_duration_seconds",
                "From the signal change that moved a site's traffic to the kernel forwarding on the new paths (detection time not included).",
            )
            .buckets(SWITCH_BUCKETS.to_vec()),
            &["site"],
        )
        .expect("valid metric");
        for m in [
            Box::new(transitions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failovers.clone()),
            Box::new(switch.clone()),
        ] {
            registry.register(m).expect("names are distinct");
        }
        Recorder {
            registry,
            transitions,
            failovers,
            switch,
        }
    }

    /// A path (`kind` line or tunnel) left service (`up` false) or came back.
    pub fn transition(&self, path: &str, kind: &str, up: bool, reason: Reason) {
        let to = if up { "up" } else { "down" };
        self.transitions
            .with_label_values(&[path, kind, to, reason])
            .inc();
    }

    /// Transitions of `path` to `to` ("up" or "down") counted so far, for every reason.
    #[cfg(test)]
    pub(crate) fn transitions_of(&self, path: &str, to: &str) -> u64 {
        use prometheus::core::Collector;
        self.transitions
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .filter(|m| {
                let has = |k: &str, v: &str| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == k && l.value() == v)
                };
                has("path", path) && has("to", to)
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    pub fn failover(&self, site: &str, reason: Reason) {
        self.failovers.with_label_values(&[site, reason]).inc();
    }

    pub fn switched(&self, site: &str, took: std::time::Duration) {
        self.switch
            .with_label_values(&[site])
            .observe(took.as_secs_f64());
    }

    pub fn count(&self, c: &Count) {
        match c {
            Count::Transition {
                path,
                kind,
                up,
                reason,
            } => self.transition(path, kind, *up, reason),
            Count::Failover { site, reason } => self.failover(site, reason),
            Count::Switched { site, took } => self.switched(site, *took),
        }
    }

    fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }
}

/// The scrape: the counted metrics and a snapshot of `status`, in the text format.
pub fn render(recorder: &Recorder, status: &Status) -> String {
    let mut families = recorder.gather();
    families.extend(snapshot(status));
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = String::new();
    if let Err(e) = TextEncoder::new().encode_utf8(&families, &mut out) {
        tracing::error!(error = %e, "encoding metrics");
    }
    out
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("distinct");
    g
}

fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("distinct");
    g
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("distinct");
    c
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// What the agent sees now, as metric families.
fn snapshot(s: &Status) -> Vec<MetricFamily> {
    let r = Registry::new();
    let build = int_gauge(
        &r,
        "crosslink_build_info",
        "The running agent's version (always 1).",
        &["version"],
    );
    build.with_label_values(&[&s.version]).set(1);
    let uptime = gauge(
        &r,
        "crosslink_start_time_seconds",
        "When the agent started, seconds since the epoch.",
        &[],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    uptime
        .with_label_values(&[] as &[&str])
        .set((now - s.uptime_seconds as f64).floor());
    let path_up = int_gauge(
        &r,
        "crosslink_path_up",
        "1 when every signal of the path is up.",
        &["site", "path", "kind"],
    );
    let admitted = int_gauge(
        &r,
        "crosslink_path_admitted",
        "1 when the policy lets the path carry traffic (not held down, suppressed, drained or failed over by the operator).",
        &["site", "path"],
    );
    let active = int_gauge(
        &r,
        "crosslink_path_active",
        "1 when the path carries the site's traffic.",
        &["site", "path"],
    );
    let penalty = gauge(
        &r,
        "crosslink_path_damping_penalty",
        "Flap damping penalty now (decays with the half-life).",
        &["site", "path"],
    );
    let hold = gauge(
        &r,
        "crosslink_path_hold_down_remaining_seconds",
        "Time until a healed path may carry traffic again (0 when none is running).",
        &["site", "path"],
    );
    let suppressed = gauge(
        &r,
        "crosslink_path_suppressed_remaining_seconds",
        "Time until damping releases the path at the latest (0 when not suppressed).",
        &["site", "path"],
    );
    let operator = int_gauge(
        &r,
        "crosslink_path_operator_mark",
        "1 for the operator's mark on the path (failover, draining, drained).",
        &["site", "path", "mark"],
    );
    let failed_over = int_gauge(
        &r,
        "crosslink_site_failover_active",
        "1 when none of the site's active paths is a line (traffic on the tunnels, or nothing healthy).",
        &["site"],
    );
    let paths_up = int_gauge(
        &r,
        "crosslink_site_paths_up",
        "How many of the site's paths are up.",
        &["site"],
    );
    let bfd_up = int_gauge(
        &r,
        "crosslink_bfd_session_up",
        "1 when the BFD session is Up.",
        &["path", "neighbor", "kind"],
    );
    let bfd_unanswered = int_gauge(
        &r,
        "crosslink_bfd_session_unanswered",
        "1 when the peer has not sent one BFD packet since the session started (BFD not configured on it?).",
        &["path", "neighbor", "kind"],
    );
    let bfd_rtt = gauge(
        &r,
        "crosslink_bfd_rtt_seconds",
        "Measured BFD round-trip time.",
        &["path", "neighbor", "kind"],
    );
    let bfd_loss = gauge(
        &r,
        "crosslink_bfd_loss_ratio",
        "Fraction of the peer's BFD packets lost over the loss window.",
        &["path", "neighbor", "kind"],
    );
    let bfd_detect = gauge(
        &r,
        "crosslink_bfd_detection_time_seconds",
        "Negotiated BFD detection time.",
        &["path", "neighbor", "kind"],
    );
    let bfd_tx_gap = gauge(
        &r,
        "crosslink_bfd_transmit_gap_p99_seconds",
        "99th percentile gap between our periodic BFD transmissions (last 4,096); near the \
         detection time, our own sender is starved.",
        &["path", "neighbor", "kind"],
    );
    let bgp_up = int_gauge(
        &r,
        "crosslink_bgp_session_established",
        "1 when the BGP session is Established.",
        &["line", "neighbor"],
    );
    let bgp_rx = int_gauge(
        &r,
        "crosslink_bgp_prefixes_received",
        "Prefixes accepted from the neighbour.",
        &["line", "neighbor"],
    );
    let bgp_tx = int_gauge(
        &r,
        "crosslink_bgp_prefixes_advertised",
        "Prefixes announced to the neighbour.",
        &["line", "neighbor"],
    );
    let bgp_rejected = counter(
        &r,
        "crosslink_bgp_prefixes_rejected_total",
        "Prefixes the neighbour sent that the import filter refused, by reason (outside-site, too-specific, default-route, max-prefix, malformed, first-as, as-loop, next-hop-self).",
        &["line", "neighbor", "reason"],
    );
    let tun_running = int_gauge(
        &r,
        "crosslink_tunnel_running",
        "1 when the tunnel's device and socket are up (its handshake is another matter).",
        &["tunnel"],
    );
    let tun_rx = counter(
        &r,
        "crosslink_tunnel_receive_bytes_total",
        "WireGuard datagram payload bytes received.",
        &["tunnel"],
    );
    let tun_tx = counter(
        &r,
        "crosslink_tunnel_transmit_bytes_total",
        "WireGuard datagram payload bytes sent.",
        &["tunnel"],
    );
    let tun_rxp = counter(
        &r,
        "crosslink_tunnel_receive_packets_total",
        "WireGuard datagrams received.",
        &["tunnel"],
    );
    let tun_txp = counter(
        &r,
        "crosslink_tunnel_transmit_packets_total",
        "WireGuard datagrams sent.",
        &["tunnel"],
    );
    let tun_shed = counter(
        &r,
        "crosslink_tunnel_receive_shed_packets_total",
        "Received packets dropped because they waited too long in the tunnel's queue (more arrived than the host could decrypt and deliver); BFD is never among them.",
        &["tunnel"],
    );
    let handshake = gauge(
        &r,
        "crosslink_tunnel_last_handshake_timestamp_seconds",
        "When the last WireGuard handshake completed, seconds since the epoch (absent before the first).",
        &["tunnel"],
    );

    for site in &s.sites {
        let name = site.name.as_str();
        let carrying: Vec<&str> = site
            .active_path
            .as_deref()
            .map(|a| a.split(", ").collect())
            .unwrap_or_default();
        // Failed over: none of the active paths is a line.
        let on_line = site
            .paths
            .iter()
            .any(|p| p.kind == PathKind::Line && carrying.contains(&p.name.as_str()));
        failed_over
            .with_label_values(&[name])
            .set(flag(site.active_path.is_some() && !on_line));
        paths_up
            .with_label_values(&[name])
            .set(site.paths.iter().filter(|p| p.state == Health::Up).count() as i64);
        for p in &site.paths {
            let kind = match p.kind {
                PathKind::Line => "line",
                PathKind::Tunnel => "tunnel",
            };
            let labels = [name, p.name.as_str()];
            path_up
                .with_label_values(&[name, &p.name, kind])
                .set(flag(p.state == Health::Up));
            active
                .with_label_values(&labels)
                .set(flag(carrying.contains(&p.name.as_str())));
            if let Some(pol) = &p.policy {
                admitted.with_label_values(&labels).set(flag(pol.admitted));
                penalty.with_label_values(&labels).set(pol.penalty);
                hold.with_label_values(&labels)
                    .set(pol.hold_down_seconds.unwrap_or(0.0));
                suppressed
                    .with_label_values(&labels)
                    .set(pol.suppressed_seconds.unwrap_or(0.0));
                for mark in ["failover", "draining", "drained"] {
                    operator
                        .with_label_values(&[name, &p.name, mark])
                        .set(flag(pol.operator == mark));
                }
            }
            for b in &p.bfd {
                let l = [p.name.as_str(), b.neighbor.as_str(), b.kind.as_str()];
                bfd_up.with_label_values(&l).set(flag(b.state == "Up"));
                bfd_unanswered.with_label_values(&l).set(flag(b.unanswered));
                if let Some(v) = b.rtt_ms {
                    bfd_rtt.with_label_values(&l).set(v / 1000.0);
                }
                if let Some(v) = b.loss {
                    bfd_loss.with_label_values(&l).set(v);
                }
                if let Some(v) = b.detection_ms {
                    bfd_detect.with_label_values(&l).set(v / 1000.0);
                }
                if let Some(v) = b.tx_gap_p99_ms {
                    bfd_tx_gap.with_label_values(&l).set(v / 1000.0);
                }
            }
            for n in &p.bgp {
                let l = [p.name.as_str(), n.neighbor.as_str()];
                bgp_up
                    .with_label_values(&l)
                    .set(flag(n.state == "Established"));
                bgp_rx.with_label_values(&l).set(n.prefixes_received as i64);
                bgp_tx
                    .with_label_values(&l)
                    .set(n.prefixes_advertised as i64);
                for (reason, count) in &n.rejected_by_reason {
                    bgp_rejected
                        .with_label_values(&[l[0], l[1], reason.as_str()])
                        .inc_by(*count);
                }
            }
            if let Some(t) = &p.tunnel {
                let l = [p.name.as_str()];
                tun_running.with_label_values(&l).set(flag(t.running));
                tun_rx.with_label_values(&l).inc_by(t.rx_bytes);
                tun_tx.with_label_values(&l).inc_by(t.tx_bytes);
                tun_rxp.with_label_values(&l).inc_by(t.rx_packets);
                tun_txp.with_label_values(&l).inc_by(t.tx_packets);
                tun_shed.with_label_values(&l).inc_by(t.rx_shed);
                if let Some(age) = t.handshake_age_seconds {
                    handshake
                        .with_label_values(&l)
                        .set((now - age as f64).floor());
                }
            }
        }
    }
    r.gather()
}

#[cfg(test)]
mod tests;
