//! The plan's ordering rules, with plain values.

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
        fallback_v4: Members::Keep,
        fallback_v6: Members::Keep,
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
            Op::Route { dst, metric, nhid } => {
                k.routes.retain(|r| !(r.dst == *dst && r.metric == *metric));
                k.routes.push(KernelRoute {
                    dst: *dst,
                    metric: *metric,
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
                metric: METRIC,
                nhid: g4
            },
            Op::Route {
                dst: net("2001:db8:2::/48"),
                metric: METRIC,
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
                metric: METRIC,
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

#[test]
fn fallback_routes_come_after_the_main_ones_through_a_group_of_their_own() {
    let tunnels = vec![tunnel(2, 9, 1), tunnel(3, 10, 3)];
    let mut s = site(Members::Set(vec![line(0, 7, "192.0.2.2")]), Members::Keep);
    s.fallback_v4 = Members::Set(tunnels.clone());
    let want = desired(std::slice::from_ref(&s), &[], true);
    let plan = diff(&want, &Kernel::default());
    let (g4, f4) = (group_id(0, Family::V4), fallback_group_id(0, Family::V4));
    let last_site_id = member_id(255, MAX_PATHS_PER_SITE as u8 - 1, Family::V6);
    assert!(f4 > last_site_id, "clear of every site's block");
    let routes: Vec<&Op> = plan
        .ops
        .iter()
        .filter(|o| matches!(o, Op::Route { .. }))
        .collect();
    assert_eq!(
        routes,
        [
            &Op::Route {
                dst: net("198.18.2.0/24"),
                metric: METRIC,
                nhid: g4
            },
            &Op::Route {
                dst: net("198.18.2.0/24"),
                metric: FALLBACK_METRIC,
                nhid: f4
            },
        ]
    );
    let groups: Vec<u32> = plan
        .ops
        .iter()
        .filter_map(|o| match o {
            Op::Nexthop(n) if matches!(n.kind, Kind::Group(_)) => Some(n.id),
            _ => None,
        })
        .collect();
    assert_eq!(groups, [g4, f4], "the main group first");
    let k = apply(&Kernel::default(), &plan);
    assert!(diff(&want, &k).is_empty());

    // The line loses its carrier: the kernel takes its object, the main group and the main
    // routes. The site moves to the tunnels; the fallback group, now with nothing else
    // healthy, stays as it is (Keep) and only the main group and routes come back.
    let mut cut = k.clone();
    cut.nexthops
        .retain(|n| n.id != g4 && n.id != member_id(0, 0, Family::V4));
    cut.routes.retain(|r| r.nhid != Some(g4));
    let mut s = site(Members::Set(tunnels.clone()), Members::Keep);
    s.standby_v4 = tunnels.clone();
    let plan = diff(&desired(&[s], &cut.nexthops, true), &cut);
    assert_eq!(
        plan.ops,
        [
            Op::Nexthop(Nexthop::group(
                g4,
                PROTOCOL,
                vec![
                    (member_id(0, 2, Family::V4), 1),
                    (member_id(0, 3, Family::V4), 3)
                ]
            )),
            Op::Route {
                dst: net("198.18.2.0/24"),
                metric: METRIC,
                nhid: g4
            },
        ]
    );

    // Another protocol's route at the fallback metric is a conflict, left alone; ours
    // there without a fallback group is removed.
    let mut k2 = k.clone();
    k2.routes.retain(|r| r.metric != FALLBACK_METRIC);
    k2.routes.push(KernelRoute {
        dst: net("198.18.2.0/24"),
        metric: FALLBACK_METRIC,
        protocol: 12,
        nhid: None,
    });
    let plan = diff(&want, &k2);
    assert_eq!(plan.conflicts, [net("198.18.2.0/24")]);
    assert!(plan.is_empty(), "{plan:?}");
    let (only_main, _) = on_line1_v4();
    let plan = diff(&only_main, &k);
    assert_eq!(
        plan.ops,
        [
            Op::DelRoute {
                dst: net("198.18.2.0/24"),
                metric: FALLBACK_METRIC
            },
            Op::DelNexthop(f4),
            Op::DelNexthop(member_id(0, 2, Family::V4)),
            Op::DelNexthop(member_id(0, 3, Family::V4)),
        ]
    );
}

#[test]
fn the_same_members_in_another_order_change_nothing_in_the_kernel() {
    let ecmp = |members: Vec<Member>, k: &Kernel| {
        desired(
            &[site(Members::Set(members), Members::Keep)],
            &k.nexthops,
            true,
        )
    };
    let (t1, t2) = (tunnel(2, 9, 1), tunnel(3, 10, 3));
    let first = ecmp(vec![t2.clone(), t1.clone()], &Kernel::default());
    let k = apply(&Kernel::default(), &diff(&first, &Kernel::default()));
    let g4 = group_id(0, Family::V4);
    let group = k.nexthops.iter().find(|n| n.id == g4).unwrap();
    assert_eq!(
        group.kind,
        Kind::Group(vec![
            (member_id(0, 2, Family::V4), 1),
            (member_id(0, 3, Family::V4), 3)
        ]),
        "members in id order: the order decides which flows hash to which"
    );
    assert!(diff(&ecmp(vec![t1, t2], &k), &k).is_empty());
}
