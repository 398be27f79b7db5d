//! The policy engine: decides, from each path's raw signals and the operator's commands,
//! which paths count as healthy for the selection — sans-IO, on the time it is given, so
//! hours of flapping are simulated in milliseconds.
//!
//! - A path goes out at once: any signal down, its probes losing more than the threshold
//!   (degraded), or the operator's `failover`, or a `drain` after its delay.
//! - It comes back only once every signal has been up for `hold_down`, its prefixes have
//!   been re-learned, and its flap penalty allows it (see `damping`).
//! - When nothing in the site would be admitted, paths whose signals are up are used
//!   anyway (hold-down and damping protect a working alternative, never cause a blackhole);
//!   with nothing up at all, the selection keeps the last group (fail static).

pub mod damping;
mod persist;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_timed;
mod timed;
mod verdict;
pub use timed::{span, Timed};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::core::events::EventKind;
use crate::operator_state::Mark;
use crate::select::{Candidate, CandidateKind};
use verdict::verdict;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub hold_down: Duration,
    /// Loss over the window above which a path is degraded (0.0–1.0).
    pub loss_threshold: f64,
    pub drain_delay: Duration,
    pub damping: damping::Settings,
}

impl Settings {
    pub fn from_config(p: &crate::config::Policy) -> Settings {
        Settings {
            hold_down: p.hold_down.0,
            loss_threshold: *p.loss_threshold.get_ref(),
            drain_delay: p.drain_delay.0,
            damping: damping::Settings {
                penalty: f64::from(p.damping.penalty),
                half_life: p.damping.half_life.0,
                suppress: f64::from(*p.damping.suppress.get_ref()),
                reuse: f64::from(*p.damping.reuse.get_ref()),
                max_suppress: p.damping.max_suppress.0,
            },
        }
    }
}

/// What the signals say about one path right now, before any policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub name: String,
    pub kind: CandidateKind,
    /// Every signal is up.
    pub up: bool,
    /// See `Candidate::unproven`.
    pub unproven: bool,
    /// See `Candidate::draining`.
    pub draining: Option<String>,
    /// Why the path is not up (empty when it is).
    pub why: String,
    /// Probe loss over the policy window, where measured.
    pub loss: Option<f64>,
    /// A line's BGP sessions have re-learned their prefixes (always true for a tunnel).
    pub relearned: bool,
}

/// An operator command on a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Failover,
    Restore,
    Drain,
    Undrain,
}

impl Command {
    /// The CLI's word for it, also in logs, records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Failover => "failover",
            Command::Restore => "restore",
            Command::Drain => "drain",
            Command::Undrain => "undrain",
        }
    }

    /// The command `as_str` names.
    pub fn parse(name: &str) -> Option<Command> {
        [
            Command::Failover,
            Command::Restore,
            Command::Drain,
            Command::Undrain,
        ]
        .into_iter()
        .find(|c| c.as_str() == name)
    }
}

/// What the operator has asked of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Normal,
    /// `failover`: out until `restore`.
    Failover,
    /// `drain`: the far side has been told (our announcements made unattractive); our own
    /// traffic leaves at `until`.
    Draining {
        until: Instant,
    },
    Drained,
}

impl Operator {
    /// What to keep across a restart (nothing for `Normal`).
    fn mark(self) -> Option<Mark> {
        match self {
            Operator::Normal => None,
            Operator::Failover => Some(Mark::Failover),
            Operator::Draining { .. } => Some(Mark::Draining),
            Operator::Drained => Some(Mark::Drained),
        }
    }
}

/// How a line's announcements to the far side should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advertise {
    Normal,
    /// Drained: unattractive (AS-path prepend or withdrawal, per the line's config).
    Unattractive,
}

/// A transition worth an entry in the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEvent {
    pub kind: EventKind,
    pub path: String,
    pub message: String,
}

/// The policy's view of a path, for status.
/// A path out of service that was back up for less than this before going down again is
/// still in the failure that took it out (see `judge`).
const SAME_FAILURE: Duration = Duration::from_secs(1);

