//! What each malformed or unexpected input gets, by RFC 4271 §6 and the RFCs that revise
//! it (7606, 7607, 6793, 4760, 7313 with 2918, 8203 with 9003): one test per row, or a few,
//! of bgp/ERRORS.md.

use std::net::Ipv4Addr;

use super::tests::{decode, decode_update, hex, msg, net, reset_code, FOUR_OCTET, IBGP, TWO_OCTET};
use super::*;

/// A minimal valid IPv4 UPDATE body with `extra` attributes appended before the NLRI.
fn update_with(extra: &str) -> Vec<u8> {
    let base = hex("40 01 01 00  40 02 06 02 01 0000fde9  40 03 04 c6130b02");
    let extra = hex(extra);
    let mut body = vec![0, 0];
    body.extend_from_slice(&((base.len() + extra.len()) as u16).to_be_bytes());
    body.extend_from_slice(&base);
    body.extend_from_slice(&extra);
    body.extend_from_slice(&hex("18 c61202"));
    body
}

/// RFC 7606 §7.1-§7.8 and §3 (c): the UPDATE stays, its routes are withdrawn.
#[test]
fn rfc7606_treat_as_withdraw_cases() {
    for (ctx, extra, why) in [
        (FOUR_OCTET, "80 04 02 0000", "MULTI_EXIT_DISC length"),
        (FOUR_OCTET, "c0 08 03 000000", "COMMUNITIES length"),
        // §4: only AS_PATH and ATOMIC_AGGREGATE may be empty.
        (FOUR_OCTET, "c0 08 00", "COMMUNITIES length"),
        (FOUR_OCTET, "c0 20 04 00000001", "LARGE_COMMUNITIES length"),
        // §7.5: on iBGP only; from an external peer it is discarded (below).
        (IBGP, "40 05 02 0000", "LOCAL_PREF length"),
        // MED sent as well-known: flags conflict with the type code.
        (FOUR_OCTET, "40 04 04 00000000", "attribute flags conflict"),
    ] {
        let u = decode_update(&update_with(extra), &ctx);
        assert!(
            u.treat_as_withdraw.is_some_and(|w| w.contains(why)),
            "{extra}: {:?}",
            u.treat_as_withdraw
        );
        assert_eq!(
            u.nlri,
            vec![net("198.18.2.0/24")],
            "the prefixes are known, to withdraw them"
        );
    }
    // Invalid ORIGIN value or length, malformed AS_PATH (empty segment), bad NEXT_HOP, all
    // in the base.
    for body in [
        "0000 0014 40 01 01 07  40 02 06 02 01 0000fde9  40 03 04 c6130b02 18 c61202",
        "0000 0015 40 01 02 0000  40 02 06 02 01 0000fde9  40 03 04 c6130b02 18 c61202",
        // AS_PATH: unknown segment type; a single octet after the last segment.
        "0000 0014 40 01 01 00  40 02 06 05 01 0000fde9  40 03 04 c6130b02 18 c61202",
        "0000 0015 40 01 01 00  40 02 07 02 01 0000fde9 02  40 03 04 c6130b02 18 c61202",
        // NEXT_HOP of 5 octets.
        "0000 0015 40 01 01 00  40 02 06 02 01 0000fde9  40 03 05 c6130b0200 18 c61202",
        // ORIGIN missing while NLRI is present (§3 (d)).
        "0000 0010 40 02 06 02 01 0000fde9  40 03 04 c6130b02 18 c61202",
        "0000 0010 40 01 01 00  40 02 02 02 00  40 03 04 c6130b02 18 c61202",
        "0000 0014 40 01 01 00  40 02 06 02 01 0000fde9  40 03 04 00000000 18 c61202",
        // NEXT_HOP missing while IPv4 NLRI is present.
        "0000 000d 40 01 01 00  40 02 06 02 01 0000fde9  18 c61202",
        // An attribute whose length overruns the attribute field (RFC 7606 §4, first case).
        "0000 0010 40 01 01 00  40 02 06 02 01 0000fde9  40 03 09 18 c61202",
        // Two octets left, too few for an attribute header (RFC 7606 §4, second case).
        "0000 000f 40 01 01 00  40 02 06 02 01 0000fde9  40 03  18 c61202",
    ] {
        let u = decode_update(&hex(body), &FOUR_OCTET);
        assert!(u.treat_as_withdraw.is_some(), "{body}");
    }
}

