//! A restart of the agent, or a stall of its process, is not a failure of its paths: the
//! standby line is a failover target as soon as its signals are back (not after a
//! hold-down), and a stopped-then-continued agent charges no flap penalty and moves
//! nothing; a line router's restart costs its line one flap penalty, however its
//! sessions come back. Each test runs against BIRD and FRR line routers (`<test>::bird`,
//! `<test>::frr`). Asserts behaviour, not speed. Needs root; never skipped.

use std::time::Duration;

use lab::{Cut, GatewayMode, Lab, LabOptions, Line, LineRouter, Node, Side};
use nix::sys::signal::Signal;

lab::against_both!(
    a_line_cut_just_after_an_agent_restart_moves_to_the_standby_line,
    a_stopped_and_continued_agent_charges_no_penalty_and_moves_nothing,
    a_line_router_restart_costs_one_penalty,
);

/// The shipped hold-down: what a line that failed waits before it carries traffic again.
fn lab_with(router: LineRouter) -> Lab {
    let mut opts = LabOptions::new(GatewayMode::Crosslink)
        .crosslink_hook(|_, cfg| format!("{cfg}\n[policy]\nhold_down = \"30s\"\n"));
    opts.line_router = router;
    let lab = Lab::up(opts).expect("lab up");
    lab.wait_for("both gateways on line 1", Duration::from_secs(60), || {
        lab.both_on(Line(1))
    })
    .unwrap();
    for gw in [Node::Gwa, Node::Gwb] {
        wait_paths_up(&lab, gw);
    }
    lab
}

fn paths(lab: &Lab, gw: Node) -> Vec<serde_json::Value> {
    lab.status(gw)
        .ok()
        .and_then(|s| s["sites"][0]["paths"].as_array().cloned())
        .unwrap_or_default()
}

/// Every path up with every BFD session, and admitted.
fn wait_paths_up(lab: &Lab, gw: Node) {
    lab.wait_for(
        &format!("{gw}: every path up"),
        Duration::from_secs(60),
        || {
            let p = paths(lab, gw);
            Ok(!p.is_empty()
                && p.iter().all(|p| {
                    p["state"] == "up"
                        && p["policy"]["admitted"] == true
                        && p["bfd"]
                            .as_array()
                            .is_some_and(|b| b.iter().all(|b| b["state"] == "Up"))
                }))
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}",
            lab.crosslink(gw, &["status"]).unwrap_or_default()
        )
    });
}

fn a_line_cut_just_after_an_agent_restart_moves_to_the_standby_line(router: LineRouter) {
    let mut lab = lab_with(router);
    // The standings the agent keeps across a restart are saved as they change.
    std::thread::sleep(Duration::from_secs(2));
    lab.restart_crosslink(Node::Gwa, Signal::SIGTERM).unwrap();
    // Every path's signals back (BFD at its slow start first, BGP): line 2 never failed,
    // so it is admitted at once, with no hold-down (before, it waited 30 s and a cut
    // meanwhile went to the tunnels).
    let restarted = std::time::Instant::now();
    wait_paths_up(&lab, Node::Gwa);
    eprintln!(
        "every path of gwa admitted {:?} after the restart",
        restarted.elapsed()
    );
    let probes = [
        lab.probe(Side::A, false, 1000).unwrap(),
        lab.probe(Side::B, false, 1000).unwrap(),
    ];
    std::thread::sleep(Duration::from_millis(300));
    lab.cut(Side::A, Line(1), Cut::Carrier).unwrap();
    lab.wait_for("gwa on line 2", Duration::from_secs(10), || {
        Ok(lab.active_path(Node::Gwa) == "line2")
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}\n{}",
            lab.crosslink(Node::Gwa, &["status"]).unwrap_or_default(),
            lab.crosslink(Node::Gwa, &["events"]).unwrap_or_default()
        )
    });
    std::thread::sleep(Duration::from_secs(1));
    let [ab, ba] = probes.map(|p| p.stop().unwrap());
    eprintln!("carrier loss on line 1 just after a restart: ha->hb {ab}; hb->ha {ba}");
    // Onto line 2, as in steady state: not the tunnels, not a detour of seconds.
    assert!(lab.both_on(Line(2)).unwrap());
    for (dir, r) in [("ha -> hb", &ab), ("hb -> ha", &ba)] {
        assert!(r.received > 1000 && r.longest_gap_ms < 1000.0, "{dir}: {r}");
    }
    lab.heal(Side::A, Line(1)).unwrap();
}

