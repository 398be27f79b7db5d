//! Prometheus metrics. Two kinds: what happens between scrapes (path transitions,
//! failovers, how long a switch took) is counted as it happens in `Recorder`, so a flap
//! between two scrapes is never missed; what the agent sees now (path, BFD, BGP and tunnel
//! state) is read from the status document at each scrape, so it can never disagree with
//! `crosslink status`.

pub mod http;
mod snapshot;

use prometheus::proto::MetricFamily;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

use crate::control::proto::Status;

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
    /// An operator's command or a reload, `accepted` or `refused`, and who asked.
    Command {
        command: &'static str,
        user: String,
        result: &'static str,
    },
    /// A path's signals went down (`reason`: the signal, or `loss`), whether or not it was
    /// in service: each flap, also while damping keeps the path out.
    Down {
        path: String,
        kind: &'static str,
        reason: Reason,
    },
    /// Kernel objects the FIB programmer put back (see `routing::Programmed::repaired`).
    FibRepair { what: &'static str, n: u64 },
    /// A reload's outcome (a config put in force, or refused), at `at` (Unix seconds).
    Reloaded { ok: bool, at: f64 },
}

/// The metrics counted as things happen.
#[derive(Clone)]
pub struct Recorder {
    registry: Registry,
    transitions: IntCounterVec,
    failovers: IntCounterVec,
    switch: HistogramVec,
    commands: IntCounterVec,
    downs: IntCounterVec,
    repairs: IntCounterVec,
    reload_ok: prometheus::IntGauge,
    reload_at: prometheus::Gauge,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        let registry = Registry::new();
        let transitions = counter("crosslink_path_transitions_total", "Paths entering or leaving service, by the reason (failed signal, loss, operator, return); a path out of service that fails again (charged another flap penalty) counts as leaving it again.", &["path", "kind", "to", "reason"]);
        let failovers = counter("crosslink_failovers_total", "Moves of a site's traffic off its lines onto the tunnels (or to nothing healthy), by reason.", &["site", "reason"]);
        let switch = HistogramVec::new(
            HistogramOpts::new(
                "crosslink_failover_duration_seconds",
                "From the signal change that moved a site's traffic to the kernel forwarding on the new paths (detection time not included).",
            )
            .buckets(SWITCH_BUCKETS.to_vec()),
            &["site"],
        )
        .expect("valid metric");
        let commands = counter("crosslink_operator_commands_total", "Operators' commands and reloads, by command, user (or SIGHUP) and result (accepted, refused).", &["command", "user", "result"]);
        let downs = counter("crosslink_path_downs_total", "Each time a path's signals went down, in service or not (every flap, also while damping keeps it out), by the signal that failed or loss; the operator's actions are not counted.", &["path", "kind", "reason"]);
        let repairs = counter("crosslink_fib_repairs_total", "Kernel objects someone else deleted or changed that the agent put back: group, nexthop, route, stray-route, stray-nexthop.", &["what"]);
        let reload_ok = prometheus::IntGauge::new(
            "crosslink_config_last_reload_successful",
            "1 when the last reload (or the start) put its config in force, 0 when it was refused.",
        )
        .expect("valid metric");
        let reload_at = prometheus::Gauge::new(
            "crosslink_config_last_reload_success_timestamp_seconds",
            "When a config was last put in force (the start or a reload), seconds since the epoch.",
        )
        .expect("valid metric");
        reload_ok.set(1);
        reload_at.set(unix_now().floor());
        for m in [
            Box::new(transitions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failovers.clone()),
            Box::new(switch.clone()),
            Box::new(commands.clone()),
            Box::new(downs.clone()),
            Box::new(repairs.clone()),
            Box::new(reload_ok.clone()),
            Box::new(reload_at.clone()),
        ] {
            registry.register(m).expect("names are distinct");
        }
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, …:
        // what node_exporter users expect of every daemon.
        let process = prometheus::process_collector::ProcessCollector::for_self();
        registry
            .register(Box::new(process))
            .expect("names are distinct");
        Recorder {
            registry,
            transitions,
            failovers,
            switch,
            commands,
            downs,
            repairs,
            reload_ok,
            reload_at,
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

    /// A reload asked by `user` (or `SIGHUP`): a command, and the config's status.
    pub fn reload(&self, user: &str, ok: bool) {
        self.count(&Count::Command {
            command: "reload",
            user: user.to_owned(),
            result: if ok { "accepted" } else { "refused" },
        });
        self.count(&Count::Reloaded { ok, at: unix_now() });
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
            Count::Command {
                command,
                user,
                result,
            } => self
                .commands
                .with_label_values(&[command, user.as_str(), result])
                .inc(),
            Count::Down { path, kind, reason } => self
                .downs
                .with_label_values(&[path.as_str(), kind, reason])
                .inc(),
            Count::FibRepair { what, n } => self.repairs.with_label_values(&[what]).inc_by(*n),
            Count::Reloaded { ok, at } => {
                self.reload_ok.set(i64::from(*ok));
                if *ok {
                    self.reload_at.set(at.floor());
                }
            }
        }
    }

    fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

/// The scrape: the counted metrics and a snapshot of `status`, in the text format.
pub fn render(recorder: &Recorder, status: &Status) -> String {
    let mut families = recorder.gather();
    families.extend(snapshot::families(status));
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = String::new();
    if let Err(e) = TextEncoder::new().encode_utf8(&families, &mut out) {
        tracing::error!(error = %e, "encoding metrics");
    }
    out
}

#[cfg(test)]
mod tests;
