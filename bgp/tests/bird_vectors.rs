//! Messages captured from BIRD 2 (see vectors/README.md): decoded field by field, and the
//! UPDATEs re-encoded by crosslink to the very same bytes.

use std::net::{IpAddr, Ipv4Addr};

use bgp::wire::{frame_len, Capability, Ctx, Family, Message, Origin};
use ipnet::IpNet;

fn messages(text: &str) -> Vec<Vec<u8>> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect()
}

fn decode_all(text: &str) -> Vec<(Vec<u8>, Message)> {
    let ctx = Ctx {
        four_octet_as: true,
        ibgp: false,
    };
    messages(text)
        .into_iter()
        .map(|m| {
            assert_eq!(frame_len(&m).unwrap(), Some(m.len()));
            let d = Message::decode(&m, &ctx).expect("BIRD's message decodes");
            (m, d)
        })
        .collect()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn bird_ipv4_session() {
    let msgs = decode_all(include_str!("vectors/bird-v4.hex"));
    let Message::Open(open) = &msgs[0].1 else {
        panic!("first is OPEN")
    };
    assert_eq!(open.asn(), 65101);
    assert_eq!(open.hold_time, 240);
    assert_eq!(open.bgp_id, Ipv4Addr::new(192, 0, 2, 2));
    assert_eq!(open.families(), vec![Family::Ipv4]);
    assert!(open.route_refresh() && open.four_octet_as());
    assert_eq!(open.graceful_restart().unwrap().restart_time, 120);
    // Enhanced route refresh (70) and long-lived graceful restart (71) are kept as unknown.
    assert!(open
        .capabilities
        .iter()
        .any(|c| matches!(c, Capability::Unknown { code: 70, .. })));
    assert_eq!(msgs[1].1, Message::Keepalive);

    let Message::Update(u) = &msgs[2].1 else {
        panic!("third is UPDATE")
    };
    assert_eq!(u.treat_as_withdraw, None);
    assert_eq!(u.nlri, vec![net("198.18.2.0/24"), net("198.18.3.0/25")]);
    let a = &u.attrs;
    assert_eq!(a.origin, Some(Origin::Igp));
    assert_eq!(a.as_path.as_ref().unwrap().first_asn(), Some(65101));
    assert_eq!(a.next_hop, Some(Ipv4Addr::new(192, 0, 2, 2)));
    assert_eq!(a.med, Some(50));
    assert_eq!(a.communities, vec![(65101 << 16) | 200]);
    assert_eq!(a.large_communities, vec![[65101, 0, 200]]);
    let Message::Update(eor) = &msgs[3].1 else {
        panic!("fourth is End-of-RIB")
    };
    assert_eq!(eor.end_of_rib(), Some(Family::Ipv4));
}

#[test]
fn bird_ipv6_session() {
    let msgs = decode_all(include_str!("vectors/bird-v6.hex"));
    let Message::Open(open) = &msgs[0].1 else {
        panic!()
    };
    assert_eq!(open.families(), vec![Family::Ipv6]);
    let Message::Update(u) = &msgs[2].1 else {
        panic!()
    };
    let mp = u.mp_reach.as_ref().expect("IPv6 in MP_REACH_NLRI");
    assert_eq!(
        mp.nlri,
        vec![net("2001:db8:c::/48"), net("2001:db8:b::/64")]
    );
    assert_eq!(mp.next_hops.len(), 2, "global and link-local");
    assert_eq!(mp.next_hops[0], "2001:db8:99::2".parse::<IpAddr>().unwrap());
    assert!(matches!(mp.next_hops[1], IpAddr::V6(a) if a.segments()[0] == 0xfe80));
    let Message::Update(eor) = &msgs[3].1 else {
        panic!()
    };
    assert_eq!(eor.end_of_rib(), Some(Family::Ipv6));
}

#[test]
fn crosslink_encodes_birds_updates_to_the_same_messages() {
    let ctx = Ctx {
        four_octet_as: true,
        ibgp: false,
    };
    for text in [
        include_str!("vectors/bird-v4.hex"),
        include_str!("vectors/bird-v6.hex"),
    ] {
        for (bytes, msg) in decode_all(text) {
            let ours = msg.to_bytes(&ctx).unwrap();
            assert_eq!(Message::decode(&ours, &ctx).unwrap(), msg);
            // Same bytes, except that BIRD always writes MP_REACH_NLRI with the Extended
            // Length flag where we use the short form whenever the value fits.
            let mp = matches!(&msg, Message::Update(u) if u.mp_reach.is_some());
            if matches!(msg, Message::Update(_) | Message::Keepalive) && !mp {
                assert_eq!(ours, bytes, "{msg:?}");
            }
        }
    }
}