#[test]
fn rfc7606_attribute_discard_cases() {
    let u = decode_update(
        &update_with("40 06 01 00  c0 07 03 000000  40 02 06 02 01 0000ffff"),
        &FOUR_OCTET,
    );
    assert_eq!(u.treat_as_withdraw, None);
    assert!(!u.attrs.atomic_aggregate);
    assert_eq!(u.attrs.aggregator, None);
    assert_eq!(
        u.attrs.as_path,
        Some(AsPath::sequence(vec![65001])),
        "the first AS_PATH is kept"
    );
    assert_eq!(u.discarded.len(), 3, "{:?}", u.discarded);
}

#[test]
fn unknown_attributes_per_rfc4271() {
    // Unknown optional transitive: kept, marked Partial. Unknown optional non-transitive:
    // dropped.
    let u = decode_update(&update_with("c0 63 02 abcd  80 64 01 ef"), &FOUR_OCTET);
    assert_eq!(
        u.attrs.unknown,
        vec![RawAttr {
            flags: 0xe0,
            code: 0x63,
            value: vec![0xab, 0xcd]
        }]
    );
    // Unknown well-known: NOTIFICATION Unrecognized Well-known Attribute with the attribute.
    let e = decode(
        &msg(msg_type::UPDATE, &update_with("40 63 01 ab")),
        &FOUR_OCTET,
    )
    .unwrap_err();
    assert_eq!(
        (e.code, e.subcode),
        (err::UPDATE, err::UPDATE_UNRECOGNIZED_WELL_KNOWN)
    );
    assert_eq!(e.data, hex("40 63 01 ab"));
}

#[test]
fn session_reset_cases() {
    // Withdrawn length overrunning the message; attribute length overrunning it.
    assert_eq!(
        reset_code(
            &msg(msg_type::UPDATE, &hex("0009 18c61202 0000")),
            &FOUR_OCTET
        ),
        (err::UPDATE, err::UPDATE_MALFORMED_ATTR_LIST)
    );
    assert_eq!(
        reset_code(
            &msg(msg_type::UPDATE, &hex("0000 0040 400101 00")),
            &FOUR_OCTET
        ),
        (err::UPDATE, err::UPDATE_MALFORMED_ATTR_LIST)
    );
    // NLRI with a prefix length beyond 32.
    assert_eq!(
        reset_code(
            &msg(msg_type::UPDATE, &hex("0000 0000 21 c6120200 00")),
            &FOUR_OCTET
        ),
        (err::UPDATE, err::UPDATE_INVALID_NETWORK)
    );
    // MP_REACH_NLRI twice.
    let mp = "80 0e 15 0002 01 10 20010db8001100000000000000000002 00";
    let body = format!("0000 0030 {mp} {mp}");
    assert_eq!(
        reset_code(&msg(msg_type::UPDATE, &hex(&body)), &FOUR_OCTET),
        (err::UPDATE, err::UPDATE_MALFORMED_ATTR_LIST)
    );
}

/// One attribute in hex, its length octet computed.
fn attr(flags: u8, code: u8, value: &str) -> String {
    format!("{flags:02x} {code:02x} {:02x} {value}", hex(value).len())
}

/// An UPDATE body with no withdrawn routes, these attributes and this NLRI field.
fn update_body(attrs: &[String], nlri: &str) -> Vec<u8> {
    let attrs = hex(&attrs.concat());
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(&attrs);
    body.extend_from_slice(&hex(nlri));
    body
}

