//! The lab in `bird` mode: BIRD 2 on the line routers and on the gateways. Proves the lab
//! itself (sessions, BGP-learned routes, traffic, the three ways to cut a line) before any
//! crosslink behaviour is measured in it. Needs root; never skipped.

use std::net::IpAddr;
use std::time::Duration;

use lab::{Cut, GatewayMode, Lab, LabOptions, Line, Node, ProbeReport, Side, Tunnel};

const HB4: fn() -> IpAddr = || Side::B.host_addr(false);

fn bird_lab() -> Lab {
    let lab = Lab::up(LabOptions::new(GatewayMode::Bird)).expect("lab up");
    lab.wait_bird_established(Duration::from_secs(60))
        .expect("BGP and BFD established");
    lab
}

/// Probe ha -> hb for `secs`, returning the report and how many packets each line router
/// received from gwa meanwhile (which line carried the traffic).
fn probe_with_counters(
    lab: &Lab,
    v6: bool,
    secs: f64,
    during: impl FnOnce(),
) -> (ProbeReport, [u64; 2]) {
    let before = [
        lab.rx_packets(Node::Lr1, "gwa").unwrap(),
        lab.rx_packets(Node::Lr2, "gwa").unwrap(),
    ];
    let probe = lab.probe(Side::A, v6, 1000).unwrap();
    during();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let report = probe.stop().unwrap();
    let after = [
        lab.rx_packets(Node::Lr1, "gwa").unwrap(),
        lab.rx_packets(Node::Lr2, "gwa").unwrap(),
    ];
    (report, [after[0] - before[0], after[1] - before[1]])
}

fn wait_line(lab: &Lab, node: Node, dest: IpAddr, line: Line, timeout: Duration) -> Duration {
    lab.wait_for(
        &format!("{node} to route {dest} over line {}", line.0),
        timeout,
        || Ok(lab.line_towards(node, dest)? == Some(line)),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(20)))
}

#[test]
fn sessions_routes_and_traffic_over_line1() {
    let lab = bird_lab();
    for gw in [Node::Gwa, Node::Gwb] {
        let protos = lab.bird_protocols(gw).unwrap();
        let bgp: Vec<_> = protos
            .iter()
            .filter(|(name, _, _)| name.starts_with("line"))
            .collect();
        assert_eq!(bgp.len(), 4, "two lines x two families on {gw}: {protos:?}");
        assert!(
            bgp.iter()
                .all(|(_, state, info)| state == "up" && info.starts_with("Established")),
            "{gw}: {protos:?}"
        );
        let bfd = lab.birdc(gw, "show bfd sessions").unwrap();
        let up = bfd
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("Up"))
            .count();
        assert_eq!(up, 4, "{gw} BFD sessions:\n{bfd}");
    }
    // Routes towards the far host are BGP-learned (proto bird) and prefer line 1, both
    // directions and both families.
    for (gw, far) in [(Node::Gwa, Side::B), (Node::Gwb, Side::A)] {
        for v6 in [false, true] {
            let dest = far.host_addr(v6);
            wait_line(&lab, gw, dest, Line(1), Duration::from_secs(30));
            let fam = if v6 { "-6" } else { "-4" };
            let routes = lab
                .exec(gw, &["ip", fam, "route", "show", "proto", "bird"])
                .unwrap();
            assert!(
                routes.contains(&lab::topology::network(dest)),
                "{gw} lacks a BGP route to {dest}:\n{routes}"
            );
        }
    }
    for v6 in [false, true] {
        let (report, per_line) = probe_with_counters(&lab, v6, 1.0, || {});
        assert!(
            report.received > 0 && report.loss_fraction() < 0.01,
            "v6={v6}: {report}"
        );
        assert!(
            per_line[0] >= report.received,
            "line 1 carries the traffic: {per_line:?} {report}"
        );
        assert!(
            per_line[1] < report.received / 10,
            "line 2 stays idle: {per_line:?} {report}"
        );
    }
    let back = TrafficBack::measure(&lab);
    assert!(
        back.received > 0 && back.loss_fraction() < 0.01,
        "hb -> ha: {back}"
    );
}

struct TrafficBack;
impl TrafficBack {
    fn measure(lab: &Lab) -> ProbeReport {
        let probe = lab.probe(Side::B, false, 1000).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        probe.stop().unwrap()
    }
}

#[test]
fn carrier_loss_moves_traffic_to_line2_and_heal_brings_it_back() {
    let lab = bird_lab();
    wait_line(&lab, Node::Gwa, HB4(), Line(1), Duration::from_secs(30));
    let (report, per_line) = probe_with_counters(&lab, false, 1.5, || {
        std::thread::sleep(Duration::from_millis(300));
        lab.cut(Side::A, Line(1), Cut::Carrier).unwrap();
    });
    assert_eq!(lab.line_towards(Node::Gwa, HB4()).unwrap(), Some(Line(2)));
    // The carrier is seen at once: at most a few packets fall between the kernel dropping
    // the line's routes and BIRD installing line 2's.
    assert!(report.lost < 50, "{report}");
    assert!(
        per_line[1] > 1000,
        "line 2 took over: {per_line:?} {report}"
    );
    heal_and_return(&lab);
}