/// A path's standing with the policy, and why it is out of service when it is (the
/// selection's reason).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub policy: PathPolicy,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PathPolicy {
    pub admitted: bool,
    pub hold_down_left: Option<Duration>,
    pub penalty: f64,
    pub flaps: u64,
    pub suppressed_for: Option<Duration>,
    pub degraded: bool,
    pub operator: &'static str,
    /// Time left of the operator's timed test.
    pub operator_left: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Path {
    /// Every signal up, as last observed.
    up: bool,
    /// Since when the signals have been up without a break (and the loss below threshold).
    up_since: Option<Instant>,
    /// Went down since the agent started (or was not carrying traffic when the agent
    /// adopted the kernel's state): its return waits for the hold-down.
    held: bool,
    /// Its standing came from the previous run (see `restore`).
    restored: bool,
    degraded: bool,
    penalty: damping::Penalty,
    /// Failures charged to `penalty` since the agent started.
    flaps: u64,
    operator: Operator,
    /// When the operator's timed test ends (`failover --for`).
    ends: Option<timed::Ends>,
    admitted: bool,
    /// In service only because nothing else is admitted (see `waive_if_nothing_admitted`),
    /// and told so: the next pass that finds it so again says nothing.
    waived: bool,
    /// Why it is not admitted, as last decided.
    why: String,
}

impl Path {
    fn new(now: Instant) -> Path {
        Path {
            up: false,
            up_since: None,
            held: false,
            restored: false,
            degraded: false,
            penalty: damping::Penalty::new(now),
            flaps: 0,
            operator: Operator::Normal,
            ends: None,
            admitted: false,
            waived: false,
            why: String::new(),
        }
    }
}

pub struct Policy {
    settings: Settings,
    paths: BTreeMap<String, Path>,
    events: Vec<PolicyEvent>,
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.1} s")
    } else {
        format!("{:.0} s", s.ceil())
    }
}

