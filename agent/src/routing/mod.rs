//! Keeps each site's traffic on the chosen paths: on every signal change (woken by the
//! state) and once a second (drift), it chooses the paths, plans the kernel changes and
//! applies them. A membership change needs only the nexthop dump and one group replace; the
//! route dump, which grows with the prefix count, runs every few seconds and whenever the
//! prefix set changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;

use crate::config::PathRef;
use crate::control::proto::PolicyStatus;
use crate::core::events::EventKind;
use crate::core::ids::Ids;
use crate::core::signals;
use crate::fib::nexthop::Kind;
use crate::fib::plan::{self, Family, SiteWant, MAX_PATHS_PER_SITE};
use crate::fib::Fib;
use crate::metrics::Reason;
use crate::policy::{Observation, PathPolicy, Policy};
use crate::select::{self, CandidateKind, Choice, Mode};
use crate::state::{lock, AgentState};

mod members;
use members::{member_list, members, Ifindexes};

use crate::stall::StallWatch;

/// Drift (a route or group deleted by someone else) is repaired within this.
const RECONCILE: Duration = Duration::from_secs(1);
/// How often the routes themselves are compared with the kernel's.
const ROUTE_SCAN: Duration = Duration::from_secs(5);

/// The kernel setting that makes a switch cost the same for any prefix count.
const COMPAT_MODE: &str = "/proc/sys/net/ipv4/nexthop_compat_mode";

/// Warns when the kernel announces every route using a nexthop group on each change of
/// the group: a switch then costs a notification per route (measured: 72 ms for 100,000
/// routes, against 2.5 ms without). It is the host's setting (other tools may rely on
/// it), so the agent reports rather than changes it; the Ansible role sets it.
fn check_compat_mode() {
    if std::fs::read_to_string(COMPAT_MODE).is_ok_and(|v| v.trim() == "1") {
        tracing::warn!(
            "net.ipv4.nexthop_compat_mode is 1: every switch also notifies each route (~72 ms at 100,000 routes); set it to 0"
        );
    }
}

/// Connects to the kernel and starts the programming task.
pub fn start(state: Arc<Mutex<AgentState>>) -> std::io::Result<()> {
    check_compat_mode();
    let stall = StallWatch::start()?;
    let (fib, nh_conn, rt_conn) = Fib::connect()?;
    tokio::spawn(nh_conn);
    tokio::spawn(rt_conn);
    tokio::spawn(run(fib, state, stall));
    Ok(())
}

/// Whether a previous run left groups carrying traffic in the kernel: this start is then
/// a restart whose forwarding state survived (the R bit of BGP graceful restart).
/// Any site id counts: ids are stable, not positions (see `core::ids`).
pub async fn previous_run_left_routes() -> bool {
    let Ok((nexthops, conn)) = crate::fib::Nexthops::connect() else {
        return false;
    };
    let task = tokio::spawn(conn);
    let found = nexthops
        .dump()
        .await
        .is_ok_and(|nhs| (0..=u8::MAX).any(|i| !plan::carrying(&nhs, i).is_empty()));
    task.abort();
    found
}

/// Saves the ids; a failure is logged (this run keeps them in memory; a restart after it
/// numbers afresh in config order, the position scheme of before).
fn save_ids(state_file: &std::path::Path, ids: &Ids) {
    let file = crate::operator_state::ids_file(state_file);
    if let Err(e) = crate::operator_state::save_ids(&file, ids) {
        tracing::error!(file = %file.display(), error = %e, "cannot save the paths' ids; a restart after a reordered config may misread the kernel's groups");
    }
}

/// After an UPDATE, a line's table counts as re-learned once this passes with no other.
const TABLE_QUIET: Duration = Duration::from_secs(1);
/// A table streaming in is routed once its UPDATEs pause this long (they come back to
/// back, a few ms apart at most, while a router sends a full table).
const TABLE_SETTLE: Duration = Duration::from_millis(50);

