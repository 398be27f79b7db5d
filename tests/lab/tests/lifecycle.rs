//! The lab cleans up after itself: on drop, on panic, and after a run that was killed.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use lab::{netns, GatewayMode, Lab, LabOptions, Line, Node, Side};

fn lab_namespaces() -> Vec<String> {
    netns::list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(lab::topology::NS_PREFIX))
        .collect()
}

/// These tests look at every lab namespace on the machine, so they must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

#[test]
fn stale_lab_is_removed_and_a_panicking_test_leaves_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // A lab "left by a killed run": a namespace with a process inside, and no owner.
    let stale = "xl-stale";
    netns::destroy(stale);
    netns::add(stale).unwrap();
    let mut orphan = Command::new("ip")
        .args(["netns", "exec", stale, "sleep", "300"])
        .spawn()
        .unwrap();

    static BIRD_PID: AtomicU32 = AtomicU32::new(0);
    let result = std::panic::catch_unwind(|| {
        let mut lab = Lab::up(LabOptions::new(GatewayMode::Bird)).unwrap();
        assert!(
            !lab_namespaces().contains(&stale.to_owned()),
            "stale namespace removed on start"
        );
        let bird = lab.process("bird-gwa").unwrap();
        assert!(bird.alive());
        BIRD_PID.store(bird.pid(), Ordering::SeqCst);
        panic!("a test failing with the lab up");
    });
    assert!(result.is_err());
    let bird_pid = BIRD_PID.load(Ordering::SeqCst);
    assert!(
        bird_pid != 0 && !alive(bird_pid),
        "BIRD {bird_pid} outlived its lab"
    );
    // The orphan was killed with its namespace (reap it so it does not linger as a zombie).
    let status = orphan.wait().unwrap();
    assert!(!status.success());
    assert!(
        lab_namespaces().is_empty(),
        "left behind: {:?}",
        lab_namespaces()
    );
    let birds = Command::new("pgrep")
        .args(["-f", "crosslink-lab-.*bird.conf"])
        .output()
        .unwrap();
    assert!(
        birds.stdout.is_empty(),
        "BIRD processes left: {}",
        String::from_utf8_lossy(&birds.stdout)
    );
}

#[test]
fn crosslink_mode_reports_carrier_changes_of_the_lines() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up(LabOptions::new(GatewayMode::Crosslink)).unwrap();
    let status = || -> serde_json::Value {
        serde_json::from_str(&lab.crosslink(Node::Gwa, &["status", "--json"]).unwrap()).unwrap()
    };
    let carrier = |s: &serde_json::Value, path: &str| -> String {
        let p = s["sites"][0]["paths"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == path)
            .unwrap()
            .clone();
        p["signals"][0]["state"].as_str().unwrap().to_owned()
    };
    let s = status();
    assert_eq!(s["gateway"]["name"], "gwa");
    assert_eq!(s["sites"][0]["name"], "cloud-b");
    assert_eq!(carrier(&s, "line1"), "up");
    assert_eq!(carrier(&s, "line2"), "up");

    lab.cut(Side::A, Line(1), lab::Cut::Carrier).unwrap();
    let s = status();
    assert_eq!(carrier(&s, "line1"), "down");
    let line1 = s["sites"][0]["paths"][0].clone();
    assert_eq!(line1["state"], "down");
    assert!(
        line1["reason"].as_str().unwrap().contains("no carrier"),
        "{line1}"
    );

    lab.heal(Side::A, Line(1)).unwrap();
    lab.wait_for("line1 carrier back", Duration::from_secs(5), || {
        Ok(carrier(&status(), "line1") == "up")
    })
    .unwrap();
    // A blackhole keeps the carrier; BFD (100 ms x 3 in the lab) is what notices.
    lab.cut(Side::A, Line(1), lab::Cut::Blackhole).unwrap();
    assert_eq!(carrier(&status(), "line1"), "up");
    lab.wait_for(
        "BFD on line1 to notice the blackhole",
        Duration::from_secs(10),
        || {
            let s = status();
            let line1 = &s["sites"][0]["paths"][0];
            Ok(line1["state"] == "down"
                && line1["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("BFD with"))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", status()["sites"][0]["paths"][0]));
    assert_eq!(carrier(&status(), "line1"), "up");
}
