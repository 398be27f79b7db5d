//! Byte vectors both ways and property tests for the codec; the RFC error rules are in
//! `error_tests`.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use proptest::prelude::*;

use super::*;

pub(super) const TWO_OCTET: Ctx = Ctx {
    four_octet_as: false,
    ibgp: false,
};
pub(super) const FOUR_OCTET: Ctx = Ctx {
    four_octet_as: true,
    ibgp: false,
};
pub(super) const IBGP: Ctx = Ctx {
    four_octet_as: true,
    ibgp: true,
};

pub(super) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A whole message from its type and body.
pub(super) fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

pub(super) fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub(super) fn decode(m: &[u8], ctx: &Ctx) -> Result<Message, DecodeError> {
    Message::decode(m, ctx)
}

pub(super) fn decode_update(body: &[u8], ctx: &Ctx) -> Update {
    match decode(&msg(msg_type::UPDATE, body), ctx).expect("update decodes") {
        Message::Update(u) => *u,
        other => panic!("not an update: {other:?}"),
    }
}

pub(super) fn reset_code(m: &[u8], ctx: &Ctx) -> (u8, u8) {
    let e = decode(m, ctx).expect_err("must be a session reset");
    (e.code, e.subcode)
}

#[test]
fn keepalive_bytes() {
    let bytes = Message::Keepalive.to_bytes(&FOUR_OCTET).unwrap();
    assert_eq!(bytes, hex("ffffffffffffffffffffffffffffffff 0013 04"));
    assert_eq!(decode(&bytes, &FOUR_OCTET).unwrap(), Message::Keepalive);
}

