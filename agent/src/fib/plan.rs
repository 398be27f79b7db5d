//! What crosslink wants in the kernel's FIB and the steps from what is there to it. Sans-IO:
//! interface names are resolved by the caller and the kernel's state comes in as dumps, so
//! the ordering rules below are tested with plain values.
//!
//! Per site and address family one nexthop group; every prefix of the site is a route with
//! `nhid` = that group, so a switch is one group replace whatever the prefix count.
//! Object ids are derived from the site's and path's stable ids (`core::ids`, kept beside
//! the operator's marks), so a restarted agent finds its own objects where it left them,
//! however the config was reordered meanwhile.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::nexthop::{Kind, Nexthop};

/// The route protocol number crosslink marks its nexthops and routes with (`ip` shows it
/// by name once `/etc/iproute2/rt_protos.d/crosslink.conf` is installed). Unassigned in
/// linux/rtnetlink.h, clear of BIRD (12), zebra (11) and FRR's 186–192.
pub const PROTOCOL: u8 = 210;
/// Metric of our routes. Replace only matches a route of the same prefix and metric, so a
/// metric of our own keeps us from overwriting another daemon's route (BIRD uses 32).
pub const METRIC: u32 = 20;
/// Metric of the fallback routes: every prefix a second time, through the site's fallback
/// group. When every member of a group loses its link at once, the kernel deletes the group
/// and every route through it; the fallback routes are then the kernel's choice at once,
/// while the agent puts the group and its routes back (which takes time proportional to
/// the prefix count: 0.7 s at 100,000).
pub const FALLBACK_METRIC: u32 = 21;
/// First id of our range ("CL" << 16): sites take 256 ids each.
const ID_BASE: u32 = 0x434c_0000;
/// The fallback groups' range, above the sites' blocks.
const FALLBACK_BASE: u32 = ID_BASE + 0x1_0000;
/// Paths per site that have an id (two ids each, one per family, after the two groups).
pub const MAX_PATHS_PER_SITE: usize = 127;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        if addr.is_ipv6() {
            Family::V6
        } else {
            Family::V4
        }
    }

    fn index(self) -> u32 {
        match self {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }
}

pub fn group_id(site: u8, family: Family) -> u32 {
    ID_BASE | u32::from(site) << 8 | family.index()
}

/// The group the fallback routes of `site` use (no members of its own: the paths' objects
/// are shared with the main group).
pub fn fallback_group_id(site: u8, family: Family) -> u32 {
    FALLBACK_BASE | u32::from(site) << 8 | family.index()
}

pub fn member_id(site: u8, slot: u8, family: Family) -> u32 {
    ID_BASE | u32::from(site) << 8 | (2 + u32::from(slot) * 2 + family.index())
}

/// The paths (slots) the kernel's group of `site` routes over now, from our own ids: what
/// a previous run of the agent left carrying the traffic.
pub fn carrying(nexthops: &[Nexthop], site: u8) -> Vec<u8> {
    let mut slots: Vec<u8> = nexthops
        .iter()
        .filter(|n| n.id == group_id(site, Family::V4) || n.id == group_id(site, Family::V6))
        .filter_map(|n| match &n.kind {
            Kind::Group(members) => Some(members),
            _ => None,
        })
        .flatten()
        .filter_map(|(id, _)| {
            let low = id.checked_sub(ID_BASE | u32::from(site) << 8)?;
            (2..256).contains(&low).then(|| ((low - 2) / 2) as u8)
        })
        .collect();
    slots.sort_unstable();
    slots.dedup();
    slots
}

/// Our single nexthops in the kernel, as (site id, path id, how they reach: gateway and
/// interface): what a previous run numbered, whatever its config's order was.
pub fn members_in_kernel(nexthops: &[Nexthop]) -> Vec<(u8, u8, Option<IpAddr>, u32)> {
    nexthops
        .iter()
        .filter_map(|n| {
            let low = n.id.checked_sub(ID_BASE).filter(|l| *l < 0x1_0000)?;
            let (site, slot) = ((low >> 8) as u8, low & 0xff);
            let slot = (2..256).contains(&slot).then(|| ((slot - 2) / 2) as u8)?;
            match n.kind {
                Kind::Via { gateway, oif } => Some((site, slot, Some(gateway), oif)),
                Kind::Dev { oif } => Some((site, slot, None, oif)),
                _ => None,
            }
        })
        .collect()
}

