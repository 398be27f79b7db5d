//! Operating crosslink by hand, as on a real gateway: a timed failover test (`failover
//! line1 --for`) moves the traffic now, is kept across a restart of the agent, and brings
//! the traffic back by itself when its time is up, without losing a packet. Needs root;
//! never skipped.

use std::time::{Duration, Instant};

use lab::{GatewayMode, Lab, LabOptions, Node, Side};

fn line1_policy(lab: &Lab) -> serde_json::Value {
    let s = lab.status(Node::Gwa).unwrap();
    s["sites"][0]["paths"][0]["policy"].clone()
}

#[test]
fn a_timed_failover_test_comes_back_by_itself_across_a_restart() {
    let mut lab = Lab::up(LabOptions::new(GatewayMode::Crosslink)).expect("lab up");
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_active(gw, "line1", Duration::from_secs(60));
    }
    // Line 2 too, or taking line 1 out is refused as leaving no line (the drain guard).
    lab.wait_for("every path up on gwa", Duration::from_secs(30), || {
        let s = lab.status(Node::Gwa)?;
        Ok(s["sites"][0]["paths"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["state"] == "up")))
    })
    .unwrap();
    const TEST: Duration = Duration::from_secs(12);
    let said = lab
        .crosslink(Node::Gwa, &["failover", "line1", "--for", "12s"])
        .unwrap();
    let started = Instant::now();
    assert!(
        said.contains("it comes back by itself after 12s, sooner with `restore line1`"),
        "{said}"
    );
    lab.wait_active(Node::Gwa, "line2", Duration::from_secs(5));
    let p = line1_policy(&lab);
    assert_eq!(p["operator"], "failover", "{p}");
    let left = p["operator_seconds_left"].as_f64().unwrap_or_default();
    assert!(left > 0.0 && left <= 12.0, "{p}");
    let status = lab.crosslink(Node::Gwa, &["status"]).unwrap();
    assert!(status.contains("timed test, back by itself in"), "{status}");

    // A restart (an upgrade, say) in the middle of the test keeps it, and its end.
    lab.restart_crosslink(Node::Gwa, nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    lab.wait_for("the test resumed", Duration::from_secs(10), || {
        Ok(line1_policy(&lab)["operator"] == "failover")
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(20)));
    lab.wait_active(Node::Gwa, "line2", Duration::from_secs(5));

    // The return, under traffic: not before the time is up, and nothing lost.
    let ab = lab.probe(Side::A, false, 1000).unwrap();
    let ba = lab.probe(Side::B, false, 1000).unwrap();
    lab.wait_active(Node::Gwa, "line1", TEST + Duration::from_secs(10));
    let returned = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let (ab, ba) = (ab.stop().unwrap(), ba.stop().unwrap());
    eprintln!("timed test of 12 s: back after {returned:?}; ha->hb {ab}; hb->ha {ba}");
    assert!(returned >= TEST, "back early: {returned:?}");
    assert!(ab.lost == 0 && ba.lost == 0, "{ab} / {ba}");
    assert_eq!(line1_policy(&lab)["operator"], "none");
    let events = lab.crosslink(Node::Gwa, &["events"]).unwrap();
    assert!(
        events.contains("line1: the timed test is over, failover lifted"),
        "{events}"
    );
}

