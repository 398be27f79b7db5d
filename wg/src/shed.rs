//! What a tunnel drops when it receives more than the host can decrypt and deliver.
//!
//! Such a tunnel queues in its UDP socket, and the kernel drops at the tail when the
//! buffer is full, whatever it drops. Measured behind iperf3, the BFD inside the tunnel
//! waited 4-25 ms and was lost with the bulk, and false Downs took the tunnel out of
//! service for being busy. Here the queue is bounded by time instead (each datagram
//! carries its kernel receive time): once datagrams have waited longer than `MAX_WAIT`,
//! full-sized ones are dropped unread (no decryption, so the backlog clears fast) and
//! small ones are decrypted, but only network control (DSCP CS6/CS7, the class BFD is sent
//! in) reaches the host; handshakes and keepalives are WireGuard's own and always
//! processed. The bulk flows see the loss they adapt to; the probes keep their timing.
//!
//! Late is not yet overloaded: on a busy host the receiving task itself waits for a CPU
//! now and then (a few ms on a kernel that does not preempt), and the datagrams that queued
//! meanwhile come out late though the tunnel keeps up. Shedding those lost single packets
//! of idle flows (the lab demo's probe lost 0-4 per run while routes were reprogrammed).
//! So, as CoDel does, the tunnel sheds only once the queue has stayed late for
//! `OVERLOAD_AFTER` of its own processing time: a stall's backlog is read within a
//! fraction of a millisecond and resets the clock, a standing queue does not. A queue late
//! again soon after shedding stopped is the same overload and is shed at once.

use std::time::{Duration, Instant};

/// Longest a datagram may wait in the socket before the tunnel counts as overloaded.
pub const MAX_WAIT: Duration = Duration::from_millis(2);
/// Datagrams up to this size are decrypted even when late: every handshake message (at
/// most 148 bytes) and data messages with an inner packet of up to 128 bytes, which is
/// where BFD is (52 to 100 bytes) among TCP acknowledgements and keepalives.
pub const SMALL_DATAGRAM: usize = 32 + 128;

/// How long the queue must stay late before the tunnel counts as overloaded: longer than
/// the backlog of a scheduling stall takes to read, short against the detection time of
/// the BFD inside the tunnel (what the shedding protects).
pub const OVERLOAD_AFTER: Duration = Duration::from_millis(10);
/// A queue late again within this time after shedding stopped is still overloaded.
pub const RESUME_WITHIN: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Not late (or its wait unknown): processed as usual.
    Deliver,
    /// Late but small: decrypted; delivered only if it is network control.
    ControlOnly,
    /// Late and large: dropped unread.
    Shed,
}

/// One receiving task's view of its queue. Sans-IO: the caller says what time it is.
#[derive(Debug, Default)]
pub struct Shedder {
    /// When the first late datagram of the current late spell was read.
    late_since: Option<Instant>,
    shedding: bool,
    stopped_at: Option<Instant>,
}

impl Shedder {
    /// What to do with a datagram of `len` bytes read at `now` after it `waited` in the
    /// socket (unknown when the kernel gave no receive time).
    pub fn admit(&mut self, now: Instant, waited: Option<Duration>, len: usize) -> Admit {
        if waited.is_none_or(|w| w <= MAX_WAIT) {
            self.late_since = None;
            if self.shedding {
                self.shedding = false;
                self.stopped_at = Some(now);
            }
            return Admit::Deliver;
        }
        let since = *self.late_since.get_or_insert(now);
        if !self.shedding {
            let again = self
                .stopped_at
                .is_some_and(|t| now.saturating_duration_since(t) <= RESUME_WITHIN);
            self.shedding = again || now.saturating_duration_since(since) >= OVERLOAD_AFTER;
        }
        if !self.shedding {
            Admit::Deliver
        } else if len > SMALL_DATAGRAM {
            Admit::Shed
        } else {
            Admit::ControlOnly
        }
    }
}

/// Whether an inner IPv4 or IPv6 packet is marked network control (DSCP 48 and up).
pub fn is_network_control(packet: &[u8]) -> bool {
    network_control_tos(packet).is_some()
}

