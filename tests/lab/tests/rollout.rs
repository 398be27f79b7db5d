//! The Ansible role and the gray-rollout playbook, run for real: the lab's two gateways
//! are Debian hosts booted with systemd (`lab::container`, each inside its gateway's
//! namespace), reached by `ansible-playbook` over SSH (a ProxyCommand enters the
//! namespace), and crosslink is installed from its Debian package, checksum verified. A
//! first rollout, a change that only needs a reload, a package upgrade, then a canary with
//! a newer package and a config that breaks its lines: the gate fails, the canary gets the
//! package and config it ran before, and the other gateway is never touched.
//!
//! Needs root, the package (tests/run-all.sh builds it), socat and ssh. Never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lab::container::{self, Container};
use lab::{GatewayMode, Lab, LabOptions, Node};
use nix::sys::signal::Signal;

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The lab's config of `gw` as the role's template: the control socket and state file at
/// the package's defaults, key files from the role's key directory. Returns the template
/// and the key files it names.
fn template(lab: &Lab, gw: Node) -> (String, Vec<(String, PathBuf)>) {
    let text = std::fs::read_to_string(lab.crosslink_config(gw)).unwrap();
    let mut keys = Vec::new();
    let mut out = String::new();
    for l in text.lines() {
        if l.starts_with("socket = ") || l.starts_with("state_file = ") {
            continue;
        }
        if let Some(path) = l.strip_prefix("private_key_file = ") {
            let path = PathBuf::from(path.trim_matches('"'));
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push_str(&format!(
                "private_key_file = \"{{{{ crosslink_conf_dir }}}}/keys/{name}\"\n"
            ));
            keys.push((name, path));
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    (out, keys)
}

fn write_template(lab: &Lab, gw: Node, text: &str) {
    std::fs::write(lab.dir().join(format!("{gw}.toml.j2")), text).unwrap();
}

/// Where the role takes the package from.
enum Source<'a> {
    /// A file on the controller, with its checksum.
    File(&'a Path),
    /// A version in the gateways' apt repository.
    Apt(&'a str),
}

fn inventory(lab: &Lab, source: Source<'_>, keys: &[(Node, Vec<(String, PathBuf)>)]) -> PathBuf {
    let mut hosts = String::new();
    for (gw, keys) in keys {
        let keys: Vec<String> = keys
            .iter()
            .map(|(n, p)| format!("{{ name: {n}, src: {} }}", p.display()))
            .collect();
        hosts.push_str(&format!(
            "    {gw}:\n      ansible_ssh_common_args: >-\n        -o ProxyCommand='ip netns exec {ns} socat - TCP:127.0.0.1:22'\n        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n      crosslink_config_src: {dir}/{gw}.toml.j2\n      crosslink_keys: [{keys}]\n",
            ns = gw.ns(),
            dir = lab.dir().display(),
            keys = keys.join(", ")
        ));
    }
    let text = format!(
        "crosslink_gateways:\n  hosts:\n{hosts}  vars:\n    ansible_user: root\n    ansible_ssh_private_key_file: {key}\n    ansible_python_interpreter: /usr/bin/python3\n{package}    crosslink_gate_timeout: 40\n    crosslink_gate_delay: 1\n",
        key = lab.dir().join("id_ed25519").display(),
        package = match source {
            Source::File(deb) => format!(
                "    crosslink_package_src: {}\n    crosslink_package_sha256: {}\n",
                deb.display(),
                sha256(deb)
            ),
            Source::Apt(version) => format!("    crosslink_package_version: \"{version}\"\n"),
        },
    );
    let path = lab.dir().join("inventory.yml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the rollout playbook; returns whether it succeeded and its output.
fn rollout(inventory: &Path, extra: &[&str]) -> (bool, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ansible");
    let out = Command::new("ansible-playbook")
        .current_dir(&dir)
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_CONFIG", dir.join("ansible.cfg"))
        .arg("-i")
        .arg(inventory)
        .args(extra)
        .arg("rollout.yml")
        .output()
        .expect("ansible-playbook (package ansible-core) is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A gateway host: its container, reachable over SSH with the lab's key, its apt sources
/// the lab's repository only (`repo`, a flat repository at /mnt/repo; the test's own,
/// hence trusted without a signature).
fn boot(lab: &Lab, gw: Node, rootfs: &Path, public_key: &str, repo: &Path) -> Container {
    let c = Container::boot(
        gw.name(),
        rootfs,
        &gw.ns(),
        &[(repo, "/mnt/repo")],
        &lab.dir().join(format!("{gw}-host.console")),
    )
    .unwrap();
    c.sh(&format!(
        "install -d -m 0700 /root/.ssh && printf '%s\\n' '{}' > /root/.ssh/authorized_keys \
         && chmod 0600 /root/.ssh/authorized_keys && systemctl start ssh \
         && rm -f /etc/apt/sources.list /etc/apt/sources.list.d/* \
         && echo 'deb [trusted=yes] file:/mnt/repo ./' > /etc/apt/sources.list.d/lab.list",
        public_key.trim()
    ))
    .unwrap();
    c
}

/// Publishes `deb` in the flat repository `repo`.
fn publish(repo: &Path, deb: &Path) {
    std::fs::copy(deb, repo.join(deb.file_name().unwrap())).unwrap();
    let out = Command::new("dpkg-scanpackages")
        .args(["--multiversion", "."])
        .current_dir(repo)
        .output()
        .expect("dpkg-scanpackages (package dpkg-dev)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(repo.join("Packages"), out.stdout).unwrap();
}

fn show(c: &Container, prop: &str) -> String {
    c.unit_property("crosslink", prop).unwrap()
}

fn version(c: &Container) -> String {
    c.sh("dpkg-query -W -f '${Version}' crosslink").unwrap()
}

fn health(c: &Container) -> Result<String, String> {
    c.sh("crosslink check-health").map_err(|e| e.to_string())
}

#[test]
fn the_playbook_rolls_out_one_gateway_at_a_time_and_rolls_back_a_failed_canary() {
    let deb = container::package().unwrap();
    let rootfs = container::rootfs().expect("the containers' root file system");
    let mut lab = Lab::up(LabOptions::new(GatewayMode::Crosslink)).unwrap();
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_for("the lab's agents healthy", Duration::from_secs(30), || {
            Ok(lab.crosslink(gw, &["check-health"]).is_ok())
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(20)));
    }
    let key = lab.dir().join("id_ed25519");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (package openssh-client)");
    assert!(keygen.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    // The hosts take the gateways over, one at a time as the rollout reaches them (an
    // agent's health needs the far gateway's agent answering); what the lab's agents
    // programmed stays.
    let repo = lab.dir().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    publish(&repo, &deb);
    let mut hosts = Vec::new();
    let mut keys = Vec::new();
    for gw in [Node::Gwa, Node::Gwb] {
        hosts.push(boot(&lab, gw, &rootfs, &public, &repo));
        let (text, k) = template(&lab, gw);
        write_template(&lab, gw, &text);
        keys.push((gw, k));
    }
    let [gwa, gwb] = [&hosts[0], &hosts[1]];
    let inv = inventory(&lab, Source::File(&deb), &keys);
    let first = {
        let out = Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .arg("Version")
            .output();
        String::from_utf8_lossy(&out.unwrap().stdout)
            .trim()
            .to_owned()
    };

    // 1. A first installation, the canary by hand (`--limit`), then the whole inventory:
    //    the package installed, the service started, healthy; gwa, already done, is left
    //    as it runs.
    lab.stop_crosslink(Node::Gwa, Signal::SIGTERM).unwrap();
    let (ok, out) = rollout(&inv, &["--limit", "gwa"]);
    assert!(ok, "{out}\n{}", gwa.journal("crosslink"));
    let canary = show(gwa, "MainPID");
    lab.stop_crosslink(Node::Gwb, Signal::SIGTERM).unwrap();
    let (ok, out) = rollout(&inv, &[]);
    assert!(ok, "{out}\n{}", gwb.journal("crosslink"));
    assert_eq!(show(gwa, "MainPID"), canary, "gwa was left as it ran");
    for (gw, c) in [(Node::Gwa, gwa), (Node::Gwb, gwb)] {
        let said = health(c).unwrap_or_else(|e| panic!("{gw}: {e}"));
        assert!(said.contains(&format!("gateway {gw}")), "{said}");
        assert_eq!(version(c), first);
        assert_eq!(show(c, "UnitFileState"), "enabled");
        let keys = c.sh("stat -c '%a %U %n' /etc/crosslink/keys/*").unwrap();
        assert!(
            keys.lines().all(|l| l.starts_with("600 crosslink ")),
            "{keys}"
        );
        // What the package brought: the kernel settings and protocol 210's name.
        c.sh("grep -q 'nexthop_compat_mode = 0' /usr/lib/sysctl.d/60-crosslink.conf")
            .unwrap();
        c.sh("grep -q crosslink /etc/iproute2/rt_protos.d/crosslink.conf")
            .unwrap();
    }

    // 2. Only an announcement changes on gwa: a reload is enough, both keep running.
    let pids = (show(gwa, "MainPID"), show(gwb, "MainPID"));
    let (text, _) = template(&lab, Node::Gwa);
    let announced = text.replace(
        "announce = [\"198.18.1.0/24\"",
        "announce = [\"198.18.1.0/24\", \"198.18.9.0/24\"",
    );
    assert_ne!(announced, text);
    write_template(&lab, Node::Gwa, &announced);
    let (ok, out) = rollout(&inv, &[]);
    assert!(ok, "{out}");
    assert_eq!(
        (show(gwa, "MainPID"), show(gwb, "MainPID")),
        pids,
        "reloaded, not restarted"
    );
    let events = gwa.sh("crosslink events").unwrap();
    assert!(events.contains("config reloaded"), "{events}");

    // 3. A newer package: each gateway's agent is restarted by the package's own
    //    postinst and passes the gate.
    let upgrade1 = container::repackaged(&deb, lab.dir(), 1).unwrap();
    let inv = inventory(&lab, Source::File(&upgrade1), &keys);
    let (ok, out) = rollout(&inv, &[]);
    assert!(ok, "{out}");
    let gwa_at = out.find("ok: [gwa]").unwrap_or(usize::MAX);
    let gwb_at = out.find("ok: [gwb]").unwrap_or(0);
    assert!(gwa_at < gwb_at, "the canary (gwa) goes first:\n{out}");
    for c in [gwa, gwb] {
        assert_eq!(version(c), format!("{first}+upgrade1"));
        assert!(health(c).is_ok());
    }
    let upgraded_pids = (show(gwa, "MainPID"), show(gwb, "MainPID"));
    assert!(
        upgraded_pids.0 != pids.0 && upgraded_pids.1 != pids.1,
        "the package's postinst restarted both agents: {pids:?} -> {upgraded_pids:?}"
    );
    let pids = upgraded_pids;

    // 3b. The same from the gateways' apt repository, by version.
    let upgrade2 = container::repackaged(&deb, lab.dir(), 2).unwrap();
    publish(&repo, &upgrade2);
    let from_apt = format!("{first}+upgrade2");
    let inv_apt = inventory(&lab, Source::Apt(&from_apt), &keys);
    let (ok, out) = rollout(&inv_apt, &[]);
    assert!(ok, "{out}");
    for c in [gwa, gwb] {
        assert_eq!(version(c), from_apt);
        assert!(health(c).is_ok());
    }
    let apt_pids = (show(gwa, "MainPID"), show(gwb, "MainPID"));
    assert!(
        apt_pids.0 != pids.0 && apt_pids.1 != pids.1,
        "restarted by the package again: {pids:?} -> {apt_pids:?}"
    );
    let pids = apt_pids;

    // 4. A config the new binary refuses (a misspelt key): the rollout stops
    //    before anything changes, says where the file is wrong, and rolls nothing back.
    let upgrade3 = container::repackaged(&deb, lab.dir(), 3).unwrap();
    let inv = inventory(&lab, Source::File(&upgrade3), &keys);
    write_template(
        &lab,
        Node::Gwa,
        &format!("{announced}\n[policy]\nhold_dwon = \"3s\"\n"),
    );
    let (ok, out) = rollout(&inv, &[]);
    assert!(
        !ok,
        "a config that does not validate must stop the rollout:\n{out}"
    );
    assert!(
        out.contains("gwa refused the new version before changing anything")
            && out.contains("crosslink.toml.new:"),
        "{out}"
    );
    assert!(!out.contains("[gwb]"), "gwb must not be touched:\n{out}");
    assert_eq!((show(gwa, "MainPID"), show(gwb, "MainPID")), pids);
    assert_eq!(version(gwa), format!("{first}+upgrade2"));
    let config = gwa.sh("cat /etc/crosslink/crosslink.toml").unwrap();
    assert!(!config.contains("hold_dwon"), "{config}");

    // 5. A canary with a newer package still and a config that passes check-config but
    //    names the wrong peer AS on both lines: BGP never comes up, the gate fails, gwa
    //    gets the package and config it ran before and is healthy again; gwb is never
    //    touched.
    let broken = announced
        .replace("peer_asn = 65101", "peer_asn = 65199")
        .replace("peer_asn = 65102", "peer_asn = 65198");
    assert_ne!(broken, announced);
    write_template(&lab, Node::Gwa, &broken);
    let (ok, out) = rollout(&inv, &["-e", "crosslink_gate_timeout=15"]);
    assert!(!ok, "the broken canary must stop the rollout:\n{out}");
    assert!(
        out.contains("gwa failed its rollout and was rolled back"),
        "{out}"
    );
    assert!(!out.contains("[gwb]"), "gwb must not be touched:\n{out}");
    assert_eq!(show(gwb, "MainPID"), pids.1, "gwb kept running");
    assert_eq!(version(gwb), format!("{first}+upgrade2"));
    assert_eq!(
        version(gwa),
        format!("{first}+upgrade2"),
        "the previous package is back"
    );
    let config = gwa.sh("cat /etc/crosslink/crosslink.toml").unwrap();
    assert!(
        config.contains("peer_asn = 65101") && config.contains("198.18.9.0/24"),
        "the previous config is back:\n{config}"
    );
    // The broken canary refused line 2's router (NOTIFICATION: bad peer AS), which ends
    // the router's graceful restart and withdraws gwa's routes; gwb then rightly takes
    // the line out of service until it has been back for its hold-down.
    for (gw, c) in [(Node::Gwa, gwa), (Node::Gwb, gwb)] {
        lab.wait_for(
            "healthy after the rollback",
            Duration::from_secs(60),
            || Ok(health(c).is_ok()),
        )
        .unwrap_or_else(|e| panic!("{gw} after the rollback: {e:#}: {:?}", health(c)));
    }
    drop(hosts);
}