/// One member of a site's group: its path's stable id in the site (`core::ids`) and how to reach
/// it. `gateway: None` is a device nexthop (a tunnel), otherwise the line router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub slot: u8,
    pub ifindex: u32,
    pub gateway: Option<IpAddr>,
    pub weight: u16,
}

/// The members one family of a site should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    Set(Vec<Member>),
    /// Nothing is healthy (or nothing has been judged yet, right after a start): the group
    /// stays as the kernel has it. Fail static: an old path may still carry traffic, no
    /// path certainly does not.
    Keep,
    /// As `Keep`; but where the kernel has no group left, these members (better some path
    /// than none).
    KeepOr(Vec<Member>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteWant {
    pub index: u8,
    /// Shared with the caller's cache: a site may have a full table of them.
    pub prefixes: Arc<[IpNet]>,
    pub v4: Members,
    pub v6: Members,
    /// Paths that could be members next (healthy now), per family: their nexthop objects
    /// are kept in the kernel outside any group, so that a switch is the group replace
    /// alone. Creating a member in the switch cost 50–400 µs per object (an IPv6 gateway
    /// the most), paid while traffic was being dropped.
    pub standby_v4: Vec<Member>,
    pub standby_v6: Vec<Member>,
    /// The fallback group's members, per family: where the traffic goes if the main
    /// group's paths all lose their link (see `FALLBACK_METRIC`).
    pub fallback_v4: Members,
    pub fallback_v6: Members,
}

/// A route as the kernel holds it (main table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    pub dst: IpNet,
    pub metric: u32,
    pub protocol: u8,
    pub nhid: Option<u32>,
}

/// What the kernel holds: every nexthop object and the routes of the main table that
/// matter (ours, and any other at a prefix we want).
#[derive(Debug, Clone, Default)]
pub struct Kernel {
    pub nexthops: Vec<Nexthop>,
    pub routes: Vec<KernelRoute>,
}

/// The objects we want: nexthops by id, routes by metric and prefix to their group (so the
/// main routes come first in order: they carry the traffic).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub nexthops: BTreeMap<u32, Nexthop>,
    pub routes: BTreeMap<(u32, IpNet), u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or replace a nexthop object (members before the groups that use them).
    Nexthop(Nexthop),
    Route {
        dst: IpNet,
        metric: u32,
        nhid: u32,
    },
    DelRoute {
        dst: IpNet,
        metric: u32,
    },
    DelNexthop(u32),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// Prefixes another protocol already routes at one of our metrics: left alone.
    pub conflicts: Vec<IpNet>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

fn ours(nh: &Nexthop) -> bool {
    nh.protocol == PROTOCOL
}

/// The state to reach. `Keep` copies our group (and its members) from the kernel. Without
/// `routes` only the nexthops are wanted: what moves traffic, at a cost that does not grow
/// with the prefix count (pair it with a kernel state without routes).
pub fn desired(sites: &[SiteWant], kernel: &[Nexthop], routes: bool) -> Desired {
    let in_kernel: BTreeMap<u32, &Nexthop> = kernel
        .iter()
        .filter(|n| ours(n))
        .map(|n| (n.id, n))
        .collect();
    let mut out = Desired::default();
    for site in sites {
        let families = [
            (Family::V4, &site.v4, &site.fallback_v4, &site.standby_v4),
            (Family::V6, &site.v6, &site.fallback_v6, &site.standby_v6),
        ];
        for (family, members, fallback, standby) in families {
            for mem in standby {
                let nh = member(site.index, family, mem);
                out.nexthops.insert(nh.id, nh);
            }
            let groups = [
                (group_id(site.index, family), members, METRIC),
                (
                    fallback_group_id(site.index, family),
                    fallback,
                    FALLBACK_METRIC,
                ),
            ];
            for (gid, members, metric) in groups {
                if !group(&mut out, &in_kernel, site.index, family, gid, members) || !routes {
                    continue;
                }
                for p in site.prefixes.iter() {
                    if Family::of(p.addr()) == family {
                        out.routes.entry((metric, p.trunc())).or_insert(gid);
                    }
                }
            }
        }
    }
    out
}