impl Policy {
    pub fn new(settings: Settings) -> Policy {
        Policy {
            settings,
            paths: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    fn path(&mut self, name: &str, now: Instant) -> &mut Path {
        self.paths
            .entry(name.to_owned())
            .or_insert_with(|| Path::new(now))
    }

    fn event(&mut self, kind: EventKind, path: &str, message: String) {
        self.events.push(PolicyEvent {
            kind,
            path: path.to_owned(),
            message,
        });
    }

    /// A reload's settings, from the next evaluation on. Each path keeps its state: a
    /// hold-down running is measured against the new duration from where it started, a
    /// penalty decays and is judged by the new half-life and thresholds.
    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// Forgets the paths a reload removed (their marks with them).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.paths.retain(|name, _| keep(name));
    }

    /// An operator command, `timed` for a test that ends by itself; returns what it does,
    /// or why it is refused.
    pub fn command(
        &mut self,
        now: Instant,
        path: &str,
        cmd: Command,
        timed: Option<Timed>,
    ) -> Result<String, String> {
        let delay = self.settings.drain_delay;
        if timed.is_some() && matches!(cmd, Command::Restore | Command::Undrain) {
            return Err(format!(
                "`{}` takes no duration: only failover and drain are timed",
                cmd.as_str()
            ));
        }
        if timed.is_some_and(|t| t.lasting.is_zero()) {
            return Err("a timed test lasts at least a second".into());
        }
        if cmd == Command::Drain && timed.is_some_and(|t| t.lasting <= delay) {
            return Err(format!(
                "a drain for less than its delay ({}) would end before any traffic moved; give it longer",
                secs(delay)
            ));
        }
        let p = self.path(path, now);
        let ends = timed.map(|t| timed::Ends::after(now, t));
        let msg = match (cmd, p.operator) {
            (Command::Failover, Operator::Failover) => {
                return Err(format!("{path} is already failed over"))
            }
            (Command::Failover, _) => {
                p.operator = Operator::Failover;
                p.ends = ends;
                let back = match timed {
                    None => format!("; `restore {path}` brings it back"),
                    Some(_) => timed::said(path, timed, "restore"),
                };
                format!("{path} taken out of service now{back}")
            }
            (Command::Restore, _) => {
                p.ends = None;
                p.penalty.clear(now);
                let lifted = match std::mem::replace(&mut p.operator, Operator::Normal) {
                    Operator::Failover => ", failover lifted",
                    Operator::Draining { .. } | Operator::Drained => ", drain lifted",
                    Operator::Normal => "",
                };
                format!("{path}: flap penalty cleared{lifted}; it carries traffic again once healthy and past any hold-down")
            }
            (Command::Drain, Operator::Draining { .. } | Operator::Drained) => {
                return Err(format!("{path} is already drained"))
            }
            (Command::Drain, _) if !p.admitted => {
                p.operator = Operator::Drained;
                p.ends = ends;
                format!(
                    "{path} drained (it carried no traffic){}",
                    timed::said(path, timed, "undrain")
                )
            }
            (Command::Drain, _) => {
                p.operator = Operator::Draining { until: now + delay };
                p.ends = ends;
                format!(
                    "{path} draining: announcements to the far side made unattractive now, our routes leave it in {}{}",
                    secs(delay),
                    timed::said(path, timed, "undrain")
                )
            }
            (Command::Undrain, Operator::Draining { .. } | Operator::Drained) => {
                p.operator = Operator::Normal;
                p.ends = None;
                format!("{path} undrained: announcements restored, it carries traffic again once healthy")
            }
            (Command::Undrain, _) => return Err(format!("{path} is not drained")),
        };
        // Logged by the caller, with who asked (see `supervisor::operator::audit`).
        Ok(msg)
    }

    /// Applies the policy to a site's observations at `now`: the candidates for the
    /// selection, with the policy's verdict as their health.
    pub fn evaluate(&mut self, now: Instant, obs: &[Observation]) -> Vec<Candidate> {
        let s = self.settings;
        let mut out = Vec::with_capacity(obs.len());
        for o in obs {
            let verdict = self.judge(now, o);
            let p = self.path(&o.name, now);
            let admitted = verdict.is_ok();
            let why = verdict.err().unwrap_or_default();
            let was = p.admitted;
            p.admitted = admitted;
            if admitted {
                p.waived = false;
            }
            p.why.clone_from(&why);
            if admitted && !was && p.held {
                self.event(
                    EventKind::PathReturn,
                    &o.name,
                    format!(
                        "{} back in service: every signal up for {}",
                        o.name,
                        secs(s.hold_down)
                    ),
                );
            }
            out.push(Candidate {
                name: o.name.clone(),
                kind: o.kind,
                healthy: admitted,
                unproven: o.unproven,
                draining: o.draining.clone(),
                why,
            });
        }
        self.waive_if_nothing_admitted(obs, &mut out);
        out
    }

    /// Tracks one path's signals and decides whether it is admitted; Err says why not.
    fn judge(&mut self, now: Instant, o: &Observation) -> Result<(), String> {
        let s = self.settings;
        self.end_if_due(&o.name, now);
        let lossy = o.loss.is_some_and(|l| l > s.loss_threshold);
        // Hysteresis: a degraded path recovers below half the threshold.
        let recovered = o.loss.is_none_or(|l| l <= s.loss_threshold / 2.0);
        let p = self.path(&o.name, now);
        let mut events: Vec<(EventKind, String)> = Vec::new();
        let was_up = p.up && !p.degraded;
        if o.up && lossy && !p.degraded {
            p.degraded = true;
            events.push((
                EventKind::PathDegraded,
                format!(
                    "{}: {:.0} % probe loss over the window (threshold {:.0} %)",
                    o.name,
                    o.loss.unwrap_or(0.0) * 100.0,
                    s.loss_threshold * 100.0
                ),
            ));
        } else if p.degraded && (!o.up || recovered) {
            p.degraded = false;
        }
        let now_up = o.up && !p.degraded;
        if was_up && !now_up {
            // Back for a moment while out of service, then down again: still the failure
            // that took it out (a restarting line router brings up its sessions, then its
            // routes, family by family, each a brief "down"), charged once. A path that
            // flaps faster than this never passes its hold-down anyway.
            let up_for = p.up_since.map(|t| now.saturating_duration_since(t));
            let same_failure = !p.admitted && up_for.is_some_and(|d| d < SAME_FAILURE);
            p.held = true;
            p.up_since = None;
            let why = if o.up {
                "degraded".to_owned()
            } else {
                o.why.clone()
            };
            let charged = if same_failure {
                " (the failure it was recovering from: no new flap penalty)"
            } else {
                ""
            };
            events.push((EventKind::PathDown, format!("{}: {why}{charged}", o.name)));
            if !same_failure {
                p.flaps += 1;
            }
            if !same_failure && p.penalty.flap(&s.damping, now) {
                let v = p.penalty.value(&s.damping, now);
                events.push((
                    EventKind::PathSuppressed,
                    format!(
                        "{}: flapping, suppressed by damping (penalty {v:.0})",
                        o.name
                    ),
                ));
            }
        }
        if now_up && p.up_since.is_none() {
            p.up_since = Some(now);
        }
        if !now_up {
            p.up_since = None;
        }
        p.up = o.up;
        if let Operator::Draining { until } = p.operator {
            if now >= until {
                p.operator = Operator::Drained;
                events.push((
                    EventKind::Drained,
                    format!("{}: drain delay over, routes moved off it", o.name),
                ));
            }
        }
        let verdict = verdict(&s, p, now, o);
        for (kind, msg) in events {
            self.event(kind, &o.name, msg);
        }
        verdict
    }

    /// Hold-down and damping keep a path out while another carries the traffic; with no
    /// path admitted they would keep a blackhole, so then every path whose signals are up
    /// and that the operator has not taken out is used (the selection still prefers lines).
    fn waive_if_nothing_admitted(&mut self, obs: &[Observation], out: &mut [Candidate]) {
        if out.iter().any(|c| c.healthy) {
            // The waiver is over: the next one is news again.
            for p in self.paths.values_mut() {
                p.waived = false;
            }
            return;
        }
        for (o, c) in obs.iter().zip(out.iter_mut()) {
            let Some(p) = self.paths.get_mut(&o.name) else {
                continue;
            };
            let operator_out = matches!(p.operator, Operator::Failover | Operator::Drained);
            if !o.up || operator_out {
                p.waived = false;
                continue;
            }
            // In service from now on: a path that comes back next waits for its own
            // hold-down rather than joining through this waiver.
            p.admitted = true;
            c.healthy = true;
            c.why = String::new();
            // Every pass while nothing is admitted comes here again (observations change
            // many times a second under churn): told once, or the event log fills with
            // the one message and loses what came before it.
            if std::mem::replace(&mut p.waived, true) {
                p.why.clear();
                continue;
            }
            let msg = if p.why.is_empty() {
                format!("{} in service", o.name)
            } else {
                format!(
                    "{} used although {}: no other path is healthy",
                    o.name, p.why
                )
            };
            p.why.clear();
            self.event(EventKind::PathReturn, &o.name, msg);
        }
    }

    /// The next time a verdict can change without a new observation (a hold-down or a
    /// drain delay running out, a suppressed path becoming reusable).
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let s = &self.settings;
        self.paths
            .values()
            .filter_map(|p| {
                let drain = match p.operator {
                    Operator::Draining { until } => Some(until),
                    _ => None,
                };
                let hold = (p.held && !p.admitted)
                    .then_some(p.up_since.map(|t| t + s.hold_down))
                    .flatten();
                let reuse = p.penalty.reuse_at(&s.damping, now);
                let ends = p.ends.map(|e| e.at);
                [drain, hold, reuse, ends]
                    .into_iter()
                    .flatten()
                    .filter(|t| *t > now)
                    .min()
            })
            .min()
    }

