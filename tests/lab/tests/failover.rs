//! Failover and return end to end: crosslink on both gateways (symmetric), BIRD or FRR on
//! the line routers (every test runs against both: `<test>::bird`, `<test>::frr`), two
//! tunnels, the traffic probe at 1,000 packets/s in both directions between ha and hb.
//! Asserts paths and behaviour, not speed. Needs root; never skipped.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use lab::{
    Cut, GatewayMode, Lab, LabOptions, Line, LineRouter, Node, ProbeReport, Side, TrafficProbe,
};

lab::against_both!(
    carrier_loss_moves_to_line2_and_the_line_returns_after_hold_down_without_loss,
    silent_drop_on_both_lines_rides_the_tunnels_and_comes_back,
    drain_makes_the_line_unattractive_to_the_far_side_then_moves_our_routes,
    a_line_router_that_dies_is_left_and_taken_back_once_it_is_healthy,
    an_agent_killed_in_normal_state_loses_no_packet_on_the_lines,
    an_agent_killed_in_failover_resumes_tunnel_traffic,
);

/// Short enough for a test, long enough to see the line wait.
const HOLD_DOWN: Duration = Duration::from_secs(4);

fn lab(router: LineRouter) -> Lab {
    let mut opts = LabOptions::new(GatewayMode::Crosslink).crosslink_hook(|_, cfg| {
        format!(
            "{cfg}\n[policy]\nhold_down = \"{}s\"\ndrain_delay = \"2s\"\n",
            HOLD_DOWN.as_secs()
        )
    });
    opts.line_router = router;
    let lab = Lab::up(opts).expect("lab up");
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_active(gw, "line1", Duration::from_secs(60));
    }
    // Every line up and in service on both sides: the state each test starts from.
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_for("every line healthy", Duration::from_secs(60), || {
            Ok(lab.crosslink(gw, &["check-health"]).is_ok())
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(20)));
    }
    // And every BFD session up, the tunnels' too: a test that cuts both lines before the
    // tunnels' probes are up leaves the far gateway no witness, and it rightly reads the
    // silence on every path at once as our restart (and holds the lines for 30 s).
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_for("every BFD session up", Duration::from_secs(30), || {
            let s = lab.status(gw)?;
            Ok(s["sites"][0]["paths"].as_array().is_some_and(|paths| {
                paths.iter().all(|p| {
                    p["bfd"]
                        .as_array()
                        .is_some_and(|b| b.iter().all(|b| b["state"] == "Up"))
                })
            }))
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(20)));
    }
    lab
}

/// lr1's route to `prefix` as it shows it: the length of its AS path, whether it carries
/// GRACEFUL_SHUTDOWN (65535:0), and the router's own text of it.
fn lr1_route(lab: &Lab, prefix: &str) -> anyhow::Result<(usize, bool, String)> {
    match lab.line_router() {
        LineRouter::Bird => {
            let r = lab.birdc(Node::Lr1, &format!("show route {prefix} all"))?;
            let len = r
                .lines()
                .find(|l| l.contains("BGP.as_path"))
                .map_or(0, |l| {
                    l.split_whitespace()
                        .filter(|w| w.parse::<u32>().is_ok())
                        .count()
                });
            Ok((len, r.contains("(65535,0)"), r))
        }
        LineRouter::Frr => {
            let r = lab.vtysh(Node::Lr1, &format!("show bgp ipv4 unicast {prefix} json"))?;
            let v: serde_json::Value = serde_json::from_str(&r)?;
            let path = &v["paths"][0];
            let len = path["aspath"]["length"].as_u64().unwrap_or(0) as usize;
            let gshut = path["community"]["list"]
                .as_array()
                .is_some_and(|l| l.iter().any(|c| c == "gracefulShutdown"));
            Ok((len, gshut, r))
        }
    }
}

/// Both gateways route the other side's host over `line`.
fn assert_on(lab: &Lab, line: Line) {
    let routes = || {
        format!(
            "gwa: {}\ngwb: {}",
            lab.route_get(Node::Gwa, host(Side::B)).unwrap_or_default(),
            lab.route_get(Node::Gwb, host(Side::A)).unwrap_or_default()
        )
    };
    assert!(
        lab.both_on(line).unwrap(),
        "not both on {line:?}:\n{}",
        routes()
    );
}

fn host(side: Side) -> IpAddr {
    side.host_addr(false)
}

/// The probe in both directions.
struct Both(TrafficProbe, TrafficProbe);

impl Both {
    fn start(lab: &Lab) -> Both {
        Both(
            lab.probe(Side::A, false, 1000).unwrap(),
            lab.probe(Side::B, false, 1000).unwrap(),
        )
    }