#[test]
fn open_bytes_both_ways() {
    // AS 65001, hold 90, id 198.19.11.1; MP IPv4 and IPv6 unicast, route refresh,
    // 4-octet AS 65001, graceful restart (receiver only).
    let want = hex("ffffffffffffffffffffffffffffffff 0037 01
         04 fde9 005a c6130b01 1a
         02 18 0104 00010001 0104 00020001 0200 4104 0000fde9 4002 0000");
    let open = Open::new(
        65001,
        90,
        Ipv4Addr::new(198, 19, 11, 1),
        &[Family::Ipv4, Family::Ipv6],
    );
    let bytes = Message::Open(open.clone()).to_bytes(&FOUR_OCTET).unwrap();
    assert_eq!(bytes, want);
    let Message::Open(back) = decode(&bytes, &FOUR_OCTET).unwrap() else {
        panic!()
    };
    assert_eq!(back, open);
    assert_eq!(back.asn(), 65001);
    assert_eq!(back.families(), vec![Family::Ipv4, Family::Ipv6]);
    assert!(back.route_refresh() && back.four_octet_as());
}

#[test]
fn open_with_a_four_octet_asn_puts_as_trans_in_the_old_field() {
    let open = Open::new(
        4_200_000_001,
        3,
        Ipv4Addr::new(192, 0, 2, 1),
        &[Family::Ipv4],
    );
    assert_eq!(u32::from(open.my_as), AS_TRANS);
    let Message::Open(back) = decode(
        &Message::Open(open).to_bytes(&FOUR_OCTET).unwrap(),
        &FOUR_OCTET,
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(back.asn(), 4_200_000_001);
}

#[test]
fn open_without_mp_capability_means_ipv4_only() {
    let body = hex("04 fde9 00b4 c0000201 00");
    let Message::Open(o) = decode(&msg(msg_type::OPEN, &body), &FOUR_OCTET).unwrap() else {
        panic!()
    };
    assert_eq!(o.families(), vec![Family::Ipv4]);
    assert!(!o.four_octet_as());
    assert_eq!(o.asn(), 65001);
}

#[test]
fn open_errors_follow_rfc4271_section_6_2() {
    let e = decode(
        &msg(msg_type::OPEN, &hex("03 fde9 005a c0000201 00")),
        &FOUR_OCTET,
    )
    .unwrap_err();
    assert_eq!(
        (e.code, e.subcode, e.data.as_slice()),
        (err::OPEN, err::OPEN_UNSUPPORTED_VERSION, &[0u8, 4][..])
    );
    for (body, sub) in [
        ("04 fde9 0001 c0000201 00", err::OPEN_UNACCEPTABLE_HOLD_TIME),
        ("04 fde9 0002 c0000201 00", err::OPEN_UNACCEPTABLE_HOLD_TIME),
        ("04 fde9 005a 00000000 00", err::OPEN_BAD_BGP_ID),
        (
            "04 fde9 005a c0000201 03 01 01 00",
            err::OPEN_UNSUPPORTED_OPT_PARAM,
        ),
    ] {
        assert_eq!(
            reset_code(&msg(msg_type::OPEN, &hex(body)), &FOUR_OCTET),
            (err::OPEN, sub),
            "{body}"
        );
    }
    // Optional parameter length disagreeing with the message, and a truncated capability.
    for body in [
        "04 fde9 005a c0000201 05 02 02 02 00",
        "04 fde9 005a c0000201 04 02 02 41 04",
    ] {
        assert_eq!(
            reset_code(&msg(msg_type::OPEN, &hex(body)), &FOUR_OCTET).0,
            err::OPEN,
            "{body}"
        );
    }
    // Too short to be an OPEN at all: a header error (RFC 4271 §6.1).
    assert_eq!(
        reset_code(&msg(msg_type::OPEN, &hex("04 fde9")), &FOUR_OCTET),
        (err::HEADER, err::HEADER_BAD_LENGTH)
    );
}

#[test]
fn header_errors_follow_rfc4271_section_6_1() {
    let mut bad_marker = Message::Keepalive.to_bytes(&FOUR_OCTET).unwrap();
    bad_marker[3] = 0;
    assert_eq!(
        frame_len(&bad_marker).unwrap_err().subcode,
        err::HEADER_NOT_SYNCHRONIZED
    );
    let mut short = bad_marker.clone();
    short[3] = 0xff;
    short[17] = 18;
    let e = frame_len(&short).unwrap_err();
    assert_eq!(
        (e.subcode, e.data.as_slice()),
        (err::HEADER_BAD_LENGTH, &[0u8, 18][..])
    );
    let mut long = short.clone();
    long[16..18].copy_from_slice(&4097u16.to_be_bytes());
    assert_eq!(
        frame_len(&long).unwrap_err().subcode,
        err::HEADER_BAD_LENGTH
    );
    let e = decode(&msg(9, &[]), &FOUR_OCTET).unwrap_err();
    assert_eq!(
        (e.code, e.subcode, e.data.as_slice()),
        (err::HEADER, err::HEADER_BAD_TYPE, &[9u8][..])
    );
    assert_eq!(
        reset_code(&msg(msg_type::KEEPALIVE, &[0]), &FOUR_OCTET),
        (err::HEADER, err::HEADER_BAD_LENGTH)
    );
    assert_eq!(
        reset_code(&msg(msg_type::NOTIFICATION, &[6]), &FOUR_OCTET),
        (err::HEADER, err::HEADER_BAD_LENGTH)
    );
    // An UPDATE shorter than its two length fields.
    let e = decode(&msg(msg_type::UPDATE, &[0, 0, 0]), &FOUR_OCTET).unwrap_err();
    assert_eq!(
        (e.code, e.subcode, e.data.as_slice()),
        (err::HEADER, err::HEADER_BAD_LENGTH, &[0u8, 22][..])
    );
    // Partial input is not an error: the framer waits for more.
    let ka = Message::Keepalive.to_bytes(&FOUR_OCTET).unwrap();
    assert_eq!(frame_len(&ka[..10]).unwrap(), None);
    assert_eq!(
        frame_len(&[ka.clone(), ka.clone()].concat()).unwrap(),
        Some(19)
    );
}

fn sample_attrs() -> PathAttrs {
    PathAttrs {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::sequence(vec![65101, 65002])),
        next_hop: Some(Ipv4Addr::new(198, 19, 11, 2)),
        med: Some(50),
        local_pref: None,
        communities: vec![(65001 << 16) | 200],
        large_communities: vec![[65001, 0, 200]],
        ..PathAttrs::default()
    }
}

#[test]
fn update_ipv4_bytes_both_ways() {
    let u = Update {
        attrs: sample_attrs(),
        nlri: vec![net("198.18.2.0/24"), net("10.0.0.0/8")],
        ..Update::default()
    };
    let want = msg(
        msg_type::UPDATE,
        &hex("0000 0035
             40 01 01 00
             40 02 0a 02 02 0000fe4d 0000fdea
             40 03 04 c6130b02
             80 04 04 00000032
             c0 08 04 fde900c8
             c0 20 0c 0000fde9 00000000 000000c8
             18 c61202 08 0a"),
    );
    let bytes = Message::Update(Box::new(u.clone()))
        .to_bytes(&FOUR_OCTET)
        .unwrap();
    assert_eq!(bytes, want);
    assert_eq!(
        decode(&bytes, &FOUR_OCTET).unwrap(),
        Message::Update(Box::new(u))
    );
}

#[test]
fn update_ipv6_with_global_and_link_local_next_hop() {
    let body = hex("0000 0046
         90 0e 0035 0002 01 20 20010db8001100000000000000000002 fe800000000000000000000000000001 00
                    40 20010db8000b0000 30 20010db80001
         40 01 01 00
         40 02 06 02 01 0000fe4d
         ");
    let u = decode_update(&body, &FOUR_OCTET);
    assert_eq!(u.treat_as_withdraw, None, "{u:?}");
    let mp = u.mp_reach.as_ref().unwrap();
    assert_eq!(mp.family, Family::Ipv6);
    assert_eq!(
        mp.next_hops,
        vec![
            "2001:db8:11::2".parse::<IpAddr>().unwrap(),
            "fe80::1".parse().unwrap()
        ]
    );
    assert_eq!(
        mp.nlri,
        vec![net("2001:db8:b::/64"), net("2001:db8:1::/48")]
    );
    assert_eq!(u.announced().count(), 2);
    // And back: our encoding decodes to the same UPDATE.
    let again = Message::Update(Box::new(u.clone()))
        .to_bytes(&FOUR_OCTET)
        .unwrap();
    assert_eq!(
        decode(&again, &FOUR_OCTET).unwrap(),
        Message::Update(Box::new(u))
    );
}

#[test]
fn withdrawals_and_end_of_rib() {
    let u = decode_update(&hex("0004 18c61202 0000"), &FOUR_OCTET);
    assert_eq!(u.withdrawn, vec![net("198.18.2.0/24")]);
    assert_eq!(u.end_of_rib(), None);
    assert_eq!(
        decode_update(&hex("0000 0000"), &FOUR_OCTET).end_of_rib(),
        Some(Family::Ipv4)
    );
    let v6_eor = decode_update(&hex("0000 0006 800f 03 000201"), &FOUR_OCTET);
    assert_eq!(v6_eor.end_of_rib(), Some(Family::Ipv6));
    let v6_wd = decode_update(
        &hex("0000 000d 800f 0a 000201 30 20010db8000b"),
        &FOUR_OCTET,
    );
    assert_eq!(
        v6_wd.withdrawn_all().collect::<Vec<_>>(),
        vec![&net("2001:db8:b::/48")]
    );
}

#[test]
fn nlri_host_bits_are_cleared() {
    let u = decode_update(&hex("0000 0000 18 c61202  17 c61203"), &FOUR_OCTET);
    assert_eq!(u.nlri, vec![net("198.18.2.0/24"), net("198.18.2.0/23")]);
}

#[test]
fn as4_path_from_a_two_octet_speaker_is_merged() {
    // AS_PATH 65101 AS_TRANS (2-octet), AS4_PATH 4200000001.
    let body = hex("0000 001d
         40 01 01 00
         40 02 06 02 02 fe4d 5ba0
         40 03 04 c6130b02
         c0 11 06 02 01 fa56ea01
         18 c61202");
    let u = decode_update(&body, &TWO_OCTET);
    assert_eq!(
        u.attrs.as_path,
        Some(AsPath::sequence(vec![65101, 4_200_000_001]))
    );
    // A malformed AS4_PATH is discarded, leaving AS_TRANS in place (RFC 6793 §6).
    let mut bad = body.clone();
    bad[28] = 0x02; // AS4_PATH segment count 1 -> 2: it overruns, is malformed, and is discarded
    let u = decode_update(&bad, &TWO_OCTET);
    assert_eq!(
        u.attrs.as_path,
        Some(AsPath::sequence(vec![65101, u32::from(AS_TRANS as u16)]))
    );
}

#[test]
fn four_octet_path_towards_a_two_octet_speaker_uses_as_trans_and_as4_path() {
    let mut attrs = sample_attrs();
    attrs.as_path = Some(AsPath::sequence(vec![4_200_000_001, 65001]));
    attrs.aggregator = Some((4_200_000_001, Ipv4Addr::new(192, 0, 2, 1)));
    let u = Update {
        attrs: attrs.clone(),
        nlri: vec![net("198.18.1.0/24")],
        ..Update::default()
    };
    let bytes = Message::Update(Box::new(u)).to_bytes(&TWO_OCTET).unwrap();
    let Message::Update(back) = decode(&bytes, &TWO_OCTET).unwrap() else {
        panic!()
    };
    assert_eq!(back.attrs.as_path, attrs.as_path);
    assert_eq!(back.attrs.aggregator, attrs.aggregator);
    // The plain AS_PATH on the wire carries AS_TRANS.
    let trans = hex("02 02 5ba0 fde9");
    assert!(bytes.windows(trans.len()).any(|w| w == trans));
}

#[test]
fn large_announcements_split_within_4096_bytes() {
    let prefixes: Vec<IpNet> = (0..3000u32)
        .map(|i| {
            IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
        })
        .collect();
    let ups = Update::announce(Family::Ipv4, &prefixes, &sample_attrs(), &[], &FOUR_OCTET);
    assert!(ups.len() > 1);
    let mut total = 0;
    for u in &ups {
        let bytes = Message::Update(Box::new(u.clone()))
            .to_bytes(&FOUR_OCTET)
            .expect("fits");
        assert!(bytes.len() <= MAX_MESSAGE_LEN);
        total += u.nlri.len();
    }
    assert_eq!(total, 3000);
    let v6: Vec<IpNet> = (0..2000u16)
        .map(|i| {
            IpNet::V6(
                ipnet::Ipv6Net::new(std::net::Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 0), 48)
                    .unwrap(),
            )
        })
        .collect();
    let nh = ["2001:db8:11::1".parse().unwrap()];
    for u in Update::announce(Family::Ipv6, &v6, &sample_attrs(), &nh, &FOUR_OCTET)
        .iter()
        .chain(&Update::withdraw_prefixes(Family::Ipv6, &v6))
    {
        assert!(
            Message::Update(Box::new(u.clone()))
                .to_bytes(&FOUR_OCTET)
                .unwrap()
                .len()
                <= MAX_MESSAGE_LEN
        );
    }
}

#[test]
fn notification_and_route_refresh() {
    let n = Notification {
        code: err::CEASE,
        subcode: err::CEASE_ADMIN_SHUTDOWN,
        data: hex("05 68656c6c6f"),
    };
    let bytes = Message::Notification(n.clone())
        .to_bytes(&FOUR_OCTET)
        .unwrap();
    assert_eq!(
        bytes,
        msg(msg_type::NOTIFICATION, &hex("06 02 05 68656c6c6f"))
    );
    assert_eq!(
        decode(&bytes, &FOUR_OCTET).unwrap(),
        Message::Notification(n.clone())
    );
    assert_eq!(
        n.to_string(),
        "Cease / Administrative Shutdown (6/2): \"hello\""
    );
    let rr = Message::RouteRefresh(RouteRefresh::request(Family::Ipv6));
    let bytes = rr.to_bytes(&FOUR_OCTET).unwrap();
    assert_eq!(bytes, msg(msg_type::ROUTE_REFRESH, &hex("0002 00 01")));
    assert_eq!(decode(&bytes, &FOUR_OCTET).unwrap(), rr);
    assert_eq!(
        reset_code(&msg(msg_type::ROUTE_REFRESH, &hex("0002 00")), &FOUR_OCTET),
        (err::ROUTE_REFRESH, err::ROUTE_REFRESH_BAD_LENGTH)
    );
}

#[test]
fn decode_error_maps_to_notification() {
    let e = decode(&msg(9, &[]), &FOUR_OCTET).unwrap_err();
    let n = Notification::from(e);
    assert_eq!((n.code, n.subcode, n.data), (1, 3, vec![9]));
}

fn arb_prefix() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, l)| IpNet::V4(
            ipnet::Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc()
        )),
        (any::<u128>(), 0u8..=128)
            .prop_map(|(a, l)| IpNet::V6(ipnet::Ipv6Net::new(a.into(), l).unwrap().trunc())),
    ]
}