/// For a network control packet (DSCP CS6 or above), the TOS byte (traffic class) that
/// carries its DSCP on a header outside it, ECN bits clear.
pub fn network_control_tos(packet: &[u8]) -> Option<u8> {
    let dscp = match packet.first().map(|b| b >> 4) {
        Some(4) => packet.get(1).map(|tos| tos >> 2),
        Some(6) => packet
            .get(1)
            .map(|b1| (((packet[0] & 0x0f) << 4) | (b1 >> 4)) >> 2),
        _ => None,
    };
    dscp.filter(|&d| d >= 48).map(|d| d << 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A shedder that has seen the queue late for `OVERLOAD_AFTER`: overloaded.
    fn overloaded(t0: Instant) -> Shedder {
        let mut s = Shedder::default();
        let late = Some(MAX_WAIT + ms(1));
        assert_eq!(s.admit(t0, late, 1452), Admit::Deliver);
        assert_eq!(s.admit(t0 + OVERLOAD_AFTER, late, 1452), Admit::Shed);
        s
    }

    #[test]
    fn overloaded_it_sheds_by_size() {
        let t0 = Instant::now();
        let mut s = overloaded(t0);
        let now = t0 + OVERLOAD_AFTER + ms(1);
        let late = Some(MAX_WAIT + Duration::from_micros(1));
        // A full-sized data message (1420-byte inner packet).
        assert_eq!(s.admit(now, late, 1452), Admit::Shed);
        // BFD (a 52-byte IPv4 packet padded to 64), a handshake initiation, a keepalive.
        let long = Some(Duration::from_secs(1));
        for small in [32 + 64, 148, 32, SMALL_DATAGRAM] {
            assert_eq!(s.admit(now, long, small), Admit::ControlOnly, "{small}");
        }
        assert_eq!(s.admit(now, long, SMALL_DATAGRAM + 1), Admit::Shed);
        // A datagram in time ends it.
        assert_eq!(s.admit(now, Some(MAX_WAIT), 1452), Admit::Deliver);
        assert_eq!(s.admit(now, None, 1452), Admit::Deliver);
    }

    #[test]
    fn a_stall_of_the_reader_sheds_nothing() {
        // The task was away for 15 ms: what queued meanwhile is late, but read within a
        // millisecond, and the next datagram is in time.
        let t0 = Instant::now();
        let mut s = Shedder::default();
        for i in 0..15u64 {
            let now = t0 + Duration::from_micros(50 * i);
            assert_eq!(s.admit(now, Some(ms(15 - i)), 1452), Admit::Deliver, "{i}");
        }
        assert_eq!(s.admit(t0 + ms(1), Some(ms(0)), 96), Admit::Deliver);
        // A second stall long after: the same.
        assert_eq!(s.admit(t0 + ms(500), Some(ms(8)), 96), Admit::Deliver);
    }

    #[test]
    fn a_queue_late_again_soon_after_is_shed_at_once() {
        let t0 = Instant::now();
        let mut s = overloaded(t0);
        let stop = t0 + OVERLOAD_AFTER + ms(1);
        assert_eq!(s.admit(stop, Some(ms(1)), 1452), Admit::Deliver);
        let late = Some(MAX_WAIT + ms(1));
        assert_eq!(s.admit(stop + ms(20), late, 1452), Admit::Shed);
        // Long after the last overload, late is given its time again.
        assert_eq!(s.admit(stop + ms(21), Some(ms(0)), 1452), Admit::Deliver);
        let later = stop + ms(21) + RESUME_WITHIN + ms(1);
        assert_eq!(s.admit(later, late, 1452), Admit::Deliver);
    }

    #[test]
    fn network_control_from_the_header() {
        // IPv4, TOS 0xc0 (CS6) as BFD sends it; 0xe0 (CS7); 0xb8 (EF) is not control.
        assert!(is_network_control(&[0x45, 0xc0, 0, 52]));
        assert!(is_network_control(&[0x45, 0xe0, 0, 52]));
        assert!(!is_network_control(&[0x45, 0xb8, 0, 52]));
        assert!(!is_network_control(&[0x45, 0x00, 0, 52]));
        // IPv6, traffic class 0xc0: version 6, TC split over the first two bytes.
        assert!(is_network_control(&[0x6c, 0x00, 0, 0]));
        assert!(!is_network_control(&[0x60, 0x00, 0, 0]));
        assert!(!is_network_control(&[0x6b, 0x80, 0, 0]));
        // Truncated or not IP.
        assert!(!is_network_control(&[]));
        assert!(!is_network_control(&[0x45]));
        assert!(!is_network_control(&[0x00, 0xc0]));
    }
}
