//! The control-queue steering program against the real kernel, in a network namespace this
//! test makes (root): packets sent at TC_PRIO_CONTROL come out of TUN queue 0, others
//! never do.

use std::net::UdpSocket;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(ns: &str, args: &[&str]) {
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
}

/// Every packet waiting in `fd`, non-blocking.
fn drain(fd: &OwnedFd) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    for _ in 0..1000 {
        match nix::unistd::read(fd, &mut buf) {
            Ok(n) => out.push(buf[..n].to_vec()),
            Err(_) => break,
        }
    }
    out
}

fn carries(packets: &[Vec<u8>], marker: &[u8]) -> usize {
    packets.iter().filter(|p| p.ends_with(marker)).count()
}

#[test]
fn control_packets_take_queue_zero() {
    let ns = Netns(format!("xl-steer-{}", std::process::id()));
    let _ = Command::new("ip").args(["netns", "del", &ns.0]).status();
    assert!(Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap()
        .success());
    let name = ns.0.clone();
    std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let fds = wg::tun::open("xlsteer", 3).unwrap();
        wg::steer::attach(&fds[0], 2).unwrap();
        ip(&name, &["addr", "add", "10.99.0.1/24", "dev", "xlsteer"]);
        ip(&name, &["link", "set", "xlsteer", "up"]);

        let control = UdpSocket::bind("10.99.0.1:0").unwrap();
        setsockopt(&control, sockopt::Priority, &7).unwrap();
        // Data from many sockets, so that the flow hashes spread over both data queues.
        let data: Vec<UdpSocket> = (0..16)
            .map(|_| UdpSocket::bind("10.99.0.1:0").unwrap())
            .collect();
        for _ in 0..5 {
            control.send_to(b"xl-control", "10.99.0.2:4784").unwrap();
        }
        for s in &data {
            s.send_to(b"xl-data", "10.99.0.2:5001").unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let queues: Vec<Vec<Vec<u8>>> = fds.iter().map(drain).collect();
        assert_eq!(carries(&queues[0], b"xl-control"), 5, "control on queue 0");
        assert_eq!(carries(&queues[0], b"xl-data"), 0, "no data on queue 0");
        let on_data: usize = queues[1..].iter().map(|q| carries(q, b"xl-data")).sum();
        assert_eq!(on_data, 16, "data on queues 1 and 2");
        assert_eq!(
            queues[1..]
                .iter()
                .map(|q| carries(q, b"xl-control"))
                .sum::<usize>(),
            0
        );

        // Detached: the kernel's own choice again, which spreads control traffic too.
        wg::steer::detach(&fds[0]).unwrap();
        for _ in 0..16 {
            UdpSocket::bind("10.99.0.1:0")
                .and_then(|s| {
                    setsockopt(&s, sockopt::Priority, &7).unwrap();
                    s.send_to(b"xl-control", "10.99.0.2:4784")
                })
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let after: usize = fds[1..]
            .iter()
            .map(|fd| carries(&drain(fd), b"xl-control"))
            .sum();
        assert!(
            after > 0,
            "without the program control packets use every queue"
        );
    })
    .join()
    .unwrap();
}
