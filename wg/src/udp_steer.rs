//! Network control first on the way in: the tunnel's UDP port is bound by two sockets in
//! one SO_REUSEPORT group, and a classic BPF program picks the socket for each datagram.
//! Small WireGuard data messages whose outer header is marked network control (DSCP CS6
//! or CS7, as crosslink's sender marks the datagrams that carry BFD) go to the control
//! socket, read by a real-time thread; everything else to the bulk socket, read by the
//! data plane. Without it a BFD packet waits in one queue behind whatever the bulk flows
//! left there, and for the crypto threads that drain it.
//!
//! The program runs with the datagram's payload at offset 0 and the IP header at
//! `SKF_NET_OFF` (linux/filter.h); its result is an index into the group, in the order the
//! sockets were bound: the bulk socket first, so a group without a control socket (an
//! index out of range) falls back to it. A peer that does not mark (wireguard-go,
//! boringtun) is served as before, by the bulk socket.
//!
//! Anyone can mark a datagram: the control path's size limit and its budget (see
//! `tunnel::control`) bound what a forged mark can cost.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Largest datagram steered to the control socket: WireGuard's 32 bytes of header and tag
/// and an inner packet of up to 128 bytes (BFD is 52 to 100).
pub const CONTROL_MAX: u32 = 32 + 128;

/// Index of the control socket in the group (bound second).
const CONTROL_INDEX: u32 = 1;

// Classic BPF opcodes (linux/bpf_common.h).
const LD_W_LEN: u16 = 0x80; // BPF_LD | BPF_W | BPF_LEN
const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
const RSH_K: u16 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
/// SKF_NET_OFF: loads relative to the network header.
const NET: u32 = (-0x10_0000i32) as u32;
/// WireGuard's transport data message type.
const DATA_MESSAGE: u32 = 4;

const fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The program; jumps count instructions after the next one.
fn program() -> [libc::sock_filter; 15] {
    [
        /* 0 */ op(LD_W_LEN, 0, 0, 0),
        /* 1 */ op(JGT_K, 11, 0, CONTROL_MAX), // too large: bulk
        /* 2 */ op(LD_B_ABS, 0, 0, 0),
        /* 3 */ op(JEQ_K, 0, 9, DATA_MESSAGE), // a handshake message: bulk
        /* 4 */ op(LD_B_ABS, 0, 0, NET),
        /* 5 */ op(RSH_K, 0, 0, 4),
        /* 6 */ op(JEQ_K, 3, 0, 6),
        // IPv4: DSCP 48 and above are the top two bits of the TOS byte.
        /* 7 */
        op(LD_B_ABS, 0, 0, NET + 1),
        /* 8 */ op(AND_K, 0, 0, 0xc0),
        /* 9 */ op(JEQ_K, 4, 3, 0xc0),
        // IPv6: the traffic class's top two bits are bits 3 and 2 of the first byte.
        /* 10 */
        op(LD_B_ABS, 0, 0, NET),
        /* 11 */ op(AND_K, 0, 0, 0x0c),
        /* 12 */ op(JEQ_K, 1, 0, 0x0c),
        /* 13 */ op(RET_K, 0, 0, 0),
        /* 14 */ op(RET_K, 0, 0, CONTROL_INDEX),
    ]
}

/// Attaches the program to the SO_REUSEPORT group `fd` is in (or will be in, once bound).
pub fn attach(fd: impl AsFd) -> io::Result<()> {
    let mut insns = program();
    let prog = libc::sock_fprog {
        len: insns.len() as u16,
        filter: insns.as_mut_ptr(),
    };
    #[allow(unsafe_code)]
    // SAFETY: `prog` points at `insns`, both alive for the call; the kernel copies the
    // program and keeps no pointer to either.
    let r = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::from_ref(&prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every jump lands inside the program and every path ends in a return: the kernel's
    /// checker would refuse it otherwise, at attach time rather than here.
    #[test]
    fn jumps_stay_inside_and_every_path_returns() {
        let p = program();
        for (pc, i) in p.iter().enumerate() {
            if i.code & 0x07 == 0x05 {
                assert!(pc + 1 + usize::from(i.jt) < p.len(), "jt at {pc}");
                assert!(pc + 1 + usize::from(i.jf) < p.len(), "jf at {pc}");
            }
        }
        assert_eq!(p[p.len() - 1].code, RET_K);
        assert_eq!(p[p.len() - 2].code, RET_K);
        // Both returns are reached from the DSCP tests, the bulk one from the filters.
        assert_eq!((1 + 1 + p[1].jt as usize), 13);
        assert_eq!((3 + 1 + p[3].jf as usize), 13);
        assert_eq!(
            (9 + 1 + p[9].jt as usize, 9 + 1 + p[9].jf as usize),
            (14, 13)
        );
        assert_eq!(
            (12 + 1 + p[12].jt as usize, 12 + 1 + p[12].jf as usize),
            (14, 13)
        );
        assert_eq!(6 + 1 + p[6].jt as usize, 10);
    }
}
