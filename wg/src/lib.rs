//! WireGuard tunnels driven by boringtun's sans-IO `noise::Tunn` from crosslink's own tokio
//! loop, with a read-only UAPI for `wg show`. Empty until the tunnel issue lands; the agent
//! reports tunnel state as `unknown`.
