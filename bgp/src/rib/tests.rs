use std::net::Ipv4Addr;

use super::*;
use crate::wire::{Message, MpReach, MpUnreach};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn bound(net_: &str, max_len: u8) -> ImportBound {
    ImportBound {
        net: net(net_),
        max_len,
    }
}

fn policy(max: u32) -> ImportPolicy {
    ImportPolicy {
        bounds: vec![bound("198.18.2.0/23", 25), bound("2001:db8:b::/48", 64)],
        max_prefixes: max,
        action: MaxPrefixAction::Teardown,
        local_asn: 65001,
        peer_asn: 65101,
    }
}

fn announce(prefixes: &[&str], path: Vec<u32>) -> Update {
    Update {
        attrs: PathAttrs {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(path)),
            next_hop: Some(Ipv4Addr::new(198, 19, 11, 2)),
            local_pref: Some(500),
            ..PathAttrs::default()
        },
        nlri: prefixes.iter().map(|p| net(p)).collect(),
        ..Update::default()
    }
}

#[test]
fn accepts_inside_the_aggregates_only() {
    let mut rib = AdjRibIn::new(policy(100));
    let d = rib.apply(
        &announce(
            &[
                "198.18.2.0/24",
                "198.18.3.128/25",
                "10.0.0.0/8",
                "198.18.0.0/15",
            ],
            vec![65101, 65002],
        ),
        true,
    );
    assert_eq!(d.added.len(), 2);
    assert_eq!(
        d.rejected.len(),
        2,
        "a leak and a covering aggregate are refused: {d:?}"
    );
    assert_eq!(rib.len(), 2);
    assert_eq!(rib.rejected_total(), 2);
    let (ra, stale) = rib.get(&net("198.18.2.0/24")).unwrap();
    assert_eq!(ra.attrs.local_pref, None, "LOCAL_PREF from eBGP is ignored");
    assert!(!stale);
}

#[test]
fn routes_share_interned_attributes() {
    let mut p = policy(100_000);
    p.bounds[0].max_len = 32;
    let mut rib = AdjRibIn::new(p);
    let prefixes: Vec<String> = (0..=255).map(|i| format!("198.18.2.{i}/32")).collect();
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    rib.apply(&announce(&refs, vec![65101]), true);
    assert_eq!((rib.len(), rib.attr_sets()), (256, 1));
    // The same attributes again is no change; withdrawing all frees the set.
    let d = rib.apply(&announce(&refs[..10], vec![65101]), true);
    assert!(d.added.is_empty());
    let wd = Update {
        withdrawn: refs.iter().map(|p| net(p)).collect(),
        ..Update::default()
    };
    assert_eq!(rib.apply(&wd, true).withdrawn.len(), 256);
    assert_eq!((rib.len(), rib.attr_sets()), (0, 0));
}

#[test]
fn changed_attributes_are_reported_and_old_sets_dropped() {
    let mut rib = AdjRibIn::new(policy(100));
    rib.apply(&announce(&["198.18.2.0/24"], vec![65101]), true);
    let d = rib.apply(&announce(&["198.18.2.0/24"], vec![65101, 65002]), true);
    assert_eq!(
        d.added,
        vec![(net("198.18.2.0/24"), "198.19.11.2".parse().unwrap())]
    );
    assert_eq!(rib.attr_sets(), 1);
}

#[test]
fn treat_as_withdraw_removes_what_was_there() {
    let mut rib = AdjRibIn::new(policy(100));
    rib.apply(&announce(&["198.18.2.0/24"], vec![65101]), true);
    let mut bad = announce(&["198.18.2.0/24"], vec![65101]);
    bad.treat_as_withdraw = Some("invalid ORIGIN");
    let d = rib.apply(&bad, true);
    assert_eq!(d.withdrawn, vec![net("198.18.2.0/24")]);
    assert_eq!(
        d.rejected,
        vec![(net("198.18.2.0/24"), Rejection::Malformed("invalid ORIGIN"))]
    );
    assert_eq!(d.rejected[0].1.label(), "malformed");
    assert!(rib.is_empty());
}

