//! The Debian package under the real systemd: a Debian 12 container booted with
//! `systemd-nspawn --boot` inside gwa's namespace *is* gwa. The package is installed with
//! dpkg, and the service manager itself shows what the unit promises: start completes only
//! after READY, the tunnels come up inside the sandbox, the control socket answers its
//! group only, a refused reload fails with the file's position, a silent watchdog gets the
//! agent restarted, a restart loses nothing on the lines, and removing the package leaves
//! the kernel's routes alone.
//!
//! Needs root, debootstrap and systemd-container (tests/install-deps.sh), and the package
//! (`cargo deb -p crosslink`, which tests/run-all.sh builds first). Never skipped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lab::container::{self, Container};
use lab::traffic::ProbeReport;
use lab::{GatewayMode, Lab, LabOptions, Line, Node, Side};
use nix::sys::signal::Signal;

#[test]
fn lintian_accepts_the_package() {
    let deb = container::package().unwrap();
    let out = std::process::Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .expect("lintian (package lintian) is installed");
    let said = String::from_utf8_lossy(&out.stdout);
    eprintln!("lintian {}:\n{said}", deb.display());
    assert!(out.status.success(), "lintian found errors:\n{said}");
}

/// gwa's lab config as the packaged agent reads it: the control socket and state file at
/// their defaults (the unit's RuntimeDirectory and StateDirectory), key files under
/// /etc/crosslink/keys. Returns the config and the key files to install.
fn host_config(lab: &Lab) -> (String, Vec<PathBuf>) {
    let text = std::fs::read_to_string(lab.crosslink_config(Node::Gwa)).unwrap();
    let dir = format!("{}/", lab.dir().display());
    let mut keys = Vec::new();
    let mut out = String::new();
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        if matches!(key, "socket" | "state_file") {
            continue;
        }
        if key.ends_with("_file") && line.contains(&dir) {
            let path = line.split('"').nth(1).unwrap();
            keys.push(PathBuf::from(path));
            out.push_str(&line.replace(&dir, "/etc/crosslink/keys/"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert!(
        !out.contains(&dir),
        "a lab path is left in the config:\n{out}"
    );
    (out, keys)
}

/// Polls `f` every 100 ms until it holds, for at most `limit`: whether it did.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// As `within`, failing the test with the agent's journal in the container.
fn eventually(c: &Container, what: &str, limit: Duration, f: impl FnMut() -> bool) {
    assert!(
        within(limit, f),
        "{what}: not within {limit:?}\n--- journal ---\n{}",
        c.journal("crosslink")
    );
}

fn show(c: &Container, prop: &str) -> String {
    c.unit_property("crosslink", prop).unwrap()
}

/// Routes crosslink programmed in gwa's namespace (protocol 210).
fn crosslink_routes(c: &Container) -> usize {
    let v4 = c.sh("ip -4 route show proto 210").unwrap();
    let v6 = c.sh("ip -6 route show proto 210").unwrap();
    v4.lines().chain(v6.lines()).count()
}

/// Runs `action` in the container (a restart, a package upgrade) under 1,000 packets/s each
/// way between the hosts, with the traffic on the lines or, both gateways' lines failed
/// over by the operator, on the tunnels; the probes' reports. Afterwards everything is
/// back on line 1.
fn under_traffic(
    lab: &Lab,
    c: &Container,
    tunnels: bool,
    action: &str,
) -> (ProbeReport, ProbeReport) {
    let lines = ["line1", "line2"];
    if tunnels {
        for line in lines {
            c.sh(&format!("crosslink failover {line}")).unwrap();
            lab.crosslink(Node::Gwb, &["failover", line]).unwrap();
        }
    }
    let on = |node: Node, prefix: &str| -> anyhow::Result<bool> {
        let devs = lab.route_devices(node, prefix)?;
        let want = if tunnels { "-t" } else { "line1" };
        Ok(!devs.is_empty() && devs.iter().all(|d| d.contains(want)))
    };
    lab.wait_for(
        "both gateways where the test wants them",
        Duration::from_secs(60),
        || Ok(on(Node::Gwa, "198.18.2.0/24")? && on(Node::Gwb, "198.18.1.0/24")?),
    )
    .unwrap();
    let probes = [
        lab.probe(Side::A, false, 1000).unwrap(),
        lab.probe(Side::B, false, 1000).unwrap(),
    ];
    std::thread::sleep(Duration::from_millis(500));
    let pid = show(c, "MainPID");
    let handed_before = handed_back(c);
    let started = Instant::now();
    c.sh(action)
        .unwrap_or_else(|e| panic!("{e}\n--- journal ---\n{}", c.journal("crosslink")));
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let [ab, ba] = probes.map(|p| p.stop().unwrap());
    let over = if tunnels { "the tunnels" } else { "line 1" };
    eprintln!("`{action}` ({took:?}) over {over}: ha->hb {ab}; hb->ha {ba}");
    assert_ne!(show(c, "MainPID"), pid, "`{action}` restarted the agent");
    if tunnels {
        // The new agent started the tunnels from what systemd kept.
        assert_eq!(
            handed_back(c),
            handed_before + 1,
            "the tunnels' descriptors came back from systemd's store"
        );
        // ...with the sessions, so no handshake was needed.
        let taken = c
            .sh("journalctl --no-pager -u crosslink -g 'WireGuard sessions taken over' -o cat")
            .unwrap_or_default();
        assert_eq!(
            taken.lines().count(),
            2 * (handed_before + 1),
            "both tunnels' sessions, at each restart on the tunnels:\n{}",
            c.journal("crosslink")
        );
        // ...and the tunnels started from them rather than opening new ones.
        assert!(
            c.sh("journalctl --no-pager -u crosslink -g 'do not fit'")
                .is_err(),
            "the handed-back descriptors were not used:\n{}",
            c.journal("crosslink")
        );
        for line in lines {
            c.sh(&format!("crosslink restore {line}")).unwrap();
            lab.crosslink(Node::Gwb, &["restore", line]).unwrap();
        }
    }
    lab.wait_for("both gateways on line 1", Duration::from_secs(60), || {
        lab.both_on(Line(1))
    })
    .unwrap();
    (ab, ba)
}

/// How many times an agent took the tunnels' descriptors back from systemd's store.
fn handed_back(c: &Container) -> usize {
    c.sh("journalctl --no-pager -u crosslink -g 'handed back the tunnels' -o cat")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("handed back"))
        .count()
}

/// `deb` as version `+upgrade<n>` in the staging directory; the command that installs it.
fn upgraded(deb: &Path, dir: &Path, n: u32) -> String {
    let pkg = container::repackaged(deb, dir, n).unwrap();
    format!(
        "dpkg -i /mnt/crosslink/{}",
        pkg.file_name().unwrap().to_string_lossy()
    )
}

#[test]
fn the_package_runs_under_the_real_systemd() {
    let deb = container::package().unwrap();
    let rootfs = container::rootfs().expect("the container's root file system");
    let mut lab = Lab::up(LabOptions::new(GatewayMode::Crosslink)).expect("lab up");
    lab.wait_for("both gateways on line 1", Duration::from_secs(60), || {
        lab.both_on(Line(1))
    })
    .unwrap();
    // The container takes gwa over; what the lab's agent programmed stays and is adopted.
    lab.stop_crosslink(Node::Gwa, Signal::SIGTERM).unwrap();

    let stage = lab.dir().join("gwa-host");
    std::fs::create_dir_all(stage.join("keys")).unwrap();
    std::fs::copy(&deb, stage.join("crosslink.deb")).unwrap();
    let (config, keys) = host_config(&lab);
    std::fs::write(stage.join("crosslink.toml"), &config).unwrap();
    for k in &keys {
        std::fs::copy(k, stage.join("keys").join(k.file_name().unwrap())).unwrap();
    }
    // Test settings only: a short watchdog (the mechanism is what is tested, not the
    // shipped 10 s) and no start limit, since the test restarts the agent several times.
    std::fs::write(
        stage.join("test.conf"),
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nWatchdogSec=3s\n",
    )
    .unwrap();
    let c = Container::boot(
        "gwa",
        &rootfs,
        &Node::Gwa.ns(),
        &[(stage.as_path(), "/mnt/crosslink")],
        &lab.dir().join("gwa-host.console"),
    )
    .unwrap();
    let context = |c: &Container| {
        format!(
            "\n--- journal ---\n{}\n--- lab ---\n{}",
            c.journal("crosslink"),
            lab.log_tails(20)
        )
    };

    // dpkg on a fresh host: user and group, the shared UAPI directory, the unit enabled;
    // not started with the shipped example config (its keys and interfaces are not here).
    let installed = c
        .exec(&["dpkg", "-i", "/mnt/crosslink/crosslink.deb"])
        .unwrap();
    let said = String::from_utf8_lossy(&installed.stderr).into_owned()
        + &String::from_utf8_lossy(&installed.stdout);
    assert!(installed.status.success(), "dpkg -i failed:\n{said}");
    assert!(
        said.contains("installed and enabled, not started"),
        "{said}"
    );
    assert_eq!(show(&c, "UnitFileState"), "enabled");
    assert_eq!(show(&c, "ActiveState"), "inactive");
    c.sh("getent group crosslink && id crosslink").unwrap();
    let wgdir = c.sh("stat -c '%a %U %G' /run/wireguard").unwrap();
    assert_eq!(wgdir.trim(), "1770 root crosslink");
    let man = c
        .sh("ls /usr/share/man/man1/ /usr/share/bash-completion/completions/")
        .unwrap();
    assert!(
        man.contains("crosslink.1") && man.contains("crosslink-reload.1"),
        "{man}"
    );

    // gwa's own config and keys, as an operator (or the Ansible role) puts them.
    c.sh(
        "install -o root -g crosslink -m 0640 /mnt/crosslink/crosslink.toml /etc/crosslink/crosslink.toml \
         && install -o crosslink -g crosslink -m 0600 /mnt/crosslink/keys/* /etc/crosslink/keys/ \
         && install -D -m 0644 /mnt/crosslink/test.conf /etc/systemd/system/crosslink.service.d/test.conf \
         && systemctl daemon-reload",
    )
    .unwrap();

    // Type=notify: `systemctl start` returns once READY came, which the agent sends after
    // its first reconcile.
    let started = Instant::now();
    c.sh("systemctl start crosslink")
        .unwrap_or_else(|e| panic!("{e}{}", context(&c)));
    eprintln!("systemctl start took {:?}", started.elapsed());
    assert_eq!(show(&c, "ActiveState"), "active", "{}", context(&c));
    // The STATUS line travels in the same datagram as READY=1.
    assert_eq!(show(&c, "Type"), "notify");
    assert!(
        show(&c, "StatusText").contains("cloud-b via"),
        "{}",
        context(&c)
    );

    // The tunnels, inside the sandbox: UAPI sockets in /run/wireguard, handshakes done.
    eventually(
        &c,
        "handshakes on both tunnels",
        Duration::from_secs(30),
        || {
            let wg = c.sh("wg show all latest-handshakes").unwrap_or_default();
            wg.lines().count() == 2
                && wg
                    .lines()
                    .all(|l| l.split_whitespace().last().is_some_and(|t| t != "0"))
        },
    );
    let mut last = String::new();
    let up = within(Duration::from_secs(60), || {
        last = c
            .sh("crosslink status --json")
            .unwrap_or_else(|e| e.to_string());
        let v: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
        v["sites"][0]["paths"]
            .as_array()
            .is_some_and(|p| p.len() == 4 && p.iter().all(|p| p["state"] == "up"))
    });
    assert!(
        up,
        "every path of gwa up: not within 60 s:\n{last}{}",
        context(&c)
    );

    // The control socket: a member of group crosslink may, anyone else may not.
    c.sh("useradd -M -G crosslink alice && useradd -M bob")
        .unwrap();
    c.sh("runuser -u alice -- crosslink status")
        .unwrap_or_else(|e| panic!("a member of the group: {e}"));
    let bob = c
        .exec(&["runuser", "-u", "bob", "--", "crosslink", "status"])
        .unwrap();
    assert!(!bob.status.success());
    let refused = String::from_utf8_lossy(&bob.stderr);
    assert!(refused.contains("cannot reach the agent"), "{refused}");

    // Audit: the agent learns who asked from the kernel, and says so in its events and as
    // journal fields of their own.
    c.sh("runuser -u alice -- crosslink failover line2 && runuser -u alice -- crosslink restore line2")
        .unwrap_or_else(|e| panic!("alice's failover: {e}{}", context(&c)));
    assert!(c
        .exec(&[
            "runuser",
            "-u",
            "alice",
            "--",
            "crosslink",
            "drain",
            "nosuchline"
        ])
        .is_ok_and(|o| !o.status.success()));
    let by_alice = c.sh("crosslink events --by alice").unwrap();
    assert_eq!(by_alice.lines().count(), 3, "{by_alice}");
    assert!(
        by_alice.contains("failover line2 by alice (uid "),
        "{by_alice}"
    );
    // journald stores a datagram a moment after it came: asked at once, it may not have.
    let journal = |filter: &str| {
        let mut said = String::new();
        within(Duration::from_secs(10), || {
            said = c
                .sh(&format!(
                    "journalctl --no-pager -u crosslink {filter} -o export | grep -a '^CROSSLINK_\\|^MESSAGE=\\|^PRIORITY='"
                ))
                .unwrap_or_default();
            !said.is_empty()
        });
        if said.is_empty() {
            said = c
                .sh("journalctl --no-pager -u crosslink -n 8 -o export")
                .unwrap_or_default();
        }
        said
    };
    let refused = journal("CROSSLINK_USER=alice CROSSLINK_RESULT=refused");
    assert!(
        refused.contains("CROSSLINK_COMMAND=drain")
            && refused.contains("CROSSLINK_PATH=nosuchline")
            && refused.contains("PRIORITY=6")
            && refused.contains("MESSAGE=drain nosuchline by alice"),
        "{refused}"
    );
    let accepted = journal("CROSSLINK_USER=alice CROSSLINK_RESULT=accepted");
    assert!(
        accepted.contains("CROSSLINK_COMMAND=failover")
            && accepted.contains("CROSSLINK_COMMAND=restore"),
        "{accepted}"
    );
    let colours = c
        .sh("journalctl --no-pager -u crosslink -o cat | grep -c \"$(printf '\\033')\" || true")
        .unwrap();
    assert_eq!(colours.trim(), "0", "no terminal, no colour codes");

    // A broken config: the reload fails, says where, and changes nothing.
    c.sh("cp /etc/crosslink/crosslink.toml /root/good.toml && printf '\\n[policy]\\nhold_down = \"soon\"\\n' >> /etc/crosslink/crosslink.toml")
        .unwrap();
    let reload = c.exec(&["systemctl", "reload", "crosslink"]).unwrap();
    assert!(!reload.status.success(), "a broken config reloaded");
    let status = c
        .exec(&["systemctl", "status", "--no-pager", "-n", "20", "crosslink"])
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    // The CLI's answer (ExecReload's output), not only the agent's own log line.
    assert!(
        status.contains("reload refused, the running config is unchanged")
            && status.contains("/etc/crosslink/crosslink.toml:"),
        "systemctl status shows the refusal and the error's position:\n{status}"
    );
    assert_eq!(show(&c, "ActiveState"), "active");
    let events = c.sh("crosslink events").unwrap();
    assert!(events.contains("reload-refused"), "{events}");
    c.sh("cp /root/good.toml /etc/crosslink/crosslink.toml && systemctl reload crosslink")
        .unwrap_or_else(|e| panic!("a good config: {e}{}", context(&c)));

    // A restart and a package upgrade under traffic: nothing lost either way. On the
    // lines, routes stay in the kernel, the new agent adopts them, BGP restarts
    // gracefully. On the tunnels, what gwa sends waits in the TUN queues systemd kept;
    // what gwb sends waits in the UDP sockets it kept, sealed with the sessions the old
    // agent left in the store too, and the new agent carries on with them.
    assert!(crosslink_routes(&c) > 0);
    let restart = "systemctl restart crosslink".to_owned();
    for (action, tunnels) in [
        (restart.clone(), false),
        (restart, true),
        (upgraded(&deb, &stage, 1), false),
        (upgraded(&deb, &stage, 2), true),
    ] {
        let (ab, ba) = under_traffic(&lab, &c, tunnels, &action);
        assert_eq!(
            (ab.lost, ba.lost),
            (0, 0),
            "`{action}`: ha->hb {ab}; hb->ha {ba}{}",
            context(&c)
        );
    }
    let version = c.sh("dpkg-query -W -f '${Version}' crosslink").unwrap();
    assert!(version.ends_with("+upgrade2"), "installed: {version}");

    // A loop that stops pinging the watchdog (here: the whole process stopped) is
    // aborted and restarted by systemd.
    let pid = show(&c, "MainPID");
    let restarts = show(&c, "NRestarts");
    c.sh(&format!("kill -STOP {pid}")).unwrap();
    eventually(
        &c,
        "the agent restarted by the watchdog",
        Duration::from_secs(40),
        || {
            let now = show(&c, "MainPID");
            now != pid && now != "0" && show(&c, "ActiveState") == "active"
        },
    );
    assert_ne!(show(&c, "NRestarts"), restarts);
    let timeout = c
        .sh("journalctl --no-pager -u crosslink -g 'Watchdog timeout'")
        .unwrap_or_else(|e| panic!("no watchdog timeout in the journal: {e}{}", context(&c)));
    eprintln!("{}", timeout.trim());

    // systemd's own exposure score for the unit as installed.
    let security = c
        .sh("systemd-analyze security --no-pager crosslink")
        .unwrap();
    let score: f64 = security
        .lines()
        .find_map(|l| l.strip_prefix("→ Overall exposure level for crosslink.service: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{security}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(score <= 2.5, "exposure {score}:\n{security}");

    // Removing the package stops the agent and leaves its routes in the kernel.
    let before = crosslink_routes(&c);
    let removed = c.exec(&["dpkg", "-r", "crosslink"]).unwrap();
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    assert_eq!(show(&c, "ActiveState"), "inactive");
    let after = crosslink_routes(&c);
    // The tunnels' routes go with their TUN devices' carrier; the lines' stay.
    eprintln!("routes of protocol 210: {before} before dpkg -r, {after} after");
    let via = c.sh("ip route get 198.18.2.1").unwrap();
    assert!(via.contains("dev line1"), "after dpkg -r: {via}");
    assert!(lab.both_on(Line(1)).unwrap());
}
