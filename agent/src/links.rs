//! Wakes the route programming the moment the kernel reports a change on one of our
//! interfaces. A carrier loss must not wait for BFD to notice: the kernel flushes the
//! nexthops on a link that lost its carrier at once (a group left empty takes its routes
//! with it), so every millisecond until the next pass is traffic dropped.
//!
//! The carrier itself is still read from sysfs when the state is evaluated; this task only
//! says when to look.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::MulticastGroup;

use crate::config::Config;
use crate::state::{lock, AgentState};

/// The interfaces whose link state feeds a path's signals.
fn watched(cfg: &Config) -> BTreeSet<String> {
    let lines = cfg.lines.iter().map(|l| l.interface.get_ref().clone());
    let tunnels = cfg.tunnels.iter().map(|t| t.interface.get_ref().clone());
    lines.chain(tunnels).collect()
}

/// Whether a link notification may change a signal: one of ours by name, or one without a
/// name (it costs one pass to look; missing a carrier loss costs traffic).
fn concerns(msg: &LinkMessage, watched: &BTreeSet<String>) -> bool {
    let name = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n),
        _ => None,
    });
    name.is_none_or(|n| watched.contains(n))
}

/// Subscribes to link notifications and starts the watching task.
pub fn start(state: Arc<Mutex<AgentState>>) -> std::io::Result<()> {
    let (conn, _handle, mut messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link])?;
    tokio::spawn(conn);
    let names = watched(lock(&state).config());
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            let link = match msg.payload {
                NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l),
                ) => l,
                _ => continue,
            };
            if concerns(&link, &names) {
                lock(&state).touch();
            }
        }
        // The socket only ends with the runtime; carrier is then still read on every
        // reconcile pass, just later.
        tracing::warn!("link notifications ended; carrier changes are seen within a second");
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: Option<&str>) -> LinkMessage {
        let mut m = LinkMessage::default();
        if let Some(n) = name {
            m.attributes.push(LinkAttribute::IfName(n.to_owned()));
        }
        m
    }

    #[test]
    fn only_our_interfaces_wake_the_programmer() {
        let ours: BTreeSet<String> = ["line1".to_owned(), "wg0".to_owned()].into();
        assert!(concerns(&link(Some("line1")), &ours));
        assert!(concerns(&link(Some("wg0")), &ours));
        assert!(!concerns(&link(Some("docker0")), &ours));
        assert!(
            concerns(&link(None), &ours),
            "unnamed: look rather than miss it"
        );
    }
}
