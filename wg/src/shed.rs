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

use std::time::Duration;

/// Longest a datagram may wait in the socket before the tunnel counts as overloaded.
pub const MAX_WAIT: Duration = Duration::from_millis(2);
/// Datagrams up to this size are decrypted even when late: every handshake message (at
/// most 148 bytes) and data messages with an inner packet of up to 128 bytes, which is
/// where BFD is (52 to 100 bytes) among TCP acknowledgements and keepalives.
pub const SMALL_DATAGRAM: usize = 32 + 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Not late (or its wait unknown): processed as usual.
    Deliver,
    /// Late but small: decrypted; delivered only if it is network control.
    ControlOnly,
    /// Late and large: dropped unread.
    Shed,
}

pub fn admit(waited: Option<Duration>, len: usize) -> Admit {
    if waited.is_none_or(|w| w <= MAX_WAIT) {
        Admit::Deliver
    } else if len > SMALL_DATAGRAM {
        Admit::Shed
    } else {
        Admit::ControlOnly
    }
}

/// Whether an inner IPv4 or IPv6 packet is marked network control (DSCP 48 and up).
pub fn is_network_control(packet: &[u8]) -> bool {
    let dscp = match packet.first().map(|b| b >> 4) {
        Some(4) => packet.get(1).map(|tos| tos >> 2),
        Some(6) => packet
            .get(1)
            .map(|b1| (((packet[0] & 0x0f) << 4) | (b1 >> 4)) >> 2),
        _ => None,
    };
    dscp.is_some_and(|d| d >= 48)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_datagrams_by_size() {
        let late = Some(MAX_WAIT + Duration::from_micros(1));
        // A full-sized data message (1420-byte inner packet).
        assert_eq!(admit(late, 1452), Admit::Shed);
        assert_eq!(admit(Some(MAX_WAIT), 1452), Admit::Deliver);
        assert_eq!(admit(None, 1452), Admit::Deliver);
        // BFD (a 52-byte IPv4 packet padded to 64), a handshake initiation, a keepalive.
        let long = Some(Duration::from_secs(1));
        for small in [32 + 64, 148, 32, SMALL_DATAGRAM] {
            assert_eq!(admit(long, small), Admit::ControlOnly, "{small}");
        }
        assert_eq!(admit(long, SMALL_DATAGRAM + 1), Admit::Shed);
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
