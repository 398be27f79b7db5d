//! The nexthop codec against the real kernel, in a network namespace this test makes (root).

use std::process::{Command, Stdio};

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

/// A fresh namespace `PREFIX-PID` (one left by a killed run is replaced), deleted on drop.
fn netns(prefix: &str) -> Netns {
    let ns = Netns(format!("{prefix}-{}", std::process::id()));
    // Quiet: usually there is none to remove.
    let _ = Command::new("ip")
        .args(["netns", "del", &ns.0])
        .stderr(Stdio::null())
        .status();
    assert!(Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap()
        .success());
    ns
}

/// Runs `f` on a thread of its own inside `ns`, so its netlink sockets live there.
fn run_in<F: std::future::Future<Output = ()>>(ns: &Netns, f: impl FnOnce() -> F + Send + 'static) {
    let name = ns.0.clone();
    std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f());
    })
    .join()
    .unwrap();
}

fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

fn ifindex(ns: &str, dev: &str) -> u32 {
    let out = ip(ns, &["-o", "link", "show", "dev", dev]);
    out.split(':').next().unwrap().trim().parse().unwrap()
}

#[test]
fn nexthops_and_groups_in_the_kernel() {
    let ns = netns("xl-nh");
    ip(
        &ns.0,
        &["link", "add", "t1", "type", "veth", "peer", "name", "t2"],
    );
    for d in ["t1", "t2", "lo"] {
        ip(&ns.0, &["link", "set", "dev", d, "up"]);
    }
    let (i1, i2) = (ifindex(&ns.0, "t1"), ifindex(&ns.0, "t2"));
    let name = ns.0.clone();
    run_in(&ns, move || async move {
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
        // A replace of what must exist does not re-create a deleted group (its routes are
        // gone with it); it says so, and changes one that exists.
        let e = nh
            .replace_existing(Nexthop::group(100, 252, vec![(1, 1)]))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, FibError::Kernel { err, .. } if err.raw_os_error() == Some(libc_enoent())),
            "{e}"
        );
        assert!(!ip(&name, &["nexthop", "show"]).contains("id 100 "));
        nh.replace_existing(Nexthop::dev(1, false, 252, i2))
            .await
            .unwrap();
        assert!(ip(&name, &["nexthop", "show", "id", "1"]).contains("dev t2"));
    });
}