    fn stop(self) -> (ProbeReport, ProbeReport) {
        (self.0.stop().unwrap(), self.1.stop().unwrap())
    }
}

fn policy(lab: &Lab, gw: Node, path: &str) -> serde_json::Value {
    let s = lab.status(gw).unwrap();
    s["sites"][0]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == path)
        .map(|p| p["policy"].clone())
        .unwrap_or_default()
}

/// The sum of the samples of the series starting with `prefix` whose labels contain every
/// one of `having`.
fn sum(metrics: &str, prefix: &str, having: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix) && having.iter().all(|h| l.contains(h)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn event_kinds(lab: &Lab, gw: Node) -> Vec<String> {
    let out = lab.crosslink(gw, &["events", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["kind"].as_str().unwrap(),
                e["path"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Heals line 1 at gwa and checks the return: not before the hold-down, and without a
/// single packet lost in either direction.
fn heal_and_return_without_loss(lab: &mut Lab) {
    return_without_loss(lab, |lab| lab.heal(Side::A, Line(1)).unwrap());
}

/// Heals line 1 with `heal` and checks the return as above.
fn return_without_loss(lab: &mut Lab, heal: impl FnOnce(&mut Lab)) {
    let probes = Both::start(lab);
    std::thread::sleep(Duration::from_millis(300));
    heal(lab);
    let healed = Instant::now();
    let waited = lab.wait_active(Node::Gwa, "line1", Duration::from_secs(60));
    lab.wait_active(Node::Gwb, "line1", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let (ab, ba) = probes.stop();
    assert!(
        healed.elapsed() >= HOLD_DOWN && waited >= HOLD_DOWN,
        "line 1 came back after {waited:?}, before its hold-down"
    );
    assert_on(lab, Line(1));
    assert!(ab.received > 1000 && ab.lost == 0, "return ha -> hb: {ab}");
    assert!(ba.received > 1000 && ba.lost == 0, "return hb -> ha: {ba}");
    eprintln!("return after {waited:?}: ha->hb {ab}; hb->ha {ba}");
    assert!(
        event_kinds(lab, Node::Gwa).contains(&"path-return line1".to_owned()),
        "{:?}",
        event_kinds(lab, Node::Gwa)
    );
}

fn carrier_loss_moves_to_line2_and_the_line_returns_after_hold_down_without_loss(
    router: LineRouter,
) {
    let mut lab = lab(router);
    let probes = Both::start(&lab);
    std::thread::sleep(Duration::from_millis(300));
    lab.cut(Side::A, Line(1), Cut::Carrier).unwrap();
    lab.wait_active(Node::Gwa, "line2", Duration::from_secs(10));
    lab.wait_active(Node::Gwb, "line2", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let (ab, ba) = probes.stop();
    assert_on(&lab, Line(2));
    // It keeps flowing: the outage is the detection time, not seconds.
    for (dir, r) in [("ha -> hb", &ab), ("hb -> ha", &ba)] {
        assert!(r.received > 1000 && r.longest_gap_ms < 1000.0, "{dir}: {r}");
    }
    eprintln!("carrier loss: ha->hb {ab}; hb->ha {ba}");
    heal_and_return_without_loss(&mut lab);
}

fn silent_drop_on_both_lines_rides_the_tunnels_and_comes_back(router: LineRouter) {
    let mut lab = lab(router);
    let probes = Both::start(&lab);
    std::thread::sleep(Duration::from_millis(300));
    lab.cut(Side::A, Line(1), Cut::Blackhole).unwrap();
    lab.wait_active(Node::Gwa, "line2", Duration::from_secs(10));
    lab.cut(Side::A, Line(2), Cut::Blackhole).unwrap();
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_active(gw, "inet1, inet2", Duration::from_secs(10));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (ab, ba) = probes.stop();
    for (dir, r) in [("ha -> hb", &ab), ("hb -> ha", &ba)] {
        assert!(r.received > 1000 && r.longest_gap_ms < 2000.0, "{dir}: {r}");
    }
    let carrier = lab
        .exec(Node::Gwa, &["cat", "/sys/class/net/line1/carrier"])
        .unwrap();
    assert_eq!(carrier.trim(), "1", "a silent drop keeps the carrier");
    // Over the tunnels now, in both directions.
    let probe = Both::start(&lab);
    std::thread::sleep(Duration::from_millis(500));
    let (ab, ba) = probe.stop();
    assert!(ab.received > 300 && ba.received > 300, "{ab} / {ba}");
    let kinds = event_kinds(&lab, Node::Gwa);
    assert!(kinds.iter().any(|k| k.starts_with("failover")), "{kinds:?}");
    // The metrics counted it: both lines left service on a BFD signal, one failover, and
    // how long the switch took.
    let m = lab.metrics(Node::Gwa).unwrap();
    for line in ["line1", "line2"] {
        let downs = sum(
            &m,
            "crosslink_path_transitions_total{",
            &[line, "to=\"down\""],
        );
        assert!(downs >= 1.0, "{line}:\n{m}");
    }
    assert_eq!(
        sum(&m, "crosslink_failovers_total{", &["site=\"cloud-b\""]),
        1.0,
        "{m}"
    );
    assert!(
        !m.contains(r#"crosslink_failovers_total{reason="other""#),
        "{m}"
    );
    assert!(
        sum(&m, "crosslink_failover_duration_seconds_count{", &[]) >= 2.0,
        "{m}"
    );
    assert!(
        m.contains(r#"crosslink_site_failover_active{site="cloud-b"} 1"#),
        "{m}"
    );
    // The agent's own switches are never taken for somebody else's doing.
    assert!(!m.contains("crosslink_fib_repairs_total{"), "{m}");
    // Both lines' signals went down: counted as downs, with the signal.
    assert!(
        sum(&m, "crosslink_path_downs_total{", &["line1", "line"]) >= 1.0,
        "{m}"
    );
    lab.heal(Side::A, Line(2)).unwrap();
    lab.wait_active(Node::Gwa, "line2", Duration::from_secs(60));
    heal_and_return_without_loss(&mut lab);
}

fn drain_makes_the_line_unattractive_to_the_far_side_then_moves_our_routes(router: LineRouter) {
    let mut lab = lab(router);
    let out = lab.crosslink(Node::Gwa, &["drain", "line1"]).unwrap();
    assert!(out.contains("draining"), "{out}");
    // line1 still carries traffic until the drain delay ends, but it is leaving: a
    // second drain at once, before the first has moved anything, is refused too.
    let early = format!(
        "{:#}",
        lab.crosslink(Node::Gwa, &["drain", "line2"]).unwrap_err()
    );
    assert!(
        early.contains("last healthy line to site cloud-b"),
        "{early}"
    );
    // lr1 hears our prefixes with three more AS-path prepends, at once, tagged
    // GRACEFUL_SHUTDOWN (RFC 8326), which gwb honours: it leaves line 1 first.
    let gwa_lan = lab::topology::network(host(Side::A));
    lab.wait_for(
        "lr1 sees the prepended path",
        Duration::from_secs(10),
        || Ok(lr1_route(&lab, &gwa_lan.to_string())?.0 >= 4),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(20)));
    let (_, gshut, route) = lr1_route(&lab, &gwa_lan.to_string()).unwrap();
    assert!(gshut, "{route}");
    lab.wait_active(Node::Gwb, "line2", Duration::from_secs(5));
    assert_eq!(
        lab.active_path(Node::Gwa),
        "line1",
        "routes wait for the drain delay"
    );
    lab.wait_active(Node::Gwa, "line2", Duration::from_secs(10));
    assert_eq!(policy(&lab, Node::Gwa, "line1")["operator"], "drained");
    let probe = Both::start(&lab);
    std::thread::sleep(Duration::from_millis(500));
    let (ab, ba) = probe.stop();
    assert!(ab.lost == 0 && ba.lost == 0, "{ab} / {ba}");
    // A restart (an upgrade, say) keeps the line drained.
    lab.restart_crosslink(Node::Gwa, nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    lab.wait_for(
        "line 1 drained after the restart",
        Duration::from_secs(10),
        || Ok(policy(&lab, Node::Gwa, "line1")["operator"] == "drained"),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(20)));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lab.active_path(Node::Gwa), "line2", "still drained");
    let refused = lab.crosslink(Node::Gwa, &["drain", "line1"]);
    assert!(refused.is_err(), "a second drain is refused");
    // line2 is now the last healthy line: draining it too takes --force.
    let refused = format!(
        "{:#}",
        lab.crosslink(Node::Gwa, &["drain", "line2"]).unwrap_err()
    );
    assert!(
        refused.contains("last healthy line to site cloud-b") && refused.contains("--force"),
        "{refused}"
    );
    assert_eq!(policy(&lab, Node::Gwa, "line2")["operator"], "none");
    let m = lab.metrics(Node::Gwa).unwrap();
    assert_eq!(
        sum(&m, "crosslink_path_operator_mark{", &["drained", "line1"]),
        1.0,
        "{m}"
    );
    lab.crosslink(Node::Gwa, &["undrain", "line1"]).unwrap();
    lab.wait_active(Node::Gwa, "line1", Duration::from_secs(10));
    lab.wait_active(Node::Gwb, "line1", Duration::from_secs(10));
    assert_eq!(policy(&lab, Node::Gwa, "line1")["operator"], "none");
}

fn a_line_router_that_dies_is_left_and_taken_back_once_it_is_healthy(router: LineRouter) {
    let mut lab = lab(router);
    let probes = Both::start(&lab);
    std::thread::sleep(Duration::from_millis(300));
    lab.kill_line_router(Line(1)).unwrap();
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_active(gw, "line2", Duration::from_secs(10));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (ab, ba) = probes.stop();
    for (dir, r) in [("ha -> hb", &ab), ("hb -> ha", &ba)] {
        assert!(r.received > 1000 && r.longest_gap_ms < 1000.0, "{dir}: {r}");
    }
    eprintln!("{router:?} on lr1 killed: ha->hb {ab}; hb->ha {ba}");
    let why = lab.status(Node::Gwa).unwrap()["sites"][0]["paths"][0]["reason"].clone();
    let why = why.as_str().unwrap_or_default();
    assert!(why.contains("BGP") || why.contains("BFD"), "{why}");
    return_without_loss(&mut lab, |lab| lab.restart_line_router(Line(1)).unwrap());
}

/// (e) A crash of the agent in normal state: the kernel keeps forwarding on gwa, the line
/// routers keep gwa's routes (graceful restart), and gwb sees gwa go quiet on every path
/// at once and keeps its routes: not one packet lost on the lines.
fn an_agent_killed_in_normal_state_loses_no_packet_on_the_lines(router: LineRouter) {
    let mut lab = lab(router);
    let probes = Both::start(&lab);
    std::thread::sleep(Duration::from_millis(300));
    lab.restart_crosslink(Node::Gwa, nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let restarted = Instant::now();
    // Until every session is back: BGP, BFD at the slow start rate, the end-to-end ones.
    lab.wait_for("gwa's paths all up again", Duration::from_secs(30), || {
        let s = lab.status(Node::Gwa)?;
        Ok(s["sites"][0]["paths"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["state"] == "up")))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(30)));
    std::thread::sleep(Duration::from_millis(500));
    let (ab, ba) = probes.stop();
    eprintln!(
        "SIGKILL in normal state, back after {:?}: ha->hb {ab}; hb->ha {ba}",
        restarted.elapsed()
    );
    assert!(ab.received > 1000 && ab.lost == 0, "ha -> hb: {ab}");
    assert!(ba.received > 1000 && ba.lost == 0, "hb -> ha: {ba}");
    for gw in [Node::Gwa, Node::Gwb] {
        assert_eq!(
            lab.active_path(gw),
            "line1",
            "{gw}\n{}\n{}",
            lab.crosslink(gw, &["status"]).unwrap_or_default(),
            lab.crosslink(gw, &["events"]).unwrap_or_default()
        );
    }
    let kinds = event_kinds(&lab, Node::Gwb);
    let quiet = kinds
        .iter()
        .position(|k| k.starts_with("far-end-quiet"))
        .unwrap_or_else(|| panic!("gwb never saw gwa go quiet: {kinds:?}"));
    let moved = ["failover", "path-change", "all-paths-down"];
    assert!(
        !kinds[quiet..]
            .iter()
            .any(|k| moved.iter().any(|m| k.starts_with(m))),
        "gwb must not have left line 1: {kinds:?}"
    );
}

/// (e) A crash in failover: the tunnels die with the agent (userspace WireGuard) and
/// resume with the new one; the adopted routes stay on the tunnels (the lines are still
/// cut) and return once the lines heal.
fn an_agent_killed_in_failover_resumes_tunnel_traffic(router: LineRouter) {
    let mut lab = lab(router);
    lab.cut(Side::A, Line(1), Cut::Blackhole).unwrap();
    lab.cut(Side::A, Line(2), Cut::Blackhole).unwrap();
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_active(gw, "inet1, inet2", Duration::from_secs(10));
    }
    let probes = Both::start(&lab);
    std::thread::sleep(Duration::from_millis(300));
    lab.restart_crosslink(Node::Gwa, nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let restarted = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let (ab, ba) = probes.stop();
    eprintln!(
        "SIGKILL in failover: ha->hb {ab}; hb->ha {ba} (probes stopped {:?} after the restart)",
        restarted.elapsed()
    );
    for gw in [Node::Gwa, Node::Gwb] {
        assert_eq!(
            lab.active_path(gw),
            "inet1, inet2",
            "{gw} stays on the tunnels"
        );
    }
    // Tunnel traffic resumes: a fresh probe gets through both ways.
    let probes = Both::start(&lab);
    std::thread::sleep(Duration::from_millis(500));
    let (ab, ba) = probes.stop();
    assert!(ab.received > 300 && ba.received > 300, "{ab} / {ba}");
    lab.heal(Side::A, Line(2)).unwrap();
    lab.wait_active(Node::Gwa, "line2", Duration::from_secs(60));
    heal_and_return_without_loss(&mut lab);
}