const ORIGIN_IGP: &str = "40 01 01 00";
const PATH_65001: &str = "40 02 06 02 01 0000fde9";
/// IPv6 unicast, next hop 2001:db8:11::2, NLRI 2001:db8:b::/48.
const MP_REACH_V6: &str = "0002 01 10 20010db8001100000000000000000002 00 30 20010db8000b";

#[test]
fn the_strongest_verdict_wins() {
    // RFC 7606 §3 (h): discard and withdraw make a withdraw; withdraw and reset a reset.
    let u = decode_update(&update_with("c0 07 03 000000  80 04 02 0000"), &FOUR_OCTET);
    assert!(u.treat_as_withdraw.is_some());
    assert_eq!(u.discarded, ["AGGREGATOR length wrong"]);
    assert_eq!(
        reset_code(
            &msg(msg_type::UPDATE, &update_with("80 04 02 0000  40 63 01 ab")),
            &FOUR_OCTET
        ),
        (err::UPDATE, err::UPDATE_UNRECOGNIZED_WELL_KNOWN)
    );
}

#[test]
fn mp_attributes_are_found_in_any_position() {
    // RFC 7606 §5.1: we send them first, but must take them anywhere, beside NLRI too.
    let body = update_body(
        &[
            ORIGIN_IGP.into(),
            PATH_65001.into(),
            "40 03 04 c6130b02".into(),
            attr(0x80, 14, MP_REACH_V6),
        ],
        "18 c61202",
    );
    let u = decode_update(&body, &FOUR_OCTET);
    assert_eq!(u.treat_as_withdraw, None);
    assert_eq!(u.announced().count(), 2);
    // A family we never announce (IPv4 multicast here) is set aside, not an error.
    let body = update_body(
        &[
            attr(0x80, 14, "0001 02 04 c6130b02 00 18 e00001"),
            ORIGIN_IGP.into(),
            PATH_65001.into(),
        ],
        "",
    );
    let u = decode_update(&body, &FOUR_OCTET);
    assert_eq!(u.mp_reach, None);
    assert_eq!(u.discarded, ["MP attribute for a family we do not speak"]);
    // RFC 4760 §3: with MP_REACH_NLRI, ORIGIN and AS_PATH are still mandatory.
    let body = update_body(&[ORIGIN_IGP.into(), attr(0x80, 14, MP_REACH_V6)], "");
    let u = decode_update(&body, &FOUR_OCTET);
    assert_eq!(u.treat_as_withdraw, Some("AS_PATH missing"));
}

#[test]
fn withdrawn_and_nlri_fields_that_do_not_parse_reset_the_session() {
    // RFC 7606 §3 (i) and §5.3: a prefix longer than 32 or one overrunning its field,
    // in the Withdrawn Routes field as in the NLRI field (RFC 4271 §6.3: Invalid Network).
    for body in [
        "0005 21 c6120200 0000",
        "0003 18 c612 0000",
        "0000 0000 18 c612",
    ] {
        assert_eq!(
            reset_code(&msg(msg_type::UPDATE, &hex(body)), &FOUR_OCTET),
            (err::UPDATE, err::UPDATE_INVALID_NETWORK),
            "{body}"
        );
    }
}

#[test]
fn local_pref_from_an_external_peer_is_discarded_whatever_its_form() {
    // RFC 7606 §7.5 and RFC 4271 §5.1.5.
    for lp in ["40 05 04 00000064", "40 05 02 0000", "80 05 04 00000064"] {
        let u = decode_update(&update_with(lp), &FOUR_OCTET);
        assert_eq!(u.treat_as_withdraw, None, "{lp}");
        assert_eq!(u.attrs.local_pref, None, "{lp}");
        assert_eq!(u.discarded, ["LOCAL_PREF from an external peer"], "{lp}");
    }
    let u = decode_update(&update_with("40 05 04 00000064"), &IBGP);
    assert_eq!((u.attrs.local_pref, u.treat_as_withdraw), (Some(100), None));
}

