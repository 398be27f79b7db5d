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
/// Each packet read or written behind a virtio-net header (`offload::vnet`).
const IFF_VNET_HDR: i16 = 0x4000;

/// TUNSETOFFLOAD bits (linux/if_tun.h): what the kernel may hand over unfinished.
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_USO4: libc::c_uint = 0x20;
const TUN_F_USO6: libc::c_uint = 0x40;

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
    nix::ioctl_write_int!(tunsetoffload, b'T', 208);
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
/// exist, adopting it if it does. The fds are non-blocking. With `vnet`, packets come and
/// go behind a virtio-net header; a device whose queues are still held elsewhere (by a
/// previous run, through the descriptor store) keeps the mode it has, so ask `vnet_hdr`
/// what a queue really does.
pub fn open_with(name: &str, queues: usize, vnet: bool) -> io::Result<Vec<OwnedFd>> {
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
            flags: IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | if vnet { IFF_VNET_HDR } else { 0 },
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

/// As `open_with`, without the virtio-net header.
pub fn open(name: &str, queues: usize) -> io::Result<Vec<OwnedFd>> {
    open_with(name, queues, false)
}

/// Whether the device a queue is attached to puts a virtio-net header before each packet
/// (the device's mode, set by the first queue attached).
pub fn vnet_hdr(fd: &impl AsRawFd) -> io::Result<bool> {
    Ok(getiff(fd)?.flags & IFF_VNET_HDR != 0)
}

/// Lets the kernel hand over TCP (and, where the kernel has it, UDP) super-packets with
/// their checksums left to us: one read per burst of a flow instead of one per packet.
/// For a device with the virtio-net header only.
pub fn enable_offloads(fd: &impl AsRawFd) -> io::Result<()> {
    let tcp = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    let set = |bits: libc::c_uint| {
        #[allow(unsafe_code)]
        // SAFETY: plain integer argument on an attached TUN fd.
        unsafe { ioctl::tunsetoffload(fd.as_raw_fd(), bits as _) }.map_err(io::Error::from)
    };
    // UDP segmentation came with Linux 6.2: without it, TCP alone.
    set(tcp | TUN_F_USO4 | TUN_F_USO6).or_else(|_| set(tcp))?;
    Ok(())
}

fn getiff(fd: &impl AsRawFd) -> io::Result<IfReq> {
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _rest: [0; 22],
    };
    #[allow(unsafe_code)]
    // SAFETY: `req` is a properly laid out ifreq that lives across the call; the kernel
    // writes the name and flags into it (and fails on anything but an attached TUN fd).
    unsafe { ioctl::tungetiff(fd.as_raw_fd(), &mut req) }.map_err(io::Error::from)?;
    Ok(req)
}

/// The interface a TUN descriptor is attached to, if it is one: how a descriptor handed
/// over by a previous run is matched to its tunnel.
pub fn attached_to(fd: &impl AsRawFd) -> io::Result<String> {
    let req = getiff(fd)?;
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
