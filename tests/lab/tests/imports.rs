//! What a line router may announce: lr1 announces a more-specific inside gwb's site
//! (198.18.1.0/25 inside cloud-a's 198.18.1.0/24) and a default route. gwb refuses both,
//! says why (status by reason, an event naming each, the log), installs nothing for them,
//! and its traffic to ha is untouched. Needs root; never skipped.

use std::time::Duration;

use lab::{GatewayMode, Lab, LabOptions, Line, Node, Side};

const MORE_SPECIFIC: &str = "198.18.1.0/25";

#[test]
fn a_more_specific_inside_the_site_and_a_default_route_are_refused_and_traffic_is_untouched() {
    let opts = LabOptions::new(GatewayMode::Crosslink).bird_hook(|node, cfg| {
        if node != Node::Lr1 {
            return cfg;
        }
        // Announced over BGP, kept out of lr1's own forwarding: what a router leaking a
        // more-specific from elsewhere looks like to the gateways.
        let kernel = "export where source ~ [RTS_BGP, RTS_STATIC];";
        assert!(cfg.contains(kernel), "lr1's kernel export");
        let cfg = cfg.replace(
            kernel,
            &format!("export where source ~ [RTS_BGP, RTS_STATIC] && net != {MORE_SPECIFIC} && net != 0.0.0.0/0;"),
        );
        format!(
            "{cfg}protocol static leak4 {{ ipv4; route {MORE_SPECIFIC} unreachable; route 0.0.0.0/0 unreachable; }}\n"
        )
    });
    let lab = Lab::up(opts).expect("lab up");
    lab.wait_for("both gateways on line 1", Duration::from_secs(60), || {
        lab.both_on(Line(1))
    })
    .unwrap();
    let lr1 = Line(1).addr(Side::B, true, false).to_string();
    let neighbor = |lab: &Lab| -> serde_json::Value {
        let s = lab.status(Node::Gwb).unwrap_or_default();
        s["sites"][0]["paths"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["bgp"].as_array().cloned().unwrap_or_default())
            .find(|n| n["neighbor"] == lr1.as_str())
            .unwrap_or_default()
    };
    lab.wait_for("gwb to refuse lr1's leak", Duration::from_secs(30), || {
        let n = neighbor(&lab);
        Ok(n["rejected_by_reason"]["too-specific"] == 1
            && n["rejected_by_reason"]["default-route"] == 1)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", neighbor(&lab)));
    let probe = lab.probe(Side::B, false, 1000).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let r = probe.stop().unwrap();
    assert!(r.received > 1500 && r.lost == 0, "hb -> ha: {r}");
    // Nothing of it in gwb's kernel; ha is reached through the site's own route.
    let routes = lab
        .exec(Node::Gwb, &["ip", "-4", "route", "show", "proto", "210"])
        .unwrap();
    assert!(!routes.contains(MORE_SPECIFIC), "{routes}");
    assert!(!routes.starts_with("default"), "{routes}");
    let ha = Side::A.host_addr(false);
    assert_eq!(lab.line_towards(Node::Gwb, ha).unwrap(), Some(Line(1)));
    let got = lab.route_get(Node::Gwb, ha).unwrap();
    assert!(!got.contains("unreachable"), "{got}");
    // Said once per prefix, with the reason.
    let events = lab.crosslink(Node::Gwb, &["events"]).unwrap();
    let refused: Vec<&str> = events
        .lines()
        .filter(|l| l.contains("prefix-refused"))
        .collect();
    assert!(
        refused
            .iter()
            .any(|l| l.contains(MORE_SPECIFIC) && l.contains("too-specific")),
        "{events}"
    );
    assert!(
        refused
            .iter()
            .any(|l| l.contains("0.0.0.0/0") && l.contains("default-route")),
        "{events}"
    );
    let status = lab.crosslink(Node::Gwb, &["status"]).unwrap();
    assert!(
        status.contains("default-route 1, too-specific 1"),
        "{status}"
    );
    // gwa learns the same from lr1: outside its site (cloud-b) and a default route.
    let gwa = lab.status(Node::Gwa).unwrap();
    let text = gwa.to_string();
    assert!(text.contains("\"outside-site\":1"), "{text}");
}
