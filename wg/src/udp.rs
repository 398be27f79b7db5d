//! The tunnel's UDP socket, batched where Linux allows: a run of equal-sized encrypted
//! datagrams leaves in one `sendmsg` with UDP_SEGMENT (GSO), and UDP_GRO hands such a run
//! to the receiver in one `recvmsg`.
//!
//! Why: profiled in the lab, the tunnel processes spend about 80 % of their CPU in the
//! kernel carrying each datagram through the stack (sendto alone ~31 %, crypto ~7 %). A GSO
//! datagram crosses the stack — and the veths and namespaces between the gateways — once
//! per run instead of once per packet, and is split only where a device needs it.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The kernel's UDP_MAX_SEGMENTS on older kernels (newer allow 128).
pub(crate) const MAX_SEGMENTS: usize = 64;
/// Payload of one GSO datagram: the IPv4 limit less the IP and UDP headers.
pub(crate) const MAX_GSO_BYTES: usize = 65_535 - 20 - 8;

/// Sends that found the socket's buffer full and waited for room, before the datagram is
/// given up (the buffer is 4 MiB: full means the uplink is gone, or nearly).
const SEND_TRIES: usize = 3;

pub(crate) struct Udp {
    /// Registered for reading only. A registration for writing has the kernel call back
    /// into epoll each time it frees a sent datagram (every change of the write space),
    /// and wake the runtime's thread parked there, for no one waiting. Sends are
    /// non-blocking; the rare one that finds no room waits on a registration of its own
    /// (`room`).
    sock: AsyncFd<std::net::UdpSocket>,
    /// A dual-stack IPv6 socket: IPv4 peers are addressed as mapped addresses.
    v6: bool,
    /// Cleared when the kernel or the uplink refuses UDP_SEGMENT; then one send a datagram.
    gso: AtomicBool,
}

/// One received datagram, or a GRO run of them: `bytes` in all, cut every `segment`.
pub(crate) struct Received {
    pub bytes: usize,
    pub from: SocketAddr,
    pub segment: usize,
    /// How long it waited in the socket's queue (kernel receive time to now).
    pub waited: Option<Duration>,
}

impl Udp {
    /// Binds the listen port on every address (dual-stack where the host has IPv6), bound
    /// to `uplink` when one is given, as the first socket of its SO_REUSEPORT group (see
    /// `udp_steer`).
    pub(crate) fn bind(port: u16, uplink: Option<&str>) -> io::Result<Udp> {
        use nix::sys::socket::{setsockopt, sockopt};
        // SO_REUSEPORT would let this socket join one that another process of this user
        // holds (a second agent, a stray `wireguard-go` on the port) and share its
        // datagrams without a word: a plain bind first says whether the port is free.
        drop(open(port, uplink, false, |_| {})?);
        let (fd, v6) = open(port, uplink, true, |fd| {
            // The receive queue is where a saturated tunnel queues (the receiving side's
            // decryption and TUN writes are the bottleneck). Its length is kept by time,
            // not by this size: datagrams that waited too long are shed unread (see
            // `crate::shed`). The size only has to hold that much (1 MiB is ~2 ms at the
            // rate one tunnel carries here) so that the kernel's tail drop, blind to what
            // it drops, stays out.
            let _ = setsockopt(fd, sockopt::RcvBuf, &(1 << 20));
            let _ = setsockopt(fd, sockopt::ReceiveTimestampns, &true);
            let _ = setsockopt(fd, sockopt::SndBuf, &(4 << 20));
            // Without GRO (kernels before 5.0) every datagram arrives on its own: still
            // correct.
            let _ = setsockopt(fd, sockopt::UdpGroSegment, &true);
        })?;
        Udp::from_fd(fd, v6)
    }

    /// Binds the control socket beside `self` (same port and uplink, same group) and
    /// steers marked control datagrams to it. Returns the socket unregistered: it is
    /// served on the control runtime (`Udp::from_fd` there).
    pub(crate) fn bind_control(&self, port: u16, uplink: Option<&str>) -> io::Result<OwnedFd> {
        use nix::sys::socket::{getsockopt, sockopt};
        if !getsockopt(&self.as_fd(), sockopt::ReusePort)? {
            return Err(io::Error::other(
                "the data socket was bound by a run without SO_REUSEPORT",
            ));
        }
        let (fd, _) = open(port, uplink, true, |_| {})?;
        crate::udp_steer::attach(&fd)?;
        Ok(fd)
    }

