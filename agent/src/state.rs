//! What the agent knows: the configured paths with the evidence that really exists for
//! them, the policy's standing of each, and the bounded log of transitions. The engine
//! owns it and the supervisor task runs the engine; readers get the rendered view
//! (`control::status`), never this.
//!
//! Observed: the interface carrier, BGP and BFD sessions, tunnel handshakes. A signal
//! without a running source is `unknown`, so status never claims a health that nobody
//! measured.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::core::events::{Event, EventKind};
pub use crate::core::now::Now;
use crate::policy::Advertise;
use crate::sources::bfd::BfdView;
use crate::sources::bgp::NeighborState;
use crate::sources::tunnels::TunnelView;

/// After the agent starts, a BFD session that has not come up yet (Down or Init without a
/// diagnostic) is not taken as evidence against its path for this long: sessions send
/// once a second until Up, so coming up takes a second or two.
pub(crate) const BFD_STARTUP_GRACE: Duration = Duration::from_secs(5);

pub use health::{path_loss, FAR_END_GRACE};

mod health;

/// Events kept in memory; older ones are dropped first.
pub const EVENT_LOG_CAPACITY: usize = 1024;

pub struct AgentState {
    config: Config,
    config_file: PathBuf,
    started: Instant,
    started_at: SystemTime,
    /// The time as the supervisor last told it (`set_now`): the state reads no clock.
    now: Now,
    events: VecDeque<Event>,
    /// Each interface's index and carrier, kept by `links` from the kernel's
    /// notifications; none until the first table (every carrier unknown, no member).
    pub(crate) links: Option<crate::sources::links::LinkTable>,
    /// The table is followed by notifications (not read from sysfs).
    pub(crate) links_followed: bool,
    /// Counts the carrier changes of our interfaces: the kernel flushes the nexthops of a
    /// link that lost its carrier, without telling, so the FIB programmer reads its
    /// objects afresh after one.
    pub(crate) carrier_epoch: u64,
    /// BGP sessions by neighbour address.
    pub(crate) bgp: BTreeMap<IpAddr, NeighborState>,
    /// BFD sessions by (line, peer, end-to-end).
    pub(crate) bfd: BTreeMap<(String, IpAddr, bool), BfdView>,
    /// Tunnels by name.
    pub(crate) tunnels: BTreeMap<String, TunnelView>,
    /// What carries each site's traffic, as last programmed (absent: not programmed).
    pub(crate) active: BTreeMap<String, crate::select::Choice>,
    /// Per site, the paths of its fallback group (see `select::fallback`).
    pub(crate) fallback: BTreeMap<String, crate::select::Choice>,
    /// Bumped whenever a learned route comes or goes, so the route set is rebuilt only then.
    pub(crate) routes_generation: u64,
    /// When the last UPDATE changed a learned route: a table streaming in is rebuilt once it
    /// pauses, not per UPDATE.
    pub(crate) routes_changed_at: Option<Instant>,
    /// Learned prefixes per site, as of a routes generation (see `learned_prefixes`).
    learned_counts: std::cell::RefCell<Option<(u64, BTreeMap<String, usize>)>>,
    /// A signal the decision reads changed since the supervisor last looked.
    touched: bool,
    /// Operator commands waiting for the next decision (the policy takes them).
    pub(crate) operator_queue: Vec<crate::supervisor::OperatorRequest>,
    /// Their answers, sent once the view that shows their effect is out.
    pub(crate) operator_answers: Vec<(crate::supervisor::Reply, Result<String, String>)>,
    /// The policy's view of each path, as of the last pass.
    pub(crate) policy: BTreeMap<String, crate::policy::Verdict>,
    /// Each path's health as of the last pass, and since when (for status and metrics).
    pub(crate) path_since: BTreeMap<String, (crate::core::signals::Health, Instant)>,
    /// How each line's announcements should look (drains), and whether that changed
    /// since the BGP side was last told.
    pub(crate) advertise: BTreeMap<String, Advertise>,
    advertise_changed: bool,
    /// The operator's marks saved by a previous run, for the policy to take up.
    pub(crate) resumed: crate::operator_state::Marks,
    /// The agent's own latest stall (see `stall`): while it excuses them, the signals'
    /// downs it caused move nothing.
    pub(crate) stall: Option<crate::stall::Stall>,
    /// The paths' standings saved by a previous run, for the policy to take up.
    pub(crate) resumed_standings: crate::operator_state::Standings,
    /// The ids of sites and paths a previous run saved, for the decision to take up.
    pub(crate) resumed_ids: crate::core::ids::Ids,
    /// When the route programming last completed a pass (the service watchdog's proof of
    /// life; it passes at least once a second).
    pub last_pass: Option<Instant>,
    /// When a pass of the FIB programmer last got the kernel to what was wanted (READY
    /// waits for the first).
    pub last_programmed: Option<Instant>,
    /// Transitions, failovers and switch times counted since the engine last handed
    /// them out (see `metrics::Count`).
    pub(crate) counts: Vec<crate::metrics::Count>,
    /// The number of the last event recorded.
    event_seq: u64,
    config_generation: u64,
}

