//! A tunnel whose data plane stops under it is started again by the agent, not left half
//! alive: here an operator deletes gwa's interface of tunnel 1 while both lines are down
//! and the site's traffic rides the tunnels. The TUN queues' tasks end (the kernel
//! detached them); the agent notices, says so in its log and event log, makes the
//! interface again with its addresses, the tunnel's BFD comes back on both gateways and
//! the site returns to both tunnels. Traffic across the deletion moves to tunnel 2 on its
//! BFD. Crosslink on both gateways, BIRD line routers. Needs root; never skipped.

use std::time::Duration;

use lab::{Cut, GatewayMode, Lab, LabOptions, Line, Node, Side, Tunnel};
use serde_json::Value;

fn path(lab: &Lab, gw: Node, name: &str) -> Value {
    lab.status(gw)
        .ok()
        .and_then(|s| {
            s["sites"][0]["paths"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == name)
                .cloned()
        })
        .unwrap_or(Value::Null)
}

/// The path is up and admitted with every BFD session Up.
fn up(p: &Value) -> bool {
    p["state"] == "up"
        && p["policy"]["admitted"] == true
        && p["bfd"]
            .as_array()
            .is_some_and(|b| !b.is_empty() && b.iter().all(|b| b["state"] == "Up"))
}

fn tunnel_errors(lab: &Lab, gw: Node) -> Vec<String> {
    let out = lab.crosslink(gw, &["events", "--json"]).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "tunnel-error")
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_tunnel_whose_interface_is_deleted_is_started_again_and_carries_traffic() {
    let opts = LabOptions::new(GatewayMode::Crosslink)
        .crosslink_hook(|_, cfg| format!("{cfg}\n[policy]\nhold_down = \"3s\"\n"));
    let lab = Lab::up(opts).expect("lab up");
    let both = format!("{}, {}", Tunnel(1).name(), Tunnel(2).name());
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_active(gw, &Line(1).ifname(), Duration::from_secs(60));
    }
    for line in Line::ALL {
        lab.cut(Side::A, line, Cut::Carrier).unwrap();
    }
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_active(gw, &both, Duration::from_secs(30));
    }

    let probe = lab.probe(Side::A, false, 1000).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let iface = Tunnel(1).ifname(Side::A);
    let index_before = lab
        .exec(
            Node::Gwa,
            &["cat", &format!("/sys/class/net/{iface}/ifindex")],
        )
        .unwrap();
    lab.exec(Node::Gwa, &["ip", "link", "del", &iface]).unwrap();

    // The agent starts it again: the interface is back (a new one) with its address.
    lab.wait_for("the tunnel restarted", Duration::from_secs(10), || {
        Ok(tunnel_errors(&lab, Node::Gwa)
            .iter()
            .any(|m| m.contains("started again in place, its sessions carried over")))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(40)));
    let errors = tunnel_errors(&lab, Node::Gwa);
    println!("gwa's tunnel errors: {errors:#?}");
    assert!(
        errors
            .iter()
            .any(|m| m.contains("TUN queue") && m.contains("ended")),
        "the event says which task ended: {errors:?}"
    );
    let index_after = lab
        .exec(
            Node::Gwa,
            &["cat", &format!("/sys/class/net/{iface}/ifindex")],
        )
        .unwrap();
    assert_ne!(index_before, index_after, "a new interface");
    let addrs = lab
        .exec(Node::Gwa, &["ip", "-br", "addr", "show", "dev", &iface])
        .unwrap();
    assert!(
        addrs.contains(&Tunnel(1).addr(Side::A, false).to_string()),
        "{addrs}"
    );

    // Its BFD comes back on both ends, and after the hold-down the site is on both tunnels.
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_for(
            &format!("{gw}: tunnel 1 up"),
            Duration::from_secs(30),
            || Ok(up(&path(&lab, gw, &Tunnel(1).name()))),
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}\n{}\n{}",
                path(&lab, gw, &Tunnel(1).name()),
                lab.log_tails(40)
            )
        });
        lab.wait_active(gw, &both, Duration::from_secs(30));
    }
    let report = probe.stop().unwrap();
    println!("probe across the deletion and the restart: {report}");
    assert!(
        report.received > 0 && report.longest_gap_ms < 5_000.0,
        "{report}"
    );
    // `wg` reads the new tunnel through its UAPI socket: the session is the one carried over.
    let show = lab
        .exec(Node::Gwa, &["wg", "show", &iface, "latest-handshakes"])
        .unwrap();
    assert!(!show.trim().is_empty(), "{show}");

    // Broken again within a minute: what it carried over may be the cause, so it is
    // stopped and the retry starts it anew, with a new handshake, a few seconds later.
    lab.exec(Node::Gwa, &["ip", "link", "del", &iface]).unwrap();
    lab.wait_for(
        "the tunnel stopped for a new start",
        Duration::from_secs(10),
        || {
            Ok(tunnel_errors(&lab, Node::Gwa)
                .iter()
                .any(|m| m.contains("again within")))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(40)));
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_for(
            &format!("{gw}: tunnel 1 up again"),
            Duration::from_secs(30),
            || Ok(up(&path(&lab, gw, &Tunnel(1).name()))),
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(40)));
        lab.wait_active(gw, &both, Duration::from_secs(30));
    }
    let events = lab.crosslink(Node::Gwa, &["events"]).unwrap();
    println!("gwa's events:\n{events}");
    assert!(events.contains("tunnel inet1 started on retry"), "{events}");
}
