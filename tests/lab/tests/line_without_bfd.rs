//! Line routers that run no BFD, as many do (AWS Direct Connect unless the customer asks
//! for it): lr1's BGP sessions here have BFD off and it answers no BFD. A line configured
//! so (`[line.bfd] enabled = false`) carries traffic and fails over on the end-to-end BFD
//! to the far gateway; one where crosslink still asks for BFD says plainly why it is down.
//! Asserts behaviour, not speed. Needs root; never skipped.

use std::time::Duration;

use lab::{Cut, GatewayMode, Lab, LabOptions, Line, Node, Side};

/// lr1 runs no BFD; `bfd_off`: the gateways know it.
fn lab(bfd_off: bool) -> Lab {
    let opts = LabOptions::new(GatewayMode::Crosslink)
        .bird_hook(|node, cfg| {
            if node == Node::Lr1 {
                assert!(cfg.contains("bfd graceful;"), "lr1's sessions follow BFD");
                cfg.replace("bfd graceful;", "bfd off;")
            } else {
                cfg
            }
        })
        .crosslink_hook(move |_, cfg| {
            // line1's block comes first.
            let cfg = if bfd_off {
                cfg.replacen("[line.bfd]\n", "[line.bfd]\nenabled = false\n", 1)
            } else {
                cfg
            };
            format!("{cfg}\n[policy]\nhold_down = \"3s\"\n")
        });
    Lab::up(opts).expect("lab up")
}

fn path(lab: &Lab, gw: Node, name: &str) -> serde_json::Value {
    let s = lab.status(gw).unwrap_or_default();
    s["sites"][0]["paths"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == name).cloned())
        .unwrap_or_default()
}

fn wait_both_on(lab: &Lab, line: Line, timeout: Duration) {
    lab.wait_for(&format!("both gateways on {line:?}"), timeout, || {
        lab.both_on(line)
    })
    .unwrap_or_else(|e| {
        let status = lab.crosslink(Node::Gwa, &["status"]).unwrap_or_default();
        panic!("{e:#}\n{status}\n{}", lab.log_tails(20))
    });
}

#[test]
fn a_line_whose_router_runs_no_bfd_carries_traffic_and_fails_over_on_end_to_end_bfd() {
    let lab = lab(true);
    wait_both_on(&lab, Line(1), Duration::from_secs(60));
    for gw in [Node::Gwa, Node::Gwb] {
        let p = path(&lab, gw, "line1");
        let signals: Vec<String> = p["signals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{}={}",
                    s["name"].as_str().unwrap(),
                    s["state"].as_str().unwrap()
                )
            })
            .collect();
        assert!(signals.contains(&"bfd=off".to_owned()), "{gw}: {signals:?}");
        assert_eq!(p["state"], "up", "{gw}: {p}");
    }
    // The end-to-end sessions over line 1 must be up before the cut: they are all that
    // sees a silent failure now.
    lab.wait_for(
        "end-to-end BFD over line 1",
        Duration::from_secs(30),
        || {
            Ok([Node::Gwa, Node::Gwb].iter().all(|gw| {
                path(&lab, *gw, "line1")["bfd"]
                    .as_array()
                    .is_some_and(|b| !b.is_empty() && b.iter().all(|s| s["state"] == "Up"))
            }))
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let probes = [
        lab.probe(Side::A, false, 1000).unwrap(),
        lab.probe(Side::B, false, 1000).unwrap(),
    ];
    std::thread::sleep(Duration::from_millis(300));
    lab.cut(Side::A, Line(1), Cut::Blackhole).unwrap();
    // Far below lr1's BGP hold time (3 s): the end-to-end BFD moved it.
    wait_both_on(&lab, Line(2), Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let [ab, ba] = probes.map(|p| p.stop().unwrap());
    eprintln!("silent drop, line router without BFD: ha->hb {ab}; hb->ha {ba}");
    for (dir, r) in [("ha -> hb", &ab), ("hb -> ha", &ba)] {
        assert!(r.received > 500 && r.longest_gap_ms < 1000.0, "{dir}: {r}");
    }
    let why = path(&lab, Node::Gwa, "line1")["reason"].clone();
    assert!(
        why.as_str().unwrap_or_default().contains("end-to-end BFD"),
        "{why}"
    );
    lab.heal(Side::A, Line(1)).unwrap();
    wait_both_on(&lab, Line(1), Duration::from_secs(30));
}

#[test]
fn bfd_asked_of_a_router_that_runs_none_is_reported_as_such() {
    let lab = lab(false);
    // line2 carries the site; line1 waits for a BFD that never answers.
    wait_both_on(&lab, Line(2), Duration::from_secs(60));
    lab.wait_for(
        "line1 said to have a silent BFD peer",
        Duration::from_secs(30),
        || {
            let why = path(&lab, Node::Gwa, "line1")["reason"].clone();
            Ok(why
                .as_str()
                .is_some_and(|w| w.contains("has never been answered")))
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}",
            lab.crosslink(Node::Gwa, &["status"]).unwrap_or_default()
        )
    });
    let p = path(&lab, Node::Gwa, "line1");
    assert_eq!(p["state"], "down", "{p}");
    assert!(
        p["bfd"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["kind"] == "single-hop" && b["unanswered"] == true),
        "{p}"
    );
    let events = lab.crosslink(Node::Gwa, &["events"]).unwrap();
    let told: Vec<&str> = events
        .lines()
        .filter(|l| l.contains("bfd-unanswered"))
        .collect();
    // One event per silent session (lr1's IPv4 and IPv6 neighbours), not one a poll.
    assert_eq!(told.len(), 2, "{events}");
    assert!(
        told[0].contains("is BFD configured on the line router?"),
        "{events}"
    );
}
