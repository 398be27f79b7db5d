use super::*;
use crate::offload::checksum::tests::naive;
use crate::offload::vnet::{GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, NEEDS_CSUM};
use std::net::{IpAddr, Ipv4Addr};

const SRC4: [u8; 4] = [10, 0, 0, 1];
const DST4: [u8; 4] = [10, 0, 0, 2];
const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 253) as u8).collect()
}

fn ipv4(protocol: u8, rest: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, protocol, 0, 0];
    p.extend_from_slice(&SRC4);
    p.extend_from_slice(&DST4);
    let total = (20 + rest.len()).min(0xffff) as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(rest);
    p
}

fn ipv6(protocol: u8, rest: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(rest.len().min(0xffff) as u16).to_be_bytes());
    p.extend_from_slice(&[protocol, 64]);
    p.extend_from_slice(&SRC6);
    p.extend_from_slice(&DST6);
    p.extend_from_slice(rest);
    p
}

/// A TCP header with `options` (a multiple of 4 bytes), ACK|PSH|FIN set, the checksum
/// field holding junk (the kernel's partial sum: the splitter must not trust it).
fn tcp(options: usize, data: &[u8]) -> Vec<u8> {
    let mut t = vec![0x9c, 0x40, 0x14, 0x51];
    t.extend_from_slice(&1000u32.to_be_bytes());
    t.extend_from_slice(&5u32.to_be_bytes());
    t.push((((20 + options) / 4) as u8) << 4);
    t.push(0x10 | TCP_PSH | TCP_FIN);
    t.extend_from_slice(&[0xff, 0xff, 0xbe, 0xef, 0, 0]);
    t.extend((0..options).map(|i| if i % 4 == 0 { 1 } else { i as u8 }));
    t.extend_from_slice(data);
    t
}

fn udp(data: &[u8]) -> Vec<u8> {
    let mut u = vec![0x9c, 0x40, 0x14, 0x51];
    u.extend_from_slice(&((8 + data.len()).min(0xffff) as u16).to_be_bytes());
    u.extend_from_slice(&[0xbe, 0xef]);
    u.extend_from_slice(data);
    u
}

/// The transport checksum as a receiver checks it, built by hand: the pseudo header's
/// bytes, then the segment; a valid segment sums to zero.
fn transport_ok(seg: &[u8], v6: bool, protocol: u8) -> bool {
    let ip = if v6 { 40 } else { 20 };
    let t = &seg[ip..];
    let mut pseudo = Vec::new();
    if v6 {
        pseudo.extend_from_slice(&seg[8..40]);
        pseudo.extend_from_slice(&(t.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, protocol]);
    } else {
        pseudo.extend_from_slice(&seg[12..20]);
        pseudo.extend_from_slice(&[0, protocol]);
        pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
    }
    pseudo.extend_from_slice(t);
    naive(&pseudo, 0) == 0
}

fn hdr(gso_type: u8, gso_size: u16, csum_start: u16, csum_offset: u16) -> VnetHdr {
    VnetHdr {
        flags: NEEDS_CSUM,
        gso_type,
        // What the kernel may put on the forwarding path: not the headers' length.
        hdr_len: 1234,
        gso_size,
        csum_start,
        csum_offset,
    }
}

fn split_all(h: &VnetHdr, mut pkt: Vec<u8>) -> Vec<Vec<u8>> {
    let mut s = Splitter::new();
    let segs = s.split(h, &mut pkt).unwrap();
    segs.map(<[u8]>::to_vec).collect()
}

#[test]
fn a_tcp4_super_packet_becomes_packets_a_receiver_accepts() {
    let data = payload(64_000 - 52);
    let pkt = ipv4(TCP, &tcp(12, &data));
    let segs = split_all(&hdr(GSO_TCPV4, 1448, 20, 16), pkt);
    assert_eq!(segs.len(), data.len().div_ceil(1448));
    let mut joined = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        assert_eq!(u16::from_be_bytes([s[2], s[3]]) as usize, s.len());
        assert_eq!(
            u16::from_be_bytes([s[4], s[5]]),
            0x1234 + i as u16,
            "IPv4 id"
        );
        assert_eq!(naive(&s[..20], 0), 0, "IPv4 header checksum of {i}");
        assert!(transport_ok(s, false, TCP), "TCP checksum of {i}");
        let seq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
        assert_eq!(seq, 1000 + (i * 1448) as u32);
        let flags = s[33];
        assert_eq!(flags & TCP_PSH != 0, last, "PSH on the last only");
        assert_eq!(flags & TCP_FIN != 0, last, "FIN on the last only");
        assert_eq!(flags & 0x10, 0x10, "ACK on all");
        if !last {
            assert_eq!(s.len(), 52 + 1448);
        }
        joined.extend_from_slice(&s[52..]);
    }
    assert_eq!(joined, data, "the payload, in order, whole");
}

#[test]
fn a_tcp6_super_packet_becomes_packets_a_receiver_accepts() {
    let data = payload(10_000);
    let pkt = ipv6(TCP, &tcp(0, &data));
    let segs = split_all(&hdr(GSO_TCPV6, 1400, 40, 16), pkt);
    assert_eq!(segs.len(), 8);
    let mut joined = Vec::new();
    for s in &segs {
        assert_eq!(u16::from_be_bytes([s[4], s[5]]) as usize, s.len() - 40);
        assert!(transport_ok(s, true, TCP));
        joined.extend_from_slice(&s[60..]);
    }
    assert_eq!(segs.last().unwrap().len(), 60 + 10_000 - 7 * 1400);
    assert_eq!(joined, data);
}

