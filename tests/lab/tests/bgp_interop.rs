//! crosslink's BGP against BIRD 2 in the lab: sessions, routes both ways (IPv4 and IPv6),
//! withdrawals, restarts, silent failures, TCP-MD5, GTSM, peers that lie, max-prefix and
//! the aggregate filter. Needs root; never skipped.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bgp::wire::{frame_len, msg_type, AsPath, Ctx, Message, Open, Origin, PathAttrs, Update};
use lab::{netns, Cut, GatewayMode, Lab, LabOptions, Line, Node, Side};
use serde_json::Value;

fn crosslink_lab(opts: LabOptions) -> Lab {
    Lab::up(opts).expect("lab up")
}

fn status(lab: &Lab, gw: Node) -> Value {
    serde_json::from_str(&lab.crosslink(gw, &["status", "--json"]).expect("status")).expect("json")
}

/// The status entry of one BGP neighbour.
fn neighbor(s: &Value, addr: &str) -> Value {
    s["sites"][0]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["bgp"].as_array().cloned().unwrap_or_default())
        .find(|n| n["neighbor"] == addr)
        .unwrap_or_else(|| panic!("no neighbour {addr} in {s}"))
}

fn wait_neighbor(
    lab: &Lab,
    gw: Node,
    addr: &str,
    what: &str,
    timeout: Duration,
    f: impl Fn(&Value) -> bool,
) {
    lab.wait_for(&format!("{gw} neighbour {addr}: {what}"), timeout, || {
        Ok(f(&neighbor(&status(lab, gw), addr)))
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nlast: {}\n{}",
            neighbor(&status(lab, gw), addr),
            lab.log_tails(15)
        )
    });
}

fn established(n: &Value) -> bool {
    n["state"] == "Established"
}

/// Not established, and the last error says why.
fn failed_with(n: &Value, text: &str) -> bool {
    !established(n) && n["last_error"].as_str().unwrap_or_default().contains(text)
}

fn bird_route(lab: &Lab, node: Node, prefix: &str) -> String {
    lab.birdc(node, &format!("show route {prefix} all"))
        .unwrap_or_default()
}

fn a(side: Side, line: Line, router: bool, v6: bool) -> String {
    line.addr(side, router, v6).to_string()
}

#[test]
fn sessions_and_routes_both_ways_with_withdrawals() {
    let mut lab = crosslink_lab(LabOptions::new(GatewayMode::Crosslink));
    lab.wait_bird_established(Duration::from_secs(60)).unwrap();
    // BIRD learned each gateway's prefixes from crosslink, IPv4 and IPv6.
    for (prefix, proto) in [
        ("198.18.1.0/24", "gwa_v4"),
        ("2001:db8:a::/64", "gwa_v6"),
        ("198.18.2.0/24", "gwb_v4"),
    ] {
        let r = bird_route(&lab, Node::Lr1, prefix);
        assert!(
            r.contains(proto) && r.contains("BGP.as_path"),
            "lr1 lacks {prefix} from {proto}:\n{r}"
        );
    }
    // crosslink learned the far side's prefixes over both lines and both families.
    let lr1_v4 = a(Side::A, Line(1), true, false);
    wait_neighbor(
        &lab,
        Node::Gwa,
        &lr1_v4,
        "route from gwb",
        Duration::from_secs(10),
        |n| n["prefixes_received"] == 1,
    );
    for line in Line::ALL {
        for v6 in [false, true] {
            let addr = a(Side::A, line, true, v6);
            wait_neighbor(
                &lab,
                Node::Gwa,
                &addr,
                "one prefix each way",
                Duration::from_secs(10),
                |n| established(n) && n["prefixes_received"] == 1 && n["prefixes_advertised"] == 1,
            );
        }
    }
    let s = status(&lab, Node::Gwa);
    assert_eq!(s["sites"][0]["learned_prefixes"], 2, "{s}");
    // A withdrawal on the BIRD side: lr1 stops hearing gwb, so it withdraws gwb's prefix.
    lab.birdc(Node::Lr1, "disable gwb_v4").unwrap();
    wait_neighbor(
        &lab,
        Node::Gwa,
        &lr1_v4,
        "withdrawal",
        Duration::from_secs(10),
        |n| n["prefixes_received"] == 0 && established(n),
    );
    lab.birdc(Node::Lr1, "enable gwb_v4").unwrap();
    wait_neighbor(
        &lab,
        Node::Gwa,
        &lr1_v4,
        "route back",
        Duration::from_secs(30),
        |n| n["prefixes_received"] == 1,
    );

    // A withdrawal on our side: gwa stops announcing its IPv4 prefix (config + SIGHUP).
    lab.rewrite_crosslink_config(Node::Gwa, |c| {
        c.replace("announce = [\"198.18.1.0/24\", ", "announce = [")
    })
    .unwrap();
    lab.signal_crosslink(Node::Gwa, nix::sys::signal::Signal::SIGHUP)
        .unwrap();
    lab.wait_for("lr1 to drop 198.18.1.0/24", Duration::from_secs(10), || {
        Ok(!bird_route(&lab, Node::Lr1, "198.18.1.0/24").contains("gwa_v4"))
    })
    .unwrap();
    assert!(
        bird_route(&lab, Node::Lr1, "2001:db8:a::/64").contains("gwa_v6"),
        "IPv6 untouched"
    );
    let events = lab.crosslink(Node::Gwa, &["events"]).unwrap();
    assert!(
        events.contains("reload") && events.contains("line1"),
        "{events}"
    );
    wait_neighbor(
        &lab,
        Node::Gwa,
        &lr1_v4,
        "nothing advertised over IPv4",
        Duration::from_secs(5),
        |n| n["prefixes_advertised"] == 0,
    );
    let n = neighbor(&status(&lab, Node::Gwa), &lr1_v4);
    assert!(
        established(&n) && n["established_seconds"].as_u64() >= Some(1),
        "the session stayed up: {n}"
    );
    assert!(
        !events.contains("bgp-down"),
        "no session was reset by the reload: {events}"
    );
}