fn a_stopped_and_continued_agent_charges_no_penalty_and_moves_nothing(router: LineRouter) {
    let mut lab = lab_with(router);
    let probes = [
        lab.probe(Side::A, false, 1000).unwrap(),
        lab.probe(Side::B, false, 1000).unwrap(),
    ];
    lab.signal_crosslink(Node::Gwa, Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    lab.signal_crosslink(Node::Gwa, Signal::SIGCONT).unwrap();
    // Its sessions come back: BFD (slow start first) and BGP.
    wait_paths_up(&lab, Node::Gwa);
    let [ab, ba] = probes.map(|p| p.stop().unwrap());
    eprintln!("agent stopped 5 s: ha->hb {ab}; hb->ha {ba}");
    let events = lab.crosslink(Node::Gwa, &["events"]).unwrap();
    assert!(events.contains("agent-stalled"), "{events}");
    for p in paths(&lab, Node::Gwa) {
        assert_eq!(p["policy"]["penalty"], 0.0, "{}: {p}\n{events}", p["name"]);
    }
    let after_stall: Vec<&str> = events
        .lines()
        .skip_while(|l| !l.contains("agent-stalled"))
        .filter(|l| {
            ["path-down", "path-change", "failover"]
                .iter()
                .any(|k| l.contains(k))
        })
        .collect();
    assert!(after_stall.is_empty(), "{after_stall:?}\n{events}");
    assert_eq!(lab.active_path(Node::Gwa), "line1");
}

fn path(lab: &Lab, gw: Node, name: &str) -> serde_json::Value {
    paths(lab, gw)
        .into_iter()
        .find(|p| p["name"] == name)
        .unwrap_or_default()
}

/// The router comes back with its sessions one by one (BFD, then BGP per family, then
/// the routes): the line is down once, charged once, counted once, on either gateway.
fn a_line_router_restart_costs_one_penalty(router: LineRouter) {
    let mut lab = lab_with(router);
    lab.kill_line_router(Line(1)).unwrap();
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_for(&format!("{gw} off line 1"), Duration::from_secs(10), || {
            Ok(lab.active_path(gw) == "line2")
        })
        .unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    lab.restart_line_router(Line(1)).unwrap();
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_for(
            &format!("{gw}: line 1's signals back"),
            Duration::from_secs(30),
            || Ok(path(&lab, gw, "line1")["state"] == "up"),
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(20)));
    }
    // A few seconds for whatever still trickles in (a late family, a late route).
    std::thread::sleep(Duration::from_secs(5));
    for gw in [Node::Gwa, Node::Gwb] {
        let p = path(&lab, gw, "line1");
        let events = lab.crosslink(gw, &["events"]).unwrap_or_default();
        assert_eq!(p["policy"]["flaps"], 1, "{gw}: {p}\n{events}");
        let penalty = p["policy"]["penalty"].as_f64().unwrap();
        assert!(
            penalty > 0.0 && penalty <= 1000.0,
            "{gw}: one penalty: {p}\n{events}"
        );
        assert_eq!(p["policy"]["suppressed_seconds"], serde_json::Value::Null);
    }
}

/// Outside systemd, SIGUSR2 re-executes the agent's binary in place with the tunnels'
/// descriptors kept open (the hot upgrade): the interfaces keep their carrier, and what
/// gwa sends over the tunnels meanwhile waits in their queues instead of being lost, and
/// what gwb sends waits in the UDP sockets, sealed with the session the old image handed
/// over: nothing is lost either way, and no handshake is needed. The lines are untouched
/// (graceful restart, as on SIGTERM).
#[test]
fn a_reexec_on_sigusr2_keeps_the_tunnels_carrier() {
    let mut lab = lab_with(LineRouter::Bird);
    for gw in [Node::Gwa, Node::Gwb] {
        for line in ["line1", "line2"] {
            lab.crosslink(gw, &["failover", line]).unwrap();
        }
    }
    let on_tunnels = |lab: &Lab, node: Node, prefix: &str| -> anyhow::Result<bool> {
        let devs = lab.route_devices(node, prefix)?;
        Ok(!devs.is_empty() && devs.iter().all(|d| d.contains("-t")))
    };
    lab.wait_for(
        "both gateways on the tunnels",
        Duration::from_secs(20),
        || {
            Ok(on_tunnels(&lab, Node::Gwa, "198.18.2.0/24")?
                && on_tunnels(&lab, Node::Gwb, "198.18.1.0/24")?)
        },
    )
    .unwrap();
    let log = lab.dir().join("gwa.crosslink.log");
    let before = std::fs::read_to_string(&log).unwrap().len();
    let probes = [
        lab.probe(Side::A, false, 1000).unwrap(),
        lab.probe(Side::B, false, 1000).unwrap(),
    ];
    std::thread::sleep(Duration::from_millis(500));
    lab.signal_crosslink(Node::Gwa, Signal::SIGUSR2).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let [ab, ba] = probes.map(|p| p.stop().unwrap());
    eprintln!("re-exec on SIGUSR2, over the tunnels: ha->hb {ab}; hb->ha {ba}");
    let after = std::fs::read_to_string(&log).unwrap();
    let new = &after[before..];
    assert!(
        new.contains("handed over the tunnels' descriptors"),
        "the new image took the tunnels over:\n{new}"
    );
    assert_eq!(
        new.matches("WireGuard sessions taken over").count(),
        2,
        "both tunnels' sessions:\n{new}"
    );
    assert!(!new.contains("re-exec on SIGUSR2 failed"), "{new}");
    // Same process, still answering, still on the tunnels.
    assert!(lab.status(Node::Gwa).is_ok());
    assert!(on_tunnels(&lab, Node::Gwa, "198.18.2.0/24").unwrap());
    assert_eq!(ab.lost, 0, "ha->hb: {ab}\n{new}");
    assert_eq!(ba.lost, 0, "hb->ha: {ba}\n{new}");
}

