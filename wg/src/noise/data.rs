//! Data messages on a peer (whitepaper §5.4.6): sealed and opened under the peer's lock
//! one at a time (`encapsulate`, `decapsulate`), or with the cryptography outside it
//! (`sealer`; `opener`, then `accept`), which is how the tunnel's threads use them.

use std::net::IpAddr;
use std::time::Instant;

use super::session::{Opened, Opener, Sealer, DATA, DATA_HEADER};
use super::QUEUE;
use super::{crypto, Error, Peer, Received, Slot};

impl Peer {
    /// Seals `packet` into `out` (which must hold `packet.len() + overhead()` bytes and
    /// at least a handshake initiation) and returns the datagram's length. Without a
    /// session, the packet waits and the datagram is an initiation, if one is due.
    pub fn encapsulate(&mut self, packet: &[u8], out: &mut [u8], now: Instant) -> Option<usize> {
        self.catch_up(now);
        if let Some(s) = self.sessions.current.as_mut().filter(|s| s.usable(now)) {
            if s.wants_rekey(now) {
                self.rekey_wanted = true;
            }
            if let Some(len) = s.seal(packet, self.mtu, out) {
                self.note_sent(now, !packet.is_empty());
                return Some(len);
            }
        }
        if self.queue.len() == QUEUE {
            self.queue.pop_front();
        }
        self.queue.push_back(packet.to_vec());
        self.initiate(out, now)
    }

    /// Up to `n` packets' worth of counters on the current session, to seal outside the
    /// lock; counted as data sent now. None without a usable session: `encapsulate` each
    /// packet then, so that it waits for the handshake it starts.
    pub fn sealer(&mut self, n: usize, now: Instant) -> Option<Sealer> {
        self.catch_up(now);
        let s = self.sessions.current.as_mut().filter(|s| s.usable(now))?;
        if s.wants_rekey(now) {
            self.rekey_wanted = true;
        }
        let sealer = s.reserve(n, self.mtu)?;
        self.note_sent(now, true);
        Some(sealer)
    }

    pub(super) fn note_sent(&mut self, now: Instant, data: bool) {
        self.last_traffic = Some(now);
        self.last_sent = Some(now);
        self.keepalive_owed = None;
        self.confirm_owed = false;
        if data {
            self.unanswered_since.get_or_insert(now);
        }
    }

    /// The key that opens `datagram` outside the lock, when it is a data message to a
    /// session that can take it; then `accept` what it opened. None: `decapsulate` it
    /// instead (a handshake message, or one to refuse, which that says why).
    pub fn opener(&mut self, datagram: &[u8], now: Instant) -> Option<Opener> {
        self.catch_up(now);
        let index = data_index(datagram)?;
        self.sessions.find(index)?.0.opener(now)
    }

    /// Takes in a data message `Opener::open` authenticated in `datagram`: refused if
    /// its counter was seen (a replay) or its session is gone meanwhile.
    pub fn accept(
        &mut self,
        datagram: &[u8],
        opened: Opened,
        now: Instant,
    ) -> Result<Received, Error> {
        let (session, slot) = self
            .sessions
            .find(opened.index)
            .ok_or(Error::UnknownIndex)?;
        if !session.take(&opened) {
            return Err(Error::Replay);
        }
        let stale = slot == Slot::Current && session.keys.stale(now);
        if slot == Slot::Next {
            self.confirm_next(now);
        }
        self.last_traffic = Some(now);
        self.last_heard = Some(now);
        if stale && self.attempt_since.is_none() {
            self.rekey_wanted = true;
        }
        self.unanswered_since = None;
        let len = opened.len;
        if len == 0 {
            return Ok(Received::Keepalive);
        }
        self.keepalive_owed.get_or_insert(now);
        let inner = &datagram[DATA_HEADER..DATA_HEADER + len];
        let (total, src) = inner_header(inner).ok_or(Error::BadInner)?;
        if total > len || total < 20 {
            return Err(Error::BadInner);
        }
        Ok(Received::Data { len: total, src })
    }

