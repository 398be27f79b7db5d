//! What the tunnel does with a packet read from a TUN with offloads: a plain packet goes
//! on as it is (its transport checksum completed when the kernel left it to us); a
//! super-packet is cut into segments of `gso_size` payload bytes, each a packet of its own
//! with the headers repeated and fixed up (IP lengths and IPv4 id and header checksum, the
//! TCP sequence number and flags, the UDP length, the transport checksum), ready to be
//! encrypted. Segments go into one buffer the splitter keeps: no allocation per packet
//! once it has grown to the largest burst.

use std::ops::Range;

use super::checksum::{checksum, pseudo_header};
use super::vnet::{Gso, VnetHdr};
use super::{addresses, OffloadError};

const TCP: u8 = 6;
const UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;

#[derive(Debug, Default)]
pub struct Splitter {
    out: Vec<u8>,
    bounds: Vec<Range<usize>>,
}

/// The packets one read became.
pub struct Segments<'a> {
    buf: &'a [u8],
    bounds: std::slice::Iter<'a, Range<usize>>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        self.bounds.next().map(|r| &self.buf[r.clone()])
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.bounds.size_hint()
    }
}

/// Where the pieces of a super-packet are.
struct Layout {
    v6: bool,
    protocol: u8,
    /// IP header length: where the transport header starts.
    ip: usize,
    /// IP and transport headers: what each segment repeats.
    headers: usize,
    csum_at: usize,
    mss: usize,
}

impl Splitter {
    pub fn new() -> Splitter {
        Splitter::default()
    }

    /// The packets in `pkt` (a TUN read after its virtio-net header `hdr`). `pkt` is
    /// changed in place when its checksum is completed.
    pub fn split<'a>(
        &'a mut self,
        hdr: &VnetHdr,
        pkt: &'a mut [u8],
    ) -> Result<Segments<'a>, OffloadError> {
        self.out.clear();
        self.bounds.clear();
        if hdr.gso()? == Gso::None {
            if hdr.needs_csum() {
                complete_checksum(hdr, pkt)?;
            }
            self.bounds.push(0..pkt.len());
            return Ok(Segments {
                buf: pkt,
                bounds: self.bounds.iter(),
            });
        }
        let l = layout(hdr, pkt)?;
        let payload = &pkt[l.headers..];
        let count = payload.len().div_ceil(l.mss).max(1);
        self.out.reserve(count * l.headers + payload.len());
        // A super-packet with no payload (the kernel sends none such) still is a packet.
        let empty: &[u8] = &[];
        let chunks = payload
            .chunks(l.mss)
            .chain(payload.is_empty().then_some(empty));
        for (i, chunk) in chunks.enumerate() {
            let start = self.out.len();
            self.out.extend_from_slice(&pkt[..l.headers]);
            self.out.extend_from_slice(chunk);
            let last = i + 1 == count;
            fix_up(&mut self.out[start..], &l, i, last)?;
            self.bounds.push(start..self.out.len());
        }
        Ok(Segments {
            buf: &self.out,
            bounds: self.bounds.iter(),
        })
    }
}

