use std::time::Duration;

use super::http::{route, Route};
use super::*;

/// A status document as the agent serves it: one site on the tunnels (line1 down by BFD),
/// with one BGP session, one BFD session and one tunnel.
fn status() -> Status {
    serde_json::from_str(
        r#"{
        "schema": 1,
        "version": "0.1.0",
        "gateway": {"name": "gwa", "asn": 65001, "router_id": "198.19.11.1"},
        "started_at": "2026-11-24T00:00:00.000Z",
        "uptime_seconds": 120,
        "config_file": "/etc/crosslink/crosslink.toml",
        "sites": [{
            "name": "cloud-b",
            "prefixes": ["198.18.2.0/24"],
            "active_path": "inet1",
            "active_reason": "no line healthy",
            "learned_prefixes": 1,
            "paths": [
                {
                    "name": "line1", "kind": "line", "interface": "eth1", "priority": 10,
                    "state": "down", "state_seconds": 30, "reason": "BFD down",
                    "signals": [{"name": "carrier", "state": "up"}, {"name": "bfd", "state": "down"}],
                    "bgp": [{"neighbor": "198.19.11.2", "state": "Established",
                             "established_seconds": 100, "state_seconds": 100, "prefixes_received": 1,
                             "prefixes_rejected": 2, "prefixes_advertised": 1,
                             "rejected_by_reason": {"too-specific": 1, "outside-site": 1},
                             "peer_as": 65101, "received_by_afi": {"ipv4": 1},
                             "messages_sent": {"keepalive": 40, "update": 2},
                             "messages_received": {"keepalive": 41, "open": 1}}],
                    "bfd": [{"neighbor": "198.19.11.2", "kind": "single-hop", "state": "Down",
                             "detection_ms": 30.0, "loss": 0.5, "state_seconds": 20}],
                    "policy": {"admitted": false, "reason": "BFD down", "hold_down_seconds": 12.5,
                               "suppressed_seconds": 600.0, "penalty": 2500.0, "degraded": false,
                               "operator": "failover", "operator_seconds_left": 240.0}
                },
                {
                    "name": "inet1", "kind": "tunnel", "interface": "xl-t1", "weight": 1,
                    "state": "up", "reason": "",
                    "signals": [{"name": "carrier", "state": "up"}, {"name": "handshake", "state": "up"}],
                    "bfd": [{"neighbor": "169.254.101.1", "kind": "end-to-end", "state": "Up",
                             "rtt_ms": 0.25, "loss": 0.0, "tx_gap_p99_ms": 9.5, "up_seconds": 50}],
                    "tunnel": {"running": true, "handshake_age_seconds": 10,
                               "rx_bytes": 1000, "tx_bytes": 2000, "rx_packets": 10, "tx_packets": 20},
                    "policy": {"admitted": true, "penalty": 0.0, "degraded": false, "operator": "none"}
                }
            ]
        }]
    }"#,
    )
    .unwrap()
}

fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l[series.len() + 1..].trim())
}