#[test]
fn attribute_errors_without_reachable_nlri_reset_the_session() {
    // RFC 7606 §5.2: attributes besides MP_UNREACH_NLRI but no reachable NLRI, and an
    // error beyond attribute discard: the NOTIFICATION is the one of RFC 4271 §6.3.
    let e = decode(
        &msg(msg_type::UPDATE, &hex("0004 18c61202 0004 40 01 01 07")),
        &FOUR_OCTET,
    )
    .unwrap_err();
    assert_eq!(
        (e.code, e.subcode, e.data),
        (err::UPDATE, err::UPDATE_INVALID_ORIGIN, hex("40 01 01 07"))
    );
    // MP_UNREACH_NLRI with a MULTI_EXIT_DISC sent as well-known.
    let body = update_body(
        &[
            attr(0x80, 15, "000201 30 20010db8000b"),
            attr(0x40, 4, "00000000"),
        ],
        "",
    );
    let e = decode(&msg(msg_type::UPDATE, &body), &FOUR_OCTET).unwrap_err();
    assert_eq!(
        (e.code, e.subcode, e.data),
        (
            err::UPDATE,
            err::UPDATE_ATTR_FLAGS,
            hex("40 04 04 00000000")
        )
    );
    // An MP_REACH_NLRI that announces nothing counts as no reachable NLRI.
    let body = update_body(
        &[
            attr(0x80, 14, "0002 01 10 20010db8001100000000000000000002 00"),
            "40 01 01 09".into(),
        ],
        "",
    );
    assert_eq!(
        reset_code(&msg(msg_type::UPDATE, &body), &FOUR_OCTET),
        (err::UPDATE, err::UPDATE_INVALID_ORIGIN)
    );
    // An attribute overrunning the field, with nothing announced.
    assert_eq!(
        reset_code(
            &msg(msg_type::UPDATE, &hex("0000 0005 40 01 01 00 40")),
            &FOUR_OCTET
        ),
        (err::UPDATE, err::UPDATE_ATTR_LENGTH)
    );
    // Attribute discard stays attribute discard: the withdrawal goes through.
    for attrs in ["40 06 01 00", "c0 07 03 000000", "40 05 02 0000"] {
        let mut body = hex("0004 18c61202");
        body.extend_from_slice(&(hex(attrs).len() as u16).to_be_bytes());
        body.extend_from_slice(&hex(attrs));
        let u = decode_update(&body, &FOUR_OCTET);
        assert_eq!(u.withdrawn, [net("198.18.2.0/24")], "{attrs}");
        assert_eq!(u.discarded.len(), 1, "{attrs}");
    }
}

#[test]
fn mp_attributes_that_cannot_be_read_in_full_reset_the_session() {
    // RFC 7606 §5.3 and §7.11 (session reset, not treat-as-withdraw, since the NLRI cannot
    // be located), with the subcode of RFC 4760 §7 and the attribute as data.
    for (flags, code, value, why) in [
        (
            0x80,
            14,
            "0002 01 04 c6130b02 00 30 20010db8000b",
            "IPv6 next hop of 4",
        ),
        (
            0x80,
            14,
            "0001 01 10 20010db8001100000000000000000002 00 18 c61202",
            "IPv4 next hop of 16",
        ),
        (
            0x80,
            14,
            "0002 01 40 20010db8000000000000000000000001 00",
            "next hop overruns",
        ),
        (0x80, 14, "0002 01 10 20010db800000000", "truncated"),
        (0x80, 14, "0002 01", "shorter than 5"),
        (
            0x80,
            14,
            "0002 01 10 20010db8001100000000000000000002 00 81 20010db8",
            "prefix longer than 128",
        ),
        (
            0x80,
            14,
            "0002 01 10 20010db8001100000000000000000002 00 40 20010db8",
            "prefix overruns",
        ),
        (0xc0, 14, MP_REACH_V6, "flags: transitive"),
        (0x80, 15, "0002", "MP_UNREACH shorter than 3"),
        (0x80, 15, "000201 40 20010db8", "MP_UNREACH prefix overruns"),
        (
            0x40,
            15,
            "000201 30 20010db8000b",
            "MP_UNREACH flags: well-known",
        ),
    ] {
        let a = attr(flags, code, value);
        let body = update_body(&[a.clone(), ORIGIN_IGP.into(), PATH_65001.into()], "");
        let e = decode(&msg(msg_type::UPDATE, &body), &FOUR_OCTET).unwrap_err();
        assert_eq!(
            (e.code, e.subcode, e.data),
            (err::UPDATE, err::UPDATE_OPTIONAL_ATTR, hex(&a)),
            "{why}"
        );
    }
}

