//! The Internet checksum (RFC 1071): a ones'-complement sum of 16-bit words, summed here
//! eight bytes at a time into a 64-bit accumulator and folded at the end (RFC 1071 §2(C)).

use std::net::IpAddr;

/// Adds `data` to a running sum (`initial` carries a previous part, e.g. the pseudo
/// header); the result is folded with `fold`.
pub fn sum(data: &[u8], initial: u64) -> u64 {
    let mut acc = initial;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes(c.try_into().expect("8 bytes"));
        // Sum the two 32-bit halves: the carries stay in the upper bits, folded later.
        acc = acc.wrapping_add(w >> 32).wrapping_add(w & 0xffff_ffff);
        // Keep room for the next additions (each adds < 2^33).
        if acc >> 62 != 0 {
            acc = (acc >> 32) + (acc & 0xffff_ffff);
        }
    }
    let mut rest = chunks.remainder().chunks(2);
    for pair in &mut rest {
        let hi = u64::from(pair[0]) << 8;
        let lo = pair.get(1).map_or(0, |b| u64::from(*b));
        acc += hi | lo;
    }
    acc
}

/// Folds a running sum to 16 bits (not complemented).
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc >> 16) + (acc & 0xffff);
    }
    acc as u16
}

/// The checksum field's value for `data` with `initial` already summed.
pub fn checksum(data: &[u8], initial: u64) -> u16 {
    !fold(sum(data, initial))
}

/// The TCP/UDP pseudo header's sum (RFC 793 §3.1, RFC 8200 §8.1): addresses, protocol,
/// transport length.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, len: u32) -> u64 {
    let addrs = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum(&s.octets(), 0) + sum(&d.octets(), 0),
        (IpAddr::V6(s), IpAddr::V6(d)) => sum(&s.octets(), 0) + sum(&d.octets(), 0),
        // One packet has one family; mixed is no packet.
        _ => 0,
    };
    addrs + u64::from(protocol) + u64::from(len >> 16) + u64::from(len & 0xffff)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// RFC 1071 as written: 16-bit words, end-around carry at each step. What the fast
    /// sum is checked against.
    pub(crate) fn naive(data: &[u8], initial: u32) -> u16 {
        let mut acc: u32 = initial;
        for pair in data.chunks(2) {
            let w = u32::from(pair[0]) << 8 | pair.get(1).map_or(0, |b| u32::from(*b));
            acc += w;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn the_fast_sum_agrees_with_rfc_1071_for_every_length_and_alignment() {
        let data: Vec<u8> = (0..3000u32)
            .map(|i| (i * 7919 % 251) as u8 ^ 0xa5)
            .collect();
        for len in (0..200).chain([1499, 1500, 2999, 3000]) {
            for start in 0..3 {
                let d = &data[start..start + len.min(data.len() - start)];
                assert_eq!(checksum(d, 0), naive(d, 0), "len {len} start {start}");
            }
        }
        // All ones: the carries must not be lost.
        let ff = vec![0xffu8; 65535];
        assert_eq!(checksum(&ff, 0), naive(&ff, 0));
    }

    #[test]
    fn rfc_1071_example() {
        // §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d, 0)), 0xddf2);
    }
}