#[test]
fn a_group_deleted_behind_the_agents_back_is_put_back_and_reported() {
    let lab = Lab::up(LabOptions::new(GatewayMode::Crosslink)).expect("lab up");
    lab.wait_active(Node::Gwa, "line1", Duration::from_secs(60));
    // Settled: the programmer has matched the kernel in full at least once.
    std::thread::sleep(Duration::from_secs(2));
    let nexthops: serde_json::Value = serde_json::from_str(
        &lab.exec(Node::Gwa, &["ip", "-j", "nexthop", "show"])
            .unwrap(),
    )
    .unwrap();
    let groups: Vec<String> = nexthops
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n.get("group").is_some())
        .map(|n| n["id"].to_string())
        .collect();
    assert!(!groups.is_empty(), "{nexthops}");
    // What an operator's `ip nexthop flush` or another daemon would do.
    for id in &groups {
        lab.exec(Node::Gwa, &["ip", "nexthop", "del", "id", id])
            .unwrap();
    }
    lab.wait_for("the groups back", Duration::from_secs(10), || {
        let now = lab.exec(Node::Gwa, &["ip", "-j", "nexthop", "show"])?;
        Ok(groups
            .iter()
            .all(|id| now.contains(&format!("\"id\":{id},"))))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(20)));
    let host_b = Side::B.host_addr(false).to_string();
    lab.wait_for("the routes back", Duration::from_secs(10), || {
        Ok(lab
            .exec(Node::Gwa, &["ip", "route", "get", &host_b])?
            .contains("line1"))
    })
    .unwrap();
    let events = lab.crosslink(Node::Gwa, &["events"]).unwrap();
    assert!(
        events.contains("fib-repaired")
            && events.contains("kernel objects deleted or changed behind the agent's back"),
        "{events}"
    );
    let m = lab.metrics(Node::Gwa).unwrap();
    let repaired: f64 = m
        .lines()
        .filter(|l| l.starts_with("crosslink_fib_repairs_total{what=\"group\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(repaired >= groups.len() as f64, "{m}");
    let log = std::fs::read_to_string(lab.dir().join("gwa.crosslink.log")).unwrap_or_default();
    assert!(log.contains("WARN") && log.contains("put back"), "{log}");
}

/// `crosslink routes` names what `ip nexthop show` leaves to ids: each prefix with where it
/// came from, the groups with their members by path name, and the kernel's agreement.
#[test]
fn routes_names_what_was_programmed_and_follows_a_failover() {
    let lab = Lab::up(LabOptions::new(GatewayMode::Crosslink)).expect("lab up");
    lab.wait_active(Node::Gwa, "line1", Duration::from_secs(60));
    let routes = || -> serde_json::Value {
        serde_json::from_str(&lab.crosslink(Node::Gwa, &["routes", "--json"]).unwrap()).unwrap()
    };
    let members = |doc: &serde_json::Value, role: &str, family: &str| -> Vec<String> {
        doc["sites"][0]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["role"] == role && g["family"] == family)
            .and_then(|g| g["members"].as_array())
            .map(|ms| {
                ms.iter()
                    .map(|m| m["path"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    // The route scan settles the learned prefixes within a few seconds; line 2 becomes the
    // fallback once its end-to-end BFD is up, which may come a little after line 1's.
    lab.wait_for(
        "every prefix in the kernel, line 2 the fallback",
        Duration::from_secs(15),
        || {
            let doc = routes();
            Ok(doc["kernel_read"] == true
                && doc["sites"][0]["prefixes"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().all(|p| p["main_in_kernel"] == true))
                && members(&doc, "fallback", "ipv4") == ["line2"])
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}",
            lab.crosslink(Node::Gwa, &["routes"]).unwrap_or_default()
        )
    });
    let doc = routes();
    assert_eq!(doc["sites"][0]["name"], "cloud-b");
    assert_eq!(members(&doc, "main", "ipv4"), ["line1"], "{doc}");
    assert_eq!(members(&doc, "fallback", "ipv4"), ["line2"], "{doc}");
    let prefix = doc["sites"][0]["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["prefix"] == "198.18.2.0/24")
        .cloned()
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(prefix["configured"], true, "{prefix}");
    assert!(
        prefix["learned"].as_array().is_some_and(|l| l
            .iter()
            .any(|l| l["line"] == "line1" && l["neighbor"] == "198.19.11.2")),
        "{prefix}"
    );
    let text = lab.crosslink(Node::Gwa, &["routes"]).unwrap();
    assert!(
        text.contains("line1 via 198.19.11.2") && text.contains("kernel ok"),
        "{text}"
    );

    lab.crosslink(Node::Gwa, &["failover", "line1"]).unwrap();
    lab.wait_active(Node::Gwa, "line2", Duration::from_secs(5));
    let doc = routes();
    assert_eq!(members(&doc, "main", "ipv4"), ["line2"], "{doc}");
    assert!(
        doc["sites"][0]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["role"] == "main")
            .all(|g| g["in_kernel"] == true),
        "{doc}"
    );
}