#[test]
fn bird_restart_and_silent_drop_are_detected() {
    let mut lab = crosslink_lab(LabOptions::new(GatewayMode::Crosslink));
    lab.wait_bird_established(Duration::from_secs(60)).unwrap();
    let lr1_v4 = a(Side::A, Line(1), true, false);
    lab.restart_bird(Node::Lr1).unwrap();
    wait_neighbor(
        &lab,
        Node::Gwa,
        &lr1_v4,
        "session lost",
        Duration::from_secs(10),
        |n| !established(n),
    );
    wait_neighbor(
        &lab,
        Node::Gwa,
        &lr1_v4,
        "session back with its route",
        Duration::from_secs(60),
        |n| established(n) && n["prefixes_received"] == 1,
    );

    // Silent drop: the link stays up, only the hold timer (3 s here) can tell.
    lab.cut(Side::A, Line(1), Cut::Blackhole).unwrap();
    wait_neighbor(
        &lab,
        Node::Gwa,
        &lr1_v4,
        "hold timer expiry",
        Duration::from_secs(10),
        |n| failed_with(n, "hold timer expired"),
    );
    let events = lab.crosslink(Node::Gwa, &["events"]).unwrap();
    assert!(
        events.contains("bgp-down") && events.contains("hold timer expired"),
        "{events}"
    );
    lab.heal(Side::A, Line(1)).unwrap();
    wait_neighbor(
        &lab,
        Node::Gwa,
        &lr1_v4,
        "session back after the heal",
        Duration::from_secs(60),
        established,
    );
}

/// A key file the agent accepts (mode 0600) in a directory that outlives the lab.
fn key_file(dir: &tempfile::TempDir, name: &str, key: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, key).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

/// Inserts `extra` into the `[[line]]` table named `line` of a crosslink config.
fn line_option(cfg: String, line: &str, extra: &str) -> String {
    cfg.replace(
        &format!("name = \"{line}\"\n"),
        &format!("name = \"{line}\"\n{extra}\n"),
    )
}

/// Inserts `extra` into BIRD's `protocol bgp NAME {` block.
fn bird_option(cfg: String, proto: &str, extra: &str) -> String {
    cfg.replace(
        &format!("protocol bgp {proto} {{\n"),
        &format!("protocol bgp {proto} {{\n  {extra}\n"),
    )
}

