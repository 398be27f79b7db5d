//! TCP socket options BGP sessions need and neither std nor tokio set: TCP-MD5 signatures
//! (RFC 2385) and GTSM (RFC 5082), next to binding to the line's interface.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use tokio::net::TcpSocket;

/// linux/tcp.h `TCP_MD5SIG_MAXKEYLEN`.
pub const MD5_MAX_KEY: usize = 80;

/// linux/tcp.h `struct tcp_md5sig`; neither libc nor nix define it.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MD5_MAX_KEY],
}

fn sockaddr_storage(addr: IpAddr) -> libc::sockaddr_storage {
    // Zeroed storage with the family-specific address written over its start.
    let mut ss: libc::sockaddr_storage = zeroed_storage();
    match addr {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.octets()),
                },
                sin_zero: [0; 8],
            };
            write_prefix(&mut ss, &sin);
        }
        IpAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                sin6_scope_id: 0,
            };
            write_prefix(&mut ss, &sin6);
        }
    }
    ss
}

#[allow(unsafe_code)]
fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

#[allow(unsafe_code)]
fn write_prefix<T: Copy>(ss: &mut libc::sockaddr_storage, v: &T) {
    assert!(std::mem::size_of::<T>() <= std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: T is a sockaddr_in or sockaddr_in6, smaller than sockaddr_storage (checked
    // above) whose alignment is the largest of all socket address types; the write stays
    // within `ss`.
    unsafe { std::ptr::write(ss as *mut libc::sockaddr_storage as *mut T, *v) }
}

#[allow(unsafe_code)]
fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Installs (or with an empty key, removes) the TCP-MD5 key for `peer` on `fd`. On a
/// listening socket it admits that peer's signed SYNs.
pub fn set_md5(fd: &impl AsRawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MD5_MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP-MD5 key longer than 80 bytes",
        ));
    }
    let mut sig = TcpMd5Sig {
        addr: sockaddr_storage(peer),
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MD5_MAX_KEY],
    };
    sig.key[..key.len()].copy_from_slice(key);
    setsockopt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// RFC 5082 GTSM: send with TTL (hop limit) 255 and accept only 254 or more, so only a
/// directly connected router can reach the session.
pub fn set_gtsm(fd: &impl AsRawFd, v6: bool) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    let ttl: libc::c_int = 255;
    let min: libc::c_int = 254;
    if v6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &ttl)?;
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &min)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &ttl)?;
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_MINTTL, &min)
    }
}

/// A listening IPv6 socket takes IPv6 only; IPv4 has a listener of its own.
pub fn set_v6only(fd: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    setsockopt(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &on)
}

/// Options for one session's connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketOptions {
    pub local: Option<IpAddr>,
    pub interface: Option<String>,
    pub md5_key: Option<Vec<u8>>,
    pub gtsm: bool,
}

/// A socket ready to connect to `peer`, with every option set before the SYN leaves.
pub fn connect_socket(peer: IpAddr, opts: &SocketOptions) -> io::Result<TcpSocket> {
    let sock = if peer.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    if let Some(iface) = &opts.interface {
        sock.bind_device(Some(iface.as_bytes()))?;
    }
    if let Some(key) = &opts.md5_key {
        set_md5(&sock, peer, key)?;
    }
    if opts.gtsm {
        set_gtsm(&sock, peer.is_ipv6())?;
    }
    if let Some(local) = opts.local {
        sock.bind(SocketAddr::new(local, 0))?;
    }
    sock.set_nodelay(true)?;
    Ok(sock)
}
