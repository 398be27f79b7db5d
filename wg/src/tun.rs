//! Persistent, multi-queue TUN devices. Persistent so that the interface, its addresses and
//! the routes through it outlive an agent restart (the agent adopts it by name on start);
//! multi-queue so that each core can read and write its own queue.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

const IFF_TUN: i16 = 0x0001;
const IFF_NO_PI: i16 = 0x1000;
const IFF_MULTI_QUEUE: i16 = 0x0100;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags at the start of the
/// 24-byte union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: i16,
    _rest: [u8; 22],
}

#[allow(unsafe_code)]
mod ioctl {
    // TUNSETIFF is declared with an `int` argument but takes a pointer to an ifreq.
    nix::ioctl_write_ptr_bad!(
        tunsetiff,
        nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
        super::IfReq
    );
    nix::ioctl_write_int!(tunsetpersist, b'T', 203);
    // TUNGETIFF is declared with an `unsigned int` argument and fills an ifreq.
    nix::ioctl_read_bad!(
        tungetiff,
        nix::request_code_read!(b'T', 210, std::mem::size_of::<libc::c_uint>()),
        super::IfReq
    );
}

/// Checks an interface name the way the kernel will (at most 15 bytes, no `/`, no space).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && !name.contains(['/', ' ', '\0'])
        && name != "."
        && name != ".."
}

/// Opens `queues` queues of TUN device `name`, creating it (persistent) if it does not
/// exist, adopting it if it does. The fds are non-blocking.
pub fn open(name: &str, queues: usize) -> io::Result<Vec<OwnedFd>> {
    if !valid_name(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not a valid interface name"),
        ));
    }
    let mut fds = Vec::with_capacity(queues);
    for _ in 0..queues.max(1) {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("opening /dev/net/tun for {name}: {e} (mode 0666, as udev makes it, and the unit's DeviceAllow)"),
                )
            })?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE,
            _rest: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        #[allow(unsafe_code)]
        // SAFETY: the fd is an open /dev/net/tun; `req` is a properly laid out ifreq that
        // lives across the call, which reads it and writes back the name.
        unsafe { ioctl::tunsetiff(file.as_raw_fd(), &req) }.map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("TUNSETIFF {name}: {e} (an interface of another type with this name?)"),
            )
        })?;
        fds.push(OwnedFd::from(file));
    }
    #[allow(unsafe_code)]
    // SAFETY: plain integer argument on an fd attached to the device above.
    unsafe { ioctl::tunsetpersist(fds[0].as_raw_fd(), 1) }.map_err(io::Error::from)?;
    Ok(fds)
}

/// The interface a TUN descriptor is attached to, if it is one: how a descriptor handed
/// over by a previous run is matched to its tunnel.
pub fn attached_to(fd: &impl AsRawFd) -> io::Result<String> {
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _rest: [0; 22],
    };
    #[allow(unsafe_code)]
    // SAFETY: `req` is a properly laid out ifreq that lives across the call; the kernel
    // writes the name and flags into it (and fails on anything but an attached TUN fd).
    unsafe { ioctl::tungetiff(fd.as_raw_fd(), &mut req) }.map_err(io::Error::from)?;
    let len = req
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(req.name.len());
    Ok(String::from_utf8_lossy(&req.name[..len]).into_owned())
}

/// Deletes a persistent TUN device (the agent never does this on its own: tunnels stay
/// across restarts; used when a tunnel leaves the config and by tests).
pub fn remove(name: &str) -> io::Result<()> {
    let fds = open(name, 1)?;
    #[allow(unsafe_code)]
    // SAFETY: as in `open`.
    unsafe { ioctl::tunsetpersist(fds[0].as_raw_fd(), 0) }.map_err(io::Error::from)?;
    Ok(())
}