    /// A bound socket as a `Udp` of the runtime this is called on.
    pub(crate) fn from_fd(fd: OwnedFd, v6: bool) -> io::Result<Udp> {
        let sock = std::net::UdpSocket::from(fd);
        sock.set_nonblocking(true)?;
        #[allow(unsafe_code)]
        // SAFETY: the AsyncFd owns the socket, so the descriptor stays open and the same
        // for the AsyncFd's whole life.
        let sock = unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Udp {
            sock,
            v6,
            gso: AtomicBool::new(true),
        })
    }

    /// Whether the socket is dual-stack IPv6 (see `from_fd`).
    pub(crate) fn is_v6(&self) -> bool {
        self.v6
    }

    /// Takes over a socket a previous run bound (handed over through systemd's
    /// file-descriptor store or a re-exec), if it is bound to `port` on `uplink`: its
    /// queued datagrams are kept. None when it does not fit (the config changed).
    pub(crate) fn adopt(fd: OwnedFd, port: u16, uplink: Option<&str>) -> io::Result<Option<Udp>> {
        match adoptable(&fd, port, uplink)? {
            Some(v6) => Udp::from_fd(fd, v6).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.sock.get_ref().as_fd()
    }

    /// The socket address to send to, mapped for a dual-stack socket.
    fn wire_addr(&self, to: SocketAddr) -> SocketAddr {
        match (to, self.v6) {
            (SocketAddr::V4(v4), true) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => to,
        }
    }

    pub(crate) async fn send(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.send_with(datagram, to, &[]).await
    }

    /// Sends one datagram with `tos` in its IP header (TOS or traffic class), as the
    /// in-kernel WireGuard copies the inner packet's: the far end and the networks between
    /// can tell network control from bulk without decrypting (see `udp_steer`).
    pub(crate) async fn send_marked(
        &self,
        datagram: &[u8],
        to: SocketAddr,
        tos: u8,
    ) -> io::Result<()> {
        let tclass = i32::from(tos);
        // An IPv4 destination, mapped or not, takes IP_TOS; IPv6 the traffic class.
        let cmsg = match to {
            SocketAddr::V4(_) => [ControlMessage::Ipv4Tos(&tos)],
            SocketAddr::V6(_) => [ControlMessage::Ipv6TClass(&tclass)],
        };
        self.send_with(datagram, to, &cmsg).await
    }

    /// One `sendmsg` of `data` to `to` with `cmsg`, when the socket can take it.
    async fn send_with(
        &self,
        data: &[u8],
        to: SocketAddr,
        cmsg: &[ControlMessage<'_>],
    ) -> io::Result<()> {
        let addr = SockaddrStorage::from(self.wire_addr(to));
        let fd = self.sock.as_raw_fd();
        let mut tries = 0;
        loop {
            let sent = sendmsg(
                fd,
                &[IoSlice::new(data)],
                cmsg,
                MsgFlags::MSG_DONTWAIT,
                Some(&addr),
            );
            match sent {
                Err(Errno::EAGAIN) if tries < SEND_TRIES => {
                    tries += 1;
                    self.room().await?;
                }
                r => return r.map(drop).map_err(io::Error::from),
            }
        }
    }

    /// Waits until the socket's send buffer has room again. A registration for writing
    /// of its own, on a duplicate descriptor (epoll keys a registration on the
    /// descriptor), held only while waiting: see `sock`. Registering reports the room at
    /// once if there is some by then, so no wake-up is missed.
    async fn room(&self) -> io::Result<()> {
        let dup = self.sock.get_ref().try_clone()?;
        #[allow(unsafe_code)]
        // SAFETY: as in `from_fd`: the AsyncFd owns the duplicate for its whole life.
        let waiter = unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) }
            .map_err(io::Error::from)?;
        let _ready = waiter.writable().await?;
        Ok(())
    }

    /// Sends `run` as datagrams of `segment` bytes (the last may be shorter); returns how
    /// many datagrams and bytes left. A datagram the kernel refuses is lost, as on a link.
    pub(crate) async fn send_run(
        &self,
        run: &[u8],
        segment: usize,
        to: SocketAddr,
    ) -> (usize, usize) {
        let segment = segment.max(1);
        let count = run.len().div_ceil(segment);
        if count > 1 && self.gso.load(Ordering::Relaxed) {
            match self.send_gso(run, segment, to).await {
                Ok(()) => return (count, run.len()),
                // No checksum offload on the uplink (EIO) or no UDP GSO at all: stop
                // asking. Anything else (a path MTU below the segment, say) is this run's
                // problem only; its datagrams go one by one and meet it there.
                Err(e) => {
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                    ) {
                        tracing::debug!(error = %e, "UDP GSO refused; sending datagrams one by one");
                        self.gso.store(false, Ordering::Relaxed);
                    }
                }
            }
        }
        let (mut sent, mut bytes) = (0, 0);
        for datagram in run.chunks(segment) {
            if self.send(datagram, to).await.is_ok() {
                sent += 1;
                bytes += datagram.len();
            }
        }
        (sent, bytes)
    }

    async fn send_gso(&self, run: &[u8], segment: usize, to: SocketAddr) -> io::Result<()> {
        let size =
            u16::try_from(segment).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.send_with(run, to, &[ControlMessage::UdpGsoSegments(&size)])
            .await
    }

    /// Receives one datagram or one GRO run of them into `buf`.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let fd = self.sock.as_raw_fd();
        self.sock
            .async_io(Interest::READABLE, |_| {
                let mut cmsg = nix::cmsg_space!(i32, libc::timespec);
                let mut iov = [IoSliceMut::new(buf)];
                let msg =
                    recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
                        .map_err(io::Error::from)?;
                let mut segment = msg.bytes;
                let mut waited = None;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        match c {
                            ControlMessageOwned::UdpGroSegments(s) => {
                                segment = usize::try_from(s).unwrap_or(msg.bytes);
                            }
                            ControlMessageOwned::ScmTimestampns(t) => {
                                let at = Duration::new(
                                    u64::try_from(t.tv_sec()).unwrap_or(0),
                                    u32::try_from(t.tv_nsec()).unwrap_or(0),
                                );
                                waited = SystemTime::now()
                                    .duration_since(UNIX_EPOCH)
                                    .ok()
                                    .and_then(|now| now.checked_sub(at));
                            }
                            _ => {}
                        }
                    }
                }
                let from = msg
                    .address
                    .as_ref()
                    .and_then(socket_addr)
                    .ok_or_else(|| io::Error::other("datagram without a source address"))?;
                Ok(Received {
                    bytes: msg.bytes,
                    from,
                    segment: segment.clamp(1, msg.bytes.max(1)),
                    waited,
                })
            })
            .await
    }
}

