//! Each interface's index and carrier, as the kernel's link notifications tell it
//! (rtnetlink), sent to the supervisor for the paths' carrier signal and their kernel
//! members (a nexthop names its interface by index); it decides again the moment one of
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
//! can miss a link another one's change raced). Before the first dump, and once a second
//! while the socket is lost and being reconnected, the table is read from sysfs instead,
//! and says so: the FIB programmer then reads the kernel before every switch.

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

/// An interface as the kernel tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Link {
    pub index: u32,
    /// Administratively up with its carrier, as the kernel's IFF_LOWER_UP says (what
    /// sysfs `carrier` reads).
    pub up: bool,
}

/// Every interface by name.
pub type LinkTable = BTreeMap<String, Link>;

fn name(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn link(msg: &LinkMessage) -> Link {
    Link {
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::LowerUp),
    }
}

/// What a notification changes: an interface with its index and carrier, or gone
/// (`None`). Only
/// the generic family speaks of the link itself: a bridge's messages (AF_BRIDGE) about a
/// port, a "del" when it leaves the bridge among them, do not.
fn change(msg: RouteNetlinkMessage) -> Option<(String, Option<Link>)> {
    let (l, gone) = match msg {
        RouteNetlinkMessage::NewLink(l) => (l, false),
        RouteNetlinkMessage::DelLink(l) => (l, true),
        _ => return None,
    };
    if l.header.interface_family != AddressFamily::Unspec {
        return None;
    }
    name(&l).map(|n| (n.to_owned(), (!gone).then(|| link(&l))))
}

/// The interfaces that feed the config's paths.
fn ours(cfg: &Config) -> impl Iterator<Item = &String> {
    cfg.lines
        .iter()
        .map(|l| l.interface.get_ref())
        .chain(cfg.tunnels.iter().map(|t| t.interface.get_ref()))
}

/// Applies one change (in the supervisor); a decision follows when it concerns a path.
/// Without a table it waits for one.
pub(crate) fn update(st: &mut AgentState, iface: String, link: Option<Link>) {
    let Some(table) = st.links.as_mut() else {
        return;
    };
    // A new index is a change too (the interface was made again): its members follow.
    let changed = match link {
        Some(l) => table.insert(iface.clone(), l) != Some(l),
        None => table.remove(&iface).is_some(),
    };
    if changed && ours(st.config()).any(|n| *n == iface) {
        st.carrier_epoch += 1;
        st.touch();
    }
}

/// Puts a fresh table in place (in the supervisor), `followed` by notifications or read
/// from sysfs; a decision follows when one of our interfaces differs.
pub(crate) fn replace(st: &mut AgentState, fresh: LinkTable, followed: bool) {
    let was_followed = std::mem::replace(&mut st.links_followed, followed);
    let differs = match &st.links {
        Some(old) => ours(st.config()).any(|n| old.get(n) != fresh.get(n)),
        None => true,
    } || was_followed != followed;
    st.links = Some(fresh);
    if differs {
        st.carrier_epoch += 1;
        st.touch();
    }
}

/// A dump checked against the table it replaces: an interface it left out that `index_of`
/// finds by name was missed by the dump (another link's change raced it), not gone: it
/// stays with its carrier as last known and its index as found now (it may have been made
/// again).
fn confirmed(
    old: Option<&LinkTable>,
    mut fresh: LinkTable,
    index_of: impl Fn(&str) -> Option<u32>,
) -> LinkTable {
    for (n, l) in old.into_iter().flatten() {
        if fresh.contains_key(n) {
            continue;
        }
        if let Some(index) = index_of(n) {
            fresh.insert(n.clone(), Link { index, up: l.up });
        }
    }
    fresh
}

async fn dump(handle: &rtnetlink::Handle) -> Result<LinkTable, rtnetlink::Error> {
    handle
        .link()
        .get()
        .execute()
        .try_filter_map(|l| async move { Ok(name(&l).map(|n| (n.to_owned(), link(&l)))) })
        .try_collect()
        .await
}

fn index_of(iface: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(iface).ok()
}

/// Every interface's index and carrier from sysfs; none when sysfs cannot be read (no
/// table is better than one where every interface looks absent). Reading `carrier` of an
/// interface that is administratively down fails with EINVAL: no carrier. One that goes
/// while it is read is left out.
pub(crate) fn sysfs_table() -> Option<LinkTable> {
    let mut table = LinkTable::new();
    let dir = match std::fs::read_dir("/sys/class/net") {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the interfaces from /sys/class/net");
            return None;
        }
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let read = |what: &str| std::fs::read_to_string(entry.path().join(what));
        let Some(index) = read("ifindex").ok().and_then(|i| i.trim().parse().ok()) else {
            continue;
        };
        let up = match read("carrier") {
            Ok(c) => c.trim() == "1",
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINVAL as i32) => false,
            Err(_) => continue,
        };
        table.insert(name, Link { index, up });
    }
    Some(table)
}

fn from_sysfs(inputs: &Inputs) {
    if let Some(table) = sysfs_table() {
        inputs.send(Input::Links {
            table,
            followed: false,
        });
    }
}

