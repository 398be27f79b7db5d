//! The FIB side of crosslink: kernel nexthop objects and the routes that use them.

mod direct;
pub mod nexthop;
pub mod plan;
pub mod routes;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_proto::sys::{protocols::NETLINK_ROUTE, SocketAddr};
use netlink_proto::ConnectionHandle;

use ipnet::IpNet;
use nexthop::{Kind, Message, Nexthop};
use plan::{Kernel, Op, Plan};

#[derive(Debug, thiserror::Error)]
pub enum FibError {
    #[error("netlink: {0}")]
    Transport(String),
    #[error("the kernel refused {what}: {err}")]
    Kernel { what: String, err: std::io::Error },
}

/// An error message with a code is the kernel's refusal; without one, an acknowledgement.
fn refused(what: &str, e: &netlink_packet_core::ErrorMessage) -> Result<(), FibError> {
    match e.code {
        Some(code) => Err(FibError::Kernel {
            what: what.to_owned(),
            err: std::io::Error::from_raw_os_error(-code.get()),
        }),
        None => Ok(()),
    }
}

/// Nexthop objects: changes on a socket used synchronously (see `direct`), dumps over an
/// rtnetlink connection (its task must run).
#[derive(Clone)]
pub struct Nexthops {
    handle: ConnectionHandle<Message>,
    direct: Arc<Mutex<direct::Direct>>,
}

impl Nexthops {
    /// The handle and the connection future to spawn.
    pub fn connect() -> std::io::Result<(Nexthops, impl std::future::Future<Output = ()>)> {
        let (conn, handle, _) = netlink_proto::new_connection::<Message>(NETLINK_ROUTE)?;
        let direct = Arc::new(Mutex::new(direct::Direct::open()?));
        Ok((Nexthops { handle, direct }, conn))
    }

    /// Blocks for the kernel's own time for the request (see `direct`).
    async fn ack(&self, msg: Message, flags: u16, what: String) -> Result<(), FibError> {
        // A panic while holding the socket left no state behind but the sequence number.
        let mut d = self.direct.lock().unwrap_or_else(PoisonError::into_inner);
        d.request(msg, flags, &what)
    }

    /// Creates `nh`, or replaces the nexthop with its id in one step (for a group: the new
    /// member set takes effect for every route using it at once).
    pub async fn replace(&self, nh: Nexthop) -> Result<(), FibError> {
        let what = format!("nexthop {}", nh.id);
        self.ack(Message::New(nh), NLM_F_CREATE | NLM_F_REPLACE, what)
            .await
    }

    /// Replaces the nexthop with `nh`'s id, which must exist: the kernel refuses (ENOENT)
    /// rather than create it, so a plan made from a record of the kernel that has gone
    /// stale (a group it deleted with its routes) fails instead of quietly re-creating
    /// the group without them.
    pub async fn replace_existing(&self, nh: Nexthop) -> Result<(), FibError> {
        let what = format!("nexthop {}", nh.id);
        self.ack(Message::New(nh), NLM_F_REPLACE, what).await
    }

    pub async fn delete(&self, id: u32) -> Result<(), FibError> {
        self.ack(Message::Del(id), 0, format!("deleting nexthop {id}"))
            .await
    }