#[test]
fn md5_and_gtsm() {
    let keys = tempfile::tempdir().unwrap();
    let good = key_file(&keys, "good.md5", "s3cret\n");
    let opts = LabOptions::new(GatewayMode::Crosslink)
        .bird_hook(|node, cfg| match node {
            // lr2 and gwa share the key; lr1 has another one.
            Node::Lr2 => bird_option(
                bird_option(cfg, "gwa_v4", "password \"s3cret\";"),
                "gwa_v6",
                "password \"s3cret\";",
            ),
            Node::Lr1 => {
                let cfg = bird_option(
                    bird_option(cfg, "gwa_v4", "password \"other\";"),
                    "gwa_v6",
                    "password \"other\";",
                );
                // GTSM towards gwb on lr1 only.
                bird_option(
                    bird_option(cfg, "gwb_v4", "ttl security on;"),
                    "gwb_v6",
                    "ttl security on;",
                )
            }
            _ => cfg,
        })
        .crosslink_hook(move |gw, cfg| match gw {
            Node::Gwa => line_option(
                line_option(cfg, "line1", &format!("md5_key_file = \"{good}\"")),
                "line2",
                &format!("md5_key_file = \"{good}\""),
            ),
            Node::Gwb => line_option(
                line_option(cfg, "line1", "ttl_security = true"),
                "line2",
                "ttl_security = true",
            ),
            _ => cfg,
        });
    let lab = crosslink_lab(opts);
    for v6 in [false, true] {
        wait_neighbor(
            &lab,
            Node::Gwa,
            &a(Side::A, Line(2), true, v6),
            "MD5 session with the matching key",
            Duration::from_secs(30),
            established,
        );
        wait_neighbor(
            &lab,
            Node::Gwb,
            &a(Side::B, Line(1), true, v6),
            "GTSM session with a TTL-255 peer",
            Duration::from_secs(30),
            established,
        );
    }
    // Give the others every chance, then check they never came up.
    std::thread::sleep(Duration::from_secs(8));
    let sa = status(&lab, Node::Gwa);
    let sb = status(&lab, Node::Gwb);
    for v6 in [false, true] {
        let n = neighbor(&sa, &a(Side::A, Line(1), true, v6));
        assert!(
            !established(&n),
            "mismatching MD5 key must never establish: {n}"
        );
        let n = neighbor(&sb, &a(Side::B, Line(2), true, v6));
        assert!(
            !established(&n),
            "a peer not sending TTL 255 must never establish under GTSM: {n}"
        );
    }
    let lr1 = lab.birdc(Node::Lr1, "show protocols gwa_v4").unwrap();
    assert!(!lr1.contains("Established"), "{lr1}");

    // The GTSM session's router moves two hops away: its packets now arrive with TTL 253
    // (rewritten on gwb's ingress), are dropped, and the hold timer ends the session —
    // or, first, single-hop BFD, which drops them too (RFC 5881 §5) and which BGP follows.
    let ttl = "table netdev hops {\n chain in { type filter hook ingress device \"line1\" priority -400; policy accept; ip ttl set 253; ip6 hoplimit set 253; }\n}\n";
    netns::exec_with_input(&Node::Gwb.ns(), &["nft", "-f", "-"], ttl).unwrap();
    for v6 in [false, true] {
        wait_neighbor(
            &lab,
            Node::Gwb,
            &a(Side::B, Line(1), true, v6),
            "GTSM drops a peer behind extra hops",
            Duration::from_secs(10),
            |n| failed_with(n, "hold timer expired") || failed_with(n, "BFD Down"),
        );
    }
    std::thread::sleep(Duration::from_secs(4));
    let s = status(&lab, Node::Gwb);
    assert!(
        !established(&neighbor(&s, &a(Side::B, Line(1), true, false))),
        "and it does not come back: {s}"
    );
}