#[test]
fn paths_we_must_not_use() {
    let mut rib = AdjRibIn::new(policy(100));
    let d = rib.apply(&announce(&["198.18.2.0/24"], vec![65999, 65101]), true);
    assert_eq!(d.rejected[0].1, Rejection::FirstAs);
    assert!(d.rejected[0].1.to_string().contains("neighbour's ASN"));
    let d = rib.apply(&announce(&["198.18.2.0/24"], vec![65101, 65001]), true);
    assert_eq!(d.rejected[0].1, Rejection::AsLoop);
    assert!(rib.is_empty());
}

#[test]
fn max_prefix_is_flagged_with_the_rfc4486_notification() {
    let mut rib = AdjRibIn::new(policy(2));
    let d = rib.apply(
        &announce(&["198.18.2.0/24", "198.18.3.0/24"], vec![65101]),
        true,
    );
    assert_eq!(d.over_limit, None);
    let d = rib.apply(&announce(&["198.18.2.0/25"], vec![65101]), true);
    assert_eq!(d.over_limit, Some(2));
    // Beyond the limit, with the session about to close, it is never installed.
    assert_eq!(d.rejected, [(net("198.18.2.0/25"), Rejection::MaxPrefix)]);
    assert!(d.added.is_empty() && rib.len() == 2);
    // An update of a route already held is no new prefix.
    let d = rib.apply(&announce(&["198.18.2.0/24"], vec![65101, 65002]), true);
    assert_eq!((d.added.len(), d.over_limit), (1, None));
    let n = rib.max_prefix_notification(Family::Ipv4);
    assert_eq!(
        (n.code, n.subcode, n.data),
        (6, 1, vec![0, 1, 1, 0, 0, 0, 2])
    );
}

#[test]
fn ipv6_routes_use_the_global_next_hop() {
    let mut rib = AdjRibIn::new(policy(100));
    let u = Update {
        attrs: announce(&[], vec![65101]).attrs,
        mp_reach: Some(MpReach {
            family: Family::Ipv6,
            next_hops: vec![
                "2001:db8:11::2".parse().unwrap(),
                "fe80::1".parse().unwrap(),
            ],
            nlri: vec![net("2001:db8:b::/64")],
        }),
        ..Update::default()
    };
    let d = rib.apply(&u, true);
    assert_eq!(
        d.added,
        vec![(net("2001:db8:b::/64"), "2001:db8:11::2".parse().unwrap())]
    );
    let wd = Update {
        mp_unreach: Some(MpUnreach {
            family: Family::Ipv6,
            withdrawn: vec![net("2001:db8:b::/64")],
        }),
        ..Update::default()
    };
    assert_eq!(rib.apply(&wd, true).withdrawn.len(), 1);
}

#[test]
fn stale_routes_are_swept_per_family_or_refreshed() {
    let mut rib = AdjRibIn::new(policy(100));
    rib.apply(
        &announce(&["198.18.2.0/24", "198.18.3.0/24"], vec![65101]),
        true,
    );
    rib.mark_stale();
    assert!(rib.get(&net("198.18.2.0/24")).unwrap().1);
    // Re-announced after the restart: fresh again, reported as a change.
    let d = rib.apply(&announce(&["198.18.2.0/24"], vec![65101]), true);
    assert_eq!(d.added.len(), 1);
    assert!(rib.sweep_stale(Some(Family::Ipv6)).is_empty());
    assert_eq!(
        rib.sweep_stale(Some(Family::Ipv4)),
        vec![net("198.18.3.0/24")]
    );
    assert_eq!(rib.len(), 1);
}

#[test]
fn export_builds_announcements_with_the_line_policy() {
    let ex = ExportPolicy {
        local_asn: 65001,
        prefixes: vec![net("198.18.1.0/24"), net("2001:db8:a::/64")],
        med: Some(100),
        prepend: 2,
        communities: vec![(65001 << 16) | 200],
        large_communities: vec![],
        withdrawn: false,
    };
    let ctx = Ctx::default();
    let ups = ex.announcements(
        &[Family::Ipv4, Family::Ipv6],
        Some("198.19.21.1".parse().unwrap()),
        &["2001:db8:21::1".parse().unwrap()],
        &ctx,
    );
    assert_eq!(ups.len(), 2);
    assert_eq!(
        ups[0].attrs.as_path,
        Some(AsPath::sequence(vec![65001, 65001, 65001]))
    );
    assert_eq!(ups[0].nlri, vec![net("198.18.1.0/24")]);
    assert_eq!(
        ups[1].mp_reach.as_ref().unwrap().nlri,
        vec![net("2001:db8:a::/64")]
    );
    for u in &ups {
        Message::Update(Box::new(u.clone())).to_bytes(&ctx).unwrap();
    }
    // Without an IPv6 next hop, IPv6 is not announced; withdrawn announces nothing.
    assert_eq!(
        ex.announcements(
            &[Family::Ipv4, Family::Ipv6],
            Some("198.19.21.1".parse().unwrap()),
            &[],
            &ctx
        )
        .len(),
        1
    );
    let drained = ExportPolicy {
        withdrawn: true,
        ..ex.clone()
    };
    assert!(drained
        .announcements(
            &[Family::Ipv4],
            Some("198.19.21.1".parse().unwrap()),
            &[],
            &ctx
        )
        .is_empty());
    assert_eq!(ex.withdrawals(&[Family::Ipv4, Family::Ipv6]).len(), 2);
}

