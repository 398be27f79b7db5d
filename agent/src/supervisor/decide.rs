//! The supervisor's decision: from the state's signals, the policy's verdict on each path,
//! the selection of what carries each site, and the kernel members and prefixes that
//! makes; with the events and counters of what changed. The FIB programmer applies it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::members::{member_list, members, Ifindexes};
use crate::config::PathRef;
use crate::core::events::EventKind;
use crate::core::ids::Ids;
use crate::core::signals;
use crate::fib::plan::{Family, SiteWant, MAX_PATHS_PER_SITE};
use crate::policy::{Observation, Policy, Verdict};
use crate::select::{self, CandidateKind, Choice, Mode};
use crate::state::AgentState;

/// After an UPDATE, a line's table counts as re-learned once this passes with no other.
const TABLE_QUIET: Duration = Duration::from_secs(1);
/// A table streaming in is routed once its UPDATEs pause this long (they come back to
/// back, a few ms apart at most, while a router sends a full table).
const TABLE_SETTLE: Duration = Duration::from_millis(50);
/// While a table streams in, its prefixes are routed at least this often.
const TABLE_REBUILD: Duration = Duration::from_secs(1);

/// What the decision keeps between passes, beside the state.
pub struct Decider {
    pub(super) policy: Policy,
    /// The stable ids of sites and paths the kernel objects are numbered by.
    pub(super) ids: Ids,
    /// Prefixes by site and all of them, rebuilt only when the learned routes change.
    prefixes: BTreeMap<String, Arc<[IpNet]>>,
    pub(super) wanted: Arc<BTreeSet<IpNet>>,
    /// The routes generation the prefixes were built from, and how many builds.
    prefixes_from: Option<u64>,
    pub(super) prefixes_builds: u64,
    prefixes_built: Option<Instant>,
    /// When a prefix rebuild held back while a table streams in is due.
    pub(super) prefixes_due: Option<Instant>,
    /// The operator's marks and the paths' standings as last handed out to be saved.
    marks: crate::operator_state::Marks,
    standings: crate::operator_state::Standings,
    /// What changed and is to be kept for the next run, until the engine hands it out.
    to_persist: Persist,
    /// The config generation the policy's settings and paths are from (see `reload`).
    config_generation: u64,
}

/// What the next run must find on disk, when it changed (the supervisor writes it; see
/// `operator_state::persist`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Persist {
    /// The stable ids of sites and paths the kernel objects are numbered by.
    pub ids: Option<Ids>,
    /// The operator's failovers and drains.
    pub marks: Option<crate::operator_state::Marks>,
    /// Each path in service or waiting out a hold-down, with its flap penalty.
    pub standings: Option<crate::operator_state::Standings>,
}

/// A site's decision: its kernel objects, and what carries it and stands by.
pub struct SiteDecision {
    pub want: SiteWant,
    pub name: String,
    pub choice: Choice,
    pub fallback: Choice,
}