/// Whether a socket a previous run handed over is bound to `port` on `uplink`: if so it is
/// made non-blocking and `Some(dual-stack)` returned.
pub(crate) fn adoptable(fd: &OwnedFd, port: u16, uplink: Option<&str>) -> io::Result<Option<bool>> {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, AddressFamily, SockaddrLike};
    let local: SockaddrStorage = getsockname(fd.as_raw_fd())?;
    let (bound, v6) = match local.family() {
        Some(AddressFamily::Inet6) => (local.as_sockaddr_in6().map(|a| a.port()), true),
        Some(AddressFamily::Inet) => (local.as_sockaddr_in().map(|a| a.port()), false),
        _ => (None, false),
    };
    let device = getsockopt(fd, sockopt::BindToDevice)?;
    let device = device.to_str().unwrap_or_default();
    if bound != Some(port) || device != uplink.unwrap_or("") {
        return Ok(None);
    }
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    Ok(Some(v6))
}

/// A non-blocking UDP socket on `port` (dual-stack where the host has IPv6), bound to
/// `uplink` when one is given, in an SO_REUSEPORT group if `reuse`; `before_bind` sets
/// what must be set first.
fn open(
    port: u16,
    uplink: Option<&str>,
    reuse: bool,
    before_bind: impl FnOnce(&OwnedFd),
) -> io::Result<(OwnedFd, bool)> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
        SockaddrIn6,
    };
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let (fd, v6) = match socket(AddressFamily::Inet6, SockType::Datagram, flags, None) {
        Ok(fd) => {
            setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
            (fd, true)
        }
        // No IPv6 on this host: IPv4 endpoints only.
        Err(Errno::EAFNOSUPPORT) => (
            socket(AddressFamily::Inet, SockType::Datagram, flags, None)?,
            false,
        ),
        Err(e) => return Err(e.into()),
    };
    if let Some(dev) = uplink {
        setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(dev))?;
    }
    if reuse {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    before_bind(&fd);
    if v6 {
        let any = std::net::SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0);
        bind(fd.as_raw_fd(), &SockaddrIn6::from(any))?;
    } else {
        let any = std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, port);
        bind(fd.as_raw_fd(), &SockaddrIn::from(any))?;
    }
    Ok((fd, v6))
}

