//! The Ansible role and the gray-rollout playbook, run for real against the lab's two
//! gateways (local connection, each gateway's files under a test root in the lab's
//! directory, its agent in its namespace): a clean rollout, a config change that only
//! needs a reload, and a canary whose new config breaks its lines — the gate fails, the
//! canary is rolled back to what it ran before and the other gateway is never touched.
//!
//! There is no systemd here, so the role's `command` service manager runs a script that
//! does for the agent what the unit does: start it (waiting for its control socket, as
//! Type=notify waits for READY), stop it with SIGTERM, reload it with SIGHUP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lab::{GatewayMode, Lab, LabOptions, Node};

const SERVICE: &str = r#"#!/bin/bash
# service.sh GATEWAY start|stop|restart|reload
set -euo pipefail
lab=$(dirname "$(readlink -f "$0")")
gw=$1
root=$lab/$gw-root
pidf=$root/run/crosslink.pid
sock=$root/run/crosslink/control.sock
running() { [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; }
start() {
  if running; then echo running; return; fi
  mkdir -p "$root/run"
  rm -f "$sock"
  setsid ip netns exec "xl-$gw" sh -c 'echo $$ > "$0"; exec "$1" --config "$2" --log-format text run' \
    "$pidf" "$root/usr/bin/crosslink" "$root/etc/crosslink/crosslink.toml" \
    >> "$lab/$gw.crosslink.log" 2>&1 < /dev/null &
  for _ in $(seq 100); do
    if [ -S "$sock" ]; then echo started; return; fi
    sleep 0.1
  done
  echo "crosslink on $gw did not come up" >&2
  exit 1
}
# Stops the agent in the gateway's namespace, whoever started it (the first rollout takes
# over the one the lab started).
stop() {
  for pid in $(ip netns pids "xl-$gw"); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = crosslink ] || continue
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -f "$pidf"
}
case $2 in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  reload) kill -HUP "$(cat "$pidf")" ;;
  *) echo "unknown action $2" >&2; exit 2 ;;
esac
"#;

fn root(lab: &Lab, gw: Node) -> PathBuf {
    lab.dir().join(format!("{gw}-root"))
}

/// The lab's config of `gw` as the role's template: paths under the test root, key files
/// from the role's key directory. Returns the template and the key files it names.
fn template(lab: &Lab, gw: Node) -> (String, Vec<(String, PathBuf)>) {
    let text = std::fs::read_to_string(lab.crosslink_config(gw)).unwrap();
    let mut keys = Vec::new();
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("socket = ") {
                "socket = \"{{ crosslink_socket }}\"".to_owned()
            } else if l.starts_with("state_file = ") {
                "state_file = \"{{ crosslink_state_dir }}/operator.json\"".to_owned()
            } else if let Some(path) = l.strip_prefix("private_key_file = ") {
                let path = PathBuf::from(path.trim_matches('"'));
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let line =
                    format!("private_key_file = \"{{{{ crosslink_conf_dir }}}}/keys/{name}\"");
                keys.push((name, path));
                line
            } else {
                l.to_owned()
            }
        })
        .collect();
    (lines.join("\n") + "\n", keys)
}

fn write_template(lab: &Lab, gw: Node, text: &str) {
    std::fs::write(lab.dir().join(format!("{gw}.toml.j2")), text).unwrap();
}