/// Starts the task that keeps the table, subscribing again whenever the socket fails. The
/// first table is read from sysfs at once: it reaches the supervisor before the FIB
/// programmer's first read of the kernel, so the first decision knows every carrier.
pub fn start(inputs: Inputs) {
    from_sysfs(&inputs);
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
            // Lost: the carriers come from sysfs until a new table is in.
            from_sysfs(&inputs);
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
    let mut table: Option<LinkTable> = None;
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
                        if let Some((iface, link)) = change(msg) {
                            if let Some(t) = table.as_mut() {
                                match link {
                                    Some(l) => t.insert(iface.clone(), l),
                                    None => t.remove(&iface),
                                };
                            }
                            inputs.send(Input::Link { iface, link });
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
                let fresh = confirmed(table.as_ref(), all, index_of);
                table = Some(fresh.clone());
                inputs.send(Input::Links {
                    table: fresh,
                    followed: true,
                });
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

    fn message(name: Option<&str>, flags: LinkFlags) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.flags = flags;
        m.header.index = 7;
        if let Some(n) = name {
            m.attributes.push(LinkAttribute::IfName(n.to_owned()));
        }
        m
    }

    fn up_at(index: u32) -> Link {
        Link { index, up: true }
    }

    fn down_at(index: u32) -> Link {
        Link { index, up: false }
    }

    #[test]
    fn a_notification_says_the_carrier_or_that_the_link_is_gone() {
        let up = LinkFlags::Up | LinkFlags::Running | LinkFlags::LowerUp;
        assert_eq!(
            change(RouteNetlinkMessage::NewLink(message(Some("line1"), up))),
            Some(("line1".to_owned(), Some(up_at(7))))
        );
        // Administratively up without a carrier, or down altogether.
        assert_eq!(
            change(RouteNetlinkMessage::NewLink(message(
                Some("line1"),
                LinkFlags::Up
            ))),
            Some(("line1".to_owned(), Some(down_at(7))))
        );
        assert_eq!(
            change(RouteNetlinkMessage::NewLink(message(
                Some("wg0"),
                LinkFlags::empty()
            ))),
            Some(("wg0".to_owned(), Some(down_at(7))))
        );
        assert_eq!(
            change(RouteNetlinkMessage::DelLink(message(Some("wg0"), up))),
            Some(("wg0".to_owned(), None))
        );
        assert_eq!(
            change(RouteNetlinkMessage::NewLink(message(None, up))),
            None
        );
        // A port leaving a bridge: a "del" of the bridge family, not of the link.
        let mut port = message(Some("line1"), up);
        port.header.interface_family = AddressFamily::Bridge;
        assert_eq!(change(RouteNetlinkMessage::DelLink(port)), None);
    }

    fn state() -> AgentState {
        let cfg = crate::config::tests::one_line_site("line1", "");
        AgentState::new(
            cfg,
            std::path::Path::new("t.toml"),
            crate::state::Now::read(),
        )
    }

    #[test]
    fn only_a_dump_makes_the_table_and_only_our_interfaces_wake_the_decision() {
        let mut st = state();
        update(&mut st, "line1".into(), Some(up_at(3)));
        assert!(st.links.is_none(), "a notification alone makes no table");
        replace(&mut st, [("line1".to_owned(), up_at(3))].into(), false);
        assert!(st.take_touched(), "the first table (sysfs)");
        replace(&mut st, [("line1".to_owned(), up_at(3))].into(), true);
        assert!(st.take_touched(), "followed from now on");
        update(&mut st, "line1".into(), Some(down_at(3)));
        assert!(!st.links.as_ref().unwrap()["line1"].up);
        assert!(st.take_touched(), "ours: a decision follows");
        update(&mut st, "docker0".into(), Some(up_at(4)));
        assert!(!st.take_touched(), "not ours");
        replace(&mut st, [("line1".to_owned(), down_at(3))].into(), true);
        assert!(!st.take_touched(), "the same for ours");
        update(&mut st, "line1".into(), Some(down_at(9)));
        assert!(
            st.take_touched(),
            "made again: its members follow the new index"
        );
        replace(&mut st, [("line1".to_owned(), down_at(9))].into(), false);
        assert!(st.take_touched(), "lost: read from sysfs now");
        assert!(!st.links_followed);
    }

    #[test]
    fn sysfs_knows_the_loopback_and_its_carrier() {
        let t = sysfs_table().expect("sysfs");
        let lo = nix::net::if_::if_nametoindex("lo").unwrap();
        assert_eq!(t.get("lo"), Some(&up_at(lo)), "{t:?}");
    }

    #[test]
    fn a_link_a_dump_missed_is_not_absent() {
        let old: LinkTable = [
            ("line1".to_owned(), down_at(3)),
            ("tun1".to_owned(), up_at(4)),
        ]
        .into();
        let fresh: LinkTable = [("tun1".to_owned(), up_at(4))].into();
        // line1 exists: missed by the dump, as last known.
        let t = confirmed(Some(&old), fresh.clone(), |_| Some(3));
        assert_eq!(t.get("line1"), Some(&down_at(3)));
        // Gone for real.
        let t = confirmed(Some(&old), fresh.clone(), |_| None);
        assert_eq!(t.get("line1"), None);
        assert_eq!(confirmed(None, fresh.clone(), |_| Some(3)), fresh);
        // Made again meanwhile: the index found now.
        let t = confirmed(Some(&old), fresh.clone(), |_| Some(9));
        assert_eq!(t.get("line1"), Some(&down_at(9)));
    }
}
