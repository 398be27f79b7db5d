//! On the way in: TCP segments of one flow that arrive back to back (a UDP GRO run of the
//! tunnel holds dozens) are joined into one super-packet behind a virtio-net header that
//! says how to cut it again, so that the TUN takes one write where it took one per packet:
//! the kernel passes the whole to TCP as one segment, as a NIC's GRO would. The rules are
//! the kernel's for GRO (net/ipv4/tcp_offload.c): same flow and headers, consecutive
//! sequence numbers, all segments full but the last, no flag but ACK (PSH on the last).
//! Each segment's checksum is verified before it joins: the joined packet's is left for
//! the kernel to complete, and must not hide one that was wrong.

use super::addresses;
use super::checksum::{checksum, fold, pseudo_header, sum};
use super::vnet::{self, VnetHdr, GSO_TCPV4, GSO_TCPV6, NEEDS_CSUM};

const TCP: u8 = 6;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
/// The largest IP packet: what a joined packet may not exceed.
const MAX_LEN: usize = 65_535;

/// A TCP segment's parts, as far as joining goes.
#[derive(Debug, Clone, Copy)]
struct Seg {
    v6: bool,
    ip: usize,
    headers: usize,
    seq: u32,
    flags: u8,
}

/// Joins what can be joined; hands every packet (joined or not) to `write` with its
/// virtio-net header apart (header, packet: one `writev`, no copy to put them together),
/// in the order of the first segment of each.
#[derive(Debug, Default)]
pub struct Coalescer {
    /// The packet being built: its virtio-net header, then the first segment's headers
    /// and every joined segment's payload.
    cur: Vec<u8>,
    seg: Option<Seg>,
    mss: usize,
    count: usize,
    next_seq: u32,
    psh: bool,
}

impl Coalescer {
    pub fn new() -> Coalescer {
        Coalescer::default()
    }

    /// One packet from the tunnel. What cannot join the packet being built ends it
    /// (it is written) first.
    pub fn push(&mut self, pkt: &[u8], write: &mut impl FnMut(&[u8], &[u8])) {
        let Some(s) = tcp_segment(pkt) else {
            self.flush(write);
            write(&vnet::PLAIN, pkt);
            return;
        };
        if self.joins(pkt, &s) {
            self.cur.extend_from_slice(&pkt[s.headers..]);
            self.count += 1;
            self.next_seq = s.seq.wrapping_add((pkt.len() - s.headers) as u32);
            self.psh = s.flags & PSH != 0;
            return;
        }
        self.flush(write);
        let payload = pkt.len() - s.headers;
        if payload == 0 || s.flags & !(ACK | PSH) != 0 || s.flags & PSH != 0 {
            // Nothing to join to it: pure ACKs, SYN/FIN/RST/URG/ECE/CWR, a push.
            write(&vnet::PLAIN, pkt);
            return;
        }
        self.cur.clear();
        self.cur.extend_from_slice(&[0; vnet::LEN]);
        self.cur.extend_from_slice(pkt);
        self.seg = Some(s);
        self.mss = payload;
        self.count = 1;
        self.next_seq = s.seq.wrapping_add(payload as u32);
        self.psh = false;
    }

    /// Whether `pkt` continues the packet being built.
    fn joins(&self, pkt: &[u8], s: &Seg) -> bool {
        let Some(c) = &self.seg else { return false };
        let first = &self.cur[vnet::LEN..];
        let payload = pkt.len() - s.headers;
        let joined_len = self.cur.len() - vnet::LEN + payload;
        let full_so_far = (joined_len - payload - c.headers) == self.count * self.mss;
        s.v6 == c.v6
            && s.ip == c.ip
            && s.headers == c.headers
            && !self.psh
            && s.seq == self.next_seq
            && payload > 0
            && payload <= self.mss
            && full_so_far
            && joined_len <= MAX_LEN
            && s.flags & !(ACK | PSH) == 0
            && same_headers(first, pkt, s)
    }

