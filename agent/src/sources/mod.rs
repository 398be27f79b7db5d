//! Where the agent's evidence comes from, one adapter per kind of source: the BGP sessions
//! with the line routers (`bgp`, over the `bgp` crate), the BFD sessions (`bfd`, over the
//! `probes` crate's real-time thread), the WireGuard tunnels (`tunnels`, over the `wg`
//! crate) and the kernel's link notifications (`links`). Each turns what its source
//! reports into the state the decision core reads.

pub mod bfd;
pub mod bgp;
pub mod links;
pub mod tunnels;
