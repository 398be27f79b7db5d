//! Routes of the main table through rtnetlink: ours carry `nhid` and our protocol number.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::plan::{KernelRoute, PROTOCOL};
use super::FibError;

/// The kernel's refusal as such (with its errno), anything else as a transport error.
fn error(e: rtnetlink::Error, what: &str) -> FibError {
    if let rtnetlink::Error::NetlinkError(m) = &e {
        if let Err(refusal) = super::refused(what, m) {
            return refusal;
        }
    }
    FibError::Transport(e.to_string())
}

fn message(dst: IpNet, metric: u32) -> RouteMessage {
    // A prefix from ipnet always fits its family, so the builder cannot refuse it.
    let b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst.addr(), dst.prefix_len())
        .unwrap_or_default();
    b.table_id(u32::from(RouteHeader::RT_TABLE_MAIN))
        .protocol(RouteProtocol::Other(PROTOCOL))
        .priority(metric)
        .build()
}

fn kernel_route(m: &RouteMessage) -> Option<KernelRoute> {
    let h = &m.header;
    let mut table = u32::from(h.table);
    let (mut dst, mut metric, mut nhid) = (None, 0, None);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = Some(IpAddr::V6(*a)),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::NhId(id) => nhid = Some(*id),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let dst = match dst {
        Some(a) => IpNet::new(a, h.destination_prefix_length).ok()?,
        // A default route has no destination attribute.
        None if h.destination_prefix_length == 0 => match h.address_family {
            netlink_packet_route::AddressFamily::Inet6 => IpNet::V6(Default::default()),
            netlink_packet_route::AddressFamily::Inet => IpNet::V4(Default::default()),
            _ => return None,
        },
        None => return None,
    };
    Some(KernelRoute {
        dst,
        metric,
        protocol: u8::from(h.protocol),
        nhid,
    })
}

/// The main table's routes that are ours or sit at a prefix in `wanted`.
pub async fn dump(h: &Handle, wanted: &BTreeSet<IpNet>) -> Result<Vec<KernelRoute>, FibError> {
    let mut out = Vec::new();
    for family in [
        RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        let mut s = h.route().get(family).execute();
        while let Some(m) = s.try_next().await.map_err(|e| error(e, "the route dump"))? {
            if let Some(r) = kernel_route(&m) {
                if r.protocol == PROTOCOL || wanted.contains(&r.dst) {
                    out.push(r);
                }
            }
        }
    }
    Ok(out)
}

/// Our route at `dst`/`metric` through nexthop (group) `nhid`.
fn through(dst: IpNet, metric: u32, nhid: u32) -> RouteMessage {
    let mut m = message(dst, metric);
    m.attributes.push(RouteAttribute::NhId(nhid));
    m
}

pub async fn replace(h: &Handle, dst: IpNet, metric: u32, nhid: u32) -> Result<(), FibError> {
    h.route()
        .add(through(dst, metric, nhid))
        .replace()
        .execute()
        .await
        .map_err(|e| error(e, &format!("route {dst} nhid {nhid}")))
}

/// Adds our route at `dst` unless a route is there at `metric` (theirs or ours): never
/// overwrites, so it is safe without a dump. Ok when the route exists.
pub async fn add(h: &Handle, dst: IpNet, metric: u32, nhid: u32) -> Result<(), FibError> {
    match h
        .route()
        .add(through(dst, metric, nhid))
        .execute()
        .await
        .map_err(|e| error(e, &format!("route {dst} nhid {nhid}")))
    {
        Err(FibError::Kernel { err, .. }) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(())
        }
        r => r,
    }
}

/// Deletes our route at `dst`/`metric`; the protocol in the request makes the kernel
/// match only ours.
pub async fn delete(h: &Handle, dst: IpNet, metric: u32) -> Result<(), FibError> {
    h.route()
        .del(message(dst, metric))
        .execute()
        .await
        .map_err(|e| error(e, &format!("deleting route {dst}")))
}