    /// Writes the packet being built, if any.
    pub fn flush(&mut self, write: &mut impl FnMut(&[u8], &[u8])) {
        let Some(s) = self.seg.take() else { return };
        let (header, packet) = self.cur.split_at_mut(vnet::LEN);
        if self.count == 1 {
            write(header, packet);
            return;
        }
        finish(packet, &s, self.psh);
        let h = VnetHdr {
            flags: NEEDS_CSUM,
            gso_type: if s.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: s.headers as u16,
            gso_size: self.mss as u16,
            csum_start: s.ip as u16,
            csum_offset: 16,
        };
        header.copy_from_slice(&h.encode());
        write(header, packet);
    }
}

/// A TCP segment with a valid checksum and no IP options, fragments or extension headers;
/// anything else is not for joining.
fn tcp_segment(pkt: &[u8]) -> Option<Seg> {
    let (v6, ip) = match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 && pkt[0] & 0x0f == 5 && pkt[9] == TCP => {
            let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
            // MF or an offset: a fragment.
            if frag & 0x3fff != 0 || usize::from(u16::from_be_bytes([pkt[2], pkt[3]])) != pkt.len()
            {
                return None;
            }
            (false, 20)
        }
        6 if pkt.len() >= 40 && pkt[6] == TCP => {
            if usize::from(u16::from_be_bytes([pkt[4], pkt[5]])) + 40 != pkt.len() {
                return None;
            }
            (true, 40)
        }
        _ => return None,
    };
    let tcp_len = usize::from(*pkt.get(ip + 12)? >> 4) * 4;
    let headers = ip + tcp_len;
    if tcp_len < 20 || headers > pkt.len() {
        return None;
    }
    let (src, dst) = addresses(pkt, v6);
    let pseudo = pseudo_header(src, dst, TCP, (pkt.len() - ip) as u32);
    if fold(sum(&pkt[ip..], pseudo)) != 0xffff {
        return None;
    }
    Some(Seg {
        v6,
        ip,
        headers,
        seq: u32::from_be_bytes([pkt[ip + 4], pkt[ip + 5], pkt[ip + 6], pkt[ip + 7]]),
        flags: pkt[ip + 13],
    })
}

/// Same flow, and headers a joined packet can stand for: addresses and ports, the IP
/// fields the kernel compares (TOS/traffic class, TTL/hop limit, DF), the ACK number,
/// window and options.
fn same_headers(a: &[u8], b: &[u8], s: &Seg) -> bool {
    let ip = s.ip;
    let ip_same = if s.v6 {
        a[0..2] == b[0..2] && a[7] == b[7] && a[8..40] == b[8..40]
    } else {
        a[1] == b[1] && a[6] & 0xe0 == b[6] & 0xe0 && a[8] == b[8] && a[12..20] == b[12..20]
    };
    // Ports, ACK number, data offset, window, urgent pointer and options; not the
    // sequence number, flags or checksum.
    ip_same
        && a[ip..ip + 4] == b[ip..ip + 4]
        && a[ip + 8..ip + 13] == b[ip + 8..ip + 13]
        && a[ip + 14..ip + 16] == b[ip + 14..ip + 16]
        && a[ip + 18..s.headers] == b[ip + 18..s.headers]
}

/// Makes the joined packet's headers say what it is: its length, the last segment's PSH,
/// and in the checksum field the pseudo header's sum, which the kernel completes.
fn finish(pkt: &mut [u8], s: &Seg, psh: bool) {
    let len = pkt.len();
    if s.v6 {
        pkt[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    } else {
        pkt[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        pkt[10..12].fill(0);
        let c = checksum(&pkt[..20], 0);
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
    }
    if psh {
        pkt[s.ip + 13] |= PSH;
    }
    let (src, dst) = addresses(pkt, s.v6);
    let partial = fold(pseudo_header(src, dst, TCP, (len - s.ip) as u32));
    pkt[s.ip + 16..s.ip + 18].copy_from_slice(&partial.to_be_bytes());
}

#[cfg(test)]
#[path = "gro_tests.rs"]
mod tests;