fn inventory(lab: &Lab, keys: &[(Node, Vec<(String, PathBuf)>)]) -> PathBuf {
    let mut hosts = String::new();
    for (gw, keys) in keys {
        let keys: Vec<String> = keys
            .iter()
            .map(|(n, p)| format!("{{ name: {n}, src: {} }}", p.display()))
            .collect();
        hosts.push_str(&format!(
            "    {gw}:\n      crosslink_root: {root}\n      crosslink_config_src: {dir}/{gw}.toml.j2\n      crosslink_service_command: {dir}/service.sh {gw}\n      crosslink_keys: [{keys}]\n",
            root = root(lab, *gw).display(),
            dir = lab.dir().display(),
            keys = keys.join(", ")
        ));
    }
    let text = format!(
        "crosslink_gateways:\n  hosts:\n{hosts}  vars:\n    ansible_connection: local\n    ansible_python_interpreter: /usr/bin/python3\n    crosslink_binary_src: {bin}\n    crosslink_manage_user: false\n    crosslink_user: root\n    crosslink_group: root\n    crosslink_service_manager: command\n    crosslink_apply_sysctl: false\n    crosslink_gate_timeout: 40\n    crosslink_gate_delay: 1\n",
        bin = lab.crosslink_bin().unwrap().display()
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

fn agent_pid(lab: &Lab, gw: Node) -> String {
    std::fs::read_to_string(root(lab, gw).join("run/crosslink.pid"))
        .unwrap()
        .trim()
        .to_owned()
}

/// The installed CLI against the agent the playbook runs.
fn cli(lab: &Lab, gw: Node, command: &str) -> Result<String, String> {
    let r = root(lab, gw);
    let out = Command::new(r.join("usr/bin/crosslink"))
        .arg("--socket")
        .arg(r.join("run/crosslink/control.sock"))
        .arg(command)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

fn health(lab: &Lab, gw: Node) -> Result<String, String> {
    cli(lab, gw, "check-health")
}

#[test]
fn the_playbook_rolls_out_one_gateway_at_a_time_and_rolls_back_a_failed_canary() {
    let lab = Lab::up(LabOptions::new(GatewayMode::Crosslink)).unwrap();
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_for("the lab's agents healthy", Duration::from_secs(30), || {
            Ok(lab.crosslink(gw, &["check-health"]).is_ok())
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tails(20)));
    }
    // The playbook takes the gateways over: its first restart of each stops the agent the
    // lab started (the routes stay meanwhile).
    let mut keys = Vec::new();
    for gw in [Node::Gwa, Node::Gwb] {
        let (text, k) = template(&lab, gw);
        write_template(&lab, gw, &text);
        keys.push((gw, k));
    }
    let script = lab.dir().join("service.sh");
    std::fs::write(&script, SERVICE).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let inv = inventory(&lab, &keys);

    // 1. A first rollout: installed, started, healthy, gateway by gateway.
    let (ok, out) = rollout(&inv, &[]);
    assert!(ok, "{out}\n{}", lab.log_tails(20));
    let gwa_at = out.find("ok: [gwa]").unwrap_or(usize::MAX);
    let gwb_at = out.find("ok: [gwb]").unwrap_or(0);
    assert!(gwa_at < gwb_at, "the canary (gwa) goes first:\n{out}");
    for gw in [Node::Gwa, Node::Gwb] {
        let said = health(&lab, gw).unwrap_or_else(|e| panic!("{gw}: {e}"));
        assert!(said.contains(&format!("gateway {gw}")), "{said}");
        let r = root(&lab, gw);
        for (name, _) in &keys.iter().find(|(g, _)| *g == gw).unwrap().1 {
            let meta = std::fs::metadata(r.join("etc/crosslink/keys").join(name)).unwrap();
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        }
        let protos = std::fs::read_to_string(r.join("etc/iproute2/rt_protos.d/crosslink.conf"));
        assert_eq!(protos.unwrap(), "210 crosslink\n");
        let sysctl = std::fs::read_to_string(r.join("etc/sysctl.d/60-crosslink.conf")).unwrap();
        assert!(sysctl.contains("net.ipv4.nexthop_compat_mode = 0"));
        assert!(r.join("etc/systemd/system/crosslink.service").exists());
    }

    // 2. Only an announcement changes on gwa: a reload is enough, the agent keeps running.
    let pids = (agent_pid(&lab, Node::Gwa), agent_pid(&lab, Node::Gwb));
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
        (agent_pid(&lab, Node::Gwa), agent_pid(&lab, Node::Gwb)),
        pids,
        "reloaded, not restarted"
    );
    let events = cli(&lab, Node::Gwa, "events").unwrap();
    assert!(events.contains("config reloaded"), "{events}");

    // 3. A canary whose config passes check-config but names the wrong peer AS on both
    // lines: BGP never comes up, the gate fails, gwa gets its previous config back and is
    // healthy again; gwb is never touched.
    let broken = announced
        .replace("peer_asn = 65101", "peer_asn = 65199")
        .replace("peer_asn = 65102", "peer_asn = 65198");
    assert_ne!(broken, announced);
    write_template(&lab, Node::Gwa, &broken);
    let (ok, out) = rollout(&inv, &["-e", "crosslink_gate_timeout=15"]);
    assert!(!ok, "the broken canary must stop the rollout:\n{out}");
    assert!(
        out.contains("gwa failed its health gate and was rolled back"),
        "{out}"
    );
    assert!(!out.contains("[gwb]"), "gwb must not be touched:\n{out}");
    assert_eq!(agent_pid(&lab, Node::Gwb), pids.1, "gwb kept running");
    let config =
        std::fs::read_to_string(root(&lab, Node::Gwa).join("etc/crosslink/crosslink.toml"))
            .unwrap();
    assert!(
        config.contains("peer_asn = 65101") && config.contains("198.18.9.0/24"),
        "the previous config is back:\n{config}"
    );
    // The broken canary refused line 2's router (NOTIFICATION: bad peer AS), which ends
    // the router's graceful restart and withdraws gwa's routes; gwb then rightly takes
    // the line out of service until it has been back for its hold-down (30 s).
    for gw in [Node::Gwa, Node::Gwb] {
        lab.wait_for(
            "healthy after the rollback",
            Duration::from_secs(60),
            || Ok(health(&lab, gw).is_ok()),
        )
        .unwrap_or_else(|e| panic!("{gw} after the rollback: {e:#}: {:?}", health(&lab, gw)));
    }
}
