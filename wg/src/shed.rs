//! What a tunnel drops when it receives more than the host can decrypt and deliver.
//!
//! Such a tunnel queues in its UDP socket, and the kernel drops at the tail when the
//! buffer is full, whatever it drops. Here the queue is managed by time instead (each
//! datagram carries its kernel receive time), by CoDel's rules (RFC 8289): once datagrams
//! have waited longer than `MAX_WAIT` (the target) for `OVERLOAD_AFTER` (the interval) of
//! the tunnel's own processing time, one datagram is dropped, the next one an interval
//! later, then interval/√2, interval/√3 and so on, until one comes out in time. A full-sized datagram
//! is dropped unread (no decryption); a small one is decrypted, and delivered only if it
//! is network control (DSCP CS6/CS7, the class BFD is sent in); handshakes and keepalives
//! are WireGuard's own and always processed.
//!
//! Late is not yet overloaded: on a busy host the receiving task itself waits for a CPU
//! now and then (a few ms on a kernel that does not preempt), and the datagrams that
//! queued meanwhile come out late though the tunnel keeps up; a stall's backlog is read
//! within a fraction of a millisecond and resets the clock, a standing queue does not.
//!
//! Why one at a time: this module first dropped every late full-sized datagram, to clear
//! the backlog in front of the BFD inside the tunnel at once. Measured with one iperf3 TCP
//! flow at 3.4 Gbit/s, that shed 2.1 % of the flow's datagrams in bursts (186,837
//! retransmissions in 25 s) and left 12 % of the machine idle while TCP recovered. BFD
//! now has a path of its own (`udp_steer`, `tunnel::control`), and a flow needs one loss
//! per round trip to slow down, not a burst of them. The interval is short (10 ms, where
//! CoDel's default is 100 ms) because the socket's buffer holds only ~2 ms at full rate:
//! a longer one would leave the kernel's blind tail drop to act first.

use std::time::{Duration, Instant};

/// Longest a datagram may wait in the socket before the queue counts as late (CoDel's
/// target).
pub const MAX_WAIT: Duration = Duration::from_millis(2);
/// Datagrams up to this size are decrypted even when dropped: every handshake message (at
/// most 148 bytes) and data messages with an inner packet of up to 128 bytes, which is
/// where BFD is (52 to 100 bytes) among TCP acknowledgements and keepalives.
pub const SMALL_DATAGRAM: usize = 32 + 128;

/// How long the queue must stay late before the tunnel counts as overloaded, and the
/// first gap between drops (CoDel's interval).
pub const OVERLOAD_AFTER: Duration = Duration::from_millis(10);
/// An overload that starts within this time of the last drop resumes near the drop rate
/// that ended the last one (CoDel: 16 intervals).
const RECENT: Duration = Duration::from_millis(160);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Processed as usual.
    Deliver,
    /// Dropped if it is not network control: decrypted, delivered only if it is.
    ControlOnly,
    /// Dropped unread.
    Shed,
}

/// One receiving task's view of its queue. Sans-IO: the caller says what time it is.
#[derive(Debug, Default)]
pub struct Shedder {
    /// When a queue late since then counts as overloaded (CoDel's first_above_time).
    overloaded_at: Option<Instant>,
    dropping: bool,
    /// Drops in this overload, at the start of it, and when the next is due.
    count: u32,
    first_count: u32,
    drop_next: Option<Instant>,
}

impl Shedder {
    /// What to do with a datagram of `len` bytes read at `now` after it `waited` in the
    /// socket (unknown when the kernel gave no receive time).
    pub fn admit(&mut self, now: Instant, waited: Option<Duration>, len: usize) -> Admit {
        if waited.is_none_or(|w| w <= MAX_WAIT) {
            self.overloaded_at = None;
            self.dropping = false;
            return Admit::Deliver;
        }
        let overloaded_at = *self.overloaded_at.get_or_insert(now + OVERLOAD_AFTER);
        if !self.dropping {
            if now < overloaded_at {
                return Admit::Deliver;
            }
            self.dropping = true;
            let recent = self
                .drop_next
                .is_some_and(|t| now.saturating_duration_since(t) < RECENT);
            let since_first = self.count.saturating_sub(self.first_count);
            self.count = if recent && since_first > 1 {
                since_first
            } else {
                1
            };
            self.first_count = self.count;
            self.drop_next = Some(control_law(now, self.count));
            return drop(len);
        }
        match self.drop_next {
            Some(due) if now >= due => {
                self.count += 1;
                self.drop_next = Some(control_law(due, self.count));
                drop(len)
            }
            _ => Admit::Deliver,
        }
    }
}

/// When the next drop is due after one at `t`, the `count`th of this overload.
fn control_law(t: Instant, count: u32) -> Instant {
    t + OVERLOAD_AFTER.div_f64(f64::from(count.max(1)).sqrt())
}

