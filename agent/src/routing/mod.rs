//! The FIB programmer: an actor that keeps the kernel's nexthop groups and routes as the
//! supervisor last wanted them. On every new want it switches first — against its own
//! record of the objects it wrote, without a dump: one group replace, whatever the prefix
//! count — then does the route work when due (the route dump grows with the prefix count:
//! every few seconds and whenever the prefix set changes). Once a second it reads the
//! kernel's objects afresh and repairs drift; so it does after a carrier change of ours
//! (the kernel flushes a link's nexthops without a notification) and after anything the
//! kernel refused. It reports each pass back to the supervisor; it decides nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::sync::watch;

use crate::core::events::EventKind;
use crate::fib::nexthop::{Kind, Nexthop};
use crate::fib::plan::{self, Kernel, SiteWant};
use crate::fib::Fib;
use crate::supervisor::{Input, Inputs};

/// Drift (a route or group deleted by someone else) is repaired within this.
pub const RECONCILE: Duration = Duration::from_secs(1);
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

/// What the supervisor wants in the kernel: every site's groups and routes.
#[derive(Debug, Default, PartialEq)]
pub struct Wants {
    /// Counts the wants sent; a pass reports the one it applied.
    pub generation: u64,
    pub sites: Vec<SiteWant>,
    /// Every site's prefixes, for the route dump.
    pub wanted: Arc<BTreeSet<IpNet>>,
    /// Counts the prefix sets built: a new one makes the route work due.
    pub prefixes_generation: u64,
    /// Counts the carrier changes of our interfaces (see `AgentState::carrier_epoch`).
    pub carrier_epoch: u64,
    /// The carriers are followed by notifications; read from sysfs (no table), a change
    /// moves no epoch and the kernel must be read before each switch.
    pub carriers_followed: bool,
}

/// The kernel's objects of a previous run, read once before anything is programmed.
#[derive(Debug, Clone, Default)]
pub struct Adopted {
    /// Each member object: site id, slot, router (none: a tunnel), interface.
    pub members: Vec<(u8, u8, Option<IpAddr>, u32)>,
    /// The slots carrying each site's traffic, by site id (sites with none left out).
    pub carrying: BTreeMap<u8, Vec<u8>>,
}

/// One pass, as the programmer reports it.
#[derive(Debug, Clone)]
pub struct Programmed {
    /// The wants it applied (0: none yet, the pass only read the kernel).
    pub generation: u64,
    /// When the groups (and the routes of groups it had to create) were in place; none
    /// when the kernel could not be read or the pass did not get that far.
    pub switched_at: Option<Instant>,
    /// Objects someone else had deleted or changed, put back by this pass, by what they
    /// are (`group`, `nexthop`, `route`, `stray-route`, `stray-nexthop`).
    pub repaired: BTreeMap<&'static str, u64>,
}

/// Connects to the kernel and starts the programmer; the supervisor sends it wants.
pub fn start(inputs: Inputs) -> std::io::Result<watch::Sender<Arc<Wants>>> {
    check_compat_mode();
    let (fib, nh_conn, rt_conn) = Fib::connect()?;
    tokio::spawn(nh_conn);
    tokio::spawn(rt_conn);
    let (tx, rx) = watch::channel(Arc::new(Wants::default()));
    tokio::spawn(run(fib, rx, inputs));
    Ok(tx)
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
    if found {
        tracing::info!("a previous run's routes are in the kernel: restarting gracefully");
    }
    found
}

struct Programmer {
    fib: Fib,
    inputs: Inputs,
    last_route_scan: Option<Instant>,
    /// The prefix set the routes were last synced for.
    prefixes_synced: Option<u64>,
    last_errors: Vec<String>,
    conflicts: Vec<IpNet>,
    /// The last pass left its route work to this one.
    routes_deferred: bool,
    /// Our nexthop objects as the kernel holds them after our last complete apply, and
    /// the carrier epoch then; none when they must be read afresh.
    written: Option<(u64, Vec<Nexthop>)>,
    /// When the kernel's objects were last read.
    last_read: Option<Instant>,
    /// The wants (generation, prefix set, carrier epoch) the kernel last matched, for the
    /// groups alone and with the routes: a difference found while they are still the
    /// wants is drift, something other than the agent changed its objects.
    matched: [Option<(u64, u64, u64)>; 2],
    /// Objects put back since the last report, by what they were.
    repaired: BTreeMap<&'static str, u64>,
}

/// What one reconcile did.
struct Synced {
    /// The groups it created: their routes are due at once.
    created: BTreeSet<u32>,
    /// What the kernel refused.
    errors: Vec<String>,
    /// It got through the plan (`stop`, see `Fib::apply_until`).
    done: bool,
    /// It planned from the record, not from a dump.
    from_record: bool,
}

