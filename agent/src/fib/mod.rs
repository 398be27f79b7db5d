//! The FIB side of crosslink: kernel nexthop objects and the routes that use them.

pub mod nexthop;

use futures_util::StreamExt;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_proto::sys::{protocols::NETLINK_ROUTE, SocketAddr};
use netlink_proto::ConnectionHandle;

use nexthop::{Message, Nexthop};

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

/// Nexthop objects over an rtnetlink socket of their own (its connection task must run).
#[derive(Clone)]
pub struct Nexthops {
    handle: ConnectionHandle<Message>,
}

impl Nexthops {
    /// The handle and the connection future to spawn.
    pub fn connect() -> std::io::Result<(Nexthops, impl std::future::Future<Output = ()>)> {
        let (conn, handle, _) = netlink_proto::new_connection::<Message>(NETLINK_ROUTE)?;
        Ok((Nexthops { handle }, conn))
    }

    async fn ack(&self, msg: Message, flags: u16, what: String) -> Result<(), FibError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut replies = self
            .handle
            .request(req, SocketAddr::new(0, 0))
            .map_err(|e| FibError::Transport(e.to_string()))?;
        while let Some(reply) = replies.next().await {
            if let NetlinkPayload::Error(e) = reply.payload {
                refused(&what, &e)?;
            }
        }
        Ok(())
    }

    /// Creates `nh`, or replaces the nexthop with its id in one step (for a group: the new
    /// member set takes effect for every route using it at once).
    pub async fn replace(&self, nh: Nexthop) -> Result<(), FibError> {
        let what = format!("nexthop {}", nh.id);
        self.ack(Message::New(nh), NLM_F_CREATE | NLM_F_REPLACE, what)
            .await
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
