//! crosslink's BFD against BIRD 2's in the lab, and crosslink against crosslink end to end
//! over a line and over the internet. Needs root; never skipped.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use lab::{fault, netns, BfdTimers, Cut, GatewayMode, Lab, LabOptions, Line, Node, Side, Uplink};
use probes::driver::{Bfd, DriverOptions, Event, SessionSpec};
use probes::wire::{Diag, State};
use serde_json::Value;

fn status(lab: &Lab, gw: Node) -> Value {
    serde_json::from_str(&lab.crosslink(gw, &["status", "--json"]).expect("status")).expect("json")
}

/// The BFD sessions of one line in a gateway's status.
fn bfd(s: &Value, line: &str) -> Vec<Value> {
    s["sites"][0]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == line)
        .unwrap()["bfd"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn session(s: &Value, line: &str, kind: &str, neighbor: &str) -> Value {
    bfd(s, line)
        .into_iter()
        .find(|b| b["kind"] == kind && b["neighbor"] == neighbor)
        .unwrap_or_else(|| panic!("no {kind} {neighbor} on {line}: {s}"))
}

fn wait_session(
    lab: &Lab,
    gw: Node,
    (line, kind, neighbor): (&str, &str, &str),
    what: &str,
    timeout: Duration,
    f: impl Fn(&Value) -> bool,
) {
    lab.wait_for(
        &format!("{gw} {line} {kind} BFD with {neighbor}: {what}"),
        timeout,
        || Ok(f(&session(&status(lab, gw), line, kind, neighbor))),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nlast: {}\n{}",
            session(&status(lab, gw), line, kind, neighbor),
            lab.log_tails(10)
        )
    });
}

fn up(b: &Value) -> bool {
    b["state"] == "Up"
}

fn addr(side: Side, line: Line, router: bool, v6: bool) -> String {
    line.addr(side, router, v6).to_string()
}

/// BIRD's view: the state column of `show bfd sessions` for `peer`.
fn bird_state(lab: &Lab, node: Node, peer: &str) -> String {
    let out = lab.birdc(node, "show bfd sessions").unwrap_or_default();
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(peer))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("absent")
        .to_owned()
}