async fn run(fib: Fib, mut wants: watch::Receiver<Arc<Wants>>, inputs: Inputs) {
    let mut p = Programmer {
        fib,
        inputs,
        last_route_scan: None,
        prefixes_synced: None,
        last_errors: Vec::new(),
        conflicts: Vec::new(),
        routes_deferred: false,
        written: None,
        last_read: None,
        matched: [None; 2],
        repaired: BTreeMap::new(),
    };
    // The previous run's objects first: the supervisor numbers and adopts by them.
    loop {
        match p.fib.kernel(&BTreeSet::new(), false).await {
            Ok(k) => {
                p.inputs.send(Input::Adopted(adopted(&k.nexthops)));
                break;
            }
            Err(e) => p.report(vec![e.to_string()]),
        }
        // Alive though failing: the watchdog is for a programmer that stopped turning.
        p.inputs.send(Input::Programmed(Programmed {
            generation: 0,
            switched_at: None,
            repaired: BTreeMap::new(),
        }));
        tokio::time::sleep(RECONCILE).await;
    }
    let mut wanted_anew = true;
    loop {
        let current = wants.borrow_and_update().clone();
        // Nothing is programmed before the supervisor's first want.
        if current.generation > 0 {
            // A timed pass reads the kernel afresh: drift is repaired within RECONCILE.
            if !wanted_anew {
                p.written = None;
            }
            let switched_at = p.pass(&current, &wants).await;
            p.inputs.send(Input::Programmed(Programmed {
                generation: current.generation,
                switched_at,
                repaired: std::mem::take(&mut p.repaired),
            }));
        }
        let wait = if p.routes_deferred {
            Duration::ZERO
        } else {
            RECONCILE
        };
        wanted_anew = tokio::select! {
            changed = wants.changed() => if changed.is_err() { return } else { true },
            () = tokio::time::sleep(wait) => false,
        };
    }
}

/// What identifies a want: a new generation, prefix set or carrier change of ours (the
/// kernel flushes a link's nexthops by itself) explains a difference with the kernel.
fn key(w: &Wants) -> (u64, u64, u64) {
    (w.generation, w.prefixes_generation, w.carrier_epoch)
}

/// The bounded label of what an operation puts back.
fn repair_of(op: &plan::Op) -> &'static str {
    match op {
        plan::Op::Nexthop(n) if matches!(n.kind, Kind::Group(_)) => "group",
        plan::Op::Nexthop(_) => "nexthop",
        plan::Op::Route { .. } => "route",
        plan::Op::DelRoute { .. } => "stray-route",
        plan::Op::DelNexthop(_) => "stray-nexthop",
    }
}

/// A recorded label back as the programmer's own (none for one it never gives).
pub fn repair_label(s: &str) -> Option<&'static str> {
    ["group", "nexthop", "route", "stray-route", "stray-nexthop"]
        .into_iter()
        .find(|l| *l == s)
}

/// The member objects and carrying groups of a kernel's nexthops.
fn adopted(nexthops: &[crate::fib::nexthop::Nexthop]) -> Adopted {
    Adopted {
        members: plan::members_in_kernel(nexthops),
        carrying: (0..=u8::MAX)
            .map(|i| (i, plan::carrying(nexthops, i)))
            .filter(|(_, s)| !s.is_empty())
            .collect(),
    }
}