/// The sender's address, IPv4-mapped addresses unmapped.
fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from(std::net::SocketAddrV4::from(*v4)));
    }
    let v6 = std::net::SocketAddrV6::from(*a.as_sockaddr_in6()?);
    Some(match v6.ip().to_ipv4_mapped() {
        Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
        None => SocketAddr::V6(v6),
    })
}

/// Cuts a burst of datagram lengths into runs that one GSO send can carry: equal lengths,
/// optionally closed by one shorter datagram (GSO's rule for the last segment), at most
/// `MAX_SEGMENTS` and `MAX_GSO_BYTES`. Returns (datagrams, segment size) per run, in order.
pub(crate) fn runs(lens: &[usize]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut open = false; // the last run may still grow
    for &len in lens {
        if let Some((count, seg)) = out.last_mut() {
            let fits = *count < MAX_SEGMENTS && (*count + 1) * *seg <= MAX_GSO_BYTES;
            if open && fits && len <= *seg {
                *count += 1;
                open = len == *seg;
                continue;
            }
        }
        out.push((1, len));
        open = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_another_reuseport_socket_holds_is_refused() {
        // Someone else's socket in an SO_REUSEPORT group on the port (no traffic sent).
        let (other, _) = open(0, None, true, |_| {}).unwrap();
        let local: SockaddrStorage = nix::sys::socket::getsockname(other.as_raw_fd()).unwrap();
        let port = local
            .as_sockaddr_in6()
            .map(|a| a.port())
            .or_else(|| local.as_sockaddr_in().map(|a| a.port()))
            .unwrap();
        let e = Udp::bind(port, None).err().expect("the port is taken");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
    }

    #[test]
    fn equal_datagrams_form_one_run_and_a_shorter_one_closes_it() {
        assert_eq!(runs(&[1452, 1452, 1452, 600]), vec![(4, 1452)]);
        assert_eq!(runs(&[1452, 1452, 600, 1452]), vec![(3, 1452), (1, 1452)]);
        assert_eq!(runs(&[1452, 600, 600]), vec![(2, 1452), (1, 600)]);
    }

    #[test]
    fn a_longer_datagram_starts_a_new_run() {
        assert_eq!(runs(&[148, 1452, 1452]), vec![(1, 148), (2, 1452)]);
        assert_eq!(runs(&[92, 92, 1452]), vec![(2, 92), (1, 1452)]);
    }

    #[test]
    fn runs_respect_the_kernel_limits() {
        // 45 x 1452 = 65,340 bytes fit in one GSO datagram, 46 would not.
        let r = runs(&vec![1452; 100]);
        assert_eq!(r, vec![(45, 1452), (45, 1452), (10, 1452)]);
        let r = runs(&vec![60; 150]);
        assert_eq!(r, vec![(64, 60), (64, 60), (22, 60)]);
        assert!(runs(&[]).is_empty());
    }

    #[test]
    fn every_datagram_is_in_exactly_one_run() {
        let lens = [1452, 1452, 32, 32, 1452, 148, 148, 148, 92, 1452];
        let r = runs(&lens);
        assert_eq!(r.iter().map(|(c, _)| c).sum::<usize>(), lens.len());
        let mut i = 0;
        for (count, seg) in r {
            let run = &lens[i..i + count];
            assert!(run[..count - 1].iter().all(|&l| l == seg));
            assert!(run[count - 1] <= seg);
            i += count;
        }
    }
}
