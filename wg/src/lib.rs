//! WireGuard tunnels: crosslink's own sans-IO protocol (`noise`: handshakes, sessions,
//! timers, cookies, and a handover of the sessions to a restarting agent), driven by its
//! own tokio tasks over a TUN device and a UDP socket, with a read-only UAPI so that
//! `wg show` works on crosslink's tunnels.

pub mod adopt;
mod handover;
pub mod key;
pub mod link;
pub mod noise;
pub mod offload;
pub mod pi;
mod shed;
pub mod steer;
pub mod tun;
pub mod tunnel;
pub mod uapi;
mod udp;
pub mod udp_steer;

pub use adopt::Adopted;
pub use key::{KeyError, PublicKey, SecretKey};
pub use tunnel::{Tunnel, TunnelConfig, TunnelStats};
