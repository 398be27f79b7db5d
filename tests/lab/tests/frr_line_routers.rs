//! FRR as the line routers (zebra, bgpd, bfdd; `LineRouter::Frr`): crosslink on both
//! gateways peers with them over BGP (IPv4 and IPv6) and BFD, the traffic between the
//! hosts crosses them, and a silent failure of line 1 moves it to line 2 and back.
//! Asserts behaviour, not speed. Needs root; never skipped.

use std::time::Duration;

use lab::{Cut, GatewayMode, Lab, LabOptions, Line, LineRouter, Node, Side};

fn lab() -> Lab {
    let mut opts = LabOptions::new(GatewayMode::Crosslink)
        .crosslink_hook(|_, cfg| format!("{cfg}\n[policy]\nhold_down = \"3s\"\n"));
    opts.line_router = LineRouter::Frr;
    let lab = Lab::up(opts).expect("lab up");
    wait_both_on(&lab, Line(1), Duration::from_secs(60));
    lab
}

fn wait_both_on(lab: &Lab, line: Line, timeout: Duration) {
    lab.wait_for(&format!("both gateways on {line:?}"), timeout, || {
        lab.both_on(line)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}\n{}\n{}",
            lab.crosslink(Node::Gwa, &["status"]).unwrap_or_default(),
            lab.vtysh(Node::Lr1, "show bgp summary").unwrap_or_default(),
            lab.log_tails(20)
        )
    });
}

/// Every BFD session and BGP neighbour of `gw`'s lines up.
fn wait_sessions_up(lab: &Lab, gw: Node) {
    lab.wait_for(
        &format!("{gw}: BFD and BGP with FRR up"),
        Duration::from_secs(60),
        || {
            let s = lab.status(gw)?;
            let lines: Vec<serde_json::Value> = s["sites"][0]["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["kind"] == "line")
                .cloned()
                .collect();
            Ok(lines.len() == 2
                && lines.iter().all(|p| {
                    p["bfd"]
                        .as_array()
                        .is_some_and(|b| b.iter().all(|b| b["state"] == "Up"))
                        && p["bgp"].as_array().is_some_and(|b| {
                            b.len() == 2 && b.iter().all(|b| b["state"] == "Established")
                        })
                }))
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}\n{}",
            lab.crosslink(gw, &["status"]).unwrap_or_default(),
            lab.vtysh(Node::Lr1, "show bfd peers brief")
                .unwrap_or_default()
        )
    });
}

#[test]
fn crosslink_peers_with_frr_over_bgp_and_bfd_and_the_traffic_crosses_it() {
    let lab = lab();
    for gw in [Node::Gwa, Node::Gwb] {
        wait_sessions_up(&lab, gw);
    }
    // FRR's side of it: four sessions Established, four BFD peers up, on each router.
    for lr in [Node::Lr1, Node::Lr2] {
        let bfd = lab.vtysh(lr, "show bfd peers brief").unwrap();
        assert_eq!(bfd.matches(" up ").count(), 4, "{lr}:\n{bfd}");
        let routes = lab.vtysh(lr, "show ip route bgp").unwrap();
        assert!(
            routes.contains("198.18.1.0/24") && routes.contains("198.18.2.0/24"),
            "{lr} forwards between the clouds:\n{routes}"
        );
    }
    let probes = [
        lab.probe(Side::A, false, 1000).unwrap(),
        lab.probe(Side::B, true, 1000).unwrap(),
    ];
    std::thread::sleep(Duration::from_secs(1));
    let [ab, ba] = probes.map(|p| p.stop().unwrap());
    assert!(ab.received > 500 && ab.lost == 0, "ha -> hb: {ab}");
    assert!(
        ba.received > 500 && ba.lost == 0,
        "hb -> ha over IPv6: {ba}"
    );
}

#[test]
fn a_silent_drop_on_a_line_through_frr_fails_over_and_comes_back() {
    let lab = lab();
    for gw in [Node::Gwa, Node::Gwb] {
        wait_sessions_up(&lab, gw);
    }
    let probes = [
        lab.probe(Side::A, false, 1000).unwrap(),
        lab.probe(Side::B, false, 1000).unwrap(),
    ];
    std::thread::sleep(Duration::from_millis(300));
    lab.cut(Side::A, Line(1), Cut::Blackhole).unwrap();
    wait_both_on(&lab, Line(2), Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let [ab, ba] = probes.map(|p| p.stop().unwrap());
    eprintln!("silent drop, FRR line routers: ha->hb {ab}; hb->ha {ba}");
    for (dir, r) in [("ha -> hb", &ab), ("hb -> ha", &ba)] {
        assert!(r.received > 300 && r.longest_gap_ms < 1000.0, "{dir}: {r}");
    }
    let probes = [
        lab.probe(Side::A, false, 1000).unwrap(),
        lab.probe(Side::B, false, 1000).unwrap(),
    ];
    std::thread::sleep(Duration::from_millis(300));
    lab.heal(Side::A, Line(1)).unwrap();
    wait_both_on(&lab, Line(1), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let [ab, ba] = probes.map(|p| p.stop().unwrap());
    eprintln!("return, FRR line routers: ha->hb {ab}; hb->ha {ba}");
    assert_eq!((ab.lost, ba.lost), (0, 0), "{ab} / {ba}");
}
