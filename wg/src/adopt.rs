//! Descriptors a tunnel can start from instead of opening its own: those a previous run
//! of the agent handed to the service manager (systemd's file-descriptor store) before it
//! stopped. The TUN queues stay attached meanwhile, so the interface keeps its carrier and
//! the kernel keeps the nexthops and routes through it (a TUN nobody holds loses its
//! carrier, and the kernel then deletes them); the UDP socket keeps its port and the
//! datagrams that arrive meanwhile.

use std::os::fd::OwnedFd;

/// Names of a tunnel's descriptors in systemd's file-descriptor store (and across a
/// re-exec): its TUN queues by position, its UDP socket, its sessions.
pub fn tun_name(interface: &str, queue: usize) -> String {
    format!("tun.{interface}.{queue}")
}

pub fn udp_name(interface: &str) -> String {
    format!("udp.{interface}")
}

/// The UDP control socket (see `udp_steer`).
pub fn udp_control_name(interface: &str) -> String {
    format!("udpc.{interface}")
}

pub fn sessions_name(interface: &str) -> String {
    format!("wg.{interface}")
}

/// What a previous run left for one tunnel, matched to the tunnel by interface name.
#[derive(Default)]
pub struct Adopted {
    /// The TUN queues, in the order they were attached.
    pub tun: Vec<OwnedFd>,
    pub udp: Option<OwnedFd>,
    /// The UDP control socket, in the data socket's SO_REUSEPORT group.
    pub udp_control: Option<OwnedFd>,
    /// The WireGuard sessions (a memfd, see `handover`).
    pub sessions: Option<OwnedFd>,
}

impl Adopted {
    /// Every descriptor with its name (see `tun_name`), as `retire` leaves them.
    pub fn into_named(self, interface: &str) -> Vec<(String, OwnedFd)> {
        let mut out: Vec<(String, OwnedFd)> = self
            .tun
            .into_iter()
            .enumerate()
            .map(|(i, fd)| (tun_name(interface, i), fd))
            .collect();
        out.extend(self.udp.map(|fd| (udp_name(interface), fd)));
        out.extend(self.udp_control.map(|fd| (udp_control_name(interface), fd)));
        out.extend(self.sessions.map(|fd| (sessions_name(interface), fd)));
        out
    }

    /// The TUN queues, if there are `queues` of them and all are attached to `interface`;
    /// otherwise none, and they are closed at once: new queues opened after them must take
    /// the first places on the device, which the steering program counts on.
    pub(crate) fn take_tun(&mut self, interface: &str, queues: usize) -> Option<Vec<OwnedFd>> {
        let fits = self.tun.len() == queues
            && self
                .tun
                .iter()
                .all(|fd| crate::tun::attached_to(fd).is_ok_and(|name| name == interface));
        if !fits {
            if !self.tun.is_empty() {
                tracing::info!(
                    interface,
                    handed_over = self.tun.len(),
                    queues,
                    "the TUN queues handed over do not fit the tunnel's config; opening new ones"
                );
            }
            self.tun.clear();
            return None;
        }
        Some(std::mem::take(&mut self.tun))
    }

    pub(crate) fn take_udp(&mut self) -> Option<OwnedFd> {
        self.udp.take()
    }

    pub(crate) fn take_udp_control(&mut self) -> Option<OwnedFd> {
        self.udp_control.take()
    }

    /// The sessions' bytes, if a previous run left them and they can be read.
    pub(crate) fn take_sessions(&mut self, interface: &str) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        let fd = self.sessions.take()?;
        crate::handover::take(fd)
            .inspect_err(|e| tracing::warn!(interface, error = %e, "the previous run's WireGuard sessions are unreadable"))
            .ok()
    }
}