/// The checked positions of a super-packet's parts. The header length is read from the
/// transport header, not taken from `hdr_len`: the kernel may put the whole first
/// packet's length there (on the forwarding path).
fn layout(hdr: &VnetHdr, pkt: &[u8]) -> Result<Layout, OffloadError> {
    let gso = hdr.gso()?;
    let version = pkt.first().map(|b| b >> 4);
    let v6 = match (gso, version) {
        (Gso::Tcp4 | Gso::Udp, Some(4)) => false,
        (Gso::Tcp6 | Gso::Udp, Some(6)) => true,
        (Gso::Tcp6, _) => return Err(OffloadError::Family { want: 6 }),
        _ => return Err(OffloadError::Family { want: 4 }),
    };
    let ip = usize::from(hdr.csum_start);
    let bounds = |headers: usize| OffloadError::Bounds {
        hdr_len: headers,
        csum_start: ip,
        len: pkt.len(),
    };
    let min_ip = if v6 { 40 } else { 20 };
    let (protocol, headers) = match gso {
        Gso::Udp => (UDP, ip + 8),
        _ => {
            let off = pkt.get(ip + 12).ok_or(bounds(ip))?;
            let tcp_len = usize::from(off >> 4) * 4;
            if tcp_len < 20 {
                return Err(bounds(ip + tcp_len));
            }
            (TCP, ip + tcp_len)
        }
    };
    let csum_at = ip + usize::from(hdr.csum_offset);
    // IPv4's header says its own length; IPv6 may carry extension headers before the
    // transport header, which only the kernel's offset tells.
    let ip_ok = if v6 {
        ip >= min_ip
    } else {
        ip == usize::from(pkt[0] & 0x0f) * 4 && ip >= min_ip
    };
    if !ip_ok || headers > pkt.len() || csum_at + 2 > headers {
        return Err(bounds(headers));
    }
    if hdr.gso_size == 0 {
        return Err(OffloadError::GsoSize);
    }
    let mss = usize::from(hdr.gso_size);
    if headers + mss > usize::from(u16::MAX) {
        return Err(OffloadError::TooLong(headers + mss));
    }
    Ok(Layout {
        v6,
        protocol,
        ip,
        headers,
        csum_at,
        mss,
    })
}

/// Makes segment `i` of a super-packet (its headers copied from the first, then its
/// payload) a packet of its own.
fn fix_up(seg: &mut [u8], l: &Layout, i: usize, last: bool) -> Result<(), OffloadError> {
    let len = seg.len();
    let payload = len - l.headers;
    if l.v6 {
        let plen = u16::try_from(len - 40).map_err(|_| OffloadError::TooLong(len))?;
        seg[4..6].copy_from_slice(&plen.to_be_bytes());
    } else {
        let total = u16::try_from(len).map_err(|_| OffloadError::TooLong(len))?;
        seg[2..4].copy_from_slice(&total.to_be_bytes());
        // Each segment a new datagram: the id counts up from the first one's.
        let id = u16::from_be_bytes([seg[4], seg[5]]).wrapping_add(i as u16);
        seg[4..6].copy_from_slice(&id.to_be_bytes());
        seg[10..12].fill(0);
        let c = checksum(&seg[..l.ip], 0);
        seg[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let t = l.ip;
    if l.protocol == TCP {
        let seq = u32::from_be_bytes([seg[t + 4], seg[t + 5], seg[t + 6], seg[t + 7]])
            .wrapping_add((i * l.mss) as u32);
        seg[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        if !last {
            // The end of the data and its push belong to the last segment only.
            seg[t + 13] &= !(TCP_FIN | TCP_PSH);
        }
    } else {
        let ulen = (l.headers - t + payload) as u16;
        seg[t + 4..t + 6].copy_from_slice(&ulen.to_be_bytes());
    }
    let (src, dst) = addresses(seg, l.v6);
    seg[l.csum_at..l.csum_at + 2].fill(0);
    let pseudo = pseudo_header(src, dst, l.protocol, (len - t) as u32);
    let mut c = checksum(&seg[t..], pseudo);
    if l.protocol == UDP && c == 0 {
        // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
        c = 0xffff;
    }
    seg[l.csum_at..l.csum_at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// A packet the kernel left its transport checksum to us for (CHECKSUM_PARTIAL): the
/// field holds the pseudo header's sum; the checksum covers from `csum_start` to the end.
pub fn complete_checksum(hdr: &VnetHdr, pkt: &mut [u8]) -> Result<(), OffloadError> {
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > pkt.len() {
        return Err(OffloadError::Bounds {
            hdr_len: at + 2,
            csum_start: start,
            len: pkt.len(),
        });
    }
    let partial = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
    pkt[at..at + 2].fill(0);
    let c = checksum(&pkt[start..], u64::from(partial));
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

#[cfg(test)]
#[path = "split_tests.rs"]
mod tests;
