//! A TUN queue of its own for control packets (BFD, sent at SO_PRIORITY TC_PRIO_CONTROL).
//!
//! The TUN driver queues what the host sends into the tunnel in a ring per queue (its
//! `txqueuelen`, 500 packets) and drops at the tail when a ring is full: the qdisc in
//! front never holds a backlog, so a CS6 packet gets no precedence there. Behind a
//! saturating TCP flow that ring is a 4–25 ms FIFO (measured: ping through a tunnel
//! carrying iperf3), longer than a BFD detection time at a few milliseconds. A steering
//! program sends every packet of priority TC_PRIO_INTERACTIVE or above to queue 0 and the
//! rest to queues 1.. by flow hash; the tunnel reads queue 0 ahead of every data burst.
//!
//! The program is eight eBPF instructions written out below (no toolchain, no crate for
//! so little), loaded with `bpf(BPF_PROG_LOAD)` (needs CAP_BPF) and attached with
//! TUNSETSTEERINGEBPF.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `skb->priority` at or above this goes to the control queue (TC_PRIO_INTERACTIVE = 6,
/// TC_PRIO_CONTROL = 7).
const CONTROL_PRIORITY: i32 = 6;

// Offsets in `struct __sk_buff` (uapi/linux/bpf.h).
const SKB_PRIORITY: i16 = 32;
const SKB_HASH: i16 = 68;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

/// `struct bpf_insn`: opcode, destination and source registers (4 bits each), offset,
/// immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes used (class | size/op | source).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const JLT_K: u8 = 0xa5; // BPF_JMP | BPF_JLT | BPF_K
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const MOD32_K: u8 = 0x94; // BPF_ALU | BPF_MOD | BPF_K
const ADD64_K: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// The steering program for a device with `1 + data_queues` queues: returns the queue.
fn program(data_queues: u32) -> Vec<Insn> {
    let data = i32::try_from(data_queues.max(1)).unwrap_or(i32::MAX);
    vec![
        // r0 = skb->priority
        insn(LDX_MEM_W, 0, 1, SKB_PRIORITY, 0),
        // if r0 < CONTROL_PRIORITY: data queue
        insn(JLT_K, 0, 0, 2, CONTROL_PRIORITY),
        insn(MOV64_K, 0, 0, 0, 0),
        insn(EXIT, 0, 0, 0, 0),
        // r0 = 1 + skb->hash % data_queues (a zero hash, not yet computed, lands on 1)
        insn(LDX_MEM_W, 0, 1, SKB_HASH, 0),
        insn(MOD32_K, 0, 0, 0, data),
        insn(ADD64_K, 0, 0, 0, 1),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// The head of `union bpf_attr` for BPF_PROG_LOAD; the kernel reads the rest as zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

fn load(prog: &[Insn]) -> io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoad::default()
    };
    #[allow(unsafe_code)]
    // SAFETY: `attr` and what it points to (the program, the license) live across the
    // call; the size passed is the struct's, and the kernel zero-extends the rest.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoad,
            std::mem::size_of::<ProgLoad>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(unsafe_code)]
    // SAFETY: a new descriptor the kernel just gave us, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[allow(unsafe_code)]
mod ioctl {
    // TUNSETSTEERINGEBPF is declared _IOR but reads the int (the program's fd, or -1).
    nix::ioctl_read!(tunsetsteeringebpf, b'T', 224, libc::c_int);
}

fn set(tun: &OwnedFd, mut prog_fd: libc::c_int) -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: `tun` is an open TUN queue; the argument is a live int the call reads.
    unsafe { ioctl::tunsetsteeringebpf(tun.as_raw_fd(), &mut prog_fd) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Steers control packets to queue 0 of the device `tun` belongs to, the rest over the
/// `data_queues` queues after it. The device keeps the program after the fd is closed.
pub fn attach(tun: &OwnedFd, data_queues: u32) -> io::Result<()> {
    let prog = load(&program(data_queues))?;
    set(tun, prog.as_raw_fd())
}

/// Back to the kernel's own queue choice (a program left by an earlier run is removed).
pub fn detach(tun: &OwnedFd) -> io::Result<()> {
    set(tun, -1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_encodes_as_the_kernel_expects() {
        let p = program(2);
        assert_eq!(p.len(), 8);
        // r0 = *(u32 *)(r1 + 32): dst r0, src r1 in the high nibble.
        assert_eq!(p[0], insn(0x61, 0, 1, 32, 0));
        assert_eq!(p[0].regs, 0x10);
        // The jump skips the control branch's two instructions.
        assert_eq!((p[1].off, p[1].imm), (2, 6));
        assert_eq!((p[5].code, p[5].imm), (0x94, 2));
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        // Never a modulo by zero, which the verifier refuses.
        assert_eq!(program(0)[5].imm, 1);
    }
}