/// What the signals say about each path of `site`, for the policy.
fn observations(st: &AgentState, site: &str) -> Vec<Observation> {
    st.config()
        .paths_of(site)
        .map(|p| {
            let name = p.name();
            let (_, verdict) = st.path_health(p);
            let kind = match p {
                PathRef::Line(l) => CandidateKind::Line {
                    priority: l.priority,
                },
                PathRef::Tunnel(t) => CandidateKind::Tunnel {
                    weight: *t.weight.get_ref(),
                },
            };
            // The worst of the path's probes: a line is as lossy as its worst session.
            let loss = crate::state::path_loss(st.bfd.values().filter(|v| v.line == name));
            let relearned = st.bgp.values().filter(|n| n.line == name).all(|n| {
                n.established_at.is_some_and(|t| t.elapsed() >= TABLE_QUIET)
                    && n.last_routes_at.is_none_or(|t| t.elapsed() >= TABLE_QUIET)
            });
            let draining = match p {
                PathRef::Line(l) => st.far_side_draining(l),
                PathRef::Tunnel(_) => None,
            };
            Observation {
                up: verdict.health == signals::Health::Up,
                // Unknown with a signal up beyond the carrier: evidence of life, not of
                // health.
                unproven: verdict.health == signals::Health::Unknown && verdict.evidence,
                draining,
                why: verdict.reason,
                name: name.to_owned(),
                kind,
                loss,
                relearned,
            }
        })
        .collect()
}

fn policy_status(p: &PathPolicy, why: &str) -> PolicyStatus {
    PolicyStatus {
        admitted: p.admitted,
        reason: if p.admitted {
            String::new()
        } else {
            why.to_owned()
        },
        hold_down_seconds: p.hold_down_left.map(|d| d.as_secs_f64()),
        penalty: (p.penalty * 10.0).round() / 10.0,
        flaps: p.flaps,
        suppressed_seconds: p.suppressed_for.map(|d| d.as_secs_f64()),
        degraded: p.degraded,
        operator: p.operator.to_owned(),
    }
}

/// Every prefix of `site`: configured, and learned over BGP on its lines (kept as long as
/// the session keeps them; the line's health decides the members, not the prefix set).
fn prefixes(st: &AgentState, site: &str) -> Arc<[IpNet]> {
    let cfg = st.config();
    let mut out: BTreeSet<IpNet> = cfg
        .sites
        .iter()
        .filter(|s| s.name.get_ref() == site)
        .flat_map(|s| s.prefixes.iter().map(|p| p.get_ref().0.trunc()))
        .collect();
    for n in st.bgp.values() {
        let on_site = cfg
            .lines
            .iter()
            .any(|l| l.name.get_ref() == &n.line && l.site.get_ref() == site);
        if on_site {
            out.extend(n.learned.keys().map(IpNet::trunc));
        }
    }
    out.into_iter().collect()
}

/// Counts the paths that entered or left service since the last pass (by the policy's
/// verdict, which is what moves traffic), and returns why each that left did so.
fn count_transitions(
    st: &AgentState,
    now: &BTreeMap<String, PolicyStatus>,
) -> BTreeMap<String, Reason> {
    let mut down = BTreeMap::new();
    for (path, view) in now {
        let Some(before) = st.policy.get(path) else {
            continue; // the first verdict after a start is no transition
        };
        // A path out of service that fails again (charged another flap penalty) leaves
        // service again as far as the counters go: flaps must reach the alerts.
        let failed_again = !view.admitted && view.flaps > before.flaps;
        if before.admitted == view.admitted && !failed_again {
            continue;
        }
        let reason = if view.admitted {
            "healthy"
        } else {
            down_reason(st, path, view)
        };
        let kind = match st.config().find_path(path) {
            Some(PathRef::Tunnel(_)) => "tunnel",
            _ => "line",
        };
        st.metrics.transition(path, kind, view.admitted, reason);
        if !view.admitted {
            down.insert(path.clone(), reason);
        }
    }
    down
}

