//! The `crosslink` binary as an operator uses it: check-config on the shipped example and on a
//! broken file, and a running agent answering status, events and refused commands.

use std::fs;
use std::os::unix::fs::PermissionsExt;

mod common;
use common::{crosslink, example_dir, start_agent, EXAMPLE};

#[test]
fn check_config_accepts_the_example() {
    let (_dir, file) = example_dir();
    let out = crosslink(&["check-config", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("ok (gateway gwa, 1 site(s), 2 line(s), 2 tunnel(s))"));
}

#[test]
fn check_config_rejects_a_broken_file_with_its_location() {
    let (dir, _) = example_dir();
    let file = dir.path().join("broken.toml");
    fs::write(
        &file,
        EXAMPLE.replace("peer_asn = 65102", "peer_asn = \"65102\""),
    )
    .unwrap();
    let out = crosslink(&["check-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = EXAMPLE
        .lines()
        .position(|l| l.starts_with("peer_asn = 65102"))
        .unwrap()
        + 1;
    // As cargo shows an error: the message, where, the line with a caret under the spot,
    // and the hint.
    assert!(err.starts_with("error: invalid type"), "{err}");
    let want = format!("--> {}:{line}:12", file.display());
    assert!(err.contains(&want), "want `{want}`, got: {err}");
    assert!(
        err.contains(&format!("{line} | peer_asn = \"65102\"")),
        "{err}"
    );
    assert!(err.contains("|            ^^^^^^^"), "{err}");
    assert!(
        err.contains("= help: the value has the wrong type"),
        "{err}"
    );
    assert!(!err.contains('\x1b'), "no colour into a pipe: {err}");
}

#[test]
fn the_shipped_example_passes_check_config_away_from_its_gateway() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/crosslink.toml");
    let out = crosslink(&["check-config", "--no-key-files", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With the key files it names, which are not on this machine: refused, and says so.
    let out = crosslink(&["check-config", example]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("key"));
}

#[test]
fn a_command_piped_into_a_closed_pipe_ends_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    // A pipe whose reading end is already closed: the first print meets EPIPE.
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/crosslink.toml");
    let out = std::process::Command::new(common::BIN)
        .args(["check-config", "--no-key-files", example])
        .stdout(std::process::Stdio::from(write))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc_sigpipe()),
        "{:?} {err}",
        out.status
    );
}

fn libc_sigpipe() -> i32 {
    nix::sys::signal::Signal::SIGPIPE as i32
}

#[test]
fn version_is_printed() {
    let out = crosslink(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("crosslink {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn running_agent_answers_status_events_and_operator_commands() {
    let (dir, file) = example_dir();
    let cfg = file.to_str().unwrap();
    let _agent = start_agent(&file, &[]);
    let sock = dir.path().join("run/control.sock");
    assert_eq!(
        fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o660
    );

    let out = crosslink(&["--config", cfg, "status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["schema"], 1);
    assert_eq!(status["gateway"]["name"], "gwa");
    let paths = status["sites"][0]["paths"].as_array().unwrap();
    let names: Vec<&str> = paths.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["line1", "line2", "inet1", "inet2"]);
    // This test host has none of the example's interfaces: the carrier says so, and no
    // path is claimed up.
    for p in paths {
        assert_eq!(p["signals"][0]["name"], "carrier");
        assert_eq!(p["signals"][0]["state"], "absent", "{p}");
        assert_ne!(p["state"], "up", "{p}");
    }
    assert!(status["sites"][0]["active_path"].is_null());

    let table = crosslink(&["--config", cfg, "status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("site cloud-b"), "{table}");
    assert!(table.contains("carrier=absent"), "{table}");

    let out = crosslink(&["--config", cfg, "failover", "line1"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("line1 taken out of service"), "{said}");
    let out = crosslink(&["--config", cfg, "failover", "line1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already failed over"));
    let out = crosslink(&["--config", cfg, "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let line1 = &status["sites"][0]["paths"][0];
    assert_eq!(line1["policy"]["operator"], "failover", "{line1}");
    assert_eq!(line1["policy"]["admitted"], false, "{line1}");
    let out = crosslink(&["--config", cfg, "restore", "line1"]);
    assert!(out.status.success());
    let out = crosslink(&["--config", cfg, "drain", "nosuchline"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no line or tunnel named `nosuchline`"));

    let out = crosslink(&["--config", cfg, "events", "--json"]);
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    // The example's uplinks do not exist here: each tunnel says why it is not running,
    // and leaves no interface behind on the test host.
    assert_eq!(
        kinds,
        [
            "agent-started",
            "tunnel-error",
            "tunnel-error",
            "operator",
            "operator",
            "operator",
            "operator"
        ]
    );
    // Refused commands are audited too: the second failover and the unknown line.
    let refused = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["message"].as_str().unwrap().contains("refused"))
        .count();
    assert_eq!(refused, 2, "{events}");
    let first = events[1]["message"].as_str().unwrap();
    assert!(first.contains("uplink up1"), "{first}");
    assert!(!std::path::Path::new("/sys/class/net/xl-gwa-b1").exists());
}

/// `crosslink reload` (the unit's ExecReload): a broken file is refused with its position
/// and a non-zero exit, and changes nothing; a good one is applied and said so.
#[test]
fn reload_says_what_it_applied_or_where_the_file_is_wrong() {
    let (_dir, file) = example_dir();
    let cfg = file.to_str().unwrap();
    let _agent = start_agent(&file, &[]);
    let good = fs::read_to_string(&file).unwrap();
    let line = 1 + good
        .lines()
        .position(|l| l.starts_with("hold_down = \"30s\""))
        .unwrap();
    fs::write(
        &file,
        good.replace("hold_down = \"30s\"", "hold_down = \"soon\""),
    )
    .unwrap();
    let out = crosslink(&["--config", cfg, "reload"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("reload refused"), "{said}");
    let at = format!("{cfg}:{line}:");
    assert!(said.contains(&at), "the error names {at}…: {said}");

    fs::write(
        &file,
        good.replace("hold_down = \"30s\"", "hold_down = \"20s\""),
    )
    .unwrap();
    let out = crosslink(&["--config", cfg, "reload"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("config reloaded: policy.hold_down changed"),
        "{said}"
    );
    let events = crosslink(&["--config", cfg, "events"]);
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events.contains("reload-refused") && events.contains("reload"),
        "{events}"
    );
}

#[test]
fn agent_refuses_to_start_on_a_bad_config() {
    let (dir, _) = example_dir();
    let file = dir.path().join("bad.toml");
    fs::write(&file, EXAMPLE.replace("[gateway]", "[gatway]")).unwrap();
    let out = crosslink(&["--config", file.to_str().unwrap(), "run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `gatway`"));
}

#[test]
fn cli_without_agent_says_how_to_fix_it() {
    let (_dir, file) = example_dir();
    let out = crosslink(&["--config", file.to_str().unwrap(), "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `crosslink run` active"));
}

/// The control socket admits root and the control group only. The agent gives the socket
/// to the configured group (here `daemon`, which every Debian host has); a user outside it
/// is refused by the kernel, one inside gets an answer.
#[test]
fn the_control_socket_refuses_users_outside_its_group() {
    let (dir, file) = example_dir();
    let cfg = fs::read_to_string(&file)
        .unwrap()
        .replace(r#"group = "crosslink""#, r#"group = "daemon""#);
    fs::write(&file, cfg).unwrap();
    // Others may reach the socket's directory (the agent makes run/ 0750 for its group)
    // and run a copy of the binary.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("crosslink");
    fs::copy(common::BIN, &bin).unwrap();
    let _agent = start_agent(&file, &[]);
    let sock = dir.path().join("run/control.sock");
    let as_user = |gid: &str| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", &format!("--regid={gid}"), "--clear-groups"])
            .arg(&bin)
            .arg("--socket")
            .arg(&sock)
            .args(["status", "--json"])
            .output()
            .unwrap()
    };
    let outsider = as_user("65534");
    let said = String::from_utf8_lossy(&outsider.stderr);
    assert_eq!(outsider.status.code(), Some(1), "{said}");
    assert!(said.contains("Permission denied"), "{said}");
    assert!(said.contains("are you root or in its group?"), "{said}");
    let member = as_user("1");
    assert!(
        member.status.success(),
        "{}",
        String::from_utf8_lossy(&member.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&member.stdout).unwrap();
    assert_eq!(status["gateway"]["name"], "gwa");
}

/// Every command and reload, accepted or refused, is logged with who asked, as the kernel
/// told the control socket (SO_PEERCRED), and `events --by` picks one user's.
#[test]
fn every_command_and_reload_names_who_asked() {
    let (dir, file) = example_dir();
    let cfg = fs::read_to_string(&file)
        .unwrap()
        .replace(r#"group = "crosslink""#, r#"group = "daemon""#);
    fs::write(&file, cfg).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("crosslink");
    fs::copy(common::BIN, &bin).unwrap();
    let _agent = start_agent(&file, &[]);
    let sock = dir.path().join("run/control.sock");
    // uid 65534 (nobody) in the control group (daemon, gid 1).
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=1", "--clear-groups"])
            .arg(&bin)
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap()
    };
    let out = as_nobody(&["failover", "line1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody(&["drain", "nosuchline"]);
    assert_eq!(out.status.code(), Some(1));
    let sock_arg = sock.to_str().unwrap();
    let out = crosslink(&["--socket", sock_arg, "restore", "line1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let events = |by: &str| -> Vec<serde_json::Value> {
        let out = crosslink(&["--socket", sock_arg, "events", "--json", "--by", by]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let nobody = events("nobody");
    let said: Vec<(&str, &str)> = nobody
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["message"].as_str().unwrap()))
        .collect();
    assert_eq!(said.len(), 3, "{said:?}");
    assert!(nobody.iter().all(|e| e["by"] == "nobody"), "{nobody:?}");
    assert_eq!(said[0].0, "operator");
    assert!(
        said[0]
            .1
            .starts_with("failover line1 by nobody (uid 65534, pid ")
            && said[0].1.contains("line1 taken out of service"),
        "{}",
        said[0].1
    );
    assert_eq!(said[1].0, "operator");
    assert!(
        said[1].1.contains("by nobody")
            && said[1].1.contains("no line or tunnel named `nosuchline`"),
        "a refusal is logged too: {}",
        said[1].1
    );
    assert_eq!(said[2].0, "reload");
    assert!(said[2].1.contains("(by nobody (uid 65534"), "{}", said[2].1);
    let root = events("root");
    assert_eq!(root.len(), 1, "{root:?}");
    assert!(root[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("restore line1 by root (uid 0, pid "));
    // Events nobody asked for carry no `by`.
    let out = crosslink(&["--socket", sock_arg, "events", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all[0]["kind"], "agent-started");
    assert!(all[0].get("by").is_none(), "{}", all[0]);
}

/// `events --follow --json` prints each new event as it happens, one object per line.
#[test]
fn events_follow_prints_new_events_as_they_happen() {
    use std::io::{BufRead, BufReader};
    let (_dir, file) = example_dir();
    let cfg = file.to_str().unwrap();
    let _agent = start_agent(&file, &[]);
    let follower = std::process::Command::new(common::BIN)
        .args(["--config", cfg, "events", "--follow", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut follower = common::Agent(follower);
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follower.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = |what: &str| -> serde_json::Value {
        loop {
            let line = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no {what} event within 10 s"));
            let e: serde_json::Value = serde_json::from_str(&line).unwrap();
            if e["kind"] == what {
                return e;
            }
        }
    };
    let started = next("agent-started");
    assert_eq!(started["seq"], 1);
    let out = crosslink(&["--config", cfg, "failover", "line1"]);
    assert!(out.status.success());
    let e = next("operator");
    assert_eq!(e["path"], "line1");
    assert!(e["seq"].as_u64().unwrap() > 1, "{e}");
}

/// An operator who has just broken the file (a reload is what they will try next) still
/// reaches the running agent, and is told why the file was only half read.
#[test]
fn a_broken_config_file_still_reaches_the_agent_and_says_so() {
    let (_dir, file) = example_dir();
    let cfg = file.to_str().unwrap();
    let _agent = start_agent(&file, &[]);
    let good = fs::read_to_string(&file).unwrap();
    fs::write(&file, format!("{good}\n[[line]\nname = \n")).unwrap();
    let out = crosslink(&["--config", cfg, "status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("gateway gwa"),
        "the running agent answered"
    );
    assert!(
        err.contains("has errors (`crosslink check-config` shows them); the socket")
            && err.contains("was read from its [control] table"),
        "{err}"
    );
    let out = crosslink(&["--config", cfg, "reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reload refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
