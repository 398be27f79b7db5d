//! OPEN (RFC 4271 §4.2) with capabilities (RFC 5492).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+
//! |    Version    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     My Autonomous System      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Hold Time           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         BGP Identifier                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Opt Parm Len  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             Optional Parameters (variable)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::Ipv4Addr;

use super::{err, DecodeError, Family, Reader, AS_TRANS};

const PARAM_CAPABILITIES: u8 = 2;

const CAP_MULTIPROTOCOL: u8 = 1;
const CAP_ROUTE_REFRESH: u8 = 2;
const CAP_GRACEFUL_RESTART: u8 = 64;
const CAP_FOUR_OCTET_AS: u8 = 65;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The 2-octet field: the ASN, or AS_TRANS for a 4-octet ASN.
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// RFC 4760 §8.
    Multiprotocol {
        afi: u16,
        safi: u8,
    },
    /// RFC 2918.
    RouteRefresh,
    /// RFC 4724 §3.
    GracefulRestart(GracefulRestart),
    /// RFC 6793.
    FourOctetAs(u32),
    Unknown {
        code: u8,
        data: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// R bit: the sender has restarted.
    pub restarting: bool,
    /// N bit (RFC 8538): graceful notification support.
    pub notification: bool,
    /// Seconds the peer asks us to keep its routes while it restarts (12 bits).
    pub restart_time: u16,
    /// Families with their forwarding-state-preserved (F) bit.
    pub families: Vec<(u16, u8, bool)>,
}

