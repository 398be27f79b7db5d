//! Descriptors a tunnel can start from instead of opening its own: those a previous run
//! of the agent handed to the service manager (systemd's file-descriptor store) before it
//! stopped. The TUN queues stay attached meanwhile, so the interface keeps its carrier and
//! the kernel keeps the nexthops and routes through it (a TUN nobody holds loses its
//! carrier, and the kernel then deletes them); the UDP socket keeps its port and the
//! datagrams that arrive meanwhile.

use std::os::fd::OwnedFd;

/// What a previous run left for one tunnel, matched to the tunnel by interface name.
#[derive(Default)]
pub struct Adopted {
    /// The TUN queues, in the order they were attached.
    pub tun: Vec<OwnedFd>,
    pub udp: Option<OwnedFd>,
}

impl Adopted {
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
}
