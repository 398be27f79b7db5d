//! A reload (SIGHUP) applies a config change to the running agent and leaves what did not
//! change alone: crosslink on both gateways, BIRD on the line routers, traffic on line 1.
//! gwa's reload slows line 2's BFD, removes tunnel inet2 and adds a site prefix; line 1's
//! sessions and traffic must not notice. Restoring the config brings inet2 back. Needs
//! root; never skipped.

use std::time::Duration;

use lab::{GatewayMode, Lab, LabOptions, Node, Side, Tunnel};
use nix::sys::signal::Signal;
use serde_json::Value;

const NEW_PREFIX: &str = "203.0.113.0/24";

fn path(status: &Value, name: &str) -> Value {
    status["sites"][0]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_default()
}

/// `(neighbor, kind) -> seconds up` of a path's BGP and BFD sessions, all of which must
/// be up.
fn uptimes(status: &Value, name: &str) -> Vec<(String, u64)> {
    let p = path(status, name);
    let mut out = Vec::new();
    for n in p["bgp"].as_array().unwrap() {
        assert_eq!(n["state"], "Established", "{n}");
        out.push((
            format!("bgp {}", n["neighbor"]),
            n["established_seconds"].as_u64().unwrap(),
        ));
    }
    for s in p["bfd"].as_array().unwrap() {
        assert_eq!(s["state"], "Up", "{s}");
        out.push((
            format!("bfd {} {}", s["kind"], s["neighbor"]),
            s["up_seconds"].as_u64().unwrap(),
        ));
    }
    out
}

fn detection_ms(status: &Value, name: &str, kind: &str) -> Option<f64> {
    path(status, name)["bfd"]
        .as_array()?
        .iter()
        .find(|s| s["kind"] == kind && s["state"] == "Up")?["detection_ms"]
        .as_f64()
}

fn reload(lab: &mut Lab, edit: impl FnOnce(String) -> String) -> String {
    let before = lab.crosslink(Node::Gwa, &["events", "--json"]).unwrap();
    let seen = serde_json::from_str::<Value>(&before)
        .unwrap()
        .as_array()
        .unwrap()
        .len();
    lab.rewrite_crosslink_config(Node::Gwa, edit).unwrap();
    lab.signal_crosslink(Node::Gwa, Signal::SIGHUP).unwrap();
    let mut message = String::new();
    lab.wait_for("the reload", Duration::from_secs(15), || {
        let out = lab.crosslink(Node::Gwa, &["events", "--json"])?;
        let events: Value = serde_json::from_str(&out)?;
        let reload = events
            .as_array()
            .unwrap()
            .iter()
            .skip(seen)
            .find(|e| e["kind"] == "reload");
        if let Some(e) = reload {
            message = e["message"].as_str().unwrap_or_default().to_owned();
        }
        Ok(reload.is_some())
    })
    .unwrap();
    message
}

/// The config without the `[[tunnel]]` named `name`.
fn without_tunnel(cfg: &str, name: &str) -> String {
    let start = cfg.find(&format!("[[tunnel]]\nname = \"{name}\"")).unwrap();
    let end = cfg[start + 1..]
        .find("\n[")
        .map_or(cfg.len(), |i| start + 1 + i + 1);
    format!("{}{}", &cfg[..start], &cfg[end..])
}

/// Line 2's BFD at 200 ms x 5 (the lab runs 100 ms x 3).
fn slower_line2_bfd(cfg: &str) -> String {
    let at = cfg.find("name = \"line2\"").unwrap();
    let (head, tail) = cfg.split_at(at);
    let tail = tail
        .replacen("interval = \"100ms\"", "interval = \"200ms\"", 1)
        .replacen("multiplier = 3", "multiplier = 5", 1);
    format!("{head}{tail}")
}