/// The planner and `Fib::apply` against the kernel: a site's routes land on its group, a
/// failover is one group replace, a deleted group is rebuilt with its routes, and another
/// protocol's route at our prefix and metric is left alone.
#[test]
fn plans_reach_the_kernel_and_drift_is_repaired() {
    use crosslink::fib::plan::{self, Family, Member, Members, SiteWant, METRIC, PROTOCOL};
    use crosslink::fib::Fib;
    use std::collections::BTreeSet;

    let ns = netns("xl-fib");
    for (a, b) in [("line1", "lr1"), ("tun1", "tp1"), ("tun2", "tp2")] {
        ip(
            &ns.0,
            &["link", "add", a, "type", "veth", "peer", "name", b],
        );
        for d in [a, b] {
            ip(&ns.0, &["link", "set", "dev", d, "up"]);
        }
    }
    ip(&ns.0, &["addr", "add", "192.0.2.1/30", "dev", "line1"]);
    ip(&ns.0, &["link", "set", "dev", "lo", "up"]);
    // Another daemon's route at our metric for one of the prefixes we want.
    ip(
        &ns.0,
        &[
            "route",
            "add",
            "198.18.7.0/24",
            "dev",
            "tp1",
            "metric",
            "20",
            "proto",
            "static",
        ],
    );
    let line1 = ifindex(&ns.0, "line1");
    let (t1, t2) = (ifindex(&ns.0, "tun1"), ifindex(&ns.0, "tun2"));
    let name = ns.0.clone();
    run_in(&ns, move || async move {
        let (fib, a, b) = Fib::connect().unwrap();
        tokio::spawn(a);
        tokio::spawn(b);
        let prefixes: std::sync::Arc<[ipnet::IpNet]> = (0..8)
            .map(|i| format!("198.18.{i}.0/24").parse().unwrap())
            .collect();
        let wanted: BTreeSet<ipnet::IpNet> = prefixes.iter().copied().collect();
        let line = Member {
            slot: 0,
            ifindex: line1,
            gateway: Some("192.0.2.2".parse().unwrap()),
            weight: 1,
        };
        let tun = |slot, ifindex, weight| Member {
            slot,
            ifindex,
            gateway: None,
            weight,
        };
        // Every path healthy: all three objects stay, in the group or beside it.
        let with_fallback = |v4: Members, fallback_v4: Members| SiteWant {
            index: 0,
            prefixes: prefixes.clone(),
            v4,
            v6: Members::Keep,
            standby_v4: vec![line.clone(), tun(1, t1, 1), tun(2, t2, 1)],
            standby_v6: Vec::new(),
            fallback_v4,
            fallback_v6: Members::Keep,
        };
        let site = |v4: Members| with_fallback(v4, Members::Keep);
        let reconcile = |want: SiteWant| {
            let fib = fib.clone();
            let wanted = wanted.clone();
            async move {
                let k = fib.kernel(&wanted, true).await.unwrap();
                let d = plan::desired(&[want], &k.nexthops, true);
                let p = plan::diff(&d, &k);
                let errors = fib.apply(&p).await;
                assert!(errors.is_empty(), "{errors:?}");
                p
            }
        };
        let on_line = site(Members::Set(vec![line.clone()]));
        let p = reconcile(on_line.clone()).await;
        assert_eq!(p.conflicts, vec!["198.18.7.0/24".parse().unwrap()]);
        let gid = plan::group_id(0, Family::V4);
        let r = ip(&name, &["route", "show", "198.18.3.0/24"]);
        assert!(
            r.contains(&format!("nhid {gid}")) && r.contains("via 192.0.2.2 dev line1"),
            "{r}"
        );
        assert!(
            r.contains(&format!("proto {PROTOCOL}")) && r.contains(&format!("metric {METRIC}")),
            "{r}"
        );
        let foreign = ip(&name, &["route", "show", "198.18.7.0/24"]);
        assert!(
            foreign.contains("proto static") && foreign.contains("dev tp1"),
            "{foreign}"
        );
        assert!(
            reconcile(on_line.clone()).await.is_empty(),
            "stable once applied"
        );

        // Failover: the routes follow one group replace.
        let tunnels = site(Members::Set(vec![tun(1, t1, 1), tun(2, t2, 2)]));
        let p = reconcile(tunnels.clone()).await;
        assert!(
            matches!(&p.ops[..], [plan::Op::Nexthop(n)] if n.id == gid),
            "one group replace, nothing else: {p:?}"
        );
        let kept = plan::member_id(0, 0, Family::V4).to_string();
        let standby = ip(&name, &["nexthop", "show", "id", &kept]);
        assert!(standby.contains("via 192.0.2.2 dev line1"), "{standby}");
        let r = ip(&name, &["route", "show", "198.18.3.0/24"]);
        assert!(r.contains("dev tun1") && r.contains("dev tun2"), "{r}");

        // Someone deletes our group: the kernel drops our routes; we rebuild both.
        ip(&name, &["nexthop", "del", "id", &gid.to_string()]);
        assert_eq!(ip(&name, &["route", "show", "198.18.3.0/24"]).trim(), "");
        reconcile(tunnels.clone()).await;
        let r = ip(&name, &["route", "show", "198.18.3.0/24"]);
        assert!(r.contains(&format!("nhid {gid}")), "{r}");
        let ours = ip(&name, &["route", "show", "proto", &PROTOCOL.to_string()]);
        assert_eq!(
            ours.lines().filter(|l| l.starts_with("198.18.")).count(),
            7,
            "{ours}"
        );

        // A carrier loss takes the group's last member, the group and its routes: they are
        // put back without a dump, and the foreign route at our metric stays as it is.
        ip(&name, &["nexthop", "del", "id", &gid.to_string()]);
        let k = fib.kernel(&BTreeSet::new(), false).await.unwrap();
        let d = plan::desired(std::slice::from_ref(&tunnels), &k.nexthops, false);
        assert!(fib.apply(&plan::diff(&d, &k)).await.is_empty());
        let (errors, done) = fib
            .restore(prefixes.iter().map(|p| ((METRIC, *p), gid)), || false)
            .await;
        assert!(errors.is_empty() && done, "{errors:?}");
        let ours = ip(&name, &["route", "show", "proto", &PROTOCOL.to_string()]);
        assert_eq!(
            ours.lines().filter(|l| l.starts_with("198.18.")).count(),
            7,
            "{ours}"
        );
        let foreign = ip(&name, &["route", "show", "198.18.7.0/24"]);
        assert!(foreign.contains("proto static"), "{foreign}");
        assert!(
            reconcile(tunnels.clone()).await.is_empty(),
            "nothing left to do"
        );

        // Back on the line, with the tunnels as the fallback: every prefix a second time, at
        // the fallback metric through a group of its own.
        let fgid = plan::fallback_group_id(0, Family::V4);
        let tunnel_members = || vec![tun(1, t1, 1), tun(2, t2, 1)];
        let guarded = with_fallback(
            Members::Set(vec![line.clone()]),
            Members::Set(tunnel_members()),
        );
        reconcile(guarded.clone()).await;
        let r = ip(&name, &["route", "show", "198.18.3.0/24"]);
        assert!(
            r.contains(&format!("nhid {gid}")) && r.contains(&format!("metric {METRIC}")),
            "{r}"
        );
        assert!(
            r.contains(&format!("nhid {fgid}"))
                && r.contains(&format!("metric {}", plan::FALLBACK_METRIC)),
            "{r}"
        );
        let get = |dst: &str| ip(&name, &["route", "get", dst]);
        assert!(get("198.18.3.1").contains("dev line1"));
        // The line loses its carrier: the kernel deletes the line's object, the group it
        // was the only member of and the routes through it. The fallback routes carry at
        // once, before the agent has done anything.
        ip(&name, &["link", "set", "dev", "lr1", "down"]);
        // The kernel flushes a device's nexthops from its linkwatch work, a moment after the
        // `ip link` call returns: wait (bounded) until the line's object is gone.
        for _ in 0..100 {
            if !ip(&name, &["nexthop", "show"]).contains("dev line1") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let after_cut = get("198.18.3.1");
        assert!(
            after_cut.contains("dev tun1") || after_cut.contains("dev tun2"),
            "{after_cut}"
        );
        assert!(!ip(&name, &["route", "show", "198.18.3.0/24"]).contains(&format!("nhid {gid} ")));
        // The agent then moves the site to the tunnels and puts the main routes back.
        let mut on_tunnels = with_fallback(Members::Set(tunnel_members()), Members::Keep);
        on_tunnels.standby_v4 = tunnel_members();
        let k = fib.kernel(&BTreeSet::new(), false).await.unwrap();
        let d = plan::desired(std::slice::from_ref(&on_tunnels), &k.nexthops, false);
        assert!(fib.apply(&plan::diff(&d, &k)).await.is_empty());
        let (errors, done) = fib
            .restore(prefixes.iter().map(|p| ((METRIC, *p), gid)), || false)
            .await;
        assert!(errors.is_empty() && done, "{errors:?}");
        assert!(
            reconcile(on_tunnels.clone()).await.is_empty(),
            "the fallback group is kept as it is"
        );

        // The site goes away: our objects go, the foreign route stays.
        let k = fib.kernel(&wanted, true).await.unwrap();
        let errors = fib.apply(&plan::diff(&plan::Desired::default(), &k)).await;
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            ip(&name, &["route", "show", "proto", &PROTOCOL.to_string()]).trim(),
            ""
        );
        assert_eq!(
            ip(&name, &["nexthop", "show", "proto", &PROTOCOL.to_string()]).trim(),
            ""
        );
        assert!(ip(&name, &["route", "show", "198.18.7.0/24"]).contains("proto static"));
    });
}