/// A BGP speaker we control completely, in lr2's namespace, talking to gwa's agent from
/// lr2's address after lr2's own BIRD session was disabled.
struct RawPeer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawPeer {
    fn connect(lab: &Lab) -> RawPeer {
        let to = SocketAddr::new(Line(2).addr(Side::A, false, false), 179);
        let ns = Node::Lr2.ns();
        let stream = netns::spawn_in(&ns, move || {
            TcpStream::connect_timeout(&to, Duration::from_secs(5))
        })
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("connect to gwa: {e}\n{}", lab.log_tails(10)));
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        RawPeer {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Next message from the agent, or None when it closed the connection.
    fn recv(&mut self) -> Option<Message> {
        loop {
            if let Ok(Some(n)) = frame_len(&self.buf) {
                let m: Vec<u8> = self.buf.drain(..n).collect();
                return Some(
                    Message::decode(&m, &Ctx::default()).expect("the agent sends valid messages"),
                );
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn notification(&mut self) -> (u8, u8) {
        while let Some(m) = self.recv() {
            if let Message::Notification(n) = m {
                return (n.code, n.subcode);
            }
        }
        panic!("connection closed without a NOTIFICATION");
    }
}

fn raw(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

fn open_bytes(asn: u32) -> Vec<u8> {
    let id = match Line(2).addr(Side::A, true, false) {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!(),
    };
    Message::Open(Open::new(asn, 90, id, &[bgp::wire::Family::Ipv4]))
        .to_bytes(&Ctx::default())
        .unwrap()
}

fn update_bytes(origin: u8) -> Vec<u8> {
    let u = Update {
        attrs: PathAttrs {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(vec![65102])),
            next_hop: Some("198.19.21.2".parse().unwrap()),
            ..PathAttrs::default()
        },
        nlri: vec!["198.18.2.0/24".parse().unwrap()],
        ..Update::default()
    };
    let mut b = Message::Update(Box::new(u))
        .to_bytes(&Ctx::default())
        .unwrap();
    // ORIGIN is the first attribute: header 19, two length fields 4, attribute header 3.
    assert_eq!(&b[23..26], &[0x40, 1, 1]);
    b[26] = origin;
    b
}

#[test]
fn lying_peers_get_the_rfc_notifications_and_the_agent_carries_on() {
    let lab = crosslink_lab(LabOptions::new(GatewayMode::Crosslink));
    lab.wait_bird_established(Duration::from_secs(60)).unwrap();
    lab.birdc(Node::Lr2, "disable gwa_v4").unwrap();
    let peer = a(Side::A, Line(2), true, false);
    // The agent accepts the peer's connections even while it backs off its own attempts.
    wait_neighbor(
        &lab,
        Node::Gwa,
        &peer,
        "session gone",
        Duration::from_secs(10),
        |n| !established(n),
    );

    // Bad OPEN: version 3 -> OPEN Message Error / Unsupported Version Number.
    let mut p = RawPeer::connect(&lab);
    let mut open = open_bytes(65102);
    open[19] = 3;
    p.send(&open);
    assert_eq!(p.notification(), (2, 1));

    // Wrong ASN -> OPEN Message Error / Bad Peer AS.
    let mut p = RawPeer::connect(&lab);
    p.send(&open_bytes(65199));
    assert_eq!(p.notification(), (2, 2));

    // A proper session, then a malformed UPDATE.
    let mut p = RawPeer::connect(&lab);
    p.send(&open_bytes(65102));
    assert!(matches!(p.recv(), Some(Message::Open(_))));
    assert!(matches!(p.recv(), Some(Message::Keepalive)));
    p.send(&Message::Keepalive.to_bytes(&Ctx::default()).unwrap());
    wait_neighbor(
        &lab,
        Node::Gwa,
        &peer,
        "raw session up",
        Duration::from_secs(5),
        established,
    );
    // Invalid ORIGIN value: RFC 7606 treat-as-withdraw, the session stays.
    p.send(&update_bytes(7));
    wait_neighbor(
        &lab,
        Node::Gwa,
        &peer,
        "route refused",
        Duration::from_secs(5),
        |n| n["prefixes_rejected"].as_u64() >= Some(1),
    );
    p.send(&update_bytes(0));
    wait_neighbor(
        &lab,
        Node::Gwa,
        &peer,
        "valid route accepted",
        Duration::from_secs(5),
        |n| established(n) && n["prefixes_received"] == 1,
    );
    // Path attribute length beyond the message: UPDATE Message Error / Malformed Attribute List.
    p.send(&raw(msg_type::UPDATE, &[0, 0, 0, 200, 0x40, 1, 1, 0]));
    assert_eq!(p.notification(), (3, 1));
    wait_neighbor(
        &lab,
        Node::Gwa,
        &peer,
        "session reset, route gone",
        Duration::from_secs(5),
        |n| !established(n) && n["prefixes_received"] == 0,
    );
    // The agent is alive and its other sessions untouched.
    let s = status(&lab, Node::Gwa);
    assert!(
        established(&neighbor(&s, &a(Side::A, Line(1), true, false))),
        "{s}"
    );
}

#[test]
fn max_prefix_and_aggregates() {
    // lr1 originates 20 host routes inside gwa's site aggregate; lr2 originates prefixes
    // outside it. gwa allows 10 on line1 (teardown) and warns on line2.
    let opts = LabOptions::new(GatewayMode::Crosslink)
        .bird_hook(|node, mut cfg| {
            let routes: Vec<String> = match node {
                Node::Lr1 => (1..=20)
                    .map(|i| format!("route 198.18.2.{i}/32 blackhole;"))
                    .collect(),
                Node::Lr2 => vec![
                    "route 10.0.0.0/8 blackhole;".into(),
                    "route 198.18.0.0/15 blackhole;".into(),
                    "route 198.18.3.0/24 blackhole;".into(),
                ],
                _ => return cfg,
            };
            cfg.push_str(&format!(
                "protocol static extra4 {{ ipv4; {} }}\n",
                routes.join(" ")
            ));
            cfg
        })
        .crosslink_hook(|gw, cfg| match gw {
            // Host routes are more specific than the site's /24: the aggregate allows them.
            Node::Gwa => line_option(cfg, "line1", "max_prefixes = 10").replacen(
                "prefixes = [\"198.18.2.0/24\", \"2001:db8:b::/64\"]",
                "prefixes = [\"198.18.2.0/24\", \"2001:db8:b::/64\"]\naggregates = [\"198.18.2.0/24 le 32\", \"2001:db8:b::/64\"]",
                1,
            ),
            // And a gateway configured with the wrong ASN for lr1.
            _ => cfg.replace("peer_asn = 65101", "peer_asn = 65199"),
        });
    let lab = crosslink_lab(opts);
    let lr1 = a(Side::A, Line(1), true, false);
    wait_neighbor(
        &lab,
        Node::Gwa,
        &lr1,
        "max-prefix teardown",
        Duration::from_secs(60),
        |n| failed_with(n, "Maximum Number of Prefixes"),
    );
    lab.wait_for("BIRD to see the Cease", Duration::from_secs(10), || {
        let p = lab.birdc(Node::Lr1, "show protocols all gwa_v4")?;
        Ok(p.contains("Maximum number of prefixes reached") || p.contains("Received: Maximum"))
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}",
            lab.birdc(Node::Lr1, "show protocols all gwa_v4")
                .unwrap_or_default()
        )
    });

    let lr2 = a(Side::A, Line(2), true, false);
    wait_neighbor(
        &lab,
        Node::Gwa,
        &lr2,
        "filtered routes",
        Duration::from_secs(30),
        |n| established(n) && n["prefixes_rejected"].as_u64() >= Some(3),
    );
    let n = neighbor(&status(&lab, Node::Gwa), &lr2);
    assert_eq!(
        n["prefixes_received"], 1,
        "only gwb's 198.18.2.0/24 is inside the site: {n}"
    );
    assert_eq!(n["rejected_by_reason"]["outside-site"], 3, "{n}");

    // gwb expected AS 65199 on line 1: BIRD is told so with OPEN Message Error / Bad Peer AS.
    lab.wait_for("BIRD to see Bad Peer AS", Duration::from_secs(20), || {
        Ok(lab
            .birdc(Node::Lr1, "show protocols all gwb_v4")?
            .contains("Bad peer AS"))
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}",
            lab.birdc(Node::Lr1, "show protocols all gwb_v4")
                .unwrap_or_default()
        )
    });
    wait_neighbor(
        &lab,
        Node::Gwb,
        &a(Side::B, Line(1), true, false),
        "the refusal explained",
        Duration::from_secs(5),
        |n| failed_with(n, "65101"),
    );
}