/// Puts group `gid` with `members` (and the members' objects) into `out`; false when
/// there is to be no such group.
fn group(
    out: &mut Desired,
    in_kernel: &BTreeMap<u32, &Nexthop>,
    site: u8,
    family: Family,
    gid: u32,
    members: &Members,
) -> bool {
    let kept = in_kernel.get(&gid);
    let set = match members {
        Members::Set(m) => Some(m),
        Members::KeepOr(m) if kept.is_none() => Some(m),
        Members::KeepOr(_) | Members::Keep => None,
    };
    match (set, kept) {
        // The kernel refuses empty groups.
        (Some(m), _) if m.is_empty() => false,
        (Some(m), _) => {
            let mut group = Vec::with_capacity(m.len());
            for mem in m {
                let nh = member(site, family, mem);
                group.push((nh.id, mem.weight.clamp(1, 256)));
                out.nexthops.insert(nh.id, nh);
            }
            // In id order, not the config's: the order sets which flows hash to which
            // member, so a reload that only reorders paths must not move any flow.
            group.sort_unstable();
            out.nexthops
                .insert(gid, Nexthop::group(gid, PROTOCOL, group));
            true
        }
        (None, Some(g)) => {
            if let Kind::Group(m) = &g.kind {
                for (id, _) in m {
                    if let Some(nh) = in_kernel.get(id) {
                        out.nexthops.insert(*id, (*nh).clone());
                    }
                }
            }
            out.nexthops.insert(gid, (*g).clone());
            true
        }
        (None, None) => false,
    }
}

/// The nexthop object of one path of a site, in or out of its group.
fn member(site: u8, family: Family, mem: &Member) -> Nexthop {
    let id = member_id(site, mem.slot, family);
    match mem.gateway {
        Some(gw) => Nexthop::via(id, PROTOCOL, gw, mem.ifindex),
        None => Nexthop::dev(id, family == Family::V6, PROTOCOL, mem.ifindex),
    }
}

/// The operations, in an order the kernel accepts at every step and that never leaves a
/// route of ours without a nexthop: members, then groups, then routes (the main ones
/// first: they carry the traffic); deletions last, routes before the groups they use and
/// groups before their members.
pub fn diff(want: &Desired, kernel: &Kernel) -> Plan {
    let have: BTreeMap<u32, &Nexthop> = kernel
        .nexthops
        .iter()
        .filter(|n| ours(n))
        .map(|n| (n.id, n))
        .collect();
    let mut plan = Plan::default();
    let is_group = |n: &Nexthop| matches!(n.kind, Kind::Group(_));
    for groups in [false, true] {
        for nh in want.nexthops.values().filter(|n| is_group(n) == groups) {
            if have.get(&nh.id) != Some(&nh) {
                plan.ops.push(Op::Nexthop(nh.clone()));
            }
        }
    }
    let at_metric: BTreeMap<(u32, IpNet), &KernelRoute> = kernel
        .routes
        .iter()
        .filter(|r| r.metric == METRIC || r.metric == FALLBACK_METRIC)
        .map(|r| ((r.metric, r.dst), r))
        .collect();
    let mut conflicts = std::collections::BTreeSet::new();
    for (&(metric, dst), &nhid) in &want.routes {
        match at_metric.get(&(metric, dst)) {
            Some(r) if r.protocol != PROTOCOL => {
                conflicts.insert(dst);
            }
            Some(r) if r.nhid == Some(nhid) => {}
            _ => plan.ops.push(Op::Route { dst, metric, nhid }),
        }
    }
    plan.conflicts = conflicts.into_iter().collect();
    for r in kernel.routes.iter().filter(|r| r.protocol == PROTOCOL) {
        if !want.routes.contains_key(&(r.metric, r.dst)) {
            plan.ops.push(Op::DelRoute {
                dst: r.dst,
                metric: r.metric,
            });
        }
    }
    for groups in [true, false] {
        for nh in have.values().filter(|n| is_group(n) == groups) {
            if !want.nexthops.contains_key(&nh.id) {
                plan.ops.push(Op::DelNexthop(nh.id));
            }
        }
    }
    plan
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
