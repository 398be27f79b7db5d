//! BGP messages sent and received on a session, by type, as an exporter counts them
//! (frr_exporter's `frr_bgp_peer_message_*`, BIRD's `show protocols all` statistics).

use crate::wire::Message;

/// Counts per message type (RFC 4271 §4.1, RFC 2918), since the session task started:
/// they go on across reconnections, as counters do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageCounts {
    pub open: u64,
    pub update: u64,
    pub notification: u64,
    pub keepalive: u64,
    pub route_refresh: u64,
}

impl MessageCounts {
    pub fn count(&mut self, m: &Message) {
        let n = match m {
            Message::Open(_) => &mut self.open,
            Message::Update(_) => &mut self.update,
            Message::Notification(_) => &mut self.notification,
            Message::Keepalive => &mut self.keepalive,
            Message::RouteRefresh(_) => &mut self.route_refresh,
        };
        *n += 1;
    }

    /// Each type with its count, by the name exporters use for it.
    pub fn by_type(&self) -> [(&'static str, u64); 5] {
        [
            ("open", self.open),
            ("update", self.update),
            ("notification", self.notification),
            ("keepalive", self.keepalive),
            ("route-refresh", self.route_refresh),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_counts_under_its_type() {
        let mut c = MessageCounts::default();
        c.count(&Message::Keepalive);
        c.count(&Message::Keepalive);
        c.count(&Message::RouteRefresh(crate::wire::RouteRefresh::request(
            crate::wire::Family::Ipv4,
        )));
        assert_eq!(
            c.by_type(),
            [
                ("open", 0),
                ("update", 0),
                ("notification", 0),
                ("keepalive", 2),
                ("route-refresh", 1)
            ]
        );
    }
}
