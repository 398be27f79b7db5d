//! FRR as the line routers (zebra, bgpd, bfdd; `LineRouter::Frr`): crosslink on both
//! gateways peers with them over BGP (IPv4 and IPv6) and BFD, the traffic between the
//! hosts crosses them, and a silent failure of line 1 moves it to line 2 and back.
//! Asserts behaviour, not speed. Needs root; never skipped.

use std::net::IpAddr;
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

/// FRR's own account of a start with `gw`: per peer, BGP sessions dropped and BFD
/// sessions that went down, as `(peer, dropped, bfd_down)`.
fn frr_flaps(lab: &Lab, lr: Node) -> Vec<(String, u64, u64)> {
    let bgp: serde_json::Value =
        serde_json::from_str(&lab.vtysh(lr, "show bgp neighbors json").unwrap()).unwrap();
    let bfd: serde_json::Value =
        serde_json::from_str(&lab.vtysh(lr, "show bfd peers counters json").unwrap()).unwrap();
    let mut out = Vec::new();
    for (peer, n) in bgp.as_object().into_iter().flatten() {
        let dropped = n["connectionsDropped"].as_u64().unwrap_or(0);
        let down = bfd
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["peer"] == peer.as_str())
            .map(|b| b["session-down-events"].as_u64().unwrap_or(0))
            .sum();
        out.push((peer.clone(), dropped, down));
    }
    out
}