    /// A data message, opened under the lock.
    pub(super) fn receive_data(
        &mut self,
        datagram: &mut [u8],
        now: Instant,
    ) -> Result<Received, Error> {
        let index = data_index(datagram).ok_or(Error::Malformed)?;
        let (session, _) = self.sessions.find(index).ok_or(Error::UnknownIndex)?;
        // A session too old to use refuses as a replayed message would.
        let opener = session.opener(now).ok_or(Error::Replay)?;
        let opened = opener.open(datagram).ok_or(Error::Decrypt)?;
        self.accept(datagram, opened, now)
    }
}

/// The receiver index of a data message, if `datagram` can be one.
pub(super) fn data_index(datagram: &[u8]) -> Option<u32> {
    match datagram.get(..8) {
        Some(&[DATA, 0, 0, 0, a, b, c, d]) if datagram.len() >= DATA_HEADER + crypto::TAG => {
            Some(u32::from_le_bytes([a, b, c, d]))
        }
        _ => None,
    }
}

/// An inner packet's length from its IP header, and its source.
pub(super) fn inner_header(p: &[u8]) -> Option<(usize, IpAddr)> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let src: [u8; 4] = p[12..16].try_into().ok()?;
            Some((usize::from(u16::from_be_bytes([p[2], p[3]])), src.into()))
        }
        6 if p.len() >= 40 => {
            let src: [u8; 16] = p[8..24].try_into().ok()?;
            Some((
                40 + usize::from(u16::from_be_bytes([p[4], p[5]])),
                src.into(),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{deliver, establish, packet, peers, A_ADDR, B_ADDR};
    use super::super::{Received, DATA_OFFSET};
    use super::*;

    #[test]
    fn sealed_and_opened_outside_the_lock() {
        let t = Instant::now();
        let (mut a, mut b) = peers(t);
        let mut out = vec![0u8; 2048];
        assert!(a.sealer(4, t).is_none(), "no session yet: encapsulate");
        let n = peers(t).0.initiate(&mut out, t).expect("an initiation");
        assert!(b.opener(&out[..n], t).is_none(), "a handshake message");
        establish(&mut a, &mut b, t);
        let mut sealer = a.sealer(3, t).expect("a session");
        let sent: Vec<Vec<u8>> = (0..3u8)
            .map(|i| {
                let n = sealer.seal(&packet(100 + usize::from(i), [10, 0, 0, 1], i), &mut out);
                out[..n.expect("reserved")].to_vec()
            })
            .collect();
        // Received out of order, each opened without b's lock and taken once.
        for (i, d) in sent.iter().enumerate().rev() {
            let mut d = d.clone();
            let opener = b.opener(&d, t).expect("a data message to a session");
            let opened = opener.open(&mut d).expect("authentic");
            let r = b.accept(&d, opened, t);
            assert!(
                matches!(r, Ok(Received::Data { len, .. }) if len == 100 + i),
                "{r:?}"
            );
            assert_eq!(d[DATA_OFFSET], 0x45);
            assert_eq!(b.accept(&d, opened, t), Err(Error::Replay), "taken once");
        }
        let mut forged = sent[0].clone();
        forged[40] ^= 1;
        let opener = b.opener(&forged, t).expect("its index is a session's");
        assert!(opener.open(&mut forged).is_none(), "not authentic");
        // Whatever way a message is opened, the window is the same one.
        assert_eq!(deliver(&mut b, A_ADDR, &sent[1], t).0, Err(Error::Replay));
        // b's answer, sealed by b's sealer, arrives by a's decapsulate.
        let n = b
            .sealer(1, t)
            .expect("confirmed")
            .seal(&packet(60, [10, 0, 1, 1], 9), &mut out);
        let (r, got) = deliver(&mut a, B_ADDR, &out[..n.expect("reserved")], t);
        assert!(matches!(r, Ok(Received::Data { len: 60, .. })), "{r:?}");
        assert_eq!(got, packet(60, [10, 0, 1, 1], 9));
    }
}
