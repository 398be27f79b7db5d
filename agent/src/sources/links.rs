//! Each interface's carrier, as the kernel's link notifications tell it (rtnetlink), kept
//! in the state for the paths' carrier signal; and a wake-up of the route programming the
//! moment one of our interfaces changes. A carrier loss must not wait for BFD to notice:
//! the kernel flushes the nexthops on a link that lost its carrier at once (a group left
//! empty takes its routes with it), so every millisecond until the next pass is traffic
//! dropped.
//!
//! Every link is kept, not only those of the config at start: a line or tunnel added by a
//! reload is known at once. The table is also read afresh every second (a dump), which
//! repairs anything a notification lost (the socket's buffer overran, a message raced the
//! dump); until the first dump the carrier is unknown, never guessed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::MulticastGroup;

use crate::config::Config;
use crate::state::{lock, AgentState};

/// How often the whole table is read again.
const RESYNC: Duration = Duration::from_secs(1);

/// Interface name to carrier (up: the link is administratively up and has its carrier, as
/// the kernel's IFF_LOWER_UP says; what sysfs `carrier` reads).
pub type Carriers = BTreeMap<String, bool>;

fn name(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn carrier(msg: &LinkMessage) -> bool {
    msg.header.flags.contains(LinkFlags::LowerUp)
}

/// What a notification changes: an interface with its carrier, or gone (`None`).
fn change(msg: RouteNetlinkMessage) -> Option<(String, Option<bool>)> {
    match msg {
        RouteNetlinkMessage::NewLink(l) => name(&l).map(|n| (n.to_owned(), Some(carrier(&l)))),
        RouteNetlinkMessage::DelLink(l) => name(&l).map(|n| (n.to_owned(), None)),
        _ => None,
    }
}

/// Whether `iface` feeds one of the config's paths.
fn ours(cfg: &Config, iface: &str) -> bool {
    cfg.lines.iter().any(|l| l.interface.get_ref() == iface)
        || cfg.tunnels.iter().any(|t| t.interface.get_ref() == iface)
}

/// Applies one change; wakes the programmer when it concerns a path.
fn update(state: &Mutex<AgentState>, iface: String, carrier: Option<bool>) {
    let mut st = lock(state);
    let table = st.links.get_or_insert_with(Carriers::new);
    let changed = match carrier {
        Some(c) => table.insert(iface.clone(), c) != Some(c),
        None => table.remove(&iface).is_some(),
    };
    if changed && ours(st.config(), &iface) {
        st.touch();
    }
}

/// Puts a fresh dump in place; wakes the programmer when one of our interfaces differs.
fn replace(state: &Mutex<AgentState>, fresh: Carriers) {
    let mut st = lock(state);
    let differs = match &st.links {
        None => true,
        Some(old) => {
            let cfg = st.config();
            let names = cfg
                .lines
                .iter()
                .map(|l| l.interface.get_ref())
                .chain(cfg.tunnels.iter().map(|t| t.interface.get_ref()));
            names
                .into_iter()
                .any(|n| old.get(n.as_str()) != fresh.get(n.as_str()))
        }
    };
    st.links = Some(fresh);
    if differs {
        st.touch();
    }
}

async fn dump(handle: &rtnetlink::Handle) -> Result<Carriers, rtnetlink::Error> {
    handle
        .link()
        .get()
        .execute()
        .try_filter_map(|l| async move { Ok(name(&l).map(|n| (n.to_owned(), carrier(&l)))) })
        .try_collect()
        .await
}

/// Subscribes to link notifications and starts the task that keeps the table.
pub fn start(state: Arc<Mutex<AgentState>>) -> std::io::Result<()> {
    let (conn, handle, mut messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link])?;
    tokio::spawn(conn);
    tokio::spawn(async move {
        let mut resync = tokio::time::interval(RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = resync.tick() => match dump(&handle).await {
                    Ok(all) => replace(&state, all),
                    Err(e) => tracing::warn!(error = %e, "link dump failed; the carrier table is as last known"),
                },
                m = messages.next() => {
                    let Some((msg, _)) = m else { break };
                    if let NetlinkPayload::InnerMessage(msg) = msg.payload {
                        if let Some((iface, carrier)) = change(msg) {
                            update(&state, iface, carrier);
                        }
                    }
                }
            }
        }
        // The socket only ends with the runtime.
        tracing::warn!("link notifications ended; carriers are no longer followed");
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: Option<&str>, flags: LinkFlags) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.flags = flags;
        if let Some(n) = name {
            m.attributes.push(LinkAttribute::IfName(n.to_owned()));
        }
        m
    }

    #[test]
    fn a_notification_says_the_carrier_or_that_the_link_is_gone() {
        let up = LinkFlags::Up | LinkFlags::Running | LinkFlags::LowerUp;
        assert_eq!(
            change(RouteNetlinkMessage::NewLink(link(Some("line1"), up))),
            Some(("line1".to_owned(), Some(true)))
        );
        // Administratively up without a carrier, or down altogether.
        assert_eq!(
            change(RouteNetlinkMessage::NewLink(link(
                Some("line1"),
                LinkFlags::Up
            ))),
            Some(("line1".to_owned(), Some(false)))
        );
        assert_eq!(
            change(RouteNetlinkMessage::NewLink(link(
                Some("wg0"),
                LinkFlags::empty()
            ))),
            Some(("wg0".to_owned(), Some(false)))
        );
        assert_eq!(
            change(RouteNetlinkMessage::DelLink(link(Some("wg0"), up))),
            Some(("wg0".to_owned(), None))
        );
        assert_eq!(change(RouteNetlinkMessage::NewLink(link(None, up))), None);
    }
}
