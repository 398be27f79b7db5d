//! BFD sockets: receive sockets that report the TTL, arrival interface and kernel receive
//! time of each packet (RFC 5881 §5: single-hop packets must arrive with TTL 255; the time
//! lets the driver read in batches without skewing detection or round trips), and
//! per-session transmit sockets bound to a source port in 49152-65535, sent with TTL 255.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};

/// RFC 5881 §4 / RFC 5883 §5.
pub const SINGLE_HOP_PORT: u16 = 3784;
pub const MULTI_HOP_PORT: u16 = 4784;

/// DSCP CS6 (network control), the class routers give BFD so that a congested link does
/// not drop its liveness probes first.
const CS6: i32 = 0xc0;
/// `TC_PRIO_CONTROL`: the highest band of the default queueing disciplines.
const TC_PRIO_CONTROL: i32 = 7;

/// One received datagram with what the kernel told about it.
pub struct Datagram {
    pub len: usize,
    pub from: SocketAddr,
    pub ttl: Option<u8>,
    pub ifindex: Option<u32>,
    /// When the kernel received it (CLOCK_REALTIME, since the epoch).
    pub stamp: Option<std::time::Duration>,
}

/// A receive socket on `addr:port` asking the kernel for TTL and packet info.
pub fn rx_socket(addr: IpAddr, port: u16) -> io::Result<UdpSocket> {
    let sock = match addr {
        IpAddr::V4(_) => {
            let s = socket2_like_v4()?;
            setsockopt(&s, sockopt::Ipv4RecvTtl, &true)?;
            setsockopt(&s, sockopt::Ipv4PacketInfo, &true)?;
            s
        }
        IpAddr::V6(_) => {
            let s = socket2_like_v6()?;
            setsockopt(&s, sockopt::Ipv6V6Only, &true)?;
            setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true)?;
            setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true)?;
            s
        }
    };
    setsockopt(&sock, sockopt::ReuseAddr, &true)?;
    setsockopt(&sock, sockopt::ReceiveTimestampns, &true)?;
    nix::sys::socket::bind(
        sock.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(addr, port)),
    )?;
    let sock = UdpSocket::from(sock);
    sock.set_nonblocking(true)?;
    Ok(sock)
}

fn socket2_like_v4() -> io::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    Ok(socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

fn socket2_like_v6() -> io::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    Ok(socket(
        AddressFamily::Inet6,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// Reads one datagram without blocking; `Ok(None)` when there is none.
pub fn recv(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<Datagram>> {
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::c_int, libc::in6_pktinfo, libc::timespec);
    let msg = match recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(m) => m,
        Err(nix::errno::Errno::EAGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let from = match msg.address.as_ref() {
        Some(a) => match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
            (Some(v4), _) => SocketAddr::new(IpAddr::V4(v4.ip()), v4.port()),
            (_, Some(v6)) => {
                let ip = v6.ip();
                SocketAddr::new(
                    ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4),
                    v6.port(),
                )
            }
            _ => return Ok(None),
        },
        None => return Ok(None),
    };
    let mut ttl = None;
    let mut ifindex = None;
    let mut stamp = None;
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::Ipv4Ttl(t) => ttl = u8::try_from(t).ok(),
            ControlMessageOwned::Ipv6HopLimit(t) => ttl = u8::try_from(t).ok(),
            ControlMessageOwned::Ipv4PacketInfo(i) => ifindex = u32::try_from(i.ipi_ifindex).ok(),
            ControlMessageOwned::Ipv6PacketInfo(i) => ifindex = Some(i.ipi6_ifindex),
            ControlMessageOwned::ScmTimestampns(t) => {
                stamp = u64::try_from(t.tv_sec())
                    .ok()
                    .zip(u32::try_from(t.tv_nsec()).ok())
                    .map(|(s, n)| std::time::Duration::new(s, n));
            }
            _ => {}
        }
    }
    Ok(Some(Datagram {
        len: msg.bytes,
        from,
        ttl,
        ifindex,
        stamp,
    }))
}

/// A transmit socket for one session: TTL 255, optionally bound to an interface and a
/// local address, with a source port from the range RFC 5881 §4 requires.
pub fn tx_socket(
    peer: IpAddr,
    local: Option<IpAddr>,
    interface: Option<&str>,
    seed: u32,
) -> io::Result<UdpSocket> {
    let unspecified = if peer.is_ipv6() {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let local = local.unwrap_or(unspecified);
    let mut last = io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free source port in 49152-65535",
    );
    for i in 0..64u32 {
        let port = 49152 + ((seed.wrapping_add(i.wrapping_mul(7919))) % 16384) as u16;
        let fd = if peer.is_ipv6() {
            socket2_like_v6()?
        } else {
            socket2_like_v4()?
        };
        if let Some(iface) = interface {
            setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(iface))?;
        }
        if peer.is_ipv6() {
            setsockopt(&fd, sockopt::Ipv6Ttl, &255)?;
            let _ = setsockopt(&fd, sockopt::Ipv6TClass, &CS6);
        } else {
            setsockopt(&fd, sockopt::Ipv4Ttl, &255)?;
            let _ = setsockopt(&fd, sockopt::Ipv4Tos, &CS6);
        }
        // Ahead of bulk traffic in the host's own queues (pfifo_fast band 0); needs
        // CAP_NET_ADMIN, which the agent has; without it the packets go as best effort.
        let _ = setsockopt(&fd, sockopt::Priority, &TC_PRIO_CONTROL);
        match nix::sys::socket::bind(
            fd.as_fd().as_raw_fd(),
            &SockaddrStorage::from(SocketAddr::new(local, port)),
        ) {
            Ok(()) => {
                let s = UdpSocket::from(fd);
                s.set_nonblocking(true)?;
                return Ok(s);
            }
            Err(e) => last = e.into(),
        }
    }
    Err(last)
}

/// The index of interface `name`, for matching single-hop packets to their line.
pub fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}
