//! What crosslink wants in the kernel's FIB and the steps from what is there to it. Sans-IO:
//! interface names are resolved by the caller and the kernel's state comes in as dumps, so
//! the ordering rules below are tested with plain values.
//!
//! Per site and address family one nexthop group; every prefix of the site is a route with
//! `nhid` = that group, so a switch is one group replace whatever the prefix count.
//! Object ids are derived from the site's and path's position in the config, so a restarted
//! agent finds its own objects where it left them.

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
/// First id of our range ("CL" << 16): sites take 256 ids each.
const ID_BASE: u32 = 0x434c_0000;
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

/// One member of a site's group: a path's position in the site (its id) and how to reach
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

/// The objects we want, by id and by prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub nexthops: BTreeMap<u32, Nexthop>,
    pub routes: BTreeMap<IpNet, u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or replace a nexthop object (members before the groups that use them).
    Nexthop(Nexthop),
    Route {
        dst: IpNet,
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
    /// Prefixes another protocol already routes at our metric: left alone.
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
            (Family::V4, &site.v4, &site.standby_v4),
            (Family::V6, &site.v6, &site.standby_v6),
        ];
        for (family, members, standby) in families {
            for mem in standby {
                let nh = member(site.index, family, mem);
                out.nexthops.insert(nh.id, nh);
            }
            let gid = group_id(site.index, family);
            let kept = in_kernel.get(&gid);
            let set = match members {
                Members::Set(m) => Some(m),
                Members::KeepOr(m) if kept.is_none() => Some(m),
                Members::KeepOr(_) | Members::Keep => None,
            };
            match (set, kept) {
                // The kernel refuses empty groups.
                (Some(m), _) if m.is_empty() => continue,
                (Some(m), _) => {
                    let mut group = Vec::with_capacity(m.len());
                    for mem in m {
                        let nh = member(site.index, family, mem);
                        group.push((nh.id, mem.weight.clamp(1, 256)));
                        out.nexthops.insert(nh.id, nh);
                    }
                    out.nexthops
                        .insert(gid, Nexthop::group(gid, PROTOCOL, group));
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
                }
                (None, None) => continue,
            }
            if !routes {
                continue;
            }
            for p in site.prefixes.iter() {
                if Family::of(p.addr()) == family {
                    out.routes.entry(p.trunc()).or_insert(gid);
                }
            }
        }
    }
    out
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
/// route of ours without a nexthop: members, then groups, then routes; deletions last,
/// routes before the groups they use and groups before their members.
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
    let at_metric: BTreeMap<IpNet, &KernelRoute> = kernel
        .routes
        .iter()
        .filter(|r| r.metric == METRIC)
        .map(|r| (r.dst, r))
        .collect();
    for (dst, nhid) in &want.routes {
        match at_metric.get(dst) {
            Some(r) if r.protocol != PROTOCOL => plan.conflicts.push(*dst),
            Some(r) if r.nhid == Some(*nhid) => {}
            _ => plan.ops.push(Op::Route {
                dst: *dst,
                nhid: *nhid,
            }),
        }
    }
    for r in kernel.routes.iter().filter(|r| r.protocol == PROTOCOL) {
        let wanted = r.metric == METRIC && want.routes.contains_key(&r.dst);
        if !wanted {
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
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn line(slot: u8, ifindex: u32, gw: &str) -> Member {
        Member {
            slot,
            ifindex,
            gateway: Some(gw.parse().unwrap()),
            weight: 1,
        }
    }

    fn tunnel(slot: u8, ifindex: u32, weight: u16) -> Member {
        Member {
            slot,
            ifindex,
            gateway: None,
            weight,
        }
    }

    fn site(v4: Members, v6: Members) -> SiteWant {
        SiteWant {
            index: 0,
            prefixes: vec![net("198.18.2.0/24"), net("2001:db8:2::/48")].into(),
            v4,
            v6,
            standby_v4: Vec::new(),
            standby_v6: Vec::new(),
        }
    }

    /// Both families routed over line 1, routes included.
    fn dual_stack_on_line1() -> Desired {
        desired(
            &[site(
                Members::Set(vec![line(0, 7, "192.0.2.2")]),
                Members::Set(vec![line(0, 7, "2001:db8::2")]),
            )],
            &[],
            true,
        )
    }

    /// IPv4 routed over line 1, and the kernel once that is applied.
    fn on_line1_v4() -> (Desired, Kernel) {
        let normal = desired(
            &[site(
                Members::Set(vec![line(0, 7, "192.0.2.2")]),
                Members::Keep,
            )],
            &[],
            true,
        );
        let k = apply(&Kernel::default(), &diff(&normal, &Kernel::default()));
        (normal, k)
    }

    /// The kernel after applying `plan` to `k` (our objects only, as the kernel would).
    fn apply(k: &Kernel, plan: &Plan) -> Kernel {
        let mut k = k.clone();
        for op in &plan.ops {
            match op {
                Op::Nexthop(nh) => {
                    k.nexthops.retain(|n| n.id != nh.id);
                    k.nexthops.push(nh.clone());
                }
                Op::DelNexthop(id) => k.nexthops.retain(|n| n.id != *id),
                Op::Route { dst, nhid } => {
                    k.routes.retain(|r| !(r.dst == *dst && r.metric == METRIC));
                    k.routes.push(KernelRoute {
                        dst: *dst,
                        metric: METRIC,
                        protocol: PROTOCOL,
                        nhid: Some(*nhid),
                    });
                }
                Op::DelRoute { dst, metric } => {
                    k.routes.retain(|r| !(r.dst == *dst && r.metric == *metric))
                }
            }
        }
        k
    }

    #[test]
    fn ids_are_stable_and_do_not_collide() {
        assert_eq!(group_id(0, Family::V4), 0x434c_0000);
        assert_eq!(group_id(1, Family::V6), 0x434c_0101);
        assert_eq!(member_id(0, 0, Family::V4), 0x434c_0002);
        assert_eq!(member_id(0, 0, Family::V6), 0x434c_0003);
        let last = member_id(0, MAX_PATHS_PER_SITE as u8 - 1, Family::V6);
        assert!(last < group_id(1, Family::V4));
    }

    #[test]
    fn the_carrying_paths_are_read_back_from_the_group_members() {
        let group = |site, fam, slots: &[u8]| Nexthop {
            id: group_id(site, fam),
            family: 0,
            protocol: PROTOCOL,
            kind: Kind::Group(
                slots
                    .iter()
                    .map(|s| (member_id(site, *s, fam), 1))
                    .collect(),
            ),
        };
        let kernel = [
            group(1, Family::V4, &[2, 3]),
            group(1, Family::V6, &[3]),
            group(0, Family::V4, &[0]),
        ];
        assert_eq!(carrying(&kernel, 1), [2, 3]);
        assert_eq!(carrying(&kernel, 0), [0]);
        assert!(carrying(&kernel, 2).is_empty());
    }

    #[test]
    fn from_nothing_members_come_before_groups_and_groups_before_routes() {
        let want = dual_stack_on_line1();
        let plan = diff(&want, &Kernel::default());
        let g4 = group_id(0, Family::V4);
        let g6 = group_id(0, Family::V6);
        assert_eq!(
            plan.ops,
            vec![
                Op::Nexthop(Nexthop::via(
                    member_id(0, 0, Family::V4),
                    PROTOCOL,
                    "192.0.2.2".parse().unwrap(),
                    7
                )),
                Op::Nexthop(Nexthop::via(
                    member_id(0, 0, Family::V6),
                    PROTOCOL,
                    "2001:db8::2".parse().unwrap(),
                    7
                )),
                Op::Nexthop(Nexthop::group(g4, PROTOCOL, vec![(g4 + 2, 1)])),
                Op::Nexthop(Nexthop::group(g6, PROTOCOL, vec![(g6 + 2, 1)])),
                Op::Route {
                    dst: net("198.18.2.0/24"),
                    nhid: g4
                },
                Op::Route {
                    dst: net("2001:db8:2::/48"),
                    nhid: g6
                },
            ]
        );
    }

    #[test]
    fn a_failover_is_new_members_then_one_group_replace_and_the_old_member_goes() {
        let (normal, k) = on_line1_v4();
        assert!(diff(&normal, &k).is_empty(), "applied state is stable");
        let failover = desired(
            &[site(
                Members::Set(vec![tunnel(2, 9, 1), tunnel(3, 10, 3)]),
                Members::Keep,
            )],
            &k.nexthops,
            true,
        );
        let plan = diff(&failover, &k);
        let g4 = group_id(0, Family::V4);
        assert_eq!(
            plan.ops,
            vec![
                Op::Nexthop(Nexthop::dev(
                    member_id(0, 2, Family::V4),
                    false,
                    PROTOCOL,
                    9
                )),
                Op::Nexthop(Nexthop::dev(
                    member_id(0, 3, Family::V4),
                    false,
                    PROTOCOL,
                    10
                )),
                Op::Nexthop(Nexthop::group(
                    g4,
                    PROTOCOL,
                    vec![
                        (member_id(0, 2, Family::V4), 1),
                        (member_id(0, 3, Family::V4), 3)
                    ]
                )),
                Op::DelNexthop(member_id(0, 0, Family::V4)),
            ],
            "routes are untouched: they follow the group"
        );
        assert!(diff(&failover, &apply(&k, &plan)).is_empty());
    }

    #[test]
    fn with_standby_members_in_place_a_switch_is_the_group_replace_alone() {
        let tunnels = vec![tunnel(2, 9, 1), tunnel(3, 10, 3)];
        let with_standby = |members: Vec<Member>, k: &Kernel| {
            let mut s = site(Members::Set(members), Members::Keep);
            s.standby_v4 = vec![line(0, 7, "192.0.2.2"), tunnel(2, 9, 1), tunnel(3, 10, 3)];
            desired(&[s], &k.nexthops, true)
        };
        let normal = with_standby(vec![line(0, 7, "192.0.2.2")], &Kernel::default());
        let k = apply(&Kernel::default(), &diff(&normal, &Kernel::default()));
        assert_eq!(
            k.nexthops.len(),
            4,
            "three paths and the group, whether in it or not"
        );
        let failover = with_standby(tunnels.clone(), &k);
        let g4 = group_id(0, Family::V4);
        assert_eq!(
            diff(&failover, &k).ops,
            vec![Op::Nexthop(Nexthop::group(
                g4,
                PROTOCOL,
                vec![
                    (member_id(0, 2, Family::V4), 1),
                    (member_id(0, 3, Family::V4), 3)
                ]
            ))],
            "the line's object stays for the return"
        );
        // A path that left the standby (down) loses its object after the group moved.
        let mut s = site(Members::Set(tunnels), Members::Keep);
        s.standby_v4 = vec![tunnel(2, 9, 1), tunnel(3, 10, 3)];
        let line_down = desired(&[s], &k.nexthops, true);
        let plan = diff(&line_down, &k);
        assert_eq!(
            plan.ops.last(),
            Some(&Op::DelNexthop(member_id(0, 0, Family::V4)))
        );
        assert!(matches!(plan.ops[0], Op::Nexthop(Nexthop { id, .. }) if id == g4));
    }

    #[test]
    fn keep_holds_the_kernel_group_and_without_one_installs_nothing() {
        let set = desired(
            &[site(
                Members::Set(vec![tunnel(2, 9, 1)]),
                Members::Set(vec![tunnel(2, 9, 1)]),
            )],
            &[],
            true,
        );
        let k = apply(&Kernel::default(), &diff(&set, &Kernel::default()));
        let kept = desired(&[site(Members::Keep, Members::Keep)], &k.nexthops, true);
        assert_eq!(kept, set, "an adopted group is kept as it is");
        assert!(diff(&kept, &k).is_empty());
        let none = desired(&[site(Members::Keep, Members::Keep)], &[], true);
        assert_eq!(none, Desired::default());
        let empty = desired(&[site(Members::Set(vec![]), Members::Keep)], &[], true);
        assert_eq!(empty, Desired::default(), "the kernel refuses empty groups");
        // With a group in the kernel, KeepOr keeps it; without one, it uses its members.
        let fallback = vec![tunnel(3, 11, 1)];
        let kept = desired(
            &[site(
                Members::KeepOr(fallback.clone()),
                Members::KeepOr(fallback.clone()),
            )],
            &k.nexthops,
            true,
        );
        assert_eq!(kept, set);
        let fresh = desired(
            &[site(Members::KeepOr(fallback.clone()), Members::Keep)],
            &[],
            true,
        );
        let fresh_set = desired(&[site(Members::Set(fallback), Members::Keep)], &[], true);
        assert_eq!(fresh, fresh_set);
    }

    #[test]
    fn drift_is_repaired_and_foreign_objects_are_never_touched() {
        let want = dual_stack_on_line1();
        let mut k = apply(&Kernel::default(), &diff(&want, &Kernel::default()));
        // Someone deleted our IPv4 group: the kernel took the route with it.
        let g4 = group_id(0, Family::V4);
        k.nexthops.retain(|n| n.id != g4);
        k.routes.retain(|r| r.nhid != Some(g4));
        // Another daemon's objects: a nexthop, a route at our metric for a prefix we want
        // and one at its own metric.
        let foreign = Nexthop::dev(5, false, 12, 3);
        k.nexthops.push(foreign.clone());
        k.routes.retain(|r| r.dst != net("2001:db8:2::/48"));
        k.routes.push(KernelRoute {
            dst: net("2001:db8:2::/48"),
            metric: METRIC,
            protocol: 12,
            nhid: None,
        });
        k.routes.push(KernelRoute {
            dst: net("198.18.2.0/24"),
            metric: 32,
            protocol: 12,
            nhid: Some(5),
        });
        // And a stale route of ours, for a prefix no longer configured.
        k.routes.push(KernelRoute {
            dst: net("198.18.9.0/24"),
            metric: METRIC,
            protocol: PROTOCOL,
            nhid: Some(g4),
        });
        let plan = diff(&want, &k);
        assert_eq!(
            plan.ops,
            vec![
                Op::Nexthop(Nexthop::group(g4, PROTOCOL, vec![(g4 + 2, 1)])),
                Op::Route {
                    dst: net("198.18.2.0/24"),
                    nhid: g4
                },
                Op::DelRoute {
                    dst: net("198.18.9.0/24"),
                    metric: METRIC
                },
            ]
        );
        assert_eq!(plan.conflicts, vec![net("2001:db8:2::/48")]);
        let after = apply(&k, &plan);
        assert!(after.nexthops.contains(&foreign));
        assert_eq!(after.routes.iter().filter(|r| r.protocol == 12).count(), 2);
    }

    #[test]
    fn without_routes_a_switch_compares_and_changes_only_nexthops() {
        let (_, k) = on_line1_v4();
        let tunnels = site(Members::Set(vec![tunnel(2, 9, 1)]), Members::Keep);
        let quick = desired(std::slice::from_ref(&tunnels), &k.nexthops, false);
        assert!(quick.routes.is_empty());
        let no_routes = Kernel {
            nexthops: k.nexthops.clone(),
            routes: Vec::new(),
        };
        let plan = diff(&quick, &no_routes);
        assert!(
            plan.ops
                .iter()
                .all(|o| matches!(o, Op::Nexthop(_) | Op::DelNexthop(_))),
            "{plan:?}"
        );
        assert_eq!(
            plan.ops,
            diff(&desired(&[tunnels], &k.nexthops, true), &k).ops,
            "the same switch as a full pass"
        );
    }

    #[test]
    fn a_removed_site_is_deleted_routes_first_then_groups_then_members() {
        let want = desired(
            &[site(Members::Set(vec![tunnel(2, 9, 1)]), Members::Keep)],
            &[],
            true,
        );
        let k = apply(&Kernel::default(), &diff(&want, &Kernel::default()));
        let plan = diff(&Desired::default(), &k);
        let g4 = group_id(0, Family::V4);
        assert_eq!(
            plan.ops,
            vec![
                Op::DelRoute {
                    dst: net("198.18.2.0/24"),
                    metric: METRIC
                },
                Op::DelNexthop(g4),
                Op::DelNexthop(member_id(0, 2, Family::V4)),
            ]
        );
    }
}