#[test]
fn a_scrape_shows_state_now_and_what_was_counted() {
    let r = Recorder::new();
    r.transition("line1", "line", false, "bfd");
    r.transition("line1", "line", false, "bfd");
    r.transition("line1", "line", true, "healthy");
    r.failover("cloud-b", "bfd");
    r.switched("cloud-b", Duration::from_micros(300));
    for _ in 0..3 {
        r.count(&Count::Down {
            path: "line1".into(),
            kind: "line",
            reason: "bfd",
        });
    }
    r.count(&Count::FibRepair {
        what: "group",
        n: 2,
    });
    r.count(&Count::Reloaded { ok: false, at: 0.0 });
    r.count(&Count::Command {
        command: "failover",
        user: "alice".into(),
        result: "accepted",
    });
    let text = render(&r, &status());
    let expect = [
        (
            r#"crosslink_info{asn="65001",gateway="gwa",router_id="198.19.11.1",version="0.1.0"}"#,
            "1",
        ),
        (
            r#"crosslink_path_up{kind="line",path="line1",site="cloud-b"}"#,
            "0",
        ),
        (
            r#"crosslink_path_up{kind="tunnel",path="inet1",site="cloud-b"}"#,
            "1",
        ),
        (
            r#"crosslink_path_active{kind="tunnel",path="inet1",site="cloud-b"}"#,
            "1",
        ),
        (
            r#"crosslink_path_active{kind="line",path="line1",site="cloud-b"}"#,
            "0",
        ),
        (r#"crosslink_site_failover_active{site="cloud-b"}"#, "1"),
        (r#"crosslink_site_paths_up{site="cloud-b"}"#, "1"),
        (
            r#"crosslink_path_hold_down_remaining_seconds{kind="line",path="line1",site="cloud-b"}"#,
            "12.5",
        ),
        (
            r#"crosslink_path_damping_penalty{kind="line",path="line1",site="cloud-b"}"#,
            "2500",
        ),
        (
            r#"crosslink_path_operator_mark{kind="line",mark="failover",path="line1",site="cloud-b"}"#,
            "1",
        ),
        (
            r#"crosslink_bfd_session_up{kind="single-hop",neighbor="198.19.11.2",path="line1"}"#,
            "0",
        ),
        (
            r#"crosslink_bfd_detection_time_seconds{kind="single-hop",neighbor="198.19.11.2",path="line1"}"#,
            "0.03",
        ),
        (
            r#"crosslink_bfd_rtt_seconds{kind="end-to-end",neighbor="169.254.101.1",path="inet1"}"#,
            "0.00025",
        ),
        (
            r#"crosslink_bfd_transmit_gap_p99_seconds{kind="end-to-end",neighbor="169.254.101.1",path="inet1"}"#,
            "0.0095",
        ),
        (
            r#"crosslink_bgp_session_established{neighbor="198.19.11.2",path="line1",peer_as="65101"}"#,
            "1",
        ),
        (
            r#"crosslink_bgp_prefixes_rejected_total{neighbor="198.19.11.2",path="line1",reason="too-specific"}"#,
            "1",
        ),
        (
            r#"crosslink_bgp_prefixes_rejected_total{neighbor="198.19.11.2",path="line1",reason="outside-site"}"#,
            "1",
        ),
        (
            r#"crosslink_tunnel_transmit_bytes_total{path="inet1"}"#,
            "2000",
        ),
        (r#"crosslink_tunnel_running{path="inet1"}"#, "1"),
        (
            r#"crosslink_path_transitions_total{kind="line",path="line1",reason="bfd",to="down"}"#,
            "2",
        ),
        (
            r#"crosslink_path_transitions_total{kind="line",path="line1",reason="healthy",to="up"}"#,
            "1",
        ),
        (
            r#"crosslink_path_held_down{kind="line",path="line1",site="cloud-b"}"#,
            "1",
        ),
        (
            r#"crosslink_path_suppressed{kind="line",path="line1",site="cloud-b"}"#,
            "1",
        ),
        (
            r#"crosslink_path_suppressed{kind="tunnel",path="inet1",site="cloud-b"}"#,
            "0",
        ),
        (
            r#"crosslink_path_operator_test_remaining_seconds{kind="line",path="line1",site="cloud-b"}"#,
            "240",
        ),
        (
            r#"crosslink_bgp_session_uptime_seconds{neighbor="198.19.11.2",path="line1",peer_as="65101"}"#,
            "100",
        ),
        (
            r#"crosslink_bgp_prefixes_received{afi="ipv4",neighbor="198.19.11.2",path="line1"}"#,
            "1",
        ),
        (
            r#"crosslink_bgp_prefixes_received{afi="ipv6",neighbor="198.19.11.2",path="line1"}"#,
            "0",
        ),
        (
            r#"crosslink_bgp_messages_sent_total{neighbor="198.19.11.2",path="line1",type="keepalive"}"#,
            "40",
        ),
        (
            r#"crosslink_bgp_messages_received_total{neighbor="198.19.11.2",path="line1",type="open"}"#,
            "1",
        ),
        (
            r#"crosslink_bfd_session_uptime_seconds{kind="end-to-end",neighbor="169.254.101.1",path="inet1"}"#,
            "50",
        ),
        (
            r#"crosslink_path_downs_total{kind="line",path="line1",reason="bfd"}"#,
            "3",
        ),
        (r#"crosslink_fib_repairs_total{what="group"}"#, "2"),
        (r#"crosslink_config_last_reload_successful"#, "0"),
        (
            r#"crosslink_operator_commands_total{command="failover",result="accepted",user="alice"}"#,
            "1",
        ),
        (
            r#"crosslink_failovers_total{reason="bfd",site="cloud-b"}"#,
            "1",
        ),
        (
            r#"crosslink_failover_duration_seconds_bucket{site="cloud-b",le="0.0005"}"#,
            "1",
        ),
        (
            r#"crosslink_failover_duration_seconds_bucket{site="cloud-b",le="0.00025"}"#,
            "",
        ),
        (
            r#"crosslink_failover_duration_seconds_count{site="cloud-b"}"#,
            "1",
        ),
    ];
    for (series, value) in expect {
        match (sample(&text, series), value) {
            (None, "") => {}
            (got, want) => assert_eq!(got, Some(want), "{series}\n{text}"),
        }
    }
    assert!(text.contains("# TYPE crosslink_tunnel_receive_bytes_total counter"));
    assert!(text.contains("# TYPE crosslink_failover_duration_seconds histogram"));
    // A handshake 10 s ago, as an epoch timestamp.
    let hs: f64 = sample(
        &text,
        r#"crosslink_tunnel_last_handshake_timestamp_seconds{path="inet1"}"#,
    )
    .unwrap()
    .parse()
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - 12.0..=now - 8.0).contains(&hs), "{hs} vs {now}");
    // Line 1's state changed 30 s ago.
    let changed: f64 = sample(
        &text,
        r#"crosslink_path_last_change_timestamp_seconds{kind="line",path="line1",site="cloud-b"}"#,
    )
    .unwrap()
    .parse()
    .unwrap();
    assert!(
        (now - 32.0..=now - 28.0).contains(&changed),
        "{changed} vs {now}"
    );
    // The BGP session came up 100 s ago, the BFD session went down 20 s ago.
    for (series, ago) in [
        (
            r#"crosslink_bgp_session_last_change_timestamp_seconds{neighbor="198.19.11.2",path="line1",peer_as="65101"}"#,
            100.0,
        ),
        (
            r#"crosslink_bfd_session_last_change_timestamp_seconds{kind="single-hop",neighbor="198.19.11.2",path="line1"}"#,
            20.0,
        ),
    ] {
        let at: f64 = sample(&text, series).unwrap().parse().unwrap();
        assert!(
            (now - ago - 2.0..=now - ago + 1.0).contains(&at),
            "{series}: {at} vs {now}"
        );
    }
    // A refused reload leaves the last success where it was: the start.
    let reloaded: f64 = sample(
        &text,
        "crosslink_config_last_reload_success_timestamp_seconds",
    )
    .unwrap()
    .parse()
    .unwrap();
    assert!((now - 5.0..=now).contains(&reloaded), "{reloaded} vs {now}");
    // The process collector, as every exporter has it.
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family}\n{text}"
        );
    }
}