/// Why a path is out of service, as a bounded label: the operator's doing, the first of its
/// signals that is down, or its probe loss.
fn down_reason(st: &AgentState, path: &str, view: &PolicyStatus) -> Reason {
    if view.operator != "none" {
        return "operator";
    }
    let signal = st
        .config()
        .find_path(path)
        .and_then(|p| st.path_health(p).1.failing)
        .map(signals::SignalKind::name);
    match signal {
        Some(s) => s,
        None if view.degraded => "loss",
        None => "other",
    }
}

/// The operator's log entry for a change of what carries a site's traffic.
fn transition(old: Option<&Choice>, new: &Choice) -> Option<EventKind> {
    if old.is_some_and(|o| o.mode == new.mode && o.members == new.members) {
        return None;
    }
    match (old.map(|c| c.mode), new.mode) {
        // Right after a start nothing has been measured yet: the adopted routes stay, and
        // that is no news.
        (None, Mode::AllDown) => None,
        (_, Mode::Failover) => Some(EventKind::Failover),
        (Some(Mode::Failover), Mode::Lines) => Some(EventKind::Return),
        (_, Mode::AllDown) => Some(EventKind::AllPathsDown),
        _ => Some(EventKind::PathChange),
    }
}

struct Programmer {
    fib: Fib,
    state: Arc<Mutex<AgentState>>,
    /// Prefixes by site and all of them, rebuilt only when the learned routes change.
    prefixes: BTreeMap<String, Arc<[IpNet]>>,
    wanted: BTreeSet<IpNet>,
    prefixes_generation: Option<u64>,
    prefixes_built: Option<Instant>,
    /// When a prefix rebuild held back while a table streams in is due.
    prefixes_due: Option<Instant>,
    last_route_scan: Option<Instant>,
    last_errors: Vec<String>,
    conflicts: Vec<IpNet>,
    policy: Policy,
    /// Set once the kernel's groups from a previous run have been read (see `adopt`).
    adopted: bool,
    /// The operator's marks as last saved, and where.
    marks: crate::operator_state::Marks,
    /// The paths' standings as last saved.
    standings: crate::operator_state::Standings,
    /// Whether the agent itself did not run for a while (see `stall`).
    stall: Arc<StallWatch>,
    state_file: std::path::PathBuf,
    /// The stable ids of sites and paths the kernel objects are numbered by.
    ids: Ids,
    /// Sites whose traffic this pass moves (for the switch-time histogram).
    moved: Vec<String>,
    /// The config generation the policy's settings and paths are from (see `reload`).
    config_generation: u64,
    /// `touches` when this pass read the signals (see `pass`).
    touches_seen: u64,
    /// The last pass left its route work to this one.
    routes_deferred: bool,
}

