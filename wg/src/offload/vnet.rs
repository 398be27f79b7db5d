//! `struct virtio_net_hdr` (include/uapi/linux/virtio_net.h), the 10 bytes a TUN opened with
//! `IFF_VNET_HDR` puts before each packet, both ways. TUN's header is the legacy one, in
//! the host's byte order (no TUNSETVNETLE/BE is asked for).

use super::OffloadError;

pub const LEN: usize = 10;

/// The header of a packet that is whole and needs nothing done (all fields zero).
pub const PLAIN: [u8; LEN] = [0; LEN];

/// `flags`: the transport checksum is to be filled in from `csum_start`, at
/// `csum_start + csum_offset` (it holds the pseudo-header sum so far).
pub const NEEDS_CSUM: u8 = 1;

/// `gso_type` values.
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
/// Or-ed into `gso_type`: the TCP flow set CWR (ECN).
pub const GSO_ECN: u8 = 0x80;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    /// Length of the headers (IP and transport) each segment repeats.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

/// What a packet is to be cut into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gso {
    None,
    Tcp4,
    Tcp6,
    /// UDP segmentation (USO): each segment a datagram of its own.
    Udp,
}

impl VnetHdr {
    pub fn decode(b: &[u8]) -> Result<VnetHdr, OffloadError> {
        let b: &[u8; LEN] = b
            .get(..LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(OffloadError::ShortHeader)?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    pub fn gso(&self) -> Result<Gso, OffloadError> {
        match self.gso_type & !GSO_ECN {
            GSO_NONE => Ok(Gso::None),
            GSO_TCPV4 => Ok(Gso::Tcp4),
            GSO_TCPV6 => Ok(Gso::Tcp6),
            GSO_UDP_L4 => Ok(Gso::Udp),
            // UFO (IP fragmentation of a UDP datagram) is never enabled: we do not ask
            // for it, and a kernel that sends it anyway gets its packet dropped.
            other => Err(OffloadError::GsoType(other)),
        }
    }

    pub fn needs_csum(&self) -> bool {
        self.flags & NEEDS_CSUM != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_round_trips_in_the_hosts_byte_order() {
        let h = VnetHdr {
            flags: NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 52,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        let b = h.encode();
        assert_eq!(VnetHdr::decode(&b), Ok(h));
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 1448);
        assert_eq!(h.gso(), Ok(Gso::Tcp4), "ECN does not change the cut");
        assert!(h.needs_csum());
        assert_eq!(VnetHdr::decode(&b[..9]), Err(OffloadError::ShortHeader));
        let ufo = VnetHdr {
            gso_type: GSO_UDP,
            ..h
        };
        assert_eq!(ufo.gso(), Err(OffloadError::GsoType(GSO_UDP)));
    }
}