#[test]
fn signal_reasons_are_the_closed_set_the_alerts_know() {
    let names: Vec<&str> = crate::core::signals::SignalKind::ALL
        .iter()
        .map(|k| k.name())
        .collect();
    assert_eq!(names, ["carrier", "bfd", "bgp", "e2e-bfd", "handshake"]);
}

#[test]
fn requests_are_routed_by_their_first_line() {
    let r = |s: &str| route(s.as_bytes());
    assert_eq!(
        r("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        Route::Metrics
    );
    assert_eq!(r("GET /metrics?name[]=up HTTP/1.0\r\n\r\n"), Route::Metrics);
    assert_eq!(r("HEAD /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
    assert_eq!(r("GET / HTTP/1.1\r\n\r\n"), Route::Index);
    assert_eq!(r("GET /debug HTTP/1.1\r\n\r\n"), Route::NotFound);
    assert_eq!(r("POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
    assert_eq!(r("GET /metrics SPDY/3\r\n\r\n"), Route::BadRequest);
    assert_eq!(r("GET\r\n\r\n"), Route::BadRequest);
    assert_eq!(route(&[0xff, 0xfe, b'\r', b'\n']), Route::BadRequest);
}

#[test]
fn the_engines_counts_reach_the_counters() {
    let r = Recorder::new();
    let down = Count::Transition {
        path: "line1".into(),
        kind: "line",
        up: false,
        reason: "bfd",
    };
    r.count(&down);
    r.count(&down);
    r.count(&Count::Transition {
        path: "line1".into(),
        kind: "line",
        up: true,
        reason: "healthy",
    });
    assert_eq!(r.transitions_of("line1", "down"), 2);
    assert_eq!(r.transitions_of("line1", "up"), 1);
    assert_eq!(r.transitions_of("line2", "down"), 0);
}