/// bgpd's own log of `lr` from byte `seen` on (moved past what it read): every BFD
/// session it saw go from Up to Down and every NOTIFICATION it sent. A BFD session bfdd
/// deleted under bgpd is gone from `show bfd peers counters`; the log keeps it.
fn bgpd_flaps(lab: &Lab, lr: Node, seen: &mut usize) -> Vec<String> {
    let log = std::fs::read_to_string(lab.dir().join(format!("{lr}.bgpd.log"))).unwrap();
    let new = log.get(*seen..).unwrap_or_default();
    *seen = log.len();
    new.lines()
        .filter(|l| l.contains("NOTIFICATION: sent") || l.contains("bfd state Up -> Down"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn ten_starts_against_frr_show_no_bfd_down_and_no_cease() {
    let mut flapped = Vec::new();
    for start in 0..10 {
        let lab = lab();
        for gw in [Node::Gwa, Node::Gwb] {
            wait_sessions_up(&lab, gw);
        }
        // Long enough for a late flap to show: bgpd re-registers its BFD peers when the
        // session is Established, and a Cease would close it within the detection time.
        std::thread::sleep(Duration::from_secs(3));
        for lr in [Node::Lr1, Node::Lr2] {
            for (peer, dropped, down) in frr_flaps(&lab, lr) {
                if dropped > 0 || down > 0 {
                    flapped.push(format!("start {start}: {lr} {peer}: {dropped} BGP sessions dropped, {down} BFD down"));
                }
            }
            for l in bgpd_flaps(&lab, lr, &mut 0) {
                flapped.push(format!("start {start}: {lr} bgpd: {l}"));
            }
        }
    }
    assert!(flapped.is_empty(), "{flapped:#?}");
}

/// Drops BGP to and from `lr` (TCP port 179) until `release_bgp`: the router's BGP then
/// comes up seconds after its BFD could, as with a router whose connect-retry timer is long.
fn hold_bgp(lr: Node) {
    lab::netns::exec_with_input(
        &lr.ns(),
        &["nft", "-f", "-"],
        "table inet holdbgp { chain in { type filter hook input priority 0; tcp dport 179 drop; tcp sport 179 drop; }; }\n",
    )
    .unwrap();
}

fn release_bgp(lr: Node) {
    lab::netns::exec(&lr.ns(), &["nft", "delete", "table", "inet", "holdbgp"]).unwrap();
}

/// FRR's bgpd registers each BFD peer again, with the session's local address, once BGP
/// is Established, deleting the session it registered at start: a BFD session that came
/// Up before BGP would be deleted under it, and bgpd closes BGP with Cease/BFD Down.
/// crosslink lets BFD with a router run only once BGP with it is up, so a router that
/// restarts — and one whose BGP comes up seconds after its BFD could — comes back with no
/// BFD Down and no dropped session on the router's side.
#[test]
fn frr_restarted_under_a_running_crosslink_comes_back_without_a_flap() {
    let mut lab = lab();
    for gw in [Node::Gwa, Node::Gwb] {
        wait_sessions_up(&lab, gw);
    }
    let mut flapped = Vec::new();
    let mut seen = 0;
    for restart in 0..6 {
        let late = restart % 2 == 1;
        if late {
            hold_bgp(Node::Lr1);
        }
        lab.restart_line_router(Line(1)).unwrap();
        if late {
            // Three of BFD's slow-start seconds: time enough for it to come up first.
            std::thread::sleep(Duration::from_secs(3));
            release_bgp(Node::Lr1);
        }
        for gw in [Node::Gwa, Node::Gwb] {
            wait_sessions_up(&lab, gw);
        }
        std::thread::sleep(Duration::from_secs(3));
        for (peer, dropped, down) in frr_flaps(&lab, Node::Lr1) {
            if dropped > 0 || down > 0 {
                flapped.push(format!("restart {restart} (BGP late: {late}): lr1 {peer}: {dropped} BGP sessions dropped, {down} BFD down"));
            }
        }
        for l in bgpd_flaps(&lab, Node::Lr1, &mut seen) {
            flapped.push(format!(
                "restart {restart} (BGP late: {late}): lr1 bgpd: {l}"
            ));
        }
    }
    assert!(flapped.is_empty(), "{flapped:#?}\n{}", lab.log_tails(30));
}

/// FRR's operator shuts its BFD peer down (AdminDown, diag 7): crosslink takes the
/// session down but keeps BGP with the router (RFC 5882 §3.2: AdminDown is no failure),
/// and BFD comes back when the router enables it again.
#[test]
fn frr_taking_bfd_administratively_down_leaves_bgp_up() {
    let lab = lab();
    for gw in [Node::Gwa, Node::Gwb] {
        wait_sessions_up(&lab, gw);
    }
    let (peer, local) = (
        Line(1).addr(Side::A, false, false),
        Line(1).addr(Side::A, true, false),
    );
    let bfd_peer = format!("peer {peer} local-address {local} interface gwa");
    let conf = |shut: &str| {
        lab::netns::exec(
            &Node::Lr1.ns(),
            &[
                "vtysh",
                "-N",
                "lr1",
                "-c",
                "configure terminal",
                "-c",
                "bfd",
                "-c",
                &bfd_peer,
                "-c",
                shut,
            ],
        )
        .unwrap()
    };
    conf("shutdown");
    let session = |lab: &Lab| -> serde_json::Value {
        let s = lab.status(Node::Gwa).unwrap();
        s["sites"][0]["paths"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "line1")
            .and_then(|p| p["bfd"].as_array())
            .and_then(|b| {
                b.iter()
                    .find(|b| b["neighbor"] == local.to_string())
                    .cloned()
            })
            .unwrap_or_default()
    };
    lab.wait_for("BFD with lr1 down", Duration::from_secs(10), || {
        Ok(session(&lab)["state"] != "Up")
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", session(&lab)));
    std::thread::sleep(Duration::from_secs(2));
    let events = lab.crosslink(Node::Gwa, &["events"]).unwrap();
    assert!(
        events.contains("the peer is administratively down"),
        "{events}"
    );
    assert!(!events.contains("closing the BGP session"), "{events}");
    let s = lab.status(Node::Gwa).unwrap();
    let line1 = &s["sites"][0]["paths"][0];
    assert!(
        line1["bgp"]
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["state"] == "Established")),
        "BGP stays up: {line1}"
    );
    conf("no shutdown");
    lab.wait_for("BFD with lr1 back", Duration::from_secs(20), || {
        Ok(session(&lab)["state"] == "Up")
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", session(&lab)));
}

/// gwa's BGP neighbour `router` (an address of lr1 or lr2) as its status shows it.
fn neighbor(lab: &Lab, router: IpAddr) -> serde_json::Value {
    let s = lab.status(Node::Gwa).unwrap_or_default();
    s["sites"][0]["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["bgp"].as_array().cloned().unwrap_or_default())
        .find(|n| n["neighbor"] == router.to_string())
        .unwrap_or_default()
}

fn wait_neighbor(lab: &Lab, router: IpAddr, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    lab.wait_for(
        &format!("gwa neighbour {router}: {what}"),
        Duration::from_secs(15),
        || Ok(f(&neighbor(lab, router))),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nlast: {}\n{}",
            neighbor(lab, router),
            lab.log_tails(15)
        )
    });
}

/// lr1's BGP entry for `prefix` (`show bgp ... json`).
fn frr_route(lab: &Lab, prefix: &str) -> serde_json::Value {
    let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
    let out = lab
        .vtysh(
            Node::Lr1,
            &format!("show bgp {family} unicast {prefix} json"),
        )
        .unwrap_or_default();
    serde_json::from_str(&out).unwrap_or_default()
}

/// `vtysh -c "configure terminal" -c "router bgp <asn>" -c <line>` on `line`'s router.
fn bgp_conf(line: Line, cmd: &str) {
    let asn = format!("router bgp {}", line.asn());
    let node = line.router();
    lab::netns::exec(
        &node.ns(),
        &[
            "vtysh",
            "-N",
            node.name(),
            "-c",
            "configure terminal",
            "-c",
            &asn,
            "-c",
            cmd,
        ],
    )
    .unwrap();
}

/// BGP with FRR both ways: FRR learns each gateway's prefixes in both families, crosslink
/// the far site's over both lines and families; a withdrawal on FRR's side (its session
/// with gwb shut down) and on ours (a prefix no longer announced, by reload) each reach
/// the other side, with no session reset.
#[test]
fn routes_both_ways_with_frr_and_withdrawals_from_either_side() {
    let mut lab = lab();
    for gw in [Node::Gwa, Node::Gwb] {
        wait_sessions_up(&lab, gw);
    }
    let gwa_v4 = Line(1).addr(Side::A, false, false).to_string();
    for (prefix, from) in [
        ("198.18.1.0/24", gwa_v4.clone()),
        (
            "2001:db8:a::/64",
            Line(1).addr(Side::A, false, true).to_string(),
        ),
        (
            "198.18.2.0/24",
            Line(1).addr(Side::B, false, false).to_string(),
        ),
    ] {
        let r = frr_route(&lab, prefix);
        assert!(
            r["paths"][0]["peer"]["peerId"] == from.as_str(),
            "lr1 lacks {prefix} from {from}: {r}"
        );
    }
    for line in Line::ALL {
        for v6 in [false, true] {
            wait_neighbor(
                &lab,
                line.addr(Side::A, true, v6),
                "one prefix each way",
                |n| {
                    n["state"] == "Established"
                        && n["prefixes_received"] == 1
                        && n["prefixes_advertised"] == 1
                },
            );
        }
    }
    let lr1_v4 = Line(1).addr(Side::A, true, false);
    // FRR's side: lr1 stops hearing gwb, so it withdraws gwb's prefix from gwa.
    let gwb_v4 = Line(1).addr(Side::B, false, false);
    bgp_conf(Line(1), &format!("neighbor {gwb_v4} shutdown"));
    wait_neighbor(&lab, lr1_v4, "withdrawal", |n| {
        n["prefixes_received"] == 0 && n["state"] == "Established"
    });
    bgp_conf(Line(1), &format!("no neighbor {gwb_v4} shutdown"));
    wait_neighbor(&lab, lr1_v4, "route back", |n| n["prefixes_received"] == 1);
    // Ours: gwa stops announcing its IPv4 prefix (config + SIGHUP).
    lab.rewrite_crosslink_config(Node::Gwa, |c| {
        c.replace("announce = [\"198.18.1.0/24\", ", "announce = [")
    })
    .unwrap();
    lab.signal_crosslink(Node::Gwa, nix::sys::signal::Signal::SIGHUP)
        .unwrap();
    lab.wait_for("lr1 to drop 198.18.1.0/24", Duration::from_secs(10), || {
        Ok(frr_route(&lab, "198.18.1.0/24")["paths"]
            .as_array()
            .is_none_or(|p| p.iter().all(|p| p["peer"]["peerId"] != gwa_v4.as_str())))
    })
    .unwrap();
    assert!(
        frr_route(&lab, "2001:db8:a::/64")["paths"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "IPv6 untouched"
    );
    let events = lab.crosslink(Node::Gwa, &["events"]).unwrap();
    let after_start: Vec<&str> = events
        .lines()
        .skip_while(|l| !l.contains("reload"))
        .filter(|l| l.contains("bgp-down"))
        .collect();
    assert!(
        after_start.is_empty(),
        "no session reset by the reload: {events}"
    );
}

/// TCP-MD5 with FRR: gwa's sessions with lr1 come up once FRR has gwa's key and stay down
/// with another key.
#[test]
fn tcp_md5_with_frr() {
    use std::os::unix::fs::PermissionsExt;
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("lr1.md5");
    std::fs::write(&key, "s3cret\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let md5 = format!("md5_key_file = \"{}\"", key.display());
    let mut opts = LabOptions::new(GatewayMode::Crosslink).crosslink_hook(move |gw, cfg| {
        if gw == Node::Gwa {
            cfg.replace("name = \"line1\"\n", &format!("name = \"line1\"\n{md5}\n"))
        } else {
            cfg
        }
    });
    opts.line_router = LineRouter::Frr;
    let lab = Lab::up(opts).expect("lab up");
    let gwa = [false, true].map(|v6| Line(1).addr(Side::A, false, v6));
    let lr1 = [false, true].map(|v6| Line(1).addr(Side::A, true, v6));
    // Without the key on FRR's side, no session.
    std::thread::sleep(Duration::from_secs(4));
    for r in lr1 {
        assert_ne!(neighbor(&lab, r)["state"], "Established", "{r}");
    }
    for g in gwa {
        bgp_conf(Line(1), &format!("neighbor {g} password s3cret"));
    }
    for r in lr1 {
        wait_neighbor(&lab, r, "MD5 session with the matching key", |n| {
            n["state"] == "Established"
        });
    }
    for g in gwa {
        bgp_conf(Line(1), &format!("neighbor {g} password other"));
    }
    std::thread::sleep(Duration::from_secs(8));
    for r in lr1 {
        assert_ne!(
            neighbor(&lab, r)["state"],
            "Established",
            "{r} with another key"
        );
    }
}
