//! Both steering programs against the real kernel, in network namespaces these tests make
//! (root): on the way out, packets sent at TC_PRIO_CONTROL come out of TUN queue 0, others
//! never do; on the way in, small data messages marked CS6/CS7 reach the UDP control
//! socket, nothing else does.

use std::net::UdpSocket;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};

#[path = "common/netns.rs"]
mod netns;
use netns::in_netns;

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
    in_netns("steer", |name| {
        let fds = wg::tun::open("xlsteer", 3).unwrap();
        wg::steer::attach(&fds[0], 2).unwrap();
        ip(name, &["addr", "add", "10.99.0.1/24", "dev", "xlsteer"]);
        ip(name, &["link", "set", "xlsteer", "up"]);

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
    });
}

/// Which of the group's sockets got each datagram sent, by its payload's tag.
fn received_by(sock: &UdpSocket) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(buf[n - 1]);
    }
    got.sort_unstable();
    got
}

/// A WireGuard data message of `len` bytes (type 4) tagged with `tag` in its last byte.
fn data_message(len: usize, kind: u8, tag: u8) -> Vec<u8> {
    let mut m = vec![0u8; len];
    m[0] = kind;
    m[len - 1] = tag;
    m
}

#[test]
fn marked_small_data_messages_take_the_control_socket() {
    in_netns("usteer", |name| {
        ip(name, &["link", "set", "lo", "up"]);
        // The group as the tunnel binds it: the bulk socket first, dual-stack.
        let bind = |port: u16| {
            let s = socket2_like_bind(port);
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            s
        };
        let bulk = bind(0);
        let port = bulk.local_addr().unwrap().port();
        let control = bind(port);
        wg::udp_steer::attach(&control).unwrap();

        let cases: [(&str, u8, usize, u8, u8, bool); 8] = [
            // (destination, TOS, length, message type, tag, to control)
            ("127.0.0.1", 0xc0, 100, 4, 1, true), // CS6 BFD-sized data: control
            ("127.0.0.1", 0xe0, 160, 4, 2, true), // CS7 at the size limit
            ("127.0.0.1", 0xc3, 96, 4, 3, true),  // CS6 with ECN bits set
            ("127.0.0.1", 0x00, 100, 4, 4, false), // unmarked: bulk
            ("127.0.0.1", 0xb8, 100, 4, 5, false), // EF is not network control
            ("127.0.0.1", 0xc0, 161, 4, 6, false), // too large
            ("127.0.0.1", 0xc0, 148, 1, 7, false), // a handshake initiation
            ("::1", 0xc0, 100, 4, 8, true),       // IPv6 traffic class CS6
        ];
        for (dst, tos, len, kind, tag, _) in cases {
            let v6 = dst.contains(':');
            let from = UdpSocket::bind(if v6 { "[::1]:0" } else { "127.0.0.1:0" }).unwrap();
            if v6 {
                setsockopt(&from, sockopt::Ipv6TClass, &i32::from(tos)).unwrap();
            } else {
                setsockopt(&from, sockopt::Ipv4Tos, &i32::from(tos)).unwrap();
            }
            let to = if v6 {
                format!("[{dst}]:{port}")
            } else {
                format!("{dst}:{port}")
            };
            from.send_to(&data_message(len, kind, tag), to).unwrap();
        }
        let want =
            |c: bool| -> Vec<u8> { cases.iter().filter(|x| x.5 == c).map(|x| x.4).collect() };
        assert_eq!(received_by(&control), want(true), "on the control socket");
        assert_eq!(received_by(&bulk), want(false), "on the bulk socket");
    });
}

/// A dual-stack UDP socket on `port` with SO_REUSEPORT, as the tunnel binds its pair.
fn socket2_like_bind(port: u16) -> UdpSocket {
    use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrIn6};
    let fd = socket(
        AddressFamily::Inet6,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::Ipv6V6Only, &false).unwrap();
    setsockopt(&fd, sockopt::ReusePort, &true).unwrap();
    let any = std::net::SocketAddrV6::new(std::net::Ipv6Addr::UNSPECIFIED, port, 0, 0);
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn6::from(any),
    )
    .unwrap();
    UdpSocket::from(fd)
}