#[test]
fn next_hops_that_are_no_unicast_address_make_the_routes_unusable() {
    // RFC 4760 §3 takes the NEXT_HOP rules of RFC 4271 §6.3: the routes are ignored.
    let v6_unspecified = "0002 01 10 00000000000000000000000000000000 00 30 20010db8000b";
    let body = update_body(
        &[
            attr(0x80, 14, v6_unspecified),
            ORIGIN_IGP.into(),
            PATH_65001.into(),
        ],
        "",
    );
    let u = decode_update(&body, &FOUR_OCTET);
    assert!(u.treat_as_withdraw.is_some_and(|w| w.contains("unicast")));
    assert_eq!(u.announced().count(), 1, "known, to be withdrawn");
    // A NEXT_HOP in an UPDATE whose only NLRI are in MP_REACH_NLRI is ignored (RFC 4760
    // §3), so a bad one costs nothing.
    let body = update_body(
        &[
            attr(0x80, 14, MP_REACH_V6),
            ORIGIN_IGP.into(),
            PATH_65001.into(),
            "40 03 04 00000000".into(),
        ],
        "",
    );
    let u = decode_update(&body, &FOUR_OCTET);
    assert_eq!(u.treat_as_withdraw, None);
    assert_eq!(u.announced().count(), 1);
}

