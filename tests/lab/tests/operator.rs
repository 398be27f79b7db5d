//! Operating crosslink by hand, as on a real gateway: a timed failover test (`failover
//! line1 --for`) moves the traffic now, is kept across a restart of the agent, and brings
//! the traffic back by itself when its time is up, without losing a packet. Needs root;
//! never skipped.

use std::time::{Duration, Instant};

use lab::{GatewayMode, Lab, LabOptions, Node, Side};

fn active(lab: &Lab, gw: Node) -> String {
    lab.status(gw)
        .ok()
        .and_then(|s| s["sites"][0]["active_path"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn wait_active(lab: &Lab, gw: Node, want: &str, timeout: Duration) {
    lab.wait_for(&format!("{gw} active path {want}"), timeout, || {
        Ok(active(lab, gw) == want)
    })
    .unwrap_or_else(|e| {
        let status = lab.crosslink(gw, &["status"]).unwrap_or_default();
        let events = lab.crosslink(gw, &["events"]).unwrap_or_default();
        panic!("{e:#}\n{status}\n{events}\n{}", lab.log_tails(30))
    });
}

fn line1_policy(lab: &Lab) -> serde_json::Value {
    let s = lab.status(Node::Gwa).unwrap();
    s["sites"][0]["paths"][0]["policy"].clone()
}

#[test]
fn a_timed_failover_test_comes_back_by_itself_across_a_restart() {
    let mut lab = Lab::up(LabOptions::new(GatewayMode::Crosslink)).expect("lab up");
    for gw in [Node::Gwa, Node::Gwb] {
        wait_active(&lab, gw, "line1", Duration::from_secs(60));
    }
    const TEST: Duration = Duration::from_secs(12);
    let said = lab
        .crosslink(Node::Gwa, &["failover", "line1", "--for", "12s"])
        .unwrap();
    let started = Instant::now();
    assert!(
        said.contains("it comes back by itself after 12s, sooner with `restore line1`"),
        "{said}"
    );
    wait_active(&lab, Node::Gwa, "line2", Duration::from_secs(5));
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
    wait_active(&lab, Node::Gwa, "line2", Duration::from_secs(5));

    // The return, under traffic: not before the time is up, and nothing lost.
    let ab = lab.probe(Side::A, false, 1000).unwrap();
    let ba = lab.probe(Side::B, false, 1000).unwrap();
    wait_active(&lab, Node::Gwa, "line1", TEST + Duration::from_secs(10));
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