async fn run(fib: Fib, state: Arc<Mutex<AgentState>>, stall: Arc<StallWatch>) {
    let (changes, settings, marks, standings, state_file, layout) = {
        let mut st = lock(&state);
        (
            st.changes(),
            crate::policy::Settings::from_config(&st.config().policy),
            std::mem::take(&mut st.resumed),
            std::mem::take(&mut st.resumed_standings),
            st.config().control.state_file.clone(),
            st.config().layout(),
        )
    };
    // Before anything is read back from the kernel: its objects are numbered by these.
    let mut ids = crate::operator_state::load_ids(&crate::operator_state::ids_file(&state_file));
    if ids.assign(&layout, MAX_PATHS_PER_SITE) {
        save_ids(&state_file, &ids);
    }
    let mut policy = Policy::new(settings);
    let now = Instant::now();
    let now_wall = SystemTime::now();
    for (path, standing) in &standings {
        policy.restore(now, now_wall, path, *standing);
    }
    if !standings.is_empty() {
        tracing::info!(
            paths = standings.len(),
            "took up the paths' standings of the previous run"
        );
    }
    for (path, mark) in &marks {
        policy.resume(now, path, *mark);
    }
    let mut p = Programmer {
        fib,
        state,
        prefixes: BTreeMap::new(),
        wanted: BTreeSet::new(),
        prefixes_generation: None,
        prefixes_built: None,
        prefixes_due: None,
        last_route_scan: None,
        last_errors: Vec::new(),
        conflicts: Vec::new(),
        policy,
        adopted: false,
        marks,
        standings,
        stall,
        state_file,
        ids,
        moved: Vec::new(),
        config_generation: 0,
        touches_seen: 0,
        routes_deferred: false,
    };
    loop {
        p.pass().await;
        lock(&p.state).last_pass = Some(Instant::now());
        // A hold-down or drain delay running out changes the verdict with no new signal.
        let now = Instant::now();
        let wait = p
            .policy
            .next_deadline(now)
            .into_iter()
            .chain(p.prefixes_due)
            .map(|t| t.saturating_duration_since(now))
            .fold(RECONCILE, Duration::min);
        tokio::select! {
            () = changes.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

impl Programmer {
    /// The wanted state of every site, and whether the prefix set changed.
    fn wants(&mut self) -> (Vec<SiteWant>, bool) {
        let mut st = lock(&self.state);
        self.touches_seen = st.touches();
        if st.config_generation() != self.config_generation {
            self.config_generation = st.config_generation();
            let cfg = st.config();
            self.policy
                .set_settings(crate::policy::Settings::from_config(&cfg.policy));
            self.policy.retain(|p| cfg.find_path(p).is_some());
            if self.ids.assign(&cfg.layout(), MAX_PATHS_PER_SITE) {
                save_ids(&self.state_file, &self.ids);
            }
            // The sites' prefixes may have changed: rebuilt in this pass.
            self.prefixes_built = None;
        }
        // While a full table streams in, the generation moves with every UPDATE: rebuild
        // (and re-sync the routes) once the stream pauses for TABLE_SETTLE, and at least
        // once per RECONCILE while it goes on. A single UPDATE after a quiet spell is
        // rebuilt at once. (Waiting for the RECONCILE alone kept 10,000 learned prefixes
        // out of the kernel for a second after the table was in.)
        let pending = self.prefixes_generation != Some(st.routes_generation);
        let settled = st
            .routes_changed_at
            .is_none_or(|t| t.elapsed() >= TABLE_SETTLE);
        let prefixes_changed =
            pending && (settled || self.prefixes_built.is_none_or(|t| t.elapsed() >= RECONCILE));
        self.prefixes_due = match (pending && !prefixes_changed, st.routes_changed_at) {
            (true, Some(t)) => {
                Some((t + TABLE_SETTLE).min(self.prefixes_built.map_or(t, |b| b + RECONCILE)))
            }
            _ => None,
        };
        if prefixes_changed {
            self.prefixes_generation = Some(st.routes_generation);
            self.prefixes_built = Some(Instant::now());
            self.prefixes = st
                .config()
                .sites
                .iter()
                .map(|s| (s.name.get_ref().clone(), prefixes(&st, s.name.get_ref())))
                .collect();
            self.wanted = self
                .prefixes
                .values()
                .flat_map(|p| p.iter().copied())
                .collect();
        }
        let now = Instant::now();
        self.note_stall(&mut st, now);
        for r in std::mem::take(&mut st.operator_queue) {
            let answer = self.policy.command(now, &r.path, r.command);
            let _ = r.reply.send(answer);
        }
        let cfg = st.config();
        let mut wants = Vec::new();
        let mut choices = Vec::new();
        let mut views = Vec::new();
        let mut ifindexes = Ifindexes::default();
        let ids = &self.ids;
        for site in &cfg.sites {
            let name = site.name.get_ref();
            let (Some(index), true) = (
                ids.site(name),
                cfg.paths_of(name).count() <= MAX_PATHS_PER_SITE,
            ) else {
                continue;
            };
            let candidates = self.policy.evaluate(now, &observations(&st, name));
            for c in &candidates {
                if let Some(p) = self.policy.status(&c.name, now) {
                    views.push((c.name.clone(), policy_status(&p, &c.why)));
                }
            }
            let choice = select::choose(&candidates);
            let fallback = select::fallback(&candidates, &choice);
            let healthy: Vec<(String, u16)> = candidates
                .iter()
                .filter(|c| c.healthy)
                .map(|c| (c.name.clone(), 1))
                .collect();
            wants.push(SiteWant {
                index,
                prefixes: self
                    .prefixes
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| Arc::new([])),
                v4: members(cfg, ids, name, &choice, Family::V4, &mut ifindexes),
                v6: members(cfg, ids, name, &choice, Family::V6, &mut ifindexes),
                standby_v4: member_list(cfg, ids, name, &healthy, Family::V4, &mut ifindexes),
                standby_v6: member_list(cfg, ids, name, &healthy, Family::V6, &mut ifindexes),
                fallback_v4: members(cfg, ids, name, &fallback, Family::V4, &mut ifindexes),
                fallback_v6: members(cfg, ids, name, &fallback, Family::V6, &mut ifindexes),
            });
            choices.push((name.clone(), choice, fallback));
        }
        let lines: Vec<String> = cfg.lines.iter().map(|l| l.name.get_ref().clone()).collect();
        for e in self.policy.take_events() {
            tracing::info!(path = %e.path, "{}: {}", e.kind, e.message);
            st.record(e.kind, Some(&e.path), e.message);
        }
        let views: BTreeMap<String, PolicyStatus> = views.into_iter().collect();
        let down_reasons = count_transitions(&st, &views);
        st.policy = views;
        for l in lines {
            let a = self.policy.advertise(&l);
            st.set_advertise(&l, a);
        }
        for (name, choice, fallback) in choices {
            st.fallback.insert(name.clone(), fallback);
            if let Some(kind) = transition(st.active.get(&name), &choice) {
                tracing::warn!(site = %name, "{kind}: {}", choice.reason);
                st.record(kind, None, format!("site {name}: {}", choice.reason));
                let old_mode = st.active.get(&name).map(|c| c.mode);
                // Counted once per move off the lines (a failover that later adds a
                // tunnel is still the same failover).
                if old_mode == Some(Mode::Lines) && choice.mode != Mode::Lines {
                    // Why the paths that carried the traffic left it.
                    let reason = st
                        .active
                        .get(&name)
                        .and_then(|old| {
                            old.members
                                .iter()
                                .find_map(|(p, _)| down_reasons.get(p.as_str()).copied())
                        })
                        .unwrap_or("other");
                    st.metrics.failover(&name, reason);
                }
                // The first programming after a start moves nothing.
                if old_mode.is_some() {
                    self.moved.push(name.clone());
                }
            }
            st.active.insert(name, choice);
        }
        (wants, prefixes_changed)
    }

    /// First what moves traffic (members and groups: one dump and, for a switch, one
    /// group replace, whatever the prefix count); then, when due, the routes.
    async fn pass(&mut self) {
        if !self.adopted {
            self.adopt().await;
        }
        let started = Instant::now();
        let (wants, prefixes_changed) = self.wants();
        let mut errors = Vec::new();
        let switched = self.sync(&wants, false, || false).await;
        // On disk after the switch, never ahead of it: a failover is a change of standing.
        self.save_marks();
        let created = match switched {
            Ok((created, e, _)) => {
                errors.extend(e);
                created
            }
            Err(e) => {
                self.moved.clear();
                return self.report(vec![e.to_string()]);
            }
        };
        let created_group = !created.is_empty();
        // Route work may be cut short once, when a signal changes while it runs: the next
        // pass switches first and then carries on (see `Fib::apply_until`).
        let may_stop = !self.routes_deferred;
        let mut stopped = false;
        if created_group {
            // In metric order: the main routes first, the fallback carries until they are back.
            let routes = plan::desired(&wants, &[], true).routes;
            let restore = routes.into_iter().filter(|(_, g)| created.contains(g));
            let (e, done) = self.fib.restore(restore, self.stop_check(may_stop)).await;
            errors.extend(e.iter().map(ToString::to_string));
            stopped = !done;
        }
        if !self.moved.is_empty() {
            let took = started.elapsed();
            let st = lock(&self.state);
            for site in self.moved.drain(..) {
                st.metrics.switched(&site, took);
            }
        }
        let scan_due = self
            .last_route_scan
            .is_none_or(|t| t.elapsed() >= ROUTE_SCAN);
        if stopped {
            self.routes_deferred = true;
        } else if scan_due || prefixes_changed || created_group || self.routes_deferred {
            // A signal that changed while this pass ran may move traffic (the two families'
            // withdrawals come over two sessions, a few hundred µs apart): the next pass
            // switches first and does the route work, deferred once, never twice in a row.
            // Not when a group was just created: its routes are gone until re-added.
            let newer = lock(&self.state).touches() != self.touches_seen;
            if newer && !created_group && !self.routes_deferred {
                self.routes_deferred = true;
            } else {
                self.routes_deferred = false;
                let stop = self.stop_check(may_stop);
                match self.sync(&wants, true, stop).await {
                    Ok((_, e, done)) => {
                        errors.extend(e);
                        self.routes_deferred = !done;
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        self.report(errors);
    }

    /// Whether route work should stop for a switch: some signal changed since this pass
    /// read them. `allowed: false` (the route work was cut short last time) never stops,
    /// so a table streaming in cannot keep the routes from being done.
    fn stop_check(&self, allowed: bool) -> impl Fn() -> bool {
        let state = self.state.clone();
        let seen = self.touches_seen;
        move || allowed && lock(&state).touches() != seen
    }

    /// Takes note of a stall of the agent's own process: the signals' downs it caused are
    /// excused for a while (see `stall`), and it is told once.
    fn note_stall(&self, st: &mut AgentState, now: Instant) {
        let Some(s) = self.stall.latest(now) else {
            return;
        };
        if st.stall.is_some_and(|known| known.since == s.since) {
            st.stall = Some(s);
            return;
        }
        st.stall = Some(s);
        let msg = format!(
            "the agent itself did not run for {:.1} s (stopped, or its host paused): the paths' signals have {} s to come back before anything moves or counts as a flap",
            s.length.as_secs_f64(),
            crate::stall::GRACE.as_secs()
        );
        tracing::warn!("{msg}");
        st.record(EventKind::AgentStalled, None, msg);
    }

    /// Keeps the operator's failovers and drains, and the paths' standings, on disk
    /// whenever they change.
    fn save_marks(&mut self) {
        let standings = self.policy.standings(Instant::now(), SystemTime::now());
        if standings != self.standings {
            let file = crate::operator_state::standings_file(&self.state_file);
            if let Err(e) = crate::operator_state::save_standings(&file, &standings) {
                tracing::error!(file = %file.display(), error = %e, "cannot save the paths' standings; a restart would take every path for failed");
            }
            self.standings = standings;
        }
        let marks = self.policy.marks();
        if marks == self.marks {
            return;
        }
        // Logged once per change, not retried every pass: a restart would forget it.
        if let Err(e) = crate::operator_state::save(&self.state_file, &marks) {
            tracing::error!(file = %self.state_file.display(), error = %e, "cannot save the operator state; a restart would forget it");
        }
        self.marks = marks;
    }

    /// Tells the policy what a previous run left carrying each site's traffic: lines not
    /// among it wait for their hold-down before traffic returns (a restart in the middle
    /// of a failover must not move traffic onto a line that has not proven itself).
    async fn adopt(&mut self) {
        let kernel = match self.fib.kernel(&BTreeSet::new(), false).await {
            Ok(k) => k,
            Err(e) => return self.report(vec![e.to_string()]),
        };
        self.adopted = true;
        let st = lock(&self.state);
        let cfg = st.config();
        let now = Instant::now();
        let before = self.ids.clone();
        // Each configured path matched to the kernel's objects that reach the same way
        // (router and interface, or a tunnel's interface).
        let in_kernel = plan::members_in_kernel(&kernel.nexthops);
        let mut ifindexes = Ifindexes::default();
        for site in &cfg.sites {
            let site_name = site.name.get_ref();
            for p in cfg.paths_of(site_name) {
                let oif = ifindexes.get(p.interface());
                let reaches = |gateway: &Option<std::net::IpAddr>| match p {
                    PathRef::Line(l) => gateway.is_some_and(|g| l.neighbors.get_ref().contains(&g)),
                    PathRef::Tunnel(_) => gateway.is_none(),
                };
                for (site_id, slot, gateway, o) in &in_kernel {
                    if oif == Some(*o) && reaches(gateway) {
                        self.ids.pin(site_name, *site_id, p.name(), *slot);
                    }
                }
            }
        }
        if self.ids != before {
            self.ids.assign(&cfg.layout(), MAX_PATHS_PER_SITE);
            tracing::info!(
                "the ids of sites and paths set from the kernel's objects of a previous run"
            );
            save_ids(&self.state_file, &self.ids);
        }
        for site in &cfg.sites {
            let name = site.name.get_ref();
            let Some(index) = self.ids.site(name) else {
                continue;
            };
            let slots = plan::carrying(&kernel.nexthops, index);
            if slots.is_empty() {
                continue; // a first start: nothing to protect
            }
            let paths: Vec<PathRef<'_>> = cfg.paths_of(name).collect();
            let carrying: Vec<String> = slots
                .iter()
                .filter_map(|s| self.ids.path_at(name, *s))
                .map(str::to_owned)
                .collect();
            let lines: Vec<String> = paths
                .iter()
                .filter(|p| matches!(p, PathRef::Line(_)))
                .map(|p| p.name().to_owned())
                .collect();
            tracing::info!(site = %name, carrying = ?carrying, "adopted the routes of a previous run");
            self.policy.adopt(now, &carrying, &lines);
        }
    }

    /// One reconcile against a fresh dump; `with_routes: false` leaves routes out on both
    /// sides. Returns the groups it created (their routes are then due), what the kernel
    /// refused, and whether it got through the plan (`stop`, see `Fib::apply_until`).
    async fn sync(
        &mut self,
        wants: &[SiteWant],
        with_routes: bool,
        stop: impl Fn() -> bool,
    ) -> Result<(BTreeSet<u32>, Vec<String>, bool), crate::fib::FibError> {
        let kernel = self.fib.kernel(&self.wanted, with_routes).await?;
        let want = plan::desired(wants, &kernel.nexthops, with_routes);
        let created: BTreeSet<u32> = want
            .nexthops
            .values()
            .filter(|n| matches!(n.kind, Kind::Group(_)))
            .filter(|n| !kernel.nexthops.iter().any(|k| k.id == n.id))
            .map(|n| n.id)
            .collect();
        let plan = plan::diff(&want, &kernel);
        if with_routes {
            self.last_route_scan = Some(Instant::now());
            if plan.conflicts != self.conflicts {
                for c in &plan.conflicts {
                    tracing::warn!(prefix = %c, "another protocol routes this prefix at our metric; left alone");
                }
                self.conflicts = plan.conflicts.clone();
            }
        }
        if plan.is_empty() {
            return Ok((created, Vec::new(), true));
        }
        let started = Instant::now();
        let (errors, done) = self.fib.apply_until(&plan, stop).await;
        let took_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if !done {
            tracing::info!(
                ops = plan.ops.len(),
                took_us,
                "route work cut short for a switch; the next pass carries on"
            );
        } else if with_routes {
            tracing::debug!(ops = plan.ops.len(), took_us, "routes updated");
        } else {
            // The switch itself: whatever the prefix count, a few nexthop operations.
            tracing::info!(ops = plan.ops.len(), took_us, "nexthop groups updated");
        }
        Ok((
            created,
            errors.iter().map(ToString::to_string).collect(),
            done,
        ))
    }

    /// Logs refusals once, not on every retry, and says when they clear.
    fn report(&mut self, errors: Vec<String>) {
        if errors == self.last_errors {
            return;
        }
        if errors.is_empty() {
            tracing::info!("the kernel routes are as wanted again");
        }
        for e in &errors {
            tracing::error!("route programming: {e}");
        }
        if let Some(first) = errors.first() {
            lock(&self.state).record(EventKind::FibError, None, first.clone());
        }
        self.last_errors = errors;
    }
}

#[cfg(test)]
mod tests;