    /// How each line's announcements should look: unattractive from the moment a drain
    /// starts (so the far side moves first) until it is undrained.
    pub fn advertise(&self, path: &str) -> Advertise {
        match self.paths.get(path).map(|p| p.operator) {
            Some(Operator::Draining { .. } | Operator::Drained) => Advertise::Unattractive,
            _ => Advertise::Normal,
        }
    }

    pub fn status(&self, path: &str, now: Instant) -> Option<PathPolicy> {
        let s = &self.settings;
        let p = self.paths.get(path)?;
        let mut pen = p.penalty;
        let suppressed = pen.suppressed(&s.damping, now);
        Some(PathPolicy {
            admitted: p.admitted,
            hold_down_left: (p.held && !p.admitted)
                .then_some(
                    p.up_since
                        .map(|t| (t + s.hold_down).saturating_duration_since(now)),
                )
                .flatten(),
            penalty: pen.value(&s.damping, now),
            flaps: p.flaps,
            suppressed_for: suppressed
                .then(|| pen.reuse_at(&s.damping, now).map(|t| t - now))
                .flatten(),
            degraded: p.degraded,
            operator: p.operator.mark().map_or("none", Mark::as_str),
            operator_left: p.ends.map(|e| e.at.saturating_duration_since(now)),
        })
    }

    pub fn take_events(&mut self) -> Vec<PolicyEvent> {
        std::mem::take(&mut self.events)
    }
}