#[test]
fn flag_conflicts_on_aggregation_and_as4_attributes_are_only_discarded() {
    // RFC 7606 §3 (f) for ATOMIC_AGGREGATE and AGGREGATOR, RFC 6793 §6 for the AS4 ones.
    let u = decode_update(
        &update_with("c0 06 00  40 07 08 0000fde9 c0000201"),
        &FOUR_OCTET,
    );
    assert_eq!(u.treat_as_withdraw, None);
    assert_eq!(
        (u.attrs.atomic_aggregate, u.attrs.aggregator),
        (false, None)
    );
    assert_eq!(u.discarded.len(), 2);
    let body = hex("0000 001b
         40 01 01 00
         40 02 04 02 01 fe4d
         40 03 04 c6130b02
         40 11 06 02 01 fa56ea01
         18 c61202");
    let u = decode_update(&body, &TWO_OCTET);
    assert_eq!(u.treat_as_withdraw, None);
    assert_eq!(u.attrs.as_path, Some(AsPath::sequence(vec![65101])));
}

#[test]
fn as_zero_is_malformed_in_every_attribute_that_carries_an_asn() {
    // RFC 7607 §2: AS_PATH as RFC 7606 §7.2 (treat-as-withdraw), AGGREGATOR as §7.7
    // (attribute discard), AS4_PATH and AS4_AGGREGATOR as RFC 6793 §6 (attribute discard).
    let body = update_body(
        &[
            ORIGIN_IGP.into(),
            "40 02 0a 02 02 0000fde9 00000000".into(),
            "40 03 04 c6130b02".into(),
        ],
        "18 c61202",
    );
    let u = decode_update(&body, &FOUR_OCTET);
    assert_eq!(u.treat_as_withdraw, Some("AS 0 in AS_PATH"));
    let u = decode_update(&update_with("c0 07 08 00000000 c0000201"), &FOUR_OCTET);
    assert_eq!((u.treat_as_withdraw, u.attrs.aggregator), (None, None));
    assert_eq!(u.discarded, ["AS 0 in AGGREGATOR"]);
    // From a 2-octet speaker.
    for (extra, why) in [
        ("c0 11 06 02 01 00000000", "AS 0 in AS4_PATH"),
        ("c0 12 08 00000000 c0000201", "AS 0 in AS4_AGGREGATOR"),
    ] {
        let body = update_body(
            &[
                ORIGIN_IGP.into(),
                "40 02 04 02 01 fde9".into(),
                "40 03 04 c6130b02".into(),
                extra.into(),
            ],
            "18 c61202",
        );
        let u = decode_update(&body, &TWO_OCTET);
        assert_eq!(u.treat_as_withdraw, None, "{extra}");
        assert_eq!(u.discarded, [why]);
        assert_eq!(u.attrs.as_path, Some(AsPath::sequence(vec![65001])));
        assert_eq!(u.attrs.aggregator, None);
    }
}

#[test]
fn confederation_segments_are_malformed_in_as_path_and_dropped_from_as4_path() {
    // We are in no confederation: RFC 5065 §5.3 makes such an AS_PATH malformed, handled
    // as RFC 7606 §7.2 says.
    let body = update_body(
        &[
            ORIGIN_IGP.into(),
            "40 02 0c 03 01 0000fde8 02 01 0000fe4d".into(),
            "40 03 04 c6130b02".into(),
        ],
        "18 c61202",
    );
    let u = decode_update(&body, &FOUR_OCTET);
    assert_eq!(
        u.treat_as_withdraw,
        Some("confederation segment in AS_PATH")
    );
    // RFC 6793 §6: from AS4_PATH the segments go and the rest is used.
    let body = update_body(
        &[
            ORIGIN_IGP.into(),
            "40 02 06 02 02 fe4d 5ba0".into(),
            "40 03 04 c6130b02".into(),
            "c0 11 0c 03 01 0000fde8 02 01 fa56ea01".into(),
        ],
        "18 c61202",
    );
    let u = decode_update(&body, &TWO_OCTET);
    assert_eq!(u.treat_as_withdraw, None);
    assert_eq!(
        u.discarded,
        ["confederation segments dropped from AS4_PATH"]
    );
    assert_eq!(
        u.attrs.as_path,
        Some(AsPath::sequence(vec![65101, 4_200_000_001]))
    );
}

#[test]
fn as4_attributes_follow_rfc6793() {
    let path = |p: &str| format!("40 02 {:02x} {p}", hex(p).len());
    let decode_as4 = |ctx: &Ctx, attrs: &[&str]| {
        let mut all: Vec<String> = vec![ORIGIN_IGP.into(), "40 03 04 c6130b02".into()];
        all.extend(attrs.iter().map(|a| a.to_string()));
        decode_update(&update_body(&all, "18 c61202"), ctx)
    };
    // §6: between 4-octet speakers they are discarded.
    let u = decode_as4(
        &FOUR_OCTET,
        &[&path("02 01 0000fe4d"), "c0 11 06 02 01 fa56ea01"],
    );
    assert_eq!(u.discarded, ["AS4 attribute from a 4-octet speaker"]);
    assert_eq!(u.attrs.as_path, Some(AsPath::sequence(vec![65101])));
    // §6: an AS4_PATH too short to carry an ASN is malformed, and discarded; so is an
    // AS4_AGGREGATOR of another length than 8.
    let u = decode_as4(&TWO_OCTET, &[&path("02 01 fe4d"), "c0 11 00"]);
    assert_eq!(u.discarded, ["malformed AS4_PATH"]);
    let u = decode_as4(&TWO_OCTET, &[&path("02 01 fe4d"), "c0 12 06 fa56 c0000201"]);
    assert_eq!(u.discarded, ["AS4_AGGREGATOR length is not 8"]);
    assert_eq!(u.attrs.aggregator, None);
    // §4.2.3: AGGREGATOR naming a real 2-octet AS: AS4_AGGREGATOR and AS4_PATH are ignored.
    let u = decode_as4(
        &TWO_OCTET,
        &[
            &path("02 02 fe4d 5ba0"),
            "c0 07 06 fde9 c0000201",
            "c0 12 08 fa56ea01 c0000202",
            "c0 11 06 02 01 fa56ea01",
        ],
    );
    assert_eq!(
        u.attrs.aggregator,
        Some((65001, Ipv4Addr::new(192, 0, 2, 1)))
    );
    assert_eq!(
        u.attrs.as_path,
        Some(AsPath::sequence(vec![65101, u32::from(AS_TRANS as u16)]))
    );
    // AGGREGATOR with AS_TRANS: AS4_AGGREGATOR stands, the path is merged.
    let u = decode_as4(
        &TWO_OCTET,
        &[
            &path("02 02 fe4d 5ba0"),
            "c0 07 06 5ba0 c0000201",
            "c0 12 08 fa56ea01 c0000202",
            "c0 11 06 02 01 fa56ea01",
        ],
    );
    assert_eq!(
        u.attrs.aggregator,
        Some((4_200_000_001, Ipv4Addr::new(192, 0, 2, 2)))
    );
    assert_eq!(
        u.attrs.as_path,
        Some(AsPath::sequence(vec![65101, 4_200_000_001]))
    );
    // §4.2.3: an AS_PATH with fewer ASNs than the AS4_PATH wins.
    let u = decode_as4(
        &TWO_OCTET,
        &[&path("02 01 fe4d"), "c0 11 0a 02 02 fa56ea01 fa56ea02"],
    );
    assert_eq!(u.attrs.as_path, Some(AsPath::sequence(vec![65101])));
}

#[test]
fn unrecognized_well_known_attribute_data_is_the_attribute_as_received() {
    // RFC 4271 §6.3, the Extended Length form kept.
    let e = decode(
        &msg(msg_type::UPDATE, &update_with("50 63 0001 ab")),
        &FOUR_OCTET,
    )
    .unwrap_err();
    assert_eq!(
        (e.code, e.subcode, e.data),
        (
            err::UPDATE,
            err::UPDATE_UNRECOGNIZED_WELL_KNOWN,
            hex("50 63 0001 ab")
        )
    );
}

#[test]
fn route_refresh_subtypes_follow_rfc7313() {
    let rr = |body: &str| decode(&msg(msg_type::ROUTE_REFRESH, &hex(body)), &FOUR_OCTET);
    // BoRR and EoRR decode, with their subtype (the session ignores them).
    assert_eq!(
        rr("0002 01 01").unwrap(),
        Message::RouteRefresh(RouteRefresh {
            afi: AFI_IPV6,
            safi: SAFI_UNICAST,
            subtype: 1
        })
    );
    // §5: BoRR/EoRR of the wrong length: ROUTE-REFRESH Message Error / Invalid Message
    // Length, the whole message as data. A plain request is held to the same length, as
    // we take no ORF entries (RFC 5291).
    for body in ["0002 02 01 00", "0002 01", "0001 00 01 ff", "0001"] {
        let m = msg(msg_type::ROUTE_REFRESH, &hex(body));
        let e = decode(&m, &FOUR_OCTET).unwrap_err();
        assert_eq!(
            (e.code, e.subcode, &e.data),
            (err::ROUTE_REFRESH, err::ROUTE_REFRESH_BAD_LENGTH, &m),
            "{body}"
        );
    }
    // §5: another subtype is ignored whatever its length: no error here.
    let Message::RouteRefresh(r) = rr("0002 07 01 0000").unwrap() else {
        panic!()
    };
    assert_eq!(r.subtype, 7);
    // The subtype survives encoding.
    let borr = Message::RouteRefresh(RouteRefresh {
        afi: AFI_IPV4,
        safi: SAFI_UNICAST,
        subtype: 1,
    });
    let bytes = borr.to_bytes(&FOUR_OCTET).unwrap();
    assert_eq!(bytes, msg(msg_type::ROUTE_REFRESH, &hex("0001 01 01")));
}

#[test]
fn shutdown_communication_per_rfc8203() {
    let cease = |sub, data: &[u8]| Notification {
        code: err::CEASE,
        subcode: sub,
        data: data.to_vec(),
    };
    // Control characters are escaped, so the text cannot forge log lines (§6).
    assert_eq!(
        cease(err::CEASE_ADMIN_RESET, b"\x05a\nb\xc3\xa9").to_string(),
        "Cease / Administrative Reset (6/4): \"a\\nbé\""
    );
    // §4: a length that disagrees with the data, or text that is not UTF-8, is not
    // interpreted; it is reported as malformed.
    for data in [&b"\x09hi"[..], b"\x01hi", b"\x02\xff\xfe"] {
        let n = cease(err::CEASE_ADMIN_SHUTDOWN, data);
        assert_eq!(
            n.shutdown_communication(),
            Some(ShutdownCommunication::Malformed)
        );
        assert!(
            n.to_string()
                .ends_with("malformed shutdown communication (3 octets)"),
            "{n}"
        );
    }
    // Up to 255 octets (RFC 9003 §2 lifted RFC 8203's 128).
    let mut long = vec![200];
    long.extend_from_slice(&[b'x'; 200]);
    assert_eq!(
        cease(err::CEASE_ADMIN_SHUTDOWN, &long).shutdown_communication(),
        Some(ShutdownCommunication::Text(&"x".repeat(200)))
    );
    // Length 0, no data, or another Cease: nothing to show.
    assert_eq!(
        cease(err::CEASE_ADMIN_SHUTDOWN, &[0]).to_string(),
        "Cease / Administrative Shutdown (6/2)"
    );
    assert_eq!(
        cease(err::CEASE_ADMIN_SHUTDOWN, &[]).shutdown_communication(),
        None
    );
    assert_eq!(
        cease(err::CEASE_PEER_DECONFIGURED, b"\x02hi").shutdown_communication(),
        None
    );
}

#[test]
fn a_notification_with_unknown_codes_is_reported_as_such() {
    // RFC 4271 §6.4: noticed and logged, never answered.
    assert_eq!(
        Notification::new(42, 9).to_string(),
        "unknown error code (42/9)"
    );
    let Message::Notification(n) =
        decode(&msg(msg_type::NOTIFICATION, &hex("2a 09 ff")), &FOUR_OCTET).unwrap()
    else {
        panic!()
    };
    assert_eq!((n.code, n.subcode, n.data), (42, 9, vec![0xff]));
}

#[test]
fn open_takes_any_nonzero_bgp_identifier() {
    // RFC 6286 §2.1 drops RFC 4271's "valid unicast IP host address".
    for id in ["ffffffff", "e0000001", "00000001"] {
        let body = hex(&format!("04 fde9 005a {id} 00"));
        assert!(
            matches!(
                decode(&msg(msg_type::OPEN, &body), &FOUR_OCTET),
                Ok(Message::Open(_))
            ),
            "{id}"
        );
    }
}

#[test]
fn unknown_capabilities_are_ignored_and_malformed_known_ones_refused() {
    // RFC 5492 §3: Enhanced Route Refresh (70), Extended Message (6) and an unassigned
    // code are not ours: ignored, never an Unsupported Capability.
    let body = hex("04 fde9 005a c0000201 0b 02 09 4600 0600 c8 03 010203");
    let Message::Open(o) = decode(&msg(msg_type::OPEN, &body), &FOUR_OCTET).unwrap() else {
        panic!()
    };
    assert_eq!(
        o.capabilities,
        vec![
            Capability::Unknown {
                code: 70,
                data: vec![]
            },
            Capability::Unknown {
                code: 6,
                data: vec![]
            },
            Capability::Unknown {
                code: 200,
                data: vec![1, 2, 3]
            },
        ]
    );
    // A recognized one that is malformed: RFC 4271 §6.2, subcode 0 (Unspecific).
    let body = hex("04 fde9 005a c0000201 09 02 07 01 05 0001000100");
    assert_eq!(
        reset_code(&msg(msg_type::OPEN, &body), &FOUR_OCTET),
        (err::OPEN, 0)
    );
}