impl Programmer {
    /// First what moves traffic (members and groups: one dump and, for a switch, one
    /// group replace, whatever the prefix count); then, when due, the routes. Returns
    /// when the switch was done.
    async fn pass(
        &mut self,
        wants: &Wants,
        newer: &watch::Receiver<Arc<Wants>>,
    ) -> Option<Instant> {
        let mut errors = Vec::new();
        // Route work may be cut short once, when the supervisor wants something new while
        // it runs: the next pass switches first and then carries on (`Fib::apply_until`).
        let may_stop = !self.routes_deferred;
        let stop = || may_stop && newer.has_changed().unwrap_or(false);
        let created = match self.switch(wants).await {
            Ok(s) => {
                errors.extend(s.errors);
                s.created
            }
            Err(e) => {
                self.report(vec![e.to_string()]);
                return None;
            }
        };
        let created_group = !created.is_empty();
        let mut stopped = false;
        if created_group {
            // In metric order: the main routes first, the fallback carries until they are back.
            let routes = plan::desired(&wants.sites, &[], true).routes;
            let restore = routes.into_iter().filter(|(_, g)| created.contains(g));
            let (e, done) = self.fib.restore(restore, stop).await;
            errors.extend(e.iter().map(ToString::to_string));
            stopped = !done;
        }
        let switched_at = Instant::now();
        let scan_due = self
            .last_route_scan
            .is_none_or(|t| t.elapsed() >= ROUTE_SCAN);
        let prefixes_changed = self.prefixes_synced != Some(wants.prefixes_generation);
        if stopped {
            self.routes_deferred = true;
        } else if scan_due || prefixes_changed || created_group || self.routes_deferred {
            // Something new wanted while this pass ran may move traffic (the two families'
            // withdrawals come over two sessions, a few hundred µs apart): the next pass
            // switches first and does the route work, deferred once, never twice in a row.
            // Not when a group was just created: its routes are gone until re-added.
            let newer_wants = newer.has_changed().unwrap_or(false);
            if newer_wants && !created_group && !self.routes_deferred {
                self.routes_deferred = true;
            } else {
                self.routes_deferred = false;
                match self.sync(wants, true, stop).await {
                    Ok(s) => {
                        errors.extend(s.errors);
                        self.routes_deferred = !s.done;
                        if s.done {
                            self.prefixes_synced = Some(wants.prefixes_generation);
                        }
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        self.report(errors);
        Some(switched_at)
    }

    /// Members and groups only: what moves traffic. Done again from a dump when the
    /// kernel was not as recorded.
    async fn switch(&mut self, wants: &Wants) -> Result<Synced, crate::fib::FibError> {
        let mut switch = self.sync(wants, false, || false).await;
        let redo = switch
            .as_ref()
            .ok()
            .filter(|s| s.from_record && !s.errors.is_empty());
        if let Some(first) = redo {
            // The kernel was not as recorded (it deleted or flushed something): again,
            // from a dump, so a group it re-creates gets its routes back at once; so do
            // the groups the first try created (the dump shows them as there).
            let created_first = first.created.clone();
            tracing::info!(
                refused = first.errors.len(),
                first = %first.errors[0],
                "the kernel was not as this programmer recorded it: the switch done again from a dump"
            );
            switch = self.sync(wants, false, || false).await;
            if let Ok(s) = switch.as_mut() {
                s.created.extend(created_first);
            }
        }
        switch
    }

    /// What a plan read from a dump says beyond the wants: objects someone else changed
    /// (counted as repairs when the kernel had matched these very wants), and, on a route
    /// scan, prefixes another protocol routes at our metric (told once).
    fn note_drift(&mut self, plan: &plan::Plan, wants: &Wants, scope: usize, from_record: bool) {
        if !from_record && self.matched[scope] == Some(key(wants)) {
            for op in &plan.ops {
                *self.repaired.entry(repair_of(op)).or_default() += 1;
            }
        }
        if scope == 1 {
            self.last_route_scan = Some(Instant::now());
            if plan.conflicts != self.conflicts {
                for c in &plan.conflicts {
                    tracing::warn!(prefix = %c, "another protocol routes this prefix at our metric; left alone");
                }
                self.conflicts = plan.conflicts.clone();
            }
        }
    }

    /// One reconcile, against the record of what this programmer wrote when it can be
    /// trusted (see `recorded`), else against a dump; `with_routes: false` leaves routes
    /// out on both sides.
    async fn sync(
        &mut self,
        wants: &Wants,
        with_routes: bool,
        stop: impl Fn() -> bool,
    ) -> Result<Synced, crate::fib::FibError> {
        let recorded = self.written.take().filter(|_| !with_routes);
        let recorded = recorded.and_then(|r| self.recorded(wants, r));
        let from_record = recorded.is_some();
        let kernel = match recorded {
            Some(nexthops) => Kernel {
                nexthops,
                routes: Vec::new(),
            },
            None => {
                let k = self.fib.kernel(&wants.wanted, with_routes).await?;
                self.last_read = Some(Instant::now());
                k
            }
        };
        // What the record says exists must still exist: see `Nexthops::replace_existing`.
        let existing: BTreeSet<u32> = if from_record {
            kernel.nexthops.iter().map(|n| n.id).collect()
        } else {
            BTreeSet::new()
        };
        let want = plan::desired(&wants.sites, &kernel.nexthops, with_routes);
        let created: BTreeSet<u32> = want
            .nexthops
            .values()
            .filter(|n| matches!(n.kind, Kind::Group(_)))
            .filter(|n| !kernel.nexthops.iter().any(|k| k.id == n.id))
            .map(|n| n.id)
            .collect();
        let plan = plan::diff(&want, &kernel);
        let scope = usize::from(with_routes);
        self.note_drift(&plan, wants, scope, from_record);
        // What the kernel holds once the plan is through: exactly the objects wanted.
        let after = (wants.carrier_epoch, want.nexthops.into_values().collect());
        if plan.is_empty() {
            self.written = Some(after);
            self.matched[scope] = Some(key(wants));
            return Ok(Synced {
                created,
                errors: Vec::new(),
                done: true,
                from_record,
            });
        }
        let started = Instant::now();
        let (errors, done) = self.fib.apply_expecting(&plan, &existing, stop).await;
        if done && errors.is_empty() {
            self.written = Some(after);
            self.matched[scope] = Some(key(wants));
        }
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
        Ok(Synced {
            created,
            errors: errors.iter().map(ToString::to_string).collect(),
            done,
            from_record,
        })
    }

    /// The record of our objects, when it still speaks for the kernel: written since the
    /// last carrier change of ours, while the carriers are followed by notifications (not
    /// read from sysfs), and within RECONCILE of a dump.
    fn recorded(
        &self,
        wants: &Wants,
        (epoch, nexthops): (u64, Vec<Nexthop>),
    ) -> Option<Vec<Nexthop>> {
        let read_lately = self.last_read.is_some_and(|t| t.elapsed() < RECONCILE);
        (wants.carriers_followed && epoch == wants.carrier_epoch && read_lately).then_some(nexthops)
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
            self.inputs.record(EventKind::FibError, None, first.clone());
        }
        self.last_errors = errors;
    }
}