    /// Every nexthop object in the kernel.
    pub async fn dump(&self) -> Result<Vec<Nexthop>, FibError> {
        let mut req = NetlinkMessage::from(Message::Get);
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut replies = self
            .handle
            .request(req, SocketAddr::new(0, 0))
            .map_err(|e| FibError::Transport(e.to_string()))?;
        let mut out = Vec::new();
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(Message::New(nh)) => out.push(nh),
                NetlinkPayload::Error(e) => refused("the nexthop dump", &e)?,
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Route operations between two looks at whether to stop (see `Fib::apply`): about 2 ms of
/// route work at the 7 µs each measured.
pub const ROUTE_CHUNK: usize = 256;

/// Whether `done` route operations end a chunk, where route work may stop.
fn chunk_done(done: usize) -> bool {
    done > 0 && done % ROUTE_CHUNK == 0
}

/// Both halves of the FIB: nexthop objects (our codec) and routes (rtnetlink).
#[derive(Clone)]
pub struct Fib {
    pub nexthops: Nexthops,
    routes: rtnetlink::Handle,
}

impl Fib {
    /// The handle and the connection futures to spawn (both must run).
    pub fn connect() -> std::io::Result<(
        Fib,
        impl std::future::Future<Output = ()>,
        impl std::future::Future<Output = ()>,
    )> {
        let (nexthops, nh_conn) = Nexthops::connect()?;
        let (rt_conn, routes, _) = rtnetlink::new_connection()?;
        Ok((Fib { nexthops, routes }, nh_conn, rt_conn))
    }

    /// The kernel's nexthops, and its routes that are ours or at a prefix in `wanted`;
    /// `routes: false` skips the route dump (a membership change needs only the nexthops).
    pub async fn kernel(
        &self,
        wanted: &BTreeSet<IpNet>,
        with_routes: bool,
    ) -> Result<Kernel, FibError> {
        let nexthops = self.nexthops.dump().await?;
        let routes = if with_routes {
            routes::dump(&self.routes, wanted).await?
        } else {
            Vec::new()
        };
        Ok(Kernel { nexthops, routes })
    }

    /// Puts back the routes of groups the kernel deleted (with their routes) when their
    /// last member's link lost its carrier, without the dump a reconcile starts with:
    /// every route is dropped traffic until it is back. Adds only (see `routes::add`), so
    /// another protocol's route is never replaced; the reconcile that follows checks.
    /// Stops when `stop` says so, as `apply` does; returns what the kernel refused and
    /// whether every route was added.
    pub async fn restore(
        &self,
        routes: impl Iterator<Item = ((u32, IpNet), u32)>,
        stop: impl Fn() -> bool,
    ) -> (Vec<FibError>, bool) {
        let mut errors = Vec::new();
        for (i, ((metric, dst), nhid)) in routes.enumerate() {
            if chunk_done(i) && stop() {
                return (errors, false);
            }
            if let Err(e) = routes::add(&self.routes, dst, metric, nhid).await {
                errors.push(e);
            }
        }
        (errors, true)
    }

    /// Carries out `plan` in order. A member the kernel refuses (its interface just lost
    /// carrier) is left out of the groups that follow, so the other members still take the
    /// traffic; every refusal is returned for the log, and the next reconcile retries.
    pub async fn apply(&self, plan: &Plan) -> Vec<FibError> {
        self.apply_until(plan, || false).await.0
    }

    /// As `apply`, but asks `stop` every `ROUTE_CHUNK` route operations and leaves the
    /// rest when it says so: a table's worth of route work (0.7 s at 100,000) must not hold
    /// up a switch that became due meanwhile. Any prefix of the plan is a state the kernel
    /// accepts (see `plan::diff`), and the next reconcile does the rest. Returns the
    /// refusals and whether the whole plan was carried out.
    pub async fn apply_until(&self, plan: &Plan, stop: impl Fn() -> bool) -> (Vec<FibError>, bool) {
        self.apply_expecting(plan, &BTreeSet::new(), stop).await
    }

    /// As `apply_until`, with the nexthops `existing` replaced only if the kernel still has
    /// them (see `Nexthops::replace_existing`).
    pub async fn apply_expecting(
        &self,
        plan: &Plan,
        existing: &BTreeSet<u32>,
        stop: impl Fn() -> bool,
    ) -> (Vec<FibError>, bool) {
        let mut errors = Vec::new();
        let mut refused: BTreeSet<u32> = BTreeSet::new();
        let mut route_ops = 0usize;
        for op in &plan.ops {
            if matches!(op, Op::Route { .. } | Op::DelRoute { .. }) {
                if chunk_done(route_ops) && stop() {
                    return (errors, false);
                }
                route_ops += 1;
            }
            let r = match op {
                Op::Nexthop(nh) => match &nh.kind {
                    Kind::Group(members) => {
                        let members: Vec<(u32, u16)> = members
                            .iter()
                            .filter(|(id, _)| !refused.contains(id))
                            .copied()
                            .collect();
                        if members.is_empty() {
                            continue;
                        }
                        let group = Nexthop::group(nh.id, nh.protocol, members);
                        if existing.contains(&nh.id) {
                            self.nexthops.replace_existing(group).await
                        } else {
                            self.nexthops.replace(group).await
                        }
                    }
                    _ => {
                        let r = if existing.contains(&nh.id) {
                            self.nexthops.replace_existing(nh.clone()).await
                        } else {
                            self.nexthops.replace(nh.clone()).await
                        };
                        if r.is_err() {
                            refused.insert(nh.id);
                        }
                        r
                    }
                },
                Op::DelNexthop(id) => self.nexthops.delete(*id).await,
                Op::Route { dst, metric, nhid } => {
                    routes::replace(&self.routes, *dst, *metric, *nhid).await
                }
                Op::DelRoute { dst, metric } => routes::delete(&self.routes, *dst, *metric).await,
            };
            if let Err(e) = r {
                errors.push(e);
            }
        }
        (errors, true)
    }
}