#[test]
fn a_reload_changes_what_changed_and_nothing_else() {
    let mut lab = Lab::up(LabOptions::new(GatewayMode::Crosslink)).expect("lab up");
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_for("every line healthy", Duration::from_secs(60), || {
            Ok(lab.crosslink(gw, &["check-health"]).is_ok())
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(20)));
    }
    let original = std::fs::read_to_string(lab.crosslink_config(Node::Gwa)).unwrap();
    let inet2 = Tunnel(2).ifname(Side::A);
    // Sessions that have been up a while, so that a restart would show as a smaller age.
    std::thread::sleep(Duration::from_secs(3));
    let before = lab.status(Node::Gwa).unwrap();
    let line1_before = uptimes(&before, "line1");
    assert!(line1_before.len() >= 3, "{line1_before:?}");

    let ab = lab.probe(Side::A, false, 1000).unwrap();
    let ba = lab.probe(Side::B, false, 1000).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let message = reload(&mut lab, |c| {
        without_tunnel(&slower_line2_bfd(&c), "inet2").replacen(
            "prefixes = [\"",
            &format!("prefixes = [\"{NEW_PREFIX}\", \""),
            1,
        )
    });
    eprintln!("{message}");
    assert!(message.contains("tunnel inet2 removed"), "{message}");
    assert!(message.contains("allowed IPs updated"), "{message}");
    // The lab's site has no aggregates: its prefixes bound what the lines may announce,
    // and a route refresh (not a new session) applies the new bound.
    assert!(message.contains("routes refreshed"), "{message}");
    for touched in ["restarted", "stopped", "started"] {
        for part in message.split("; ").filter(|m| m.contains(touched)) {
            assert!(!part.contains("line1"), "line 1 {touched}: {message}");
        }
    }

    // Line 2's sessions take the new timers in place: our detection time follows our
    // slower receive interval (BIRD's multiplier 3 x 200 ms), gwb's our multiplier.
    lab.wait_for("line 2's new timers", Duration::from_secs(10), || {
        let a = detection_ms(&lab.status(Node::Gwa)?, "line2", "single-hop");
        let b = detection_ms(&lab.status(Node::Gwb)?, "line2", "end-to-end");
        Ok(a == Some(600.0) && b == Some(1000.0))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.crosslink(Node::Gwa, &["status"]).unwrap()));
    // inet2 is gone with its interface; the new prefix is routed over the site's group
    // and admitted by the remaining tunnel.
    lab.wait_for(
        "the new prefix in the kernel",
        Duration::from_secs(10),
        || {
            let routes = lab.exec(Node::Gwa, &["ip", "route", "show", NEW_PREFIX])?;
            Ok(routes.contains("nhid"))
        },
    )
    .unwrap();
    let status = lab.status(Node::Gwa).unwrap();
    assert!(path(&status, "inet2").is_null(), "{status}");
    assert!(lab
        .exec(Node::Gwa, &["ip", "link", "show", &inet2])
        .is_err());
    let allowed = lab
        .exec(
            Node::Gwa,
            &["wg", "show", &Tunnel(1).ifname(Side::A), "allowed-ips"],
        )
        .unwrap();
    assert!(allowed.contains(NEW_PREFIX), "{allowed}");
    std::thread::sleep(Duration::from_millis(500));
    let (ab, ba) = (ab.stop().unwrap(), ba.stop().unwrap());

    // Line 1 noticed nothing: same sessions, older; traffic without a loss; no path left
    // service.
    let line1_after = uptimes(&lab.status(Node::Gwa).unwrap(), "line1");
    for ((name, was), (_, is)) in line1_before.iter().zip(&line1_after) {
        assert!(is >= was, "{name} restarted: up {is} s, was {was} s");
    }
    assert!(ab.received > 1000 && ab.lost == 0, "ha -> hb: {ab}");
    assert!(ba.received > 1000 && ba.lost == 0, "hb -> ha: {ba}");
    let events: Value =
        serde_json::from_str(&lab.crosslink(Node::Gwa, &["events", "--json"]).unwrap()).unwrap();
    let since_reload: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .skip_while(|e| e["kind"] != "reload")
        .collect();
    for quiet in [
        "bgp-down",
        "bfd-down",
        "path-down",
        "failover",
        "path-change",
    ] {
        assert!(
            since_reload.iter().all(|e| e["kind"] != quiet),
            "{quiet} after a reload: {since_reload:#?}"
        );
    }
    assert_eq!(
        lab.crosslink(Node::Gwa, &["check-health"]).ok().map(|_| ()),
        Some(())
    );

    // The original config back: inet2 starts again and is used as a path once up.
    let message = reload(&mut lab, |_| original);
    assert!(message.contains("tunnel inet2 added"), "{message}");
    lab.wait_for("inet2 back and up", Duration::from_secs(30), || {
        Ok(path(&lab.status(Node::Gwa)?, "inet2")["state"] == "up")
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.crosslink(Node::Gwa, &["status"]).unwrap()));
    lab.wait_for(
        "line 2 at the lab's timers again",
        Duration::from_secs(10),
        || Ok(detection_ms(&lab.status(Node::Gwa)?, "line2", "single-hop") == Some(300.0)),
    )
    .unwrap();
    let routes = lab
        .exec(Node::Gwa, &["ip", "route", "show", NEW_PREFIX])
        .unwrap();
    assert!(
        routes.trim().is_empty(),
        "the removed prefix's route went: {routes}"
    );
}