/// The kernel's objects are numbered by each path's stable id, not its place in the
/// config: gwa restarted with its `[[line]]` blocks swapped leaves every nexthop where it
/// was and the traffic on line 1. By position (before stable ids), the restart re-pointed
/// every line nexthop to the other router and both groups with them (checked: this test
/// failed on the ids comparison then), and a restart with no saved standings credited
/// line 2 with what line 1 had carried.
#[test]
fn a_restart_with_the_lines_reordered_keeps_the_traffic_where_it_was() {
    let mut lab = lab_with(LineRouter::Bird);
    let ids_file = lab.dir().join("gwa.operator.ids.json");
    let ids: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ids_file).unwrap()).unwrap();
    assert_eq!(ids["paths"]["cloud-b"]["line1"], 0, "{ids}");
    assert_eq!(ids["paths"]["cloud-b"]["line2"], 1, "{ids}");
    lab.rewrite_crosslink_config(Node::Gwa, |text| {
        let first = text.find("\n[[line]]").expect("a first line");
        let second = first + 1 + text[first + 1..].find("\n[[line]]").expect("a second");
        let end = second + 1 + text[second + 1..].find("\n[[").expect("what follows");
        format!(
            "{}{}{}{}",
            &text[..first],
            &text[second..end],
            &text[first..second],
            &text[end..]
        )
    })
    .unwrap();
    let text = std::fs::read_to_string(lab.crosslink_config(Node::Gwa)).unwrap();
    assert!(
        text.find("name = \"line2\"") < text.find("name = \"line1\""),
        "swapped:\n{text}"
    );
    let nexthops = |lab: &Lab| {
        let out = lab
            .exec(Node::Gwa, &["ip", "nexthop", "show", "protocol", "210"])
            .unwrap();
        let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    let before = nexthops(&lab);
    let probes = [
        lab.probe(Side::A, false, 1000).unwrap(),
        lab.probe(Side::B, false, 1000).unwrap(),
    ];
    std::thread::sleep(Duration::from_millis(300));
    lab.restart_crosslink(Node::Gwa, Signal::SIGTERM).unwrap();
    wait_paths_up(&lab, Node::Gwa);
    std::thread::sleep(Duration::from_secs(2));
    let [ab, ba] = probes.map(|p| p.stop().unwrap());
    eprintln!("restart with the lines reordered: ha->hb {ab}; hb->ha {ba}");
    assert_eq!(
        lab.active_path(Node::Gwa),
        "line1",
        "{}",
        lab.crosslink(Node::Gwa, &["events"]).unwrap_or_default()
    );
    assert!(lab.both_on(Line(1)).unwrap());
    assert_eq!((ab.lost, ba.lost), (0, 0), "ha->hb {ab}; hb->ha {ba}");
    // Every kernel object where it was: the same ids through the same routers.
    assert_eq!(nexthops(&lab), before);
    let ids: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ids_file).unwrap()).unwrap();
    assert_eq!(ids["paths"]["cloud-b"]["line1"], 0, "ids kept: {ids}");

    // An upgrade from an agent that kept no ids, its config reordered in the same change
    // (the role writes the config, then the package restarts the agent): the ids come
    // from the kernel's objects, not from the new order.
    std::fs::remove_file(&ids_file).unwrap();
    lab.restart_crosslink(Node::Gwa, Signal::SIGTERM).unwrap();
    wait_paths_up(&lab, Node::Gwa);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(nexthops(&lab), before, "no ids file: read from the kernel");
    let ids: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ids_file).unwrap()).unwrap();
    assert_eq!(ids["paths"]["cloud-b"]["line1"], 0, "{ids}");
    assert_eq!(ids["paths"]["cloud-b"]["line2"], 1, "{ids}");
}
