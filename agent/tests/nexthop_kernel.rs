//! The nexthop codec against the real kernel, in a network namespace this test makes (root).

use std::process::Command;

use crosslink::fib::nexthop::{Kind, Nexthop};
use crosslink::fib::{FibError, Nexthops};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ifindex(ns: &str, dev: &str) -> u32 {
    let out = ip(ns, &["-o", "link", "show", "dev", dev]);
    out.split(':').next().unwrap().trim().parse().unwrap()
}

#[test]
fn nexthops_and_groups_in_the_kernel() {
    let ns = Netns(format!("xl-nh-{}", std::process::id()));
    let _ = Command::new("ip").args(["netns", "del", &ns.0]).status();
    assert!(Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap()
        .success());
    ip(
        &ns.0,
        &["link", "add", "t1", "type", "veth", "peer", "name", "t2"],
    );
    for d in ["t1", "t2", "lo"] {
        ip(&ns.0, &["link", "set", "dev", d, "up"]);
    }
    let (i1, i2) = (ifindex(&ns.0, "t1"), ifindex(&ns.0, "t2"));
    let name = ns.0.clone();
    std::thread::spawn(move || {
        // This thread's netlink socket lives in the test's namespace.
        let f = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (nh, conn) = Nexthops::connect().unwrap();
            tokio::spawn(conn);
            nh.replace(Nexthop::dev(1, false, 252, i1)).await.unwrap();
            nh.replace(Nexthop::dev(2, false, 252, i2)).await.unwrap();
            nh.replace(Nexthop::group(100, 252, vec![(1, 3), (2, 1)]))
                .await
                .unwrap();
            let shown = ip(&name, &["nexthop", "show", "id", "100"]);
            assert!(
                shown.contains("group 1,3/2") && shown.contains("proto 252"),
                "{shown}"
            );
            ip(
                &name,
                &[
                    "route",
                    "add",
                    "10.50.0.0/24",
                    "nhid",
                    "100",
                    "proto",
                    "252",
                ],
            );
            // One replace moves every route using the group.
            nh.replace(Nexthop::group(100, 252, vec![(2, 1)]))
                .await
                .unwrap();
            let route = ip(&name, &["route", "show", "10.50.0.0/24"]);
            assert!(
                route.contains("dev t2") && !route.contains("dev t1"),
                "{route}"
            );
            let all = nh.dump().await.unwrap();
            let group = all.iter().find(|n| n.id == 100).unwrap();
            assert_eq!(group.kind, Kind::Group(vec![(2, 1)]));
            assert_eq!(group.protocol, 252);
            assert_eq!(
                all.iter().find(|n| n.id == 1).unwrap().kind,
                Kind::Dev { oif: i1 }
            );
            // The kernel's refusal comes back as an error, not a hang or a panic.
            let e = nh
                .replace(Nexthop::group(101, 252, vec![(999, 1)]))
                .await
                .unwrap_err();
            assert!(matches!(e, FibError::Kernel { .. }), "{e}");
            // Deleting the group takes the routes that used it (why crosslink reconciles).
            nh.delete(100).await.unwrap();
            assert_eq!(ip(&name, &["route", "show", "10.50.0.0/24"]).trim(), "");
        });
    })
    .join()
    .unwrap();
}