impl Decider {
    /// Takes up what a previous run saved (ids, operator marks, standings).
    pub fn new(st: &mut AgentState) -> Decider {
        // Before anything is read back from the kernel: its objects are numbered by these.
        let mut ids = std::mem::take(&mut st.resumed_ids);
        let mut to_persist = Persist::default();
        if ids.assign(&st.config().layout(), MAX_PATHS_PER_SITE) {
            to_persist.ids = Some(ids.clone());
        }
        let mut policy = Policy::new(crate::policy::Settings::from_config(&st.config().policy));
        let marks = std::mem::take(&mut st.resumed);
        let standings = std::mem::take(&mut st.resumed_standings);
        let crate::state::Now {
            mono: now,
            wall: now_wall,
        } = st.now();
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
            policy.resume(now, now_wall, path, *mark);
        }
        Decider {
            policy,
            ids,
            prefixes: BTreeMap::new(),
            wanted: Arc::default(),
            prefixes_from: None,
            prefixes_builds: 0,
            prefixes_built: None,
            prefixes_due: None,
            marks,
            standings,
            to_persist,
            config_generation: 0,
        }
    }

    /// The policy's settings, paths and ids follow a reload.
    fn follow_config(&mut self, st: &AgentState) {
        if st.config_generation() == self.config_generation {
            return;
        }
        self.config_generation = st.config_generation();
        let cfg = st.config();
        self.policy
            .set_settings(crate::policy::Settings::from_config(&cfg.policy));
        self.policy.retain(|p| cfg.find_path(p).is_some());
        if self.ids.assign(&cfg.layout(), MAX_PATHS_PER_SITE) {
            self.to_persist.ids = Some(self.ids.clone());
        }
        // The sites' prefixes may have changed: rebuilt in this pass.
        self.prefixes_built = None;
        self.prefixes_from = None;
    }

    /// Rebuilds the sites' prefix sets when the learned routes changed. While a full table
    /// streams in, the routes generation moves with every UPDATE: rebuild once the stream
    /// pauses for TABLE_SETTLE, and at least once per TABLE_REBUILD while it goes on. A
    /// single UPDATE after a quiet spell is rebuilt at once. (Waiting for the reconcile
    /// alone kept 10,000 learned prefixes out of the kernel for a second after the table
    /// was in.)
    fn follow_prefixes(&mut self, st: &AgentState, now: Instant) {
        let pending = self.prefixes_from != Some(st.routes_generation);
        let settled = st
            .routes_changed_at
            .is_none_or(|t| now.saturating_duration_since(t) >= TABLE_SETTLE);
        let rebuild = pending
            && (settled
                || self
                    .prefixes_built
                    .is_none_or(|t| now.saturating_duration_since(t) >= TABLE_REBUILD));
        self.prefixes_due = match (pending && !rebuild, st.routes_changed_at) {
            (true, Some(t)) => {
                Some((t + TABLE_SETTLE).min(self.prefixes_built.map_or(t, |b| b + TABLE_REBUILD)))
            }
            _ => None,
        };
        if !rebuild {
            return;
        }
        self.prefixes_from = Some(st.routes_generation);
        self.prefixes_built = Some(now);
        self.prefixes_builds += 1;
        self.prefixes = st
            .config()
            .sites
            .iter()
            .map(|s| (s.name.get_ref().clone(), prefixes(st, s.name.get_ref())))
            .collect();
        self.wanted = Arc::new(
            self.prefixes
                .values()
                .flat_map(|p| p.iter().copied())
                .collect(),
        );
    }

    /// The policy's verdicts, the selection and the kernel objects of every site; the
    /// events, counters and announcements that follow go into the state. Returns the
    /// sites whose traffic moved.
    /// The operators' commands queued since the last pass, judged, applied and audited.
    fn commands(&mut self, st: &mut AgentState, now: Instant) {
        for r in std::mem::take(&mut st.operator_queue) {
            let timed = r.lasting.map(|lasting| crate::policy::Timed {
                lasting,
                now_wall: st.now().wall,
            });
            // Every refusal says so, whichever rule made it.
            let answer = super::operator::judge(st, &r)
                .and_then(|()| self.policy.command(now, &r.path, r.command, timed))
                .map_err(|why| format!("refused: {why}"));
            // The next command of this pass is judged with this one's effect: two
            // failovers in one go must not each count on the other path.
            if answer.is_ok() {
                super::operator::taken_out(st, &r);
            }
            super::operator::audit(st, &r, &answer);
            // Answered once the view shows it (see `Supervisor::run`).
            st.operator_answers.push((r.reply, answer));
        }
    }

    pub fn decide(&mut self, st: &mut AgentState, now: Instant) -> (Vec<SiteWant>, Vec<String>) {
        self.follow_config(st);
        self.follow_prefixes(st, now);
        self.commands(st, now);
        let mut sites = Vec::new();
        let mut views = Vec::new();
        for site in &st.config().sites {
            let name = site.name.get_ref();
            if let Some(d) = self.site(st, name, now, &mut views) {
                sites.push(d);
            }
        }
        for e in self.policy.take_events() {
            tracing::info!(path = %e.path, "{}: {}", e.kind, e.message);
            if e.kind == EventKind::PathDown {
                st.counts.push(super::counts::signal_down(st, &e.path));
            }
            st.record(e.kind, Some(&e.path), e.message);
        }
        let views: BTreeMap<String, Verdict> = views.into_iter().collect();
        let (down_reasons, counts) = super::counts::count_transitions(st, &views);
        st.counts.extend(counts);
        st.policy = views;
        super::counts::note_health_changes(st, now);
        let lines: Vec<String> = st
            .config()
            .lines
            .iter()
            .map(|l| l.name.get_ref().clone())
            .collect();
        for l in lines {
            let a = self.policy.advertise(&l);
            st.set_advertise(&l, a);
        }
        let mut moved = Vec::new();
        let mut wants = Vec::new();
        for d in sites {
            let name = d.name;
            st.fallback.insert(name.clone(), d.fallback);
            if let Some(kind) = transition(st.active.get(&name), &d.choice) {
                tracing::warn!(site = %name, "{kind}: {}", d.choice.reason);
                st.record(kind, None, format!("site {name}: {}", d.choice.reason));
                let old_mode = st.active.get(&name).map(|c| c.mode);
                // Counted once per move off the lines (a failover that later adds a
                // tunnel is still the same failover).
                if old_mode == Some(Mode::Lines) && d.choice.mode != Mode::Lines {
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
                    st.counts.push(crate::metrics::Count::Failover {
                        site: name.clone(),
                        reason,
                    });
                }
                // The first programming after a start moves nothing.
                if old_mode.is_some() {
                    moved.push(name.clone());
                }
            }
            st.active.insert(name, d.choice);
            wants.push(d.want);
        }
        (wants, moved)
    }

    /// One site's decision; none for a site without an id or with more paths than a
    /// group holds (the config check refuses those).
    fn site(
        &mut self,
        st: &AgentState,
        name: &str,
        now: Instant,
        views: &mut Vec<(String, Verdict)>,
    ) -> Option<SiteDecision> {
        let ifindexes = Ifindexes::of(st);
        let cfg = st.config();
        let ids = &self.ids;
        let index = ids.site(name)?;
        if cfg.paths_of(name).count() > MAX_PATHS_PER_SITE {
            return None;
        }
        let candidates = self.policy.evaluate(now, &observations(st, name, now));
        for c in &candidates {
            if let Some(p) = self.policy.status(&c.name, now) {
                views.push((
                    c.name.clone(),
                    Verdict {
                        policy: p,
                        why: c.why.clone(),
                    },
                ));
            }
        }
        let choice = select::choose(&candidates);
        let fallback = select::fallback(&candidates, &choice);
        let healthy: Vec<(String, u16)> = candidates
            .iter()
            .filter(|c| c.healthy)
            .map(|c| (c.name.clone(), 1))
            .collect();
        let want = SiteWant {
            index,
            prefixes: self
                .prefixes
                .get(name)
                .cloned()
                .unwrap_or_else(|| Arc::new([])),
            v4: members(cfg, ids, name, &choice, Family::V4, ifindexes),
            v6: members(cfg, ids, name, &choice, Family::V6, ifindexes),
            standby_v4: member_list(cfg, ids, name, &healthy, Family::V4, ifindexes),
            standby_v6: member_list(cfg, ids, name, &healthy, Family::V6, ifindexes),
            fallback_v4: members(cfg, ids, name, &fallback, Family::V4, ifindexes),
            fallback_v6: members(cfg, ids, name, &fallback, Family::V6, ifindexes),
        };
        Some(SiteDecision {
            want,
            name: name.to_owned(),
            choice,
            fallback,
        })
    }

    /// The next time a verdict changes with no new input: a hold-down or drain delay
    /// running out, a line's table going quiet (re-learned), or a prefix rebuild held
    /// back.
    pub fn next_deadline(&self, st: &AgentState, now: Instant) -> Option<Instant> {
        let relearned = st.bgp.values().filter_map(|n| {
            let up = n.established_at?;
            let quiet = n.last_routes_at.map_or(up, |r| r.max(up)) + TABLE_QUIET;
            (quiet > now).then_some(quiet)
        });
        self.policy
            .next_deadline(now)
            .into_iter()
            .chain(self.prefixes_due)
            .chain(relearned)
            .min()
    }

    /// Notes the operator's failovers and drains, and the paths' standings, to be kept
    /// on disk when they changed. Called once the kernel has what they decided: a
    /// failover is a change of standing, on disk after the switch, never ahead of it.
    pub fn note_marks(&mut self, now: crate::state::Now) {
        let standings = self.policy.standings(now.mono, now.wall);
        if standings != self.standings {
            self.to_persist.standings = Some(standings.clone());
            self.standings = standings;
        }
        let marks = self.policy.marks();
        if marks != self.marks {
            self.to_persist.marks = Some(marks.clone());
            self.marks = marks;
        }
    }

    /// What changed and is to be kept for the next run, once.
    pub fn take_persist(&mut self) -> Option<Persist> {
        let p = std::mem::take(&mut self.to_persist);
        (p != Persist::default()).then_some(p)
    }

    /// Tells the policy what a previous run left carrying each site's traffic: lines not
    /// among it wait for their hold-down before traffic returns (a restart in the middle
    /// of a failover must not move traffic onto a line that has not proven itself). The
    /// ids are pinned to the kernel's objects first (a path reaching the same way keeps
    /// its object).
    pub fn adopt(&mut self, st: &AgentState, kernel: &crate::routing::Adopted, now: Instant) {
        let cfg = st.config();
        let before = self.ids.clone();
        let ifindexes = Ifindexes::of(st);
        for site in &cfg.sites {
            let site_name = site.name.get_ref();
            for p in cfg.paths_of(site_name) {
                let oif = ifindexes.get(p.interface());
                let reaches = |gateway: &Option<std::net::IpAddr>| match p {
                    PathRef::Line(l) => gateway.is_some_and(|g| l.neighbors.get_ref().contains(&g)),
                    PathRef::Tunnel(_) => gateway.is_none(),
                };
                for (site_id, slot, gateway, o) in &kernel.members {
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
            self.to_persist.ids = Some(self.ids.clone());
        }
        for site in &cfg.sites {
            let name = site.name.get_ref();
            let lines: Vec<String> = cfg
                .paths_of(name)
                .filter(|p| matches!(p, PathRef::Line(_)))
                .map(|p| p.name().to_owned())
                .collect();
            let Some(slots) = self.ids.site(name).and_then(|i| kernel.carrying.get(&i)) else {
                // No group of ours carries the site. A first start has nothing to
                // protect; after a previous run, the kernel may have flushed its group: a
                // crashed agent's tunnels lose their carrier with it, and the kernel
                // deletes a group whose members all went, racing this start. The lines
                // that run had taken out of service then stay out for their hold-down,
                // as the kernel would have shown (see `Policy::adopt`).
                if !self.standings.is_empty() {
                    tracing::info!(site = %name, "no group of a previous run carries the site: the lines it had taken out of service wait for their hold-down");
                    self.policy.adopt(now, &[], &lines);
                }
                continue;
            };
            let carrying: Vec<String> = slots
                .iter()
                .filter_map(|s| self.ids.path_at(name, *s))
                .map(str::to_owned)
                .collect();
            tracing::info!(site = %name, carrying = ?carrying, "adopted the routes of a previous run");
            self.policy.adopt(now, &carrying, &lines);
        }
    }
}

/// Takes note of a stall of the agent's own process (its watch's latest): the signals'
/// downs it caused are excused for a while (see `stall`), and it is told once.
pub(super) fn note_stall(st: &mut AgentState, s: crate::stall::Stall) {
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
    st.touch();
}

/// What the signals say about each path of `site`, for the policy.
fn observations(st: &AgentState, site: &str, now: Instant) -> Vec<Observation> {
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
            let loss = crate::state::path_loss(st.bfd.values().filter(|v| v.line == name), now);
            let quiet = |t: Instant| now.saturating_duration_since(t) >= TABLE_QUIET;
            let relearned =
                st.bgp.values().filter(|n| n.line == name).all(|n| {
                    n.established_at.is_some_and(quiet) && n.last_routes_at.is_none_or(quiet)
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

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
