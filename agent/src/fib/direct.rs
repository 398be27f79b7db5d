//! Nexthop requests on a netlink socket used synchronously, for the switch. The kernel
//! carries out an rtnetlink request inside the sender's `sendmsg` and queues its
//! acknowledgement before the call returns, so reading it at once never waits. Through
//! netlink-proto's connection task the same request is two hand-offs between tasks
//! (request to the connection, acknowledgement back), each waiting behind whatever else
//! the control runtime runs at that moment on its one CPU: the switch's time then grew
//! with the work the failure itself brings, which grows with the table.
//!
//! Blocking a runtime thread here costs the kernel's own time for the request (tens of
//! µs, or the wait for `rtnl_lock` when another daemon programs routes, which the switch
//! waits for either way); a receive timeout bounds it.

use std::io;
use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::nexthop::Message;
use super::{refused, FibError};

/// Longest wait for the kernel's answer: far beyond any request's time, short enough
/// that a lost answer only delays the switch to the next reconcile.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// Room for a datagram of answers: an acknowledgement echoes the request's header only.
const RECV_BUF: usize = 16 * 1024;

pub struct Direct {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Direct {
    pub fn open() -> io::Result<Direct> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        nix::sys::socket::setsockopt(
            &sock,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(ANSWER_WITHIN.as_secs() as _, 0),
        )?;
        Ok(Direct {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Sends `msg` and reads the kernel's answer to it: Ok on its acknowledgement, the
    /// refusal (`what` names the request in it) otherwise.
    pub fn request(&mut self, msg: Message, flags: u16, what: &str) -> Result<(), FibError> {
        self.seq = self.seq.wrapping_add(1);
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut out = vec![0; req.buffer_len()];
        req.serialize(&mut out);
        self.sock.send(&out, 0).map_err(|e| transport(what, &e))?;
        loop {
            self.buf.clear();
            self.sock
                .recv(&mut self.buf, 0)
                .map_err(|e| transport(what, &e))?;
            if let Some(answer) = answer_to(&self.buf, self.seq, what) {
                return answer;
            }
        }
    }
}

fn transport(what: &str, e: &io::Error) -> FibError {
    let e = if e.kind() == io::ErrorKind::WouldBlock {
        format!("no answer within {ANSWER_WITHIN:?}")
    } else {
        e.to_string()
    };
    FibError::Transport(format!("{what}: {e}"))
}

/// The answer to request `seq` in a datagram, if it holds one. Answers to earlier
/// requests (one that timed out, answered late) are skipped.
fn answer_to(mut datagram: &[u8], seq: u32, what: &str) -> Option<Result<(), FibError>> {
    while datagram.len() >= 16 {
        let len = u32::from_ne_bytes(datagram[..4].try_into().ok()?) as usize;
        if len < 16 || len > datagram.len() {
            return Some(Err(FibError::Transport(format!(
                "{what}: a malformed netlink answer ({len} bytes of {})",
                datagram.len()
            ))));
        }
        match NetlinkMessage::<Message>::deserialize(&datagram[..len]) {
            Ok(m) if m.header.sequence_number == seq => {
                if let NetlinkPayload::Error(e) = m.payload {
                    return Some(refused(what, &e));
                }
            }
            Ok(_) => {}
            Err(e) => {
                return Some(Err(FibError::Transport(format!(
                    "{what}: an undecodable netlink answer: {e}"
                ))))
            }
        }
        // Messages are aligned to 4 bytes.
        datagram = datagram.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An NLMSG_ERROR answer to `seq` with `code` (0: an acknowledgement), echoing a
    /// 16-byte request header, as the kernel sends it.
    fn answer(seq: u32, code: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes()); // length
        m.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        m.extend_from_slice(&0u16.to_ne_bytes()); // flags
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&4242u32.to_ne_bytes()); // port
        m.extend_from_slice(&code.to_ne_bytes());
        m.extend_from_slice(&[0; 16]); // the request's header
        m
    }

    #[test]
    fn an_acknowledgement_of_this_request_is_ok() {
        assert!(matches!(
            answer_to(&answer(7, 0), 7, "nexthop 1"),
            Some(Ok(()))
        ));
    }

    #[test]
    fn a_refusal_carries_the_kernel_error() {
        let r = answer_to(&answer(7, -libc_enoent()), 7, "nexthop 1");
        match r {
            Some(Err(FibError::Kernel { what, err })) => {
                assert_eq!(what, "nexthop 1");
                assert_eq!(err.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_late_answer_to_an_earlier_request_is_skipped() {
        assert!(answer_to(&answer(6, -libc_enoent()), 7, "nexthop 1").is_none());
        let mut two = answer(6, 0);
        two.extend(answer(7, 0));
        assert!(matches!(answer_to(&two, 7, "nexthop 1"), Some(Ok(()))));
    }

    #[test]
    fn a_truncated_answer_is_an_error_not_a_panic() {
        let mut a = answer(7, 0);
        a.truncate(20);
        assert!(matches!(
            answer_to(&a, 7, "nexthop 1"),
            Some(Err(FibError::Transport(_)))
        ));
        assert!(answer_to(&a[..10], 7, "nexthop 1").is_none());
    }

    fn libc_enoent() -> i32 {
        nix::errno::Errno::ENOENT as i32
    }

    /// A request through the real kernel that cannot change it: id 0 is no nexthop's,
    /// so the kernel refuses the delete (EINVAL; EPERM without CAP_NET_ADMIN).
    #[test]
    fn the_kernel_answers_a_request_synchronously() {
        let mut d = Direct::open().expect("a netlink socket");
        for _ in 0..3 {
            match d.request(Message::Del(0), 0, "deleting nexthop 0") {
                Err(FibError::Kernel { err, .. }) => assert!(
                    [nix::errno::Errno::EINVAL, nix::errno::Errno::EPERM]
                        .iter()
                        .any(|e| err.raw_os_error() == Some(*e as i32)),
                    "{err}"
                ),
                other => panic!("{other:?}"),
            }
        }
    }
}