#[test]
fn with_bird_at_100ms_admin_down_and_silent_drop() {
    let lab = Lab::up(LabOptions::new(GatewayMode::Crosslink)).expect("lab up");
    for line in Line::ALL {
        for v6 in [false, true] {
            let n = addr(Side::A, line, true, v6);
            wait_session(
                &lab,
                Node::Gwa,
                (&line.ifname(), "single-hop", &n),
                "up",
                Duration::from_secs(20),
                up,
            );
            let mine = addr(Side::A, line, false, v6);
            lab.wait_for("BIRD to agree", Duration::from_secs(5), || {
                Ok(bird_state(&lab, line.router(), &mine) == "Up")
            })
            .unwrap();
        }
        // End to end with gwb's crosslink across the line.
        let far = addr(Side::B, line, false, false);
        wait_session(
            &lab,
            Node::Gwa,
            (&line.ifname(), "end-to-end", &far),
            "up",
            Duration::from_secs(20),
            up,
        );
    }
    // Counters are polled twice a second: wait for a poll after the RTT sample.
    wait_session(
        &lab,
        Node::Gwa,
        ("line1", "single-hop", &addr(Side::A, Line(1), true, false)),
        "measured",
        Duration::from_secs(5),
        |b| {
            up(b)
                && b["detection_ms"] == 300.0
                && b["rtt_ms"].as_f64().is_some_and(|r| r < 50.0)
                && b["loss"].as_f64().is_some_and(|l| l < 0.2)
        },
    );

    // BIRD's BFD disabled: BIRD 2.0.12 just stops sending (it never sends AdminDown, see
    // the note in the loopback test, which checks AdminDown against our own peer), so we
    // see the detection time expire, and the session return when BIRD does. The BGP
    // session with the router follows BFD down (Cease/BFD Down) and BFD waits for it to be
    // back (see the agent's `coupling`): the session's state moves on from Down, so the
    // detection is read from the events.
    lab.birdc(Node::Lr2, "disable bfd1").unwrap();
    let n = addr(Side::A, Line(2), true, false);
    wait_session(
        &lab,
        Node::Gwa,
        ("line2", "single-hop", &n),
        "down",
        Duration::from_secs(5),
        |b| !up(b),
    );
    let events = lab.crosslink(Node::Gwa, &["events"]).unwrap();
    for said in [
        format!("BFD with {n} Up -> Down (control detection time expired)"),
        format!("BFD with {n} went down: closing the BGP session with it (Cease/BFD Down)"),
    ] {
        assert!(events.contains(&said), "{said}:\n{events}");
    }
    lab.birdc(Node::Lr2, "enable bfd1").unwrap();
    wait_session(
        &lab,
        Node::Gwa,
        ("line2", "single-hop", &n),
        "back up",
        Duration::from_secs(20),
        up,
    );

    // Silent drop: only BFD can tell, within its detection time (300 ms).
    let n = addr(Side::A, Line(1), true, false);
    let t0 = Instant::now();
    lab.cut(Side::A, Line(1), Cut::Blackhole).unwrap();
    wait_session(
        &lab,
        Node::Gwa,
        ("line1", "single-hop", &n),
        "down by silence",
        Duration::from_secs(5),
        |b| !up(b),
    );
    let took = t0.elapsed();
    // Status is polled here (a CLI process each time): the bound is loose on purpose; the
    // benchmark measures detection exactly.
    assert!(took < Duration::from_millis(1500), "{took:?}");
    let events = lab.crosslink(Node::Gwa, &["events"]).unwrap();
    assert!(
        events.contains(&format!(
            "BFD with {n} Up -> Down (control detection time expired)"
        )),
        "{events}"
    );
    // BGP cannot come back across the drop, so BFD waits for it, and says so.
    wait_session(
        &lab,
        Node::Gwa,
        ("line1", "single-hop", &n),
        "held for BGP",
        Duration::from_secs(10),
        |b| b["state"] == "AdminDown",
    );
    let s = status(&lab, Node::Gwa);
    let line1 = s["sites"][0]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "line1")
        .unwrap()
        .clone();
    assert_eq!(line1["state"], "down", "{line1}");
    lab.heal(Side::A, Line(1)).unwrap();
    wait_session(
        &lab,
        Node::Gwa,
        ("line1", "single-hop", &n),
        "up after heal",
        Duration::from_secs(20),
        up,
    );
}

#[test]
fn with_bird_at_the_smallest_interval() {
    let mut opts = LabOptions::new(GatewayMode::Crosslink);
    opts.bfd = BfdTimers {
        interval: Duration::from_millis(1),
        multiplier: 3,
    };
    let lab = Lab::up(opts).expect("lab up");
    let n = addr(Side::A, Line(1), true, false);
    wait_session(
        &lab,
        Node::Gwa,
        ("line1", "single-hop", &n),
        "up at 1 ms",
        Duration::from_secs(20),
        |b| up(b) && b["detection_ms"] == 3.0,
    );
    // BIRD's end, asked until it says so: at 1 ms on a shared two-CPU machine its
    // ordinary-priority BFD thread misses now and then, and a session that just failed
    // comes back through the 1 s slow start, so one look can land in a flap.
    let ours = addr(Side::A, Line(1), false, false);
    let mut out = String::new();
    let at_1ms = lab.wait_for("BIRD's end at 1 ms", Duration::from_secs(20), || {
        out = lab.birdc(Node::Lr1, "show bfd sessions")?;
        Ok(out
            .lines()
            .find(|l| l.starts_with(&ours))
            .is_some_and(|row| row.contains("Up") && row.contains("0.001")))
    });
    assert!(at_1ms.is_ok(), "BIRD runs it at 1 ms: {out}");
}

