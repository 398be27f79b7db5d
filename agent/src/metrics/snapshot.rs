//! What the agent sees now, read from the status document at each scrape: one group of
//! families per thing observed (the agent, sites, paths, BFD and BGP sessions, tunnels),
//! each registering its families and filling them from its part of the document.

use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::control::proto::{
    BfdStatus, BgpStatus, Health, PathKind, PathStatus, SiteStatus, Status, TunnelStatus,
};

/// The status document as metric families.
pub(super) fn families(s: &Status) -> Vec<MetricFamily> {
    let r = Registry::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    agent(&r, s, now);
    let sites = Sites::new(&r);
    let paths = Paths::new(&r);
    let bfd = Bfd::new(&r);
    let bgp = Bgp::new(&r);
    let tunnels = Tunnels::new(&r);
    for site in &s.sites {
        let carrying: Vec<&str> = site
            .active_path
            .as_deref()
            .map(|a| a.split(", ").collect())
            .unwrap_or_default();
        sites.observe(site, &carrying);
        for p in &site.paths {
            paths.observe(&site.name, p, &carrying, now);
            for b in &p.bfd {
                bfd.observe(&p.name, b, now);
            }
            for n in &p.bgp {
                bgp.observe(&p.name, n, now);
            }
            if let Some(t) = &p.tunnel {
                tunnels.observe(&p.name, t, now);
            }
        }
    }
    r.gather()
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

/// The agent itself: who it is, its version and when it started.
fn agent(r: &Registry, s: &Status, now: f64) {
    let g = &s.gateway;
    int_gauge(
        r,
        "crosslink_info",
        "The gateway this agent runs (always 1): its name, AS, router id and the agent's version.",
        &["gateway", "asn", "router_id", "version"],
    )
    .with_label_values(&[&g.name, &g.asn.to_string(), &g.router_id, &s.version])
    .set(1);
    gauge(
        r,
        "crosslink_start_time_seconds",
        "When the agent started, seconds since the epoch.",
        &[],
    )
    .with_label_values(&[] as &[&str])
    .set((now - s.uptime_seconds as f64).floor());
}

struct Sites {
    failed_over: IntGaugeVec,
    paths_up: IntGaugeVec,
}

impl Sites {
    fn new(r: &Registry) -> Sites {
        Sites {
            failed_over: int_gauge(
                r,
                "crosslink_site_failover_active",
                "1 when none of the site's active paths is a line (traffic on the tunnels, or nothing healthy).",
                &["site"],
            ),
            paths_up: int_gauge(
                r,
                "crosslink_site_paths_up",
                "How many of the site's paths are up.",
                &["site"],
            ),
        }
    }

    fn observe(&self, site: &SiteStatus, carrying: &[&str]) {
        let name = site.name.as_str();
        let on_line = site
            .paths
            .iter()
            .any(|p| p.kind == PathKind::Line && carrying.contains(&p.name.as_str()));
        self.failed_over
            .with_label_values(&[name])
            .set(flag(site.active_path.is_some() && !on_line));
        self.paths_up
            .with_label_values(&[name])
            .set(site.paths.iter().filter(|p| p.state == Health::Up).count() as i64);
    }
}

struct Paths {
    up: IntGaugeVec,
    admitted: IntGaugeVec,
    active: IntGaugeVec,
    penalty: GaugeVec,
    held: IntGaugeVec,
    hold: GaugeVec,
    suppressed: IntGaugeVec,
    suppressed_left: GaugeVec,
    operator: IntGaugeVec,
    test_left: GaugeVec,
    changed: GaugeVec,
}

/// Every path family has these labels, so that any two can be joined.
const PATH: &[&str] = &["site", "path", "kind"];

impl Paths {
    fn new(r: &Registry) -> Paths {
        let site_path = PATH;
        Paths {
            up: int_gauge(
                r,
                "crosslink_path_up",
                "1 when every signal of the path is up.",
                PATH,
            ),
            admitted: int_gauge(
                r,
                "crosslink_path_admitted",
                "1 when the policy lets the path carry traffic (not held down, suppressed, drained or failed over by the operator).",
                site_path,
            ),
            active: int_gauge(
                r,
                "crosslink_path_active",
                "1 when the path carries the site's traffic.",
                site_path,
            ),
            penalty: gauge(
                r,
                "crosslink_path_damping_penalty",
                "Flap damping penalty now (decays with the half-life).",
                site_path,
            ),
            held: int_gauge(
                r,
                "crosslink_path_held_down",
                "1 while a healed path waits out its hold-down before it may carry traffic.",
                site_path,
            ),
            hold: gauge(
                r,
                "crosslink_path_hold_down_remaining_seconds",
                "Time until a healed path may carry traffic again (0 when none is running).",
                site_path,
            ),
            suppressed: int_gauge(
                r,
                "crosslink_path_suppressed",
                "1 while flap damping keeps the path out of service, whatever its signals say.",
                site_path,
            ),
            suppressed_left: gauge(
                r,
                "crosslink_path_suppressed_remaining_seconds",
                "Time until damping releases the path at the latest (0 when not suppressed).",
                site_path,
            ),
            operator: int_gauge(
                r,
                "crosslink_path_operator_mark",
                "1 for the operator's mark on the path (failover, draining, drained).",
                &["site", "path", "kind", "mark"],
            ),
            test_left: gauge(
                r,
                "crosslink_path_operator_test_remaining_seconds",
                "Time until the operator's timed test (`failover --for`, `drain --for`) ends by itself (0 when none runs).",
                site_path,
            ),
            changed: gauge(
                r,
                "crosslink_path_last_change_timestamp_seconds",
                "When the path's state (up, down, unknown) last changed, seconds since the epoch (the agent's start at the earliest).",
                site_path,
            ),
        }
    }

    fn observe(&self, site: &str, p: &PathStatus, carrying: &[&str], now: f64) {
        let kind = match p.kind {
            PathKind::Line => "line",
            PathKind::Tunnel => "tunnel",
        };
        let labels = [site, p.name.as_str(), kind];
        self.up
            .with_label_values(&labels)
            .set(flag(p.state == Health::Up));
        if let Some(s) = p.state_seconds {
            self.changed
                .with_label_values(&labels)
                .set((now - s as f64).floor());
        }
        self.active
            .with_label_values(&labels)
            .set(flag(carrying.contains(&p.name.as_str())));
        let Some(pol) = &p.policy else { return };
        self.admitted
            .with_label_values(&labels)
            .set(flag(pol.admitted));
        self.penalty.with_label_values(&labels).set(pol.penalty);
        self.held
            .with_label_values(&labels)
            .set(flag(pol.hold_down_seconds.is_some()));
        self.hold
            .with_label_values(&labels)
            .set(pol.hold_down_seconds.unwrap_or(0.0));
        self.suppressed
            .with_label_values(&labels)
            .set(flag(pol.suppressed_seconds.is_some()));
        self.suppressed_left
            .with_label_values(&labels)
            .set(pol.suppressed_seconds.unwrap_or(0.0));
        for mark in ["failover", "draining", "drained"] {
            self.operator
                .with_label_values(&[site, &p.name, kind, mark])
                .set(flag(pol.operator == mark));
        }
        self.test_left
            .with_label_values(&labels)
            .set(pol.operator_seconds_left.unwrap_or(0.0));
    }
}

struct Bfd {
    up: IntGaugeVec,
    uptime: IntGaugeVec,
    changed: GaugeVec,
    unanswered: IntGaugeVec,
    rtt: GaugeVec,
    loss: GaugeVec,
    detect: GaugeVec,
    tx_gap: GaugeVec,
    stall_graces: IntCounterVec,
}

impl Bfd {
    fn new(r: &Registry) -> Bfd {
        let labels = &["path", "neighbor", "kind"];
        Bfd {
            up: int_gauge(
                r,
                "crosslink_bfd_session_up",
                "1 when the BFD session is Up.",
                labels,
            ),
            uptime: int_gauge(
                r,
                "crosslink_bfd_session_uptime_seconds",
                "How long the BFD session has been Up (0 when it is not).",
                labels,
            ),
            changed: gauge(
                r,
                "crosslink_bfd_session_last_change_timestamp_seconds",
                "When the BFD session's state last changed, seconds since the epoch (absent before the first change).",
                labels,
            ),
            unanswered: int_gauge(
                r,
                "crosslink_bfd_session_unanswered",
                "1 when the peer has not sent one BFD packet since the session started (BFD not configured on it?).",
                labels,
            ),
            rtt: gauge(
                r,
                "crosslink_bfd_rtt_seconds",
                "Measured BFD round-trip time.",
                labels,
            ),
            loss: gauge(
                r,
                "crosslink_bfd_loss_ratio",
                "Fraction of the peer's BFD packets lost over the loss window.",
                labels,
            ),
            detect: gauge(
                r,
                "crosslink_bfd_detection_time_seconds",
                "Negotiated BFD detection time.",
                labels,
            ),
            tx_gap: gauge(
                r,
                "crosslink_bfd_transmit_gap_p99_seconds",
                "99th percentile gap between our periodic BFD transmissions (last 4,096); near the \
                 detection time, our own sender is starved.",
                labels,
            ),
            stall_graces: counter(
                r,
                "crosslink_bfd_stall_graces_total",
                "Detections that waited once because the BFD thread itself had been stalled (woken a \
                 millisecond or more late: a busy CPU, a paused vCPU); each a Down our own stall would have faked.",
                labels,
            ),
        }
    }

    fn observe(&self, path: &str, b: &BfdStatus, now: f64) {
        let l = [path, b.neighbor.as_str(), b.kind.as_str()];
        self.up.with_label_values(&l).set(flag(b.state == "Up"));
        self.uptime
            .with_label_values(&l)
            .set(b.up_seconds.unwrap_or(0) as i64);
        if let Some(s) = b.state_seconds {
            self.changed
                .with_label_values(&l)
                .set((now - s as f64).floor());
        }
        self.unanswered
            .with_label_values(&l)
            .set(flag(b.unanswered));
        for (family, ms) in [
            (&self.rtt, b.rtt_ms),
            (&self.detect, b.detection_ms),
            (&self.tx_gap, b.tx_gap_p99_ms),
        ] {
            if let Some(v) = ms {
                family.with_label_values(&l).set(v / 1000.0);
            }
        }
        if let Some(v) = b.loss {
            self.loss.with_label_values(&l).set(v);
        }
        self.stall_graces
            .with_label_values(&l)
            .inc_by(b.stall_graces);
    }
}

struct Bgp {
    up: IntGaugeVec,
    uptime: IntGaugeVec,
    changed: GaugeVec,
    received: IntGaugeVec,
    advertised: IntGaugeVec,
    rejected: IntCounterVec,
    sent_msgs: IntCounterVec,
    received_msgs: IntCounterVec,
}

impl Bgp {
    fn new(r: &Registry) -> Bgp {
        let labels = &["path", "neighbor"];
        let session = &["path", "neighbor", "peer_as"];
        let messages = &["path", "neighbor", "type"];
        Bgp {
            up: int_gauge(
                r,
                "crosslink_bgp_session_established",
                "1 when the BGP session is Established.",
                session,
            ),
            uptime: int_gauge(
                r,
                "crosslink_bgp_session_uptime_seconds",
                "How long the BGP session has been Established (0 when it is not).",
                session,
            ),
            changed: gauge(
                r,
                "crosslink_bgp_session_last_change_timestamp_seconds",
                "When the BGP session last came up or went down, seconds since the epoch (absent before either).",
                session,
            ),
            received: int_gauge(
                r,
                "crosslink_bgp_prefixes_received",
                "Prefixes accepted from the neighbour, by address family.",
                &["path", "neighbor", "afi"],
            ),
            sent_msgs: counter(
                r,
                "crosslink_bgp_messages_sent_total",
                "BGP messages sent to the neighbour, by type (open, update, notification, keepalive, route-refresh).",
                messages,
            ),
            received_msgs: counter(
                r,
                "crosslink_bgp_messages_received_total",
                "BGP messages received from the neighbour, by type (open, update, notification, keepalive, route-refresh).",
                messages,
            ),
            advertised: int_gauge(
                r,
                "crosslink_bgp_prefixes_advertised",
                "Prefixes announced to the neighbour.",
                labels,
            ),
            rejected: counter(
                r,
                "crosslink_bgp_prefixes_rejected_total",
                "Prefixes the neighbour sent that the import filter refused, by reason (outside-site, too-specific, default-route, max-prefix, malformed, first-as, as-loop, next-hop-self).",
                &["path", "neighbor", "reason"],
            ),
        }
    }

    fn observe(&self, line: &str, n: &BgpStatus, now: f64) {
        let l = [line, n.neighbor.as_str()];
        let peer_as = n.peer_as.map(|a| a.to_string()).unwrap_or_default();
        let session = [line, n.neighbor.as_str(), peer_as.as_str()];
        self.up
            .with_label_values(&session)
            .set(flag(n.state == "Established"));
        self.uptime
            .with_label_values(&session)
            .set(n.established_seconds.unwrap_or(0) as i64);
        if let Some(s) = n.state_seconds {
            self.changed
                .with_label_values(&session)
                .set((now - s as f64).floor());
        }
        // Both families always: a family with nothing learned reads 0, not absent.
        for afi in ["ipv4", "ipv6"] {
            let count = n.received_by_afi.get(afi).copied().unwrap_or(0);
            self.received
                .with_label_values(&[l[0], l[1], afi])
                .set(count as i64);
        }
        for (family, counts) in [
            (&self.sent_msgs, &n.messages_sent),
            (&self.received_msgs, &n.messages_received),
        ] {
            for (kind, count) in counts {
                family
                    .with_label_values(&[l[0], l[1], kind.as_str()])
                    .inc_by(*count);
            }
        }
        self.advertised
            .with_label_values(&l)
            .set(n.prefixes_advertised as i64);
        for (reason, count) in &n.rejected_by_reason {
            self.rejected
                .with_label_values(&[l[0], l[1], reason.as_str()])
                .inc_by(*count);
        }
    }
}

struct Tunnels {
    running: IntGaugeVec,
    rx_bytes: IntCounterVec,
    tx_bytes: IntCounterVec,
    rx_packets: IntCounterVec,
    tx_packets: IntCounterVec,
    shed: IntCounterVec,
    control: IntCounterVec,
    handshake: GaugeVec,
}

impl Tunnels {
    fn new(r: &Registry) -> Tunnels {
        let labels = &["path"];
        Tunnels {
            running: int_gauge(
                r,
                "crosslink_tunnel_running",
                "1 when the tunnel's device and socket are up (its handshake is another matter).",
                labels,
            ),
            rx_bytes: counter(
                r,
                "crosslink_tunnel_receive_bytes_total",
                "WireGuard datagram payload bytes received.",
                labels,
            ),
            tx_bytes: counter(
                r,
                "crosslink_tunnel_transmit_bytes_total",
                "WireGuard datagram payload bytes sent.",
                labels,
            ),
            rx_packets: counter(
                r,
                "crosslink_tunnel_receive_packets_total",
                "WireGuard datagrams received.",
                labels,
            ),
            tx_packets: counter(
                r,
                "crosslink_tunnel_transmit_packets_total",
                "WireGuard datagrams sent.",
                labels,
            ),
            shed: counter(
                r,
                "crosslink_tunnel_receive_shed_packets_total",
                "Received packets dropped because they waited too long in the tunnel's queue (more arrived than the host could decrypt and deliver); BFD is never among them.",
                labels,
            ),
            control: counter(
                r,
                "crosslink_tunnel_receive_control_packets_total",
                "Received datagrams the real-time path took: network control (BFD) the far end marked, delivered ahead of the bulk.",
                labels,
            ),
            handshake: gauge(
                r,
                "crosslink_tunnel_last_handshake_timestamp_seconds",
                "When the last WireGuard handshake completed, seconds since the epoch (absent before the first).",
                labels,
            ),
        }
    }

    fn observe(&self, tunnel: &str, t: &TunnelStatus, now: f64) {
        let l = [tunnel];
        self.running.with_label_values(&l).set(flag(t.running));
        for (family, value) in [
            (&self.rx_bytes, t.rx_bytes),
            (&self.tx_bytes, t.tx_bytes),
            (&self.rx_packets, t.rx_packets),
            (&self.tx_packets, t.tx_packets),
            (&self.shed, t.rx_shed),
            (&self.control, t.rx_control),
        ] {
            family.with_label_values(&l).inc_by(value);
        }
        if let Some(age) = t.handshake_age_seconds {
            self.handshake
                .with_label_values(&l)
                .set((now - age as f64).floor());
        }
    }
}
