//! The Grafana dashboard (`grafana/crosslink.json`) and the alert rules against a real
//! Prometheus (Debian's `prometheus`), scraping both gateways of the lab: both of gwa's
//! lines are cut, and then every panel's query returns data and LineDown and
//! FailoverActive fire; after the heal they stop. The rules run with their `for:` cut to
//! seconds (what `for:` does is promtool's to test, in crosslink.rules.test.yml).
//! Prometheus and its two forwarders run in host A's namespace: the agents serve their
//! metrics on their own loopback, as on a real gateway. Needs root; never skipped.

use std::path::Path;
use std::time::Duration;

use lab::{Cut, GatewayMode, Lab, LabOptions, Line, Node, Side};

const PROMETHEUS: &str = "127.0.0.1:19090";

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// `s` as a URL query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus's answer to an instant query: the result's series.
fn query(lab: &Lab, q: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let get = format!(
        "exec 3<>/dev/tcp/{}/{} && printf 'GET /api/v1/query?query={} HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 5 cat <&3",
        PROMETHEUS.split(':').next().unwrap(),
        PROMETHEUS.split(':').nth(1).unwrap(),
        encode(q).replace('%', "%%")
    );
    let reply = lab.exec(Node::Ha, &["bash", "-c", &get])?;
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| anyhow::anyhow!("no HTTP reply: {reply}"))?;
    let v: serde_json::Value = serde_json::from_str(body)?;
    anyhow::ensure!(v["status"] == "success", "{q}: {body}");
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Every query of the dashboard (panels and annotations), with Grafana's variables as
/// Grafana would fill them for "every gateway, the last ten minutes".
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("grafana/crosslink.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();
    let fill = |e: &str| {
        e.replace("$instance", ".*")
            .replace("$__rate_interval", "30s")
            .replace("$__range", "10m")
    };
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap().to_owned();
            out.push((title, fill(t["expr"].as_str().unwrap())));
        }
    }
    assert!(out.len() >= 15, "{out:?}");
    out
}

fn firing(lab: &Lab, alert: &str) -> Vec<serde_json::Value> {
    query(
        lab,
        &format!("ALERTS{{alertname=\"{alert}\", alertstate=\"firing\"}}"),
    )
    .unwrap_or_default()
}

#[test]
fn every_panel_has_data_and_the_alerts_fire_and_stop_in_a_real_prometheus() {
    let opts = LabOptions::new(GatewayMode::Crosslink)
        .crosslink_hook(|_, cfg| format!("{cfg}\n[policy]\nhold_down = \"3s\"\n"));
    let mut lab = Lab::up(opts).expect("lab up");
    lab.wait_for("both gateways on line 1", Duration::from_secs(60), || {
        lab.both_on(Line(1))
    })
    .unwrap();

    // Prometheus in host A's namespace; each gateway's endpoint reached through a
    // forwarder that enters the gateway's namespace.
    for (gw, port) in [(Node::Gwa, 19474), (Node::Gwb, 19475)] {
        // A script, so that socat's address syntax never sees the command's colons.
        let script = lab.dir().join(format!("forward-{gw}.sh"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nexec ip netns exec {} socat - TCP:127.0.0.1:9474\n",
                gw.ns()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let listen = format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr");
        let connect = format!("EXEC:{}", script.display());
        lab.spawn(
            &format!("forward-{gw}"),
            Node::Ha,
            &["socat", &listen, &connect],
        )
        .unwrap();
    }
    let rules = std::fs::read_to_string(root().join("prometheus/crosslink.rules.yml")).unwrap();
    let quick: String = rules
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => format!("{}for: 2s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = lab.dir().to_owned();
    std::fs::write(dir.join("crosslink.rules.yml"), quick).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [crosslink.rules.yml]\nscrape_configs:\n  - job_name: crosslink\n    static_configs:\n      - targets: ['127.0.0.1:19474', '127.0.0.1:19475']\n",
    )
    .unwrap();
    let config = format!("--config.file={}", dir.join("prometheus.yml").display());
    let storage = format!("--storage.tsdb.path={}", dir.join("prometheus").display());
    let web = format!("--web.listen-address={PROMETHEUS}");
    lab.spawn(
        "prometheus",
        Node::Ha,
        &["prometheus", &config, &storage, &web, "--log.level=warn"],
    )
    .unwrap();
    lab.wait_for(
        "Prometheus scrapes both agents",
        Duration::from_secs(60),
        || {
            let up = query(&lab, "up{job=\"crosslink\"} == 1")?;
            Ok(up.len() == 2)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(20)));

    // Something for each panel: both lines of gwa cut (signal downs, a failover onto the
    // tunnels and its switch time), an operator's timed test, a command refused.
    lab.cut(Side::A, Line(1), Cut::Blackhole).unwrap();
    lab.cut(Side::A, Line(2), Cut::Blackhole).unwrap();
    lab.wait_for("gwa on the tunnels", Duration::from_secs(10), || {
        Ok(lab.active_path(Node::Gwa) == "inet1, inet2")
    })
    .unwrap();
    lab.crosslink(Node::Gwa, &["failover", "line1", "--for", "1h"])
        .unwrap();
    assert!(lab.crosslink(Node::Gwa, &["drain", "nosuchline"]).is_err());

    let queries = dashboard_queries();
    let mut empty = Vec::new();
    let ok = lab.wait_for(
        "every panel's query has data, LineDown and FailoverActive fire",
        Duration::from_secs(60),
        || {
            empty = queries
                .iter()
                .filter(|(_, q)| query(&lab, q).map_or(true, |r| r.is_empty()))
                .cloned()
                .collect();
            // gwa's line 2 and both of gwb's lines: each alert has its own `for:`
            // clock, so wait for all of them.
            Ok(empty.is_empty()
                && firing(&lab, "LineDown").len() >= 3
                && !firing(&lab, "FailoverActive").is_empty())
        },
    );
    assert!(
        ok.is_ok(),
        "panels without data: {empty:#?}\nfiring: {:?}\n{}",
        query(&lab, "ALERTS").unwrap_or_default(),
        lab.log_tails(20)
    );
    // On gwa, line 2 is down; line 1 is the operator's (planned: not paged). gwb sees
    // both of its lines to gwa fail end to end, and pages for both.
    let down = firing(&lab, "LineDown");
    let on = |instance: &str| -> Vec<&str> {
        down.iter()
            .filter(|a| a["metric"]["instance"] == instance)
            .filter_map(|a| a["metric"]["path"].as_str())
            .collect()
    };
    assert_eq!(on("127.0.0.1:19474"), ["line2"], "{down:?}");
    assert_eq!(on("127.0.0.1:19475").len(), 2, "{down:?}");

    lab.crosslink(Node::Gwa, &["restore", "line1"]).unwrap();
    lab.heal(Side::A, Line(1)).unwrap();
    lab.heal(Side::A, Line(2)).unwrap();
    lab.wait_for(
        "the alerts stop after the heal",
        Duration::from_secs(60),
        || Ok(firing(&lab, "LineDown").is_empty() && firing(&lab, "FailoverActive").is_empty()),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{:?}\n{}",
            query(&lab, "ALERTS").unwrap_or_default(),
            lab.crosslink(Node::Gwa, &["status"]).unwrap_or_default()
        )
    });
    assert_eq!(lab.active_path(Node::Gwa), "line1");
}