#[test]
fn authentication_matching_and_wrong_keys() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("bfd.key");
    std::fs::write(&key, "s3cret\n").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let key = key.display().to_string();
    let opts = LabOptions::new(GatewayMode::Crosslink)
        .bird_hook(|node, cfg| {
            let password = match node {
                Node::Lr1 => "other",
                Node::Lr2 => "s3cret",
                _ => return cfg,
            };
            cfg.replace("multiplier 3; };", &format!("multiplier 3; authentication meticulous keyed sha1; password \"{password}\"; }};"))
        })
        .crosslink_hook(move |gw, cfg| {
            if gw != Node::Gwa {
                return cfg;
            }
            let auth = format!("auth = {{ type = \"meticulous-keyed-sha1\", key_file = \"{key}\" }}\n");
            cfg.replace("multiplier = 3\n", &format!("multiplier = 3\n{auth}"))
        });
    let lab = Lab::up(opts).expect("lab up");
    let good = addr(Side::A, Line(2), true, false);
    wait_session(
        &lab,
        Node::Gwa,
        ("line2", "single-hop", &good),
        "up with the matching key",
        Duration::from_secs(20),
        up,
    );
    std::thread::sleep(Duration::from_secs(4));
    let bad = session(
        &status(&lab, Node::Gwa),
        "line1",
        "single-hop",
        &addr(Side::A, Line(1), true, false),
    );
    assert!(!up(&bad), "a wrong key never comes up: {bad}");
    assert_ne!(
        bird_state(&lab, Node::Lr1, &addr(Side::A, Line(1), false, false)),
        "Up"
    );
}

/// A BFD driver running inside `node`'s namespace on a thread of its own.
fn driver_in(node: Node, spec: SessionSpec, port: u16) -> std::sync::mpsc::Receiver<Event> {
    let (tx, rx) = std::sync::mpsc::channel();
    netns::spawn_in(&node.ns(), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel();
            let opts = DriverOptions {
                single_hop_port: port,
                multi_hop_port: port + 1,
                rtt_every: Duration::from_millis(200),
                ..DriverOptions::default()
            };
            let bfd = Bfd::start(opts, etx).unwrap();
            bfd.add(spec).await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, erx.recv()).await {
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
    });
    rx
}

fn wait_event(
    rx: &std::sync::mpsc::Receiver<Event>,
    what: &str,
    f: impl Fn(&Event) -> bool,
) -> (Event, Instant) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Ok(ev) = rx.recv_timeout(left) {
            if f(&ev) {
                return (ev, Instant::now());
            }
        }
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn crosslink_to_crosslink_over_the_internet_at_10ms() {
    // The baseline lab leaves the uplinks to us: two drivers, gwa up1 <-> gwb up1.
    let lab = Lab::up(LabOptions::new(GatewayMode::Bird)).expect("lab up");
    let a: IpAddr = Uplink(1).addr(Side::A, false, false);
    let b: IpAddr = Uplink(1).addr(Side::B, false, false);
    let port = 14784;
    let spec = |peer, local| {
        let mut s =
            SessionSpec::multi_hop("inet1", peer, Some(local), Duration::from_millis(10), 3);
        s.peer_port = port + 1;
        s
    };
    let at_a = driver_in(Node::Gwa, spec(b, a), port);
    let at_b = driver_in(Node::Gwb, spec(a, b), port);
    wait_event(&at_a, "gwa up", |e| e.to == State::Up);
    wait_event(&at_b, "gwb up", |e| e.to == State::Up);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    fault::apply(&Node::Gwa.ns(), "up1", Cut::Blackhole).unwrap();
    let (ev, at) = wait_event(&at_a, "gwa down", |e| e.to == State::Down);
    assert_eq!(ev.diag, Diag::ControlDetectionTimeExpired);
    assert!(
        at - t0 < Duration::from_millis(200),
        "detected after {:?}",
        at - t0
    );
    fault::heal(&Node::Gwa.ns(), "up1").unwrap();
    wait_event(&at_a, "gwa up again", |e| e.to == State::Up);
    drop(lab);
}