fn drop(len: usize) -> Admit {
    if len > SMALL_DATAGRAM {
        Admit::Shed
    } else {
        Admit::ControlOnly
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

    const LATE: Option<Duration> = Some(Duration::from_millis(3));

    /// Datagrams of `len` bytes, late, every `gap` from `from` until `until`: what was done
    /// with each, by time.
    fn feed(
        s: &mut Shedder,
        from: Instant,
        until: Instant,
        gap: Duration,
        len: usize,
    ) -> Vec<(Duration, Admit)> {
        let mut out = Vec::new();
        let mut now = from;
        while now < until {
            out.push((now - from, s.admit(now, LATE, len)));
            now += gap;
        }
        out
    }

    fn dropped(v: &[(Duration, Admit)]) -> Vec<Duration> {
        v.iter()
            .filter(|(_, a)| *a != Admit::Deliver)
            .map(|(t, _)| *t)
            .collect()
    }

    #[test]
    fn a_standing_queue_loses_one_datagram_then_more_and_more_often() {
        let t0 = Instant::now();
        let mut s = Shedder::default();
        let v = feed(&mut s, t0, t0 + ms(60), Duration::from_micros(100), 1452);
        let d = dropped(&v);
        // Late for the interval first, then one drop, the next an interval later, then
        // interval/√2, interval/√3, ...
        assert_eq!(d[0], OVERLOAD_AFTER);
        let gaps: Vec<f64> = d
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
            .collect();
        for (i, g) in gaps.iter().enumerate() {
            let want = 10.0 / ((i + 1) as f64).sqrt();
            assert!(
                (g - want).abs() <= 0.1,
                "gap {i}: {g:.2} ms, want {want:.2}"
            );
        }
        // ... a handful in 50 ms of overload out of 500 datagrams, never a burst.
        assert!((6..=12).contains(&d.len()), "{} drops", d.len());
        assert!(v.iter().filter(|(_, a)| *a == Admit::Deliver).count() > 480);
    }

    #[test]
    fn what_a_drop_lands_on_decides_how() {
        let t0 = Instant::now();
        let mut s = Shedder::default();
        assert_eq!(s.admit(t0, LATE, 1452), Admit::Deliver);
        // BFD-sized, a handshake initiation, a keepalive: decrypted, only control passes.
        for small in [32 + 64, 148, 32, SMALL_DATAGRAM] {
            let mut s2 = Shedder::default();
            assert_eq!(s2.admit(t0, LATE, small), Admit::Deliver);
            assert_eq!(
                s2.admit(t0 + OVERLOAD_AFTER, LATE, small),
                Admit::ControlOnly,
                "{small}"
            );
        }
        assert_eq!(
            s.admit(t0 + OVERLOAD_AFTER, LATE, SMALL_DATAGRAM + 1),
            Admit::Shed
        );
        // A datagram in time ends the overload; so does one whose wait is unknown.
        assert_eq!(s.admit(t0 + ms(30), Some(MAX_WAIT), 1452), Admit::Deliver);
        assert_eq!(s.admit(t0 + ms(31), LATE, 1452), Admit::Deliver);
        assert_eq!(s.admit(t0 + ms(32), None, 1452), Admit::Deliver);
        assert_eq!(s.admit(t0 + ms(33), LATE, 1452), Admit::Deliver);
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
    fn an_overload_soon_after_the_last_resumes_its_drop_rate() {
        let t0 = Instant::now();
        let mut s = Shedder::default();
        let first = dropped(&feed(
            &mut s,
            t0,
            t0 + ms(100),
            Duration::from_micros(100),
            1452,
        ));
        assert_eq!(s.admit(t0 + ms(100), Some(ms(0)), 1452), Admit::Deliver);
        // Late again 20 ms later: the interval first, then drops as often as they had
        // become, not from one per interval again.
        let t1 = t0 + ms(120);
        let again = dropped(&feed(
            &mut s,
            t1,
            t1 + ms(40),
            Duration::from_micros(100),
            1452,
        ));
        let last_gap = first[first.len() - 1] - first[first.len() - 2];
        let resumed_gap = again[1] - again[0];
        assert!(
            resumed_gap <= last_gap + ms(1),
            "{resumed_gap:?} vs {last_gap:?}"
        );
        // Long after, an overload starts over at one drop per interval.
        let t2 = t1 + ms(40) + RECENT + ms(200);
        assert_eq!(s.admit(t2 - ms(1), Some(ms(0)), 1452), Admit::Deliver);
        let fresh = dropped(&feed(
            &mut s,
            t2,
            t2 + ms(25),
            Duration::from_micros(100),
            1452,
        ));
        assert_eq!(fresh[1] - fresh[0], OVERLOAD_AFTER);
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