/// Locks one of the adapters' own tables (never the agent's state: the supervisor owns
/// that); a panic elsewhere while holding it leaves data that is still the best the
/// adapter knows, so a poisoned lock is taken over rather than spread.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AgentState {
    pub fn new(config: Config, config_file: &Path, now: Now) -> AgentState {
        AgentState {
            config,
            config_file: config_file.to_path_buf(),
            started: now.mono,
            started_at: now.wall,
            now,
            events: VecDeque::with_capacity(64),
            links: None,
            links_followed: false,
            carrier_epoch: 0,
            bgp: BTreeMap::new(),
            bfd: BTreeMap::new(),
            tunnels: BTreeMap::new(),
            active: BTreeMap::new(),
            fallback: BTreeMap::new(),
            routes_generation: 0,
            routes_changed_at: None,
            learned_counts: Default::default(),
            touched: false,
            operator_queue: Vec::new(),
            operator_answers: Vec::new(),
            policy: BTreeMap::new(),
            path_since: BTreeMap::new(),
            advertise: BTreeMap::new(),
            advertise_changed: false,
            resumed: crate::operator_state::Marks::new(),
            resumed_standings: crate::operator_state::Standings::new(),
            resumed_ids: Default::default(),
            stall: None,
            last_pass: None,
            last_programmed: None,
            counts: Vec::new(),
            event_seq: 0,
            config_generation: 0,
        }
    }

    /// The time of the inputs that follow, until the next call (the supervisor's turn).
    pub fn set_now(&mut self, now: Now) {
        self.now = now;
    }

    pub fn now(&self) -> Now {
        self.now
    }

    /// Sets how a line is announced; the BGP side is told when that changes.
    pub(crate) fn set_advertise(&mut self, line: &str, a: Advertise) {
        let old = self.advertise.insert(line.to_owned(), a);
        if old.unwrap_or(Advertise::Normal) != a {
            self.advertise_changed = true;
        }
    }

    /// Whether a line's announcements changed since the last call.
    pub(crate) fn take_advertise_changed(&mut self) -> bool {
        std::mem::take(&mut self.advertise_changed)
    }

    /// Marks a change of a signal the decision reads.
    pub(crate) fn touch(&mut self) {
        self.touched = true;
    }

    /// Whether a signal changed since the last call.
    pub(crate) fn take_touched(&mut self) -> bool {
        std::mem::take(&mut self.touched)
    }

    /// The number of the last event recorded.
    pub(crate) fn last_event_seq(&self) -> u64 {
        self.event_seq
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn config_file(&self) -> &Path {
        &self.config_file
    }

    /// When the agent started (the wall clock), and how long ago.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    pub fn uptime(&self) -> Duration {
        self.now.since(self.started)
    }

    /// A reload's config, in force from the next route programming pass (which it wakes).
    /// What the agent kept of paths the config no longer has goes with them.
    pub(crate) fn set_config(&mut self, config: Config) {
        let paths: std::collections::BTreeSet<String> = config
            .lines
            .iter()
            .map(|l| l.name.get_ref().clone())
            .chain(config.tunnels.iter().map(|t| t.name.get_ref().clone()))
            .collect();
        self.advertise.retain(|p, _| paths.contains(p));
        self.active
            .retain(|site, _| config.sites.iter().any(|s| s.name.get_ref() == site));
        self.config = config;
        self.config_generation += 1;
        // The prefix set may have changed with the sites.
        self.routes_generation += 1;
        self.touch();
    }

    /// Counts the configs put in force, so the route programming sees a reload.
    pub(crate) fn config_generation(&self) -> u64 {
        self.config_generation
    }

    /// Past the first seconds after the start, when sessions that have not come up yet are
    /// evidence of nothing.
    pub(crate) fn past_startup_grace(&self) -> bool {
        self.now.since(self.started) >= BFD_STARTUP_GRACE
    }

    pub fn record(&mut self, kind: EventKind, path: Option<&str>, message: impl Into<String>) {
        self.record_by(kind, path, message, None);
    }

    /// An event someone asked for (`by`: the user; see `core::caller`).
    pub fn record_by(
        &mut self,
        kind: EventKind,
        path: Option<&str>,
        message: impl Into<String>,
        by: Option<&str>,
    ) {
        if self.events.len() == EVENT_LOG_CAPACITY {
            self.events.pop_front();
        }
        self.event_seq += 1;
        self.events.push_back(Event {
            seq: self.event_seq,
            at: self.now.wall,
            kind,
            path: path.map(str::to_owned),
            message: message.into(),
            by: by.map(str::to_owned),
        });
    }

    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// How many distinct prefixes the site's lines announce; counted once per change of
    /// the learned routes (a full table is a sort of every prefix), not per view.
    pub(crate) fn learned_prefixes(&self, site: &str) -> usize {
        let mut cache = self.learned_counts.borrow_mut();
        if let Some((generation, counts)) = cache.as_ref() {
            if *generation == self.routes_generation {
                if let Some(n) = counts.get(site) {
                    return *n;
                }
            }
        }
        let n = self.count_learned(site);
        match cache.as_mut() {
            Some((generation, counts)) if *generation == self.routes_generation => {
                counts.insert(site.to_owned(), n);
            }
            _ => {
                *cache = Some((
                    self.routes_generation,
                    BTreeMap::from([(site.to_owned(), n)]),
                ))
            }
        }
        n
    }

    fn count_learned(&self, site: &str) -> usize {
        let mut all: Vec<&ipnet::IpNet> = self
            .bgp
            .values()
            .filter(|n| {
                self.config
                    .lines
                    .iter()
                    .any(|l| l.name.get_ref() == &n.line && l.site.get_ref() == site)
            })
            .flat_map(|n| n.learned.keys())
            .collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    }
}

#[cfg(test)]
mod tests;
