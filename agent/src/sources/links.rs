//! Each interface's carrier, as the kernel's link notifications tell it (rtnetlink), sent
//! to the supervisor for the paths' carrier signal; it decides again the moment one of
//! our interfaces changes. A carrier loss must not wait for BFD to notice:
//! the kernel flushes the nexthops on a link that lost its carrier at once (a group left
//! empty takes its routes with it), so every millisecond until the next pass is traffic
//! dropped.
//!
//! Every link is kept, not only those of the config at start: a line or tunnel added by a
//! reload is known at once. Only a dump creates or replaces the table (a notification
//! alone would make every other interface look absent); one runs at start, every second
//! after (repairing a lost notification), and after the socket overran. An interface of
//! ours a dump leaves out is confirmed gone by name before it counts as absent (a dump
//! can miss a link another one's change raced). While there is no table (before the
//! first dump, or with the socket lost and being reconnected) the carrier signal reads
//! sysfs instead (`state`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::MulticastGroup;

use crate::config::Config;
use crate::state::AgentState;
use crate::supervisor::{Input, Inputs};

/// How often the whole table is read again.
const RESYNC: Duration = Duration::from_secs(1);
/// Wait before subscribing again after the socket failed or ended.
const RECONNECT: Duration = Duration::from_secs(1);

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

/// What a notification changes: an interface with its carrier, or gone (`None`). Only
/// the generic family speaks of the link itself: a bridge's messages (AF_BRIDGE) about a
/// port, a "del" when it leaves the bridge among them, do not.
fn change(msg: RouteNetlinkMessage) -> Option<(String, Option<bool>)> {
    let (l, gone) = match msg {
        RouteNetlinkMessage::NewLink(l) => (l, false),
        RouteNetlinkMessage::DelLink(l) => (l, true),
        _ => return None,
    };
    if l.header.interface_family != AddressFamily::Unspec {
        return None;
    }
    name(&l).map(|n| (n.to_owned(), (!gone).then(|| carrier(&l))))
}

/// The interfaces that feed the config's paths.
fn ours(cfg: &Config) -> impl Iterator<Item = &String> {
    cfg.lines
        .iter()
        .map(|l| l.interface.get_ref())
        .chain(cfg.tunnels.iter().map(|t| t.interface.get_ref()))
}

/// Applies one change (in the supervisor); a decision follows when it concerns a path.
/// Without a table (no dump yet) it waits for the dump.
pub(crate) fn update(st: &mut AgentState, iface: String, carrier: Option<bool>) {
    let Some(table) = st.links.as_mut() else {
        return;
    };
    let changed = match carrier {
        Some(c) => table.insert(iface.clone(), c) != Some(c),
        None => table.remove(&iface).is_some(),
    };
    if changed && ours(st.config()).any(|n| *n == iface) {
        st.carrier_epoch += 1;
        st.touch();
    }
}

/// Puts a fresh table in place (in the supervisor), or none when the notifications were
/// lost; a decision follows when one of our interfaces differs.
pub(crate) fn replace(st: &mut AgentState, fresh: Option<Carriers>) {
    let old = std::mem::replace(&mut st.links, fresh);
    let differs = match (&old, &st.links) {
        (Some(old), Some(new)) => ours(st.config()).any(|n| old.get(n) != new.get(n)),
        (None, None) => false,
        _ => true,
    };
    if differs {
        st.carrier_epoch += 1;
        st.touch();
    }
}