impl Open {
    /// Builds our OPEN: 4-octet ASN capability always, AS_TRANS in the 2-octet field when
    /// the ASN does not fit.
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, families: &[Family]) -> Open {
        let mut capabilities: Vec<Capability> = families
            .iter()
            .map(|f| Capability::Multiprotocol {
                afi: f.afi(),
                safi: f.safi(),
            })
            .collect();
        capabilities.push(Capability::RouteRefresh);
        capabilities.push(Capability::FourOctetAs(asn));
        // Receiving speaker only (RFC 4724 §3): restart time 0 and no families tells the
        // peer we keep its routes across its restart but preserve no state of our own.
        capabilities.push(Capability::GracefulRestart(GracefulRestart {
            restarting: false,
            notification: false,
            restart_time: 0,
            families: Vec::new(),
        }));
        let my_as = u16::try_from(asn).unwrap_or(AS_TRANS as u16);
        Open {
            version: 4,
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// Announces us as a restarting speaker as well (RFC 4724 §3, §4.1): when the session
    /// drops without a NOTIFICATION the peer keeps our routes for `restart_time` seconds,
    /// and, with the F bit set for a family, until our End-of-RIB once we are back. Our
    /// forwarding state is the kernel's routes, which outlive the agent, so F is always
    /// set. `restarted` is the R bit: set in the first OPEN after a restart, so that the
    /// peer sends its routes without waiting for ours.
    pub fn with_graceful_restart(
        mut self,
        restart_time: u16,
        restarted: bool,
        families: &[Family],
    ) -> Open {
        self.capabilities
            .retain(|c| !matches!(c, Capability::GracefulRestart(_)));
        self.capabilities
            .push(Capability::GracefulRestart(GracefulRestart {
                restarting: restarted,
                notification: false,
                restart_time: restart_time.min(0x0fff),
                families: families.iter().map(|f| (f.afi(), f.safi(), true)).collect(),
            }));
        self
    }

    /// The speaker's ASN: from the 4-octet capability when present (RFC 6793 §3).
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    pub fn four_octet_as(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
    }

    pub fn route_refresh(&self) -> bool {
        self.capabilities.contains(&Capability::RouteRefresh)
    }

    pub fn graceful_restart(&self) -> Option<&GracefulRestart> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g),
            _ => None,
        })
    }

    /// Families announced with the multiprotocol capability. A speaker announcing none
    /// supports IPv4 unicast only (RFC 4760 §8 and RFC 4271).
    pub fn families(&self) -> Vec<Family> {
        let mut mp = self
            .capabilities
            .iter()
            .filter(|c| matches!(c, Capability::Multiprotocol { .. }))
            .peekable();
        if mp.peek().is_none() {
            return vec![Family::Ipv4];
        }
        let mut v: Vec<Family> = mp
            .filter_map(|c| match c {
                Capability::Multiprotocol { afi, safi } => Family::from_afi_safi(*afi, *safi),
                _ => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }

    pub(super) fn decode(body: &[u8]) -> Result<Open, DecodeError> {
        let mut r = Reader::new(body);
        let malformed = || DecodeError::new(err::OPEN, 0, "malformed OPEN");
        let version = r.u8().ok_or_else(malformed)?;
        if version != 4 {
            // RFC 4271 §6.2: data is the largest supported version, as 2 octets.
            return Err(DecodeError::new(
                err::OPEN,
                err::OPEN_UNSUPPORTED_VERSION,
                "BGP version is not 4",
            )
            .with_data(&[0, 4]));
        }
        let my_as = r.u16().ok_or_else(malformed)?;
        let hold_time = r.u16().ok_or_else(malformed)?;
        if hold_time == 1 || hold_time == 2 {
            return Err(DecodeError::new(
                err::OPEN,
                err::OPEN_UNACCEPTABLE_HOLD_TIME,
                "hold time of 1 or 2 seconds",
            ));
        }
        let bgp_id = Ipv4Addr::from(r.u32().ok_or_else(malformed)?);
        if bgp_id.is_unspecified() {
            // RFC 6286 §2.2: any non-zero value is valid.
            return Err(DecodeError::new(
                err::OPEN,
                err::OPEN_BAD_BGP_ID,
                "BGP identifier is 0",
            ));
        }
        let opt_len = usize::from(r.u8().ok_or_else(malformed)?);
        if opt_len != r.remaining() {
            return Err(DecodeError::new(
                err::OPEN,
                0,
                "optional parameters length does not match the message",
            ));
        }
        let mut capabilities = Vec::new();
        while !r.is_empty() {
            let kind = r.u8().ok_or_else(malformed)?;
            let len = usize::from(r.u8().ok_or_else(malformed)?);
            let value = r.take(len).ok_or_else(malformed)?;
            if kind != PARAM_CAPABILITIES {
                return Err(DecodeError::new(
                    err::OPEN,
                    err::OPEN_UNSUPPORTED_OPT_PARAM,
                    "unsupported optional parameter",
                )
                .with_data(&[kind]));
            }
            decode_capabilities(value, &mut capabilities)?;
        }
        Ok(Open {
            version,
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.version);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        let mut caps = Vec::with_capacity(64);
        for c in &self.capabilities {
            encode_capability(c, &mut caps);
        }
        // One Capabilities parameter carries them all (RFC 5492 §4 allows either form).
        if caps.is_empty() {
            out.push(0);
        } else {
            out.push((caps.len() + 2) as u8);
            out.push(PARAM_CAPABILITIES);
            out.push(caps.len() as u8);
            out.extend_from_slice(&caps);
        }
    }
}

fn decode_capabilities(buf: &[u8], out: &mut Vec<Capability>) -> Result<(), DecodeError> {
    let mut r = Reader::new(buf);
    let malformed = || DecodeError::new(err::OPEN, 0, "malformed capability");
    while !r.is_empty() {
        let code = r.u8().ok_or_else(malformed)?;
        let len = usize::from(r.u8().ok_or_else(malformed)?);
        let v = r.take(len).ok_or_else(malformed)?;
        let cap = match (code, len) {
            (CAP_MULTIPROTOCOL, 4) => Capability::Multiprotocol {
                afi: u16::from_be_bytes([v[0], v[1]]),
                safi: v[3],
            },
            (CAP_ROUTE_REFRESH, 0) => Capability::RouteRefresh,
            (CAP_FOUR_OCTET_AS, 4) => {
                Capability::FourOctetAs(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
            }
            (CAP_GRACEFUL_RESTART, n) if n >= 2 && (n - 2) % 4 == 0 => {
                let head = u16::from_be_bytes([v[0], v[1]]);
                let families = v[2..]
                    .chunks_exact(4)
                    .map(|c| (u16::from_be_bytes([c[0], c[1]]), c[2], c[3] & 0x80 != 0))
                    .collect();
                Capability::GracefulRestart(GracefulRestart {
                    restarting: head & 0x8000 != 0,
                    notification: head & 0x4000 != 0,
                    restart_time: head & 0x0fff,
                    families,
                })
            }
            (
                CAP_MULTIPROTOCOL | CAP_ROUTE_REFRESH | CAP_FOUR_OCTET_AS | CAP_GRACEFUL_RESTART,
                _,
            ) => {
                return Err(DecodeError::new(
                    err::OPEN,
                    0,
                    "capability with a wrong length",
                ));
            }
            _ => Capability::Unknown {
                code,
                data: v.to_vec(),
            },
        };
        out.push(cap);
    }
    Ok(())
}

fn encode_capability(c: &Capability, out: &mut Vec<u8>) {
    match c {
        Capability::Multiprotocol { afi, safi } => {
            out.extend_from_slice(&[CAP_MULTIPROTOCOL, 4]);
            out.extend_from_slice(&afi.to_be_bytes());
            out.extend_from_slice(&[0, *safi]);
        }
        Capability::RouteRefresh => out.extend_from_slice(&[CAP_ROUTE_REFRESH, 0]),
        Capability::FourOctetAs(asn) => {
            out.extend_from_slice(&[CAP_FOUR_OCTET_AS, 4]);
            out.extend_from_slice(&asn.to_be_bytes());
        }
        Capability::GracefulRestart(g) => {
            out.extend_from_slice(&[CAP_GRACEFUL_RESTART, (2 + 4 * g.families.len()) as u8]);
            let mut head = g.restart_time & 0x0fff;
            if g.restarting {
                head |= 0x8000;
            }
            if g.notification {
                head |= 0x4000;
            }
            out.extend_from_slice(&head.to_be_bytes());
            for &(afi, safi, f) in &g.families {
                out.extend_from_slice(&afi.to_be_bytes());
                out.extend_from_slice(&[safi, if f { 0x80 } else { 0 }]);
            }
        }
        Capability::Unknown { code, data } => {
            out.extend_from_slice(&[*code, data.len() as u8]);
            out.extend_from_slice(data);
        }
    }
}