fn arb_attrs() -> impl Strategy<Value = PathAttrs> {
    (
        prop::option::of(prop_oneof![
            Just(Origin::Igp),
            Just(Origin::Egp),
            Just(Origin::Incomplete)
        ]),
        prop::option::of(prop::collection::vec(1u32..u32::MAX, 1..20)),
        prop::option::of(any::<u32>()),
        prop::option::of(any::<u32>()),
        prop::collection::vec(any::<u32>(), 0..5),
        prop::collection::vec(any::<[u32; 3]>(), 0..3),
    )
        .prop_map(|(origin, path, med, lp, communities, large)| PathAttrs {
            origin,
            as_path: path.map(AsPath::sequence),
            next_hop: Some(Ipv4Addr::new(198, 19, 11, 2)),
            med,
            local_pref: lp,
            communities,
            large_communities: large,
            ..PathAttrs::default()
        })
}

proptest! {
    #[test]
    fn update_round_trips(attrs in arb_attrs(), prefixes in prop::collection::vec(arb_prefix(), 1..40), four in any::<bool>()) {
        // iBGP: on eBGP a LOCAL_PREF is discarded on receipt.
        let ctx = Ctx { four_octet_as: four, ibgp: true };
        let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = prefixes.into_iter().partition(|p| matches!(p, IpNet::V4(_)));
        let mut u = Update { attrs, nlri: v4, ..Update::default() };
        if !v6.is_empty() {
            u.mp_reach = Some(MpReach { family: Family::Ipv6, next_hops: vec!["2001:db8::1".parse().unwrap()], nlri: v6 });
        }
        let bytes = Message::Update(Box::new(u.clone())).to_bytes(&ctx).unwrap();
        let Message::Update(mut back) = Message::decode(&bytes, &ctx).unwrap() else { panic!() };
        // Decoding judges what encoding does not: a missing mandatory attribute.
        if u.attrs.origin.is_none() || u.attrs.as_path.is_none() {
            prop_assert!(back.treat_as_withdraw.is_some());
            back.treat_as_withdraw = None;
        }
        prop_assert_eq!(*back, u);
    }

    #[test]
    fn open_round_trips(asn in 1u32..u32::MAX, hold in prop_oneof![Just(0u16), 3u16..], id in 1u32..) {
        let o = Open::new(asn, hold, Ipv4Addr::from(id), &[Family::Ipv4, Family::Ipv6]);
        let bytes = Message::Open(o.clone()).to_bytes(&FOUR_OCTET).unwrap();
        prop_assert_eq!(Message::decode(&bytes, &FOUR_OCTET).unwrap(), Message::Open(o));
    }

    #[test]
    fn arbitrary_bytes_never_panic(kind in 1u8..=5, body in prop::collection::vec(any::<u8>(), 0..200), four in any::<bool>()) {
        let _ = Message::decode(&msg(kind, &body), &Ctx { four_octet_as: four, ibgp: four });
    }
}
