//! WireGuard tunnels driven by boringtun's sans-IO `noise::Tunn` from crosslink's own tokio
//! tasks (boringtun's `device` module is not used: it panics when a peer is modified, takes
//! SIGINT/SIGTERM away from the process and misreports handshake times), with a read-only
//! UAPI so that `wg show` works on crosslink's tunnels.

pub mod adopt;
pub mod key;
pub mod link;
mod shed;
pub mod steer;
pub mod tun;
pub mod tunnel;
pub mod uapi;
mod udp;

pub use adopt::Adopted;
pub use key::{KeyError, PublicKey, SecretKey};
pub use tunnel::{Tunnel, TunnelConfig, TunnelStats};