/// A dump checked against the table it replaces: an interface it left out that `exists`
/// confirms by name was missed by the dump (another link's change raced it), not gone, and
/// stays as last known.
fn confirmed(
    old: Option<&Carriers>,
    mut fresh: Carriers,
    exists: impl Fn(&str) -> bool,
) -> Carriers {
    for (n, c) in old.into_iter().flatten() {
        if !fresh.contains_key(n) && exists(n) {
            fresh.insert(n.clone(), *c);
        }
    }
    fresh
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

fn exists(iface: &str) -> bool {
    nix::net::if_::if_nametoindex(iface).is_ok()
}

/// Starts the task that keeps the table, subscribing again whenever the socket fails.
pub fn start(inputs: Inputs) {
    tokio::spawn(async move {
        loop {
            match rtnetlink::new_multicast_connection(&[MulticastGroup::Link]) {
                Ok((conn, handle, messages)) => {
                    let conn = tokio::spawn(conn);
                    follow(&inputs, &handle, messages).await;
                    conn.abort();
                }
                Err(e) => {
                    tracing::error!(error = %e, "no link notifications; carriers are read from sysfs meanwhile")
                }
            }
            // Lost: the carrier falls back to sysfs until a new table is in.
            inputs.send(Input::Links(None));
            tokio::time::sleep(RECONNECT).await;
        }
    });
}

/// Follows one socket until it ends.
async fn follow<S>(inputs: &Inputs, handle: &rtnetlink::Handle, mut messages: S)
where
    S: futures_util::Stream<
            Item = (
                netlink_packet_core::NetlinkMessage<RouteNetlinkMessage>,
                rtnetlink::sys::SocketAddr,
            ),
        > + Unpin,
{
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    // The table as sent, to check the next dump against.
    let mut table: Option<Carriers> = None;
    loop {
        // Notifications first: a dump taken while some wait would be undone by them.
        let due = tokio::select! {
            biased;
            m = messages.next() => {
                let Some((msg, _)) = m else {
                    tracing::warn!("link notifications ended; subscribing again");
                    return;
                };
                match msg.payload {
                    NetlinkPayload::InnerMessage(msg) => {
                        if let Some((iface, carrier)) = change(msg) {
                            if let Some(t) = table.as_mut() {
                                match carrier {
                                    Some(c) => t.insert(iface.clone(), c),
                                    None => t.remove(&iface),
                                };
                            }
                            inputs.send(Input::Link { iface, carrier });
                        }
                        false
                    }
                    // The socket's buffer overran: what was lost is read afresh.
                    NetlinkPayload::Overrun(_) => true,
                    _ => false,
                }
            }
            _ = resync.tick() => true,
        };
        if !due {
            continue;
        }
        match dump(handle).await {
            Ok(all) => {
                failures = 0;
                let fresh = confirmed(table.as_ref(), all, exists);
                table = Some(fresh.clone());
                inputs.send(Input::Links(Some(fresh)));
            }
            Err(e) => {
                failures += 1;
                // Once, then every minute: the table stays as last known meanwhile.
                if failures == 1 || failures % 60 == 0 {
                    tracing::warn!(error = %e, failures, "link dump failed; the carrier table is as last known");
                }
            }
        }
    }
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
        // A port leaving a bridge: a "del" of the bridge family, not of the link.
        let mut port = link(Some("line1"), up);
        port.header.interface_family = AddressFamily::Bridge;
        assert_eq!(change(RouteNetlinkMessage::DelLink(port)), None);
    }

    fn state() -> AgentState {
        let cfg = crate::config::tests::one_line_site("line1", "");
        AgentState::new(cfg, std::path::Path::new("t.toml"))
    }

    #[test]
    fn only_a_dump_makes_the_table_and_only_our_interfaces_wake_the_decision() {
        let mut st = state();
        update(&mut st, "line1".into(), Some(true));
        assert!(st.links.is_none(), "a notification alone makes no table");
        replace(&mut st, Some([("line1".to_owned(), true)].into()));
        assert!(st.take_touched(), "the first table");
        update(&mut st, "line1".into(), Some(false));
        assert!(!st.links.as_ref().unwrap()["line1"]);
        assert!(st.take_touched(), "ours: a decision follows");
        update(&mut st, "docker0".into(), Some(true));
        assert!(!st.take_touched(), "not ours");
        replace(&mut st, Some([("line1".to_owned(), false)].into()));
        assert!(!st.take_touched(), "the same for ours");
        replace(&mut st, None);
        assert!(st.take_touched(), "lost: read from sysfs now");
    }

    #[test]
    fn a_link_a_dump_missed_is_not_absent() {
        let old: Carriers = [("line1".to_owned(), false), ("tun1".to_owned(), true)].into();
        let fresh: Carriers = [("tun1".to_owned(), true)].into();
        // line1 exists: missed by the dump, as last known.
        let t = confirmed(Some(&old), fresh.clone(), |_| true);
        assert_eq!(t.get("line1"), Some(&false));
        // Gone for real.
        let t = confirmed(Some(&old), fresh.clone(), |_| false);
        assert_eq!(t.get("line1"), None);
        assert_eq!(confirmed(None, fresh.clone(), |_| true), fresh);
    }
}
