//! The Prometheus side: the shipped alert rules pass `promtool test rules`, every metric
//! they use is one the agent exports, and a running agent's endpoint serves metrics that
//! `promtool check metrics` finds clean.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::{example_dir, start_agent};

const RULES: &str = include_str!("../../prometheus/crosslink.rules.yml");
/// Where the metrics are named: the counted ones and the snapshot of the status.
const METRICS_SRC: [&str; 2] = [
    include_str!("../src/metrics/mod.rs"),
    include_str!("../src/metrics/snapshot.rs"),
];

fn promtool(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (package prometheus) is installed")
}

#[test]
fn the_alert_rules_pass_their_promtool_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../prometheus");
    let check = promtool(&["check", "rules", "crosslink.rules.yml"], &dir);
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let test = promtool(&["test", "rules", "crosslink.rules.test.yml"], &dir);
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    for alert in [
        "LineDown",
        "FailoverActive",
        "TunnelDown",
        "AllPathsDown",
        "BGPSessionDown",
        "LineFlapping",
        "HighProbeLoss",
        "AgentDown",
    ] {
        assert!(
            RULES.contains(&format!("alert: {alert}\n")),
            "no rule for {alert}"
        );
    }
}

#[test]
fn every_metric_the_alerts_use_is_exported() {
    let mut used: Vec<&str> = RULES
        .match_indices("crosslink_")
        .map(|(i, _)| {
            let rest = &RULES[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 6, "{used:?}");
    for name in used {
        assert!(
            METRICS_SRC
                .iter()
                .any(|src| src.contains(&format!("\"{name}\""))),
            "the rules use {name}, which the agent does not export"
        );
    }
}

/// GET `path` from the agent's metrics endpoint, inside the agent's network namespace.
fn scrape(pid: u32, path: &str) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/9474 && printf 'GET {path} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' >&3 && timeout 5 cat <&3"
    );
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["bash", "-c", &script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_running_agent_serves_metrics_that_promtool_finds_clean() {
    let (_dir, file) = example_dir();
    let agent = start_agent(&file, &[]);
    let pid = agent.0.id();
    // The endpoint comes up right after the control socket; give it a moment.
    let mut reply = String::new();
    for _ in 0..50 {
        reply = scrape(pid, "/metrics");
        if reply.contains("crosslink_path_up") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    for series in [
        "crosslink_info{asn=\"65001\",gateway=\"gwa\",router_id=\"",
        "crosslink_path_admitted{kind=\"line\",path=\"line1\",site=\"cloud-b\"}",
        "crosslink_path_suppressed{kind=\"line\",path=\"line1\",site=\"cloud-b\"} 0",
        "crosslink_config_last_reload_successful 1",
        "process_resident_memory_bytes ",
        "crosslink_path_up{kind=\"line\",path=\"line1\",site=\"cloud-b\"} 0",
        "crosslink_path_up{kind=\"tunnel\",path=\"inet1\",site=\"cloud-b\"} 0",
        "crosslink_site_paths_up{site=\"cloud-b\"} 0",
        "crosslink_bgp_session_established{neighbor=\"198.19.11.2\",path=\"line1\",peer_as=\"65101\"}",
        "crosslink_tunnel_running{path=\"inet1\"} 0",
    ] {
        assert!(body.contains(series), "{series} missing:\n{body}");
    }
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let missing = scrape(pid, "/nope");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}