#[test]
fn crosslink_to_crosslink_over_a_line_at_10ms() {
    let mut opts = LabOptions::new(GatewayMode::Crosslink);
    opts.bfd = BfdTimers {
        interval: Duration::from_millis(10),
        multiplier: 3,
    };
    let lab = Lab::up(opts).expect("lab up");
    let far = addr(Side::B, Line(1), false, false);
    wait_session(
        &lab,
        Node::Gwa,
        ("line1", "end-to-end", &far),
        "up at 10 ms",
        Duration::from_secs(20),
        |b| up(b) && b["detection_ms"] == 30.0,
    );
    // A silent failure between the line router and the far gateway: only the end-to-end
    // session sees it; the single-hop session with lr1 stays up.
    lab.cut(Side::B, Line(1), Cut::Blackhole).unwrap();
    wait_session(
        &lab,
        Node::Gwa,
        ("line1", "end-to-end", &far),
        "down",
        Duration::from_secs(5),
        |b| b["state"] == "Down",
    );
    let s = status(&lab, Node::Gwa);
    assert!(
        up(&session(
            &s,
            "line1",
            "single-hop",
            &addr(Side::A, Line(1), true, false)
        )),
        "{s}"
    );
    let line1 = s["sites"][0]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "line1")
        .unwrap()
        .clone();
    assert_eq!(line1["state"], "down");
    assert!(
        line1["reason"].as_str().unwrap().contains("end-to-end BFD"),
        "{line1}"
    );
    lab.heal(Side::B, Line(1)).unwrap();
    wait_session(
        &lab,
        Node::Gwa,
        ("line1", "end-to-end", &far),
        "up again",
        Duration::from_secs(20),
        up,
    );
}

#[test]
fn a_session_waits_for_its_interface_and_survives_its_recreation() {
    // Tunnel interfaces may appear after the agent starts, and come back with a new index.
    let lab = Lab::up(LabOptions::new(GatewayMode::Bird)).expect("lab up");
    let port = 13784;
    let spec = |peer: &str, iface: &str| {
        let mut s = SessionSpec::single_hop(
            "late",
            peer.parse().unwrap(),
            iface,
            Duration::from_millis(10),
            3,
        );
        s.peer_port = port;
        s
    };
    let at_a = driver_in(Node::Gwa, spec("10.99.0.2", "late0"), port);
    let at_b = driver_in(Node::Gwb, spec("10.99.0.1", "late1"), port);
    let link = |lab: &Lab| {
        lab.exec(
            Node::Gwa,
            &[
                "ip",
                "link",
                "add",
                "late0",
                "type",
                "veth",
                "peer",
                "name",
                "late1",
                "netns",
                &Node::Gwb.ns(),
            ],
        )
        .unwrap();
        for (node, dev, a) in [
            (Node::Gwa, "late0", "10.99.0.1/30"),
            (Node::Gwb, "late1", "10.99.0.2/30"),
        ] {
            lab.exec(node, &["ip", "addr", "add", a, "dev", dev])
                .unwrap();
            lab.exec(node, &["ip", "link", "set", "dev", dev, "up"])
                .unwrap();
        }
    };
    std::thread::sleep(Duration::from_secs(1));
    assert!(at_a.try_recv().is_err(), "nothing to talk over yet");
    link(&lab);
    wait_event(&at_a, "gwa up once the interface exists", |e| {
        e.to == State::Up
    });
    wait_event(&at_b, "gwb up", |e| e.to == State::Up);
    lab.exec(Node::Gwa, &["ip", "link", "del", "late0"])
        .unwrap();
    wait_event(&at_a, "gwa down with the interface gone", |e| {
        e.to == State::Down
    });
    link(&lab);
    wait_event(&at_a, "gwa up on the re-created interface", |e| {
        e.to == State::Up
    });
    drop(lab);
}
