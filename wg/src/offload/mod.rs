//! TUN offloads, sans-IO: the virtio-net header a TUN opened with `IFF_VNET_HDR` puts in
//! front of each packet, and what the tunnel must do with it. With TSO/USO enabled
//! (`TUNSETOFFLOAD`) the kernel hands over one "super-packet" of up to 64 KB per flow
//! burst: one read instead of forty, and one header parsed, with the transport checksum
//! left for the device (us) to fill. The tunnel splits it into MTU-sized inner packets,
//! each with its own lengths, sequence number and checksums, only to encrypt them (`split`).
//!
//! The layout and the rules are the kernel's (include/uapi/linux/virtio_net.h,
//! Documentation/networking/segmentation-offloads.rst); wireguard-go's tun/offload_linux.go
//! does the same in Go.

pub mod checksum;
pub mod gro;
pub mod split;
pub mod vnet;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use gro::Coalescer;
pub use split::Splitter;
pub use vnet::VnetHdr;

/// A header or packet the offload rules cannot make sense of: such a packet is dropped
/// (and counted by the caller), never half-processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("shorter than the virtio-net header")]
    ShortHeader,
    #[error("unknown GSO type {0}")]
    GsoType(u8),
    #[error("header length {hdr_len} or checksum start {csum_start} outside a {len}-byte packet")]
    Bounds {
        hdr_len: usize,
        csum_start: usize,
        len: usize,
    },
    #[error("GSO size 0")]
    GsoSize,
    #[error("the GSO type says IPv{want}, the packet is not")]
    Family { want: u8 },
    #[error("a segment of {0} bytes does not fit the IP length field")]
    TooLong(usize),
}

/// The source and destination of an IP packet whose version the caller checked.
fn addresses(pkt: &[u8], v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        let a = |at: usize| {
            let o: [u8; 16] = pkt[at..at + 16].try_into().expect("16 bytes");
            IpAddr::V6(Ipv6Addr::from(o))
        };
        (a(8), a(24))
    } else {
        let a = |at: usize| {
            IpAddr::V4(Ipv4Addr::new(
                pkt[at],
                pkt[at + 1],
                pkt[at + 2],
                pkt[at + 3],
            ))
        };
        (a(12), a(16))
    }
}