#[test]
fn silent_drop_is_detected_by_bfd_and_traffic_moves() {
    let lab = bird_lab();
    wait_line(&lab, Node::Gwa, HB4(), Line(1), Duration::from_secs(30));
    let detection = lab.bfd().interval * u32::from(lab.bfd().multiplier);
    let mut moved = Duration::ZERO;
    let (report, per_line) = probe_with_counters(&lab, false, 1.0, || {
        std::thread::sleep(Duration::from_millis(300));
        lab.cut(Side::A, Line(1), Cut::Blackhole).unwrap();
        moved = wait_line(&lab, Node::Gwa, HB4(), Line(2), Duration::from_secs(10));
    });
    // The link stays up, so only BFD notices: traffic is lost for about the detection time.
    let carrier = lab
        .exec(Node::Gwa, &["cat", "/sys/class/net/line1/carrier"])
        .unwrap();
    assert_eq!(carrier.trim(), "1", "the blackholed link keeps its carrier");
    assert!(
        report.lost > 0,
        "a silent drop costs packets until BFD notices: {report}"
    );
    assert!(
        report.longest_gap_ms >= detection.as_secs_f64() * 1000.0 * 0.3,
        "{report} detection {detection:?}"
    );
    assert!(
        report.received > 500,
        "traffic flows again over line 2: {report}"
    );
    assert!(per_line[1] > 500, "{per_line:?}");
    eprintln!("silent drop: moved after {moved:?}; {report}");
    heal_and_return(&lab);
}

#[test]
fn random_loss_shows_in_the_probe() {
    let lab = bird_lab();
    wait_line(&lab, Node::Gwa, HB4(), Line(1), Duration::from_secs(30));
    lab.cut(Side::A, Line(1), Cut::Loss(10)).unwrap();
    let probe = lab.probe(Side::A, false, 1000).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let report = probe.stop().unwrap();
    // 10% on gwa's egress: the probe sees it (BFD at 100 ms x 3 rarely trips on it, so the
    // baseline usually stays on the lossy line: what loss-based degradation is for).
    assert!(report.lost > 0 && report.loss_fraction() < 0.3, "{report}");
    eprintln!(
        "10% loss on line 1: {report}; gwa routes over line {:?}",
        lab.line_towards(Node::Gwa, HB4()).unwrap()
    );
    heal_and_return(&lab);
}

/// Heals line 1 at gwa and checks that the traffic returns to it without loss once
/// BFD and BGP are back.
fn heal_and_return(lab: &Lab) {
    lab.heal(Side::A, Line(1)).unwrap();
    let back = wait_line(lab, Node::Gwa, HB4(), Line(1), Duration::from_secs(60));
    let (report, per_line) = probe_with_counters(lab, false, 1.0, || {});
    assert!(
        report.loss_fraction() < 0.01,
        "after heal ({back:?}): {report}"
    );
    assert!(
        per_line[0] >= report.received,
        "line 1 carries the traffic again: {per_line:?}"
    );
}

/// The baseline's backup: with both lines gone, BIRD's static route over the two
/// wireguard-go tunnels (less preferred than BGP) carries the traffic; with the lines back,
/// BGP's routes win again.
#[test]
fn both_lines_down_fall_back_to_the_wireguard_go_tunnels() {
    let lab = bird_lab();
    let tunnels: Vec<String> = Tunnel::ALL.iter().map(|t| t.ifname(Side::A)).collect();
    let over_tunnels = |lab: &Lab| -> bool {
        let r = lab.route_get(Node::Gwa, HB4()).unwrap_or_default();
        tunnels.iter().any(|t| r.contains(&format!("dev {t}")))
    };
    wait_line(&lab, Node::Gwa, HB4(), Line(1), Duration::from_secs(30));
    let backup = lab
        .exec(Node::Gwa, &["ip", "route", "show", "proto", "bird"])
        .unwrap();
    assert!(
        !over_tunnels(&lab),
        "BGP wins while a line is up:\n{backup}"
    );
    for line in Line::ALL {
        lab.cut(Side::A, line, Cut::Carrier).unwrap();
    }
    lab.wait_for(
        "gwa to route over the tunnels",
        Duration::from_secs(30),
        || Ok(over_tunnels(&lab)),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(20)));
    // gwb still has its lines; its routes to ha go once the line routers lose gwa.
    lab.wait_for(
        "gwb to route over the tunnels",
        Duration::from_secs(30),
        || {
            let r = lab.route_get(Node::Gwb, Side::A.host_addr(false))?;
            Ok(Tunnel::ALL
                .iter()
                .any(|t| r.contains(&format!("dev {}", t.ifname(Side::B)))))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(20)));
    for v6 in [false, true] {
        let probe = lab.probe(Side::A, v6, 1000).unwrap();
        std::thread::sleep(Duration::from_secs(1));
        let report = probe.stop().unwrap();
        assert!(
            report.received > 0 && report.loss_fraction() < 0.01,
            "v6={v6} over wireguard-go: {report}"
        );
    }
    for line in Line::ALL {
        lab.heal(Side::A, line).unwrap();
    }
    wait_line(&lab, Node::Gwa, HB4(), Line(1), Duration::from_secs(60));
}