#[test]
fn a_udp_super_packet_becomes_datagrams_of_their_own() {
    for v6 in [false, true] {
        let data = payload(3000);
        let (pkt, ip) = if v6 {
            (ipv6(UDP, &udp(&data)), 40)
        } else {
            (ipv4(UDP, &udp(&data)), 20)
        };
        let segs = split_all(&hdr(GSO_UDP_L4, 1200, ip, 6), pkt);
        assert_eq!(segs.len(), 3);
        let mut joined = Vec::new();
        for s in &segs {
            let t = usize::from(ip);
            assert_eq!(
                u16::from_be_bytes([s[t + 4], s[t + 5]]) as usize,
                s.len() - t,
                "UDP length"
            );
            assert!(transport_ok(s, v6, UDP), "v6 {v6}");
            joined.extend_from_slice(&s[t + 8..]);
        }
        assert_eq!(joined, data);
    }
}

#[test]
fn a_plain_packet_goes_on_with_its_checksum_completed() {
    let data = payload(333);
    let mut pkt = ipv4(UDP, &udp(&data));
    // What the kernel leaves: the pseudo header's sum, folded, not complemented.
    let pseudo = crate::offload::checksum::pseudo_header(
        IpAddr::V4(Ipv4Addr::from(SRC4)),
        IpAddr::V4(Ipv4Addr::from(DST4)),
        UDP,
        (8 + data.len()) as u32,
    );
    let partial = crate::offload::checksum::fold(pseudo);
    pkt[26..28].copy_from_slice(&partial.to_be_bytes());
    let h = VnetHdr {
        gso_type: GSO_NONE,
        ..hdr(GSO_NONE, 0, 20, 6)
    };
    let segs = split_all(&h, pkt.clone());
    assert_eq!(segs.len(), 1);
    assert!(transport_ok(&segs[0], false, UDP));
    assert_eq!(segs[0][28..], pkt[28..], "only the checksum changed");
    // Without NEEDS_CSUM the packet is not touched.
    let h = VnetHdr { flags: 0, ..h };
    assert_eq!(split_all(&h, pkt.clone()), [pkt]);
}

#[test]
fn a_payload_of_exactly_one_segment_is_one_packet_with_its_flags() {
    let data = payload(1448);
    let segs = split_all(&hdr(GSO_TCPV4, 1448, 20, 16), ipv4(TCP, &tcp(0, &data)));
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0][33] & TCP_PSH, TCP_PSH);
    assert!(transport_ok(&segs[0], false, TCP));
}

#[test]
fn what_the_rules_cannot_make_sense_of_is_refused_not_cut() {
    let good = ipv4(TCP, &tcp(0, &payload(3000)));
    let mut s = Splitter::new();
    let mut try_split = |h: VnetHdr, mut p: Vec<u8>| s.split(&h, &mut p).map(|x| x.count()).err();
    assert_eq!(
        try_split(hdr(GSO_TCPV4, 0, 20, 16), good.clone()),
        Some(OffloadError::GsoSize)
    );
    assert_eq!(
        try_split(hdr(GSO_TCPV6, 1400, 20, 16), good.clone()),
        Some(OffloadError::Family { want: 6 })
    );
    assert!(matches!(
        try_split(hdr(GSO_TCPV4, 1400, 2000, 16), good.clone()),
        Some(OffloadError::Bounds { .. })
    ));
    assert!(matches!(
        try_split(hdr(GSO_TCPV4, 1400, 20, 30), good.clone()),
        Some(OffloadError::Bounds { .. })
    ));
    let mut short_tcp = good.clone();
    short_tcp[32] = 0x30; // a data offset of 12 bytes
    assert!(matches!(
        try_split(hdr(GSO_TCPV4, 1400, 20, 16), short_tcp),
        Some(OffloadError::Bounds { .. })
    ));
    assert!(matches!(
        try_split(hdr(GSO_TCPV4, 1400, 20, 16), good[..30].to_vec()),
        Some(OffloadError::Bounds { .. })
    ));
    assert!(matches!(
        try_split(hdr(GSO_TCPV4, 1400, 20, 16), Vec::new()),
        Some(OffloadError::Family { .. })
    ));
    assert!(matches!(
        try_split(hdr(GSO_NONE, 0, 20, 9000), good),
        Some(OffloadError::Bounds { .. })
    ));
}

#[test]
fn the_splitter_reuses_its_buffer() {
    let mut s = Splitter::new();
    let h = hdr(GSO_TCPV4, 1448, 20, 16);
    let mut pkt = ipv4(TCP, &tcp(0, &payload(60_000)));
    assert_eq!(s.split(&h, &mut pkt).unwrap().count(), 42);
    let cap = s.out.capacity();
    for _ in 0..10 {
        let mut pkt = ipv4(TCP, &tcp(0, &payload(60_000)));
        assert_eq!(s.split(&h, &mut pkt).unwrap().count(), 42);
    }
    assert_eq!(s.out.capacity(), cap, "no growth once sized");
}
