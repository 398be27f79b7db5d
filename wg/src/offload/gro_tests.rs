use super::*;
use crate::offload::split::Splitter;
use crate::offload::vnet::{GSO_NONE, GSO_TCPV4};

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 % 251) as u8).collect()
}

/// A TCP/IPv4 (or IPv6) super-packet as the sending kernel hands it over, cut by the
/// splitter into the segments the tunnel carries.
fn segments(v6: bool, data: &[u8], mss: u16, flags: u8) -> Vec<Vec<u8>> {
    let mut tcp = vec![0x9c, 0x40, 0x14, 0x51];
    tcp.extend_from_slice(&7000u32.to_be_bytes());
    tcp.extend_from_slice(&9u32.to_be_bytes());
    tcp.extend_from_slice(&[0x80, flags, 0x01, 0xf5, 0, 0, 0, 0]);
    tcp.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]); // timestamps
    tcp.extend_from_slice(data);
    let mut pkt = if v6 {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(tcp.len().min(0xffff) as u16).to_be_bytes());
        p.extend_from_slice(&[TCP, 64]);
        p.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p
    } else {
        let mut p = vec![
            0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, TCP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let total = (20 + tcp.len()).min(0xffff) as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p
    };
    pkt.extend_from_slice(&tcp);
    let ip = if v6 { 40 } else { 20 };
    let h = VnetHdr {
        flags: NEEDS_CSUM,
        gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: 0,
        gso_size: mss,
        csum_start: ip,
        csum_offset: 16,
    };
    let mut s = Splitter::new();
    s.split(&h, &mut pkt).unwrap().map(<[u8]>::to_vec).collect()
}

fn coalesce(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut c = Coalescer::new();
    let mut out = Vec::new();
    let mut write = |h: &[u8], b: &[u8]| out.push([h, b].concat());
    for p in packets {
        c.push(p, &mut write);
    }
    c.flush(&mut write);
    out
}

/// What the kernel would make of a written packet, by our own splitter: the segments.
fn resplit(written: &[u8]) -> Vec<Vec<u8>> {
    let h = VnetHdr::decode(written).unwrap();
    let mut pkt = written[vnet::LEN..].to_vec();
    let mut s = Splitter::new();
    s.split(&h, &mut pkt).unwrap().map(<[u8]>::to_vec).collect()
}

#[test]
fn a_flows_segments_become_one_write_that_cuts_back_into_them() {
    for v6 in [false, true] {
        let segs = segments(v6, &payload(40_000), 1388, ACK | PSH);
        assert_eq!(segs.len(), 29);
        let out = coalesce(&segs);
        assert_eq!(out.len(), 1, "v6 {v6}");
        let h = VnetHdr::decode(&out[0]).unwrap();
        assert_eq!(h.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
        assert_eq!(h.gso_size, 1388);
        assert!(h.needs_csum());
        assert_eq!(
            resplit(&out[0]),
            segs,
            "v6 {v6}: the same segments, byte for byte"
        );
    }
}

#[test]
fn a_gap_a_push_another_flow_or_a_bad_checksum_ends_the_joining() {
    let segs = segments(false, &payload(14_000), 1400, ACK);
    // A lost segment: two runs.
    let mut gap = segs.clone();
    gap.remove(4);
    let out = coalesce(&gap);
    assert_eq!(out.len(), 2);
    assert_eq!(resplit(&out[0]), segs[..4]);
    assert_eq!(resplit(&out[1]), segs[5..]);
    // Another flow in between: each flow's packet ends where the other begins.
    let other = segments(true, &payload(2800), 1400, ACK);
    let mut mixed = segs[..3].to_vec();
    mixed.extend(other.clone());
    mixed.extend(segs[3..].to_vec());
    let out = coalesce(&mixed);
    assert_eq!(out.len(), 3);
    assert_eq!(resplit(&out[1]), other);
    // A corrupted segment goes on alone, as it came, for the kernel to drop.
    let mut bad = segs.clone();
    bad[6][100] ^= 0xff;
    let out = coalesce(&bad);
    assert_eq!(out.len(), 3);
    assert_eq!(VnetHdr::decode(&out[1]).unwrap().gso_type, GSO_NONE);
    assert_eq!(out[1][vnet::LEN..], bad[6]);
}

#[test]
fn a_push_ends_the_packet_it_is_in_and_nothing_joins_after_it() {
    let mut segs = segments(false, &payload(7000), 1400, ACK);
    // PSH on the third: it joins as the last of the first packet.
    segs[2][33] |= PSH;
    let i = 2;
    let (src, dst) = addresses(&segs[i], false);
    segs[i][36..38].fill(0);
    let c = checksum(
        &segs[i][20..],
        pseudo_header(src, dst, TCP, (segs[i].len() - 20) as u32),
    );
    segs[i][36..38].copy_from_slice(&c.to_be_bytes());
    let out = coalesce(&segs);
    assert_eq!(out.len(), 2);
    assert_eq!(resplit(&out[0]), segs[..3]);
    assert_eq!(resplit(&out[1]), segs[3..]);
}

#[test]
fn what_is_not_a_tcp_data_segment_goes_on_alone_behind_a_plain_header() {
    let udp = {
        let mut p = vec![
            0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend_from_slice(&[0x0e, 0xc8, 0x0e, 0xc8, 0, 8, 0, 0]);
        p
    };
    let ack = segments(false, &[], 1400, ACK);
    let out = coalesce(&[udp.clone(), ack[0].clone()]);
    assert_eq!(out.len(), 2);
    for (written, sent) in out.iter().zip([&udp, &ack[0]]) {
        assert_eq!(VnetHdr::decode(written).unwrap(), VnetHdr::default());
        assert_eq!(&written[vnet::LEN..], &sent[..]);
    }
}

#[test]
fn a_joined_packet_stays_within_the_largest_ip_packet() {
    let segs = segments(false, &payload(200_000), 1448, ACK);
    let out = coalesce(&segs);
    assert!(out.len() >= 4);
    assert!(out.iter().all(|w| w.len() - vnet::LEN <= MAX_LEN));
    let back: Vec<Vec<u8>> = out.iter().flat_map(|w| resplit(w)).collect();
    assert_eq!(back, segs);
}