/// Route work stops between chunks when asked (a switch became due) and leaves a state the
/// kernel holds; the next run does the rest.
#[test]
fn route_work_stops_between_chunks_when_asked() {
    use crosslink::fib::plan::{self, Family, Member, Members, SiteWant, METRIC};
    use crosslink::fib::{Fib, ROUTE_CHUNK};
    use std::collections::BTreeSet;

    let ns = netns("xl-chunk");
    ip(
        &ns.0,
        &["link", "add", "tun1", "type", "veth", "peer", "name", "tp1"],
    );
    for d in ["tun1", "tp1", "lo"] {
        ip(&ns.0, &["link", "set", "dev", d, "up"]);
    }
    let t1 = ifindex(&ns.0, "tun1");
    let name = ns.0.clone();
    run_in(&ns, move || async move {
        let (fib, a, b) = Fib::connect().unwrap();
        tokio::spawn(a);
        tokio::spawn(b);
        let n = ROUTE_CHUNK * 2 + 10;
        let prefixes: std::sync::Arc<[ipnet::IpNet]> = (0..n)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap())
            .collect();
        let wanted: BTreeSet<ipnet::IpNet> = prefixes.iter().copied().collect();
        let tun = Member {
            slot: 0,
            ifindex: t1,
            gateway: None,
            weight: 1,
        };
        let site = SiteWant {
            index: 0,
            prefixes,
            v4: Members::Set(vec![tun.clone()]),
            v6: Members::Keep,
            standby_v4: vec![tun],
            standby_v6: Vec::new(),
            fallback_v4: Members::Keep,
            fallback_v6: Members::Keep,
        };
        let ours = || {
            ip(
                &name,
                &["route", "show", "proto", &plan::PROTOCOL.to_string()],
            )
            .lines()
            .filter(|l| l.starts_with("10."))
            .count()
        };
        let plan_now = || {
            let fib = fib.clone();
            let wanted = wanted.clone();
            let site = site.clone();
            async move {
                let k = fib.kernel(&wanted, true).await.unwrap();
                plan::diff(&plan::desired(&[site], &k.nexthops, true), &k)
            }
        };
        // Asked to stop at the first look: the group and one chunk of routes are in.
        let asked = std::cell::Cell::new(0);
        let (errors, done) = fib
            .apply_until(&plan_now().await, || {
                asked.set(asked.get() + 1);
                true
            })
            .await;
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!done);
        assert_eq!(asked.get(), 1);
        assert_eq!(ours(), ROUTE_CHUNK);
        let gid = plan::group_id(0, Family::V4).to_string();
        assert!(ip(&name, &["nexthop", "show", "id", &gid]).contains("group"));
        // The next run plans the rest only and gets through.
        let rest = plan_now().await;
        assert_eq!(rest.ops.len(), n - ROUTE_CHUNK);
        let (errors, done) = fib.apply_until(&rest, || false).await;
        assert!(errors.is_empty() && done, "{errors:?}");
        assert_eq!(ours(), n);
        assert!(plan_now().await.is_empty());
        let r = ip(&name, &["route", "show", "10.2.9.0/24"]);
        assert!(r.contains(&format!("metric {METRIC}")), "{r}");
    });
}