#[test]
fn routes_tagged_graceful_shutdown_are_reported_as_such() {
    let mut rib = AdjRibIn::new(policy(100));
    let mut u = announce(&["198.18.2.0/24"], vec![65101, 65002]);
    u.attrs.communities = vec![(65101 << 16) | 7, GRACEFUL_SHUTDOWN];
    let d = rib.apply(&u, true);
    assert_eq!(d.graceful_shutdown, [net("198.18.2.0/24")]);
    // The drain ends: the same route without the community is a change, not tagged.
    u.attrs.communities.pop();
    let d = rib.apply(&u, true);
    assert_eq!(d.added.len(), 1);
    assert!(d.graceful_shutdown.is_empty(), "{d:?}");
}

#[test]
fn each_refusal_says_why_default_outside_or_too_specific() {
    let mut rib = AdjRibIn::new(policy(100));
    let d = rib.apply(
        &announce(
            &[
                "0.0.0.0/0",
                "10.0.0.0/8",
                "198.18.2.0/26",
                "198.18.2.128/25",
                "198.18.2.0/23",
            ],
            vec![65101],
        ),
        true,
    );
    let why: Vec<(String, &str)> = d
        .rejected
        .iter()
        .map(|(p, r)| (p.to_string(), r.label()))
        .collect();
    assert_eq!(
        why,
        [
            ("0.0.0.0/0".to_owned(), "default-route"),
            ("10.0.0.0/8".to_owned(), "outside-site"),
            ("198.18.2.0/26".to_owned(), "too-specific"),
        ]
    );
    assert_eq!(
        d.added.len(),
        2,
        "/25 and /23 are within `198.18.2.0/23 le 25`"
    );
    // A narrower policy removes what it no longer admits.
    let mut p = policy(100);
    p.bounds[0].max_len = 24;
    assert_eq!(rib.set_policy(p), [net("198.18.2.128/25")]);
}

#[test]
fn a_route_whose_next_hop_is_our_own_address_is_refused() {
    let mut rib = AdjRibIn::new(policy(100));
    let v4 = announce(&["198.18.2.0/24"], vec![65101]);
    assert_eq!(rib.apply(&v4, true).added.len(), 1);
    // The peer now says the next hop is us (RFC 4271 §6.3): the held route goes too.
    rib.set_local(Some("198.19.11.2".parse().unwrap()));
    let d = rib.apply(&v4, true);
    assert_eq!(d.withdrawn, vec![net("198.18.2.0/24")]);
    assert_eq!(
        d.rejected,
        vec![(net("198.18.2.0/24"), Rejection::NextHopSelf)]
    );
    assert_eq!(Rejection::NextHopSelf.label(), "next-hop-self");
    let v6 = Update {
        attrs: announce(&[], vec![65101]).attrs,
        mp_reach: Some(MpReach {
            family: Family::Ipv6,
            next_hops: vec!["2001:db8:11::1".parse().unwrap()],
            nlri: vec![net("2001:db8:b::/64")],
        }),
        ..Update::default()
    };
    rib.set_local(Some("2001:db8:11::1".parse().unwrap()));
    let d = rib.apply(&v6, true);
    assert!(d.added.is_empty(), "{d:?}");
    assert_eq!(d.rejected[0].1, Rejection::NextHopSelf);
    // Another address of ours on another session is no concern of this one.
    rib.set_local(Some("2001:db8:12::1".parse().unwrap()));
    assert_eq!(rib.apply(&v6, true).added.len(), 1);
}
