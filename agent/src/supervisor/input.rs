//! What reaches the supervisor: every source (links, BGP, BFD, tunnels), the control
//! socket, a reload and the FIB programmer send typed inputs on one channel, in the order
//! they happened. Nothing else writes the agent's state.

use std::collections::BTreeSet;
use std::net::IpAddr;

use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::core::events::EventKind;
use crate::sources::bfd::{BfdView, Key};
use crate::sources::links::{Link, LinkTable};

/// Where an operator's command is answered: what it did, or why it was refused.
pub type Reply = oneshot::Sender<Result<String, String>>;

/// An operator command on its way to the policy, with where the answer goes.
pub struct OperatorRequest {
    pub path: String,
    pub command: crate::policy::Command,
    /// Take the path out of service even when the guard says it is unsafe.
    pub force: bool,
    /// Who asked: the command is logged, journaled and counted with it.
    pub by: crate::core::caller::Caller,
    /// A timed test (`--for`): the failover or drain ends by itself after this long.
    pub lasting: Option<std::time::Duration>,
    pub reply: Reply,
}

pub enum Input {
    /// One interface changed (its carrier, or its index: made again), or it went away
    /// (`None`).
    Link {
        iface: String,
        link: Option<Link>,
    },
    /// A fresh table of every interface, `followed` by notifications from here on, or
    /// read from sysfs (before the first dump, or with the notifications lost).
    Links {
        table: LinkTable,
        followed: bool,
    },
    /// A BGP session about to start: its view goes in before any of its events.
    BgpNeighbor {
        line: String,
        peer: IpAddr,
    },
    /// A BGP session ended by a reload.
    BgpGone(IpAddr),
    /// A session's state, End-of-RIB or a route delta.
    Bgp(bgp::driver::Event),
    /// A session's counters and state, polled.
    BgpPolled(bgp::driver::Status),
    /// A BFD session (re)started with this view.
    BfdSession(Key, Box<BfdView>),
    BfdGone(Key),
    /// The driver's session a view follows.
    BfdFollows(Key, Option<probes::driver::SessionId>),
    /// A BFD session's state change.
    Bfd(probes::driver::Event),
    /// Every BFD session's counters and measurements, polled.
    BfdPolled(Vec<probes::driver::SessionStatus>),
    /// A tunnel runs (`retried`: it had failed to start before).
    TunnelStarted {
        name: String,
        retried: bool,
    },
    /// A tunnel is not running; `told`: its failure is news for the event log.
    TunnelFailed {
        name: String,
        error: String,
        told: bool,
    },
    /// The tunnels the config has; the others' views go.
    TunnelsKept(BTreeSet<String>),
    /// The running tunnels' counters and handshakes, polled.
    TunnelStats(Vec<(String, wg::TunnelStats)>),
    /// Something for the event log.
    Record {
        kind: EventKind,
        path: Option<String>,
        message: String,
        /// Who asked (a reload's caller).
        by: Option<String>,
    },
    Operator(OperatorRequest),
    /// A reload's config; answered once the kernel has been programmed with it.
    Config(Box<Config>, oneshot::Sender<()>),
    /// The kernel's objects a previous run left (the FIB programmer's first read).
    Adopted(crate::routing::Adopted),
    /// The FIB programmer completed a pass.
    Programmed(crate::routing::Programmed),
    /// The agent's own process did not run for a while (its watch's latest).
    Stall(crate::stall::Stall),
}

/// The sending side, for every source. Sending never blocks: the supervisor takes
/// everything in order; an input sent after it stopped (the agent shutting down) is
/// dropped.
#[derive(Clone)]
pub struct Inputs(mpsc::UnboundedSender<Input>);

impl Inputs {
    pub fn channel() -> (Inputs, mpsc::UnboundedReceiver<Input>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Inputs(tx), rx)
    }

    pub fn send(&self, input: Input) {
        let _ = self.0.send(input);
    }

    pub fn record(&self, kind: EventKind, path: Option<&str>, message: impl Into<String>) {
        self.record_by(kind, path, message, None);
    }

    /// Something for the event log that someone asked for (a reload).
    pub fn record_by(
        &self,
        kind: EventKind,
        path: Option<&str>,
        message: impl Into<String>,
        by: Option<&str>,
    ) {
        self.send(Input::Record {
            kind,
            path: path.map(str::to_owned),
            message: message.into(),
            by: by.map(str::to_owned),
        });
    }
}
