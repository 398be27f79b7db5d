//! The tokio side of a BGP session: sockets, timers and the Adj-RIB-In around the sans-IO
//! `fsm::Session`, in one task per neighbour behind a cloneable `Handle`.
//!
//! Each connection has a reader task that only frames bytes into messages; decoding happens
//! in the session task, which knows what was negotiated (the AS width). Events for the
//! agent leave on a channel: session up/down with the reason, and route changes.

mod counts;
mod listener;
pub mod socket;

pub use counts::MessageCounts;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use listener::{Listener, Peer};
pub use socket::SocketOptions;

use crate::fsm::{ConnId, Input, Negotiated, Output, Session, SessionConfig, State, Timer};
use crate::rib::{AdjRibIn, ExportPolicy, ImportPolicy, MaxPrefixAction, RibDelta};
use crate::wire::{frame_len, Ctx, DecodeError, Family, Message, Update, MAX_MESSAGE_LEN};

pub const BGP_PORT: u16 = 179;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborConfig {
    pub peer: IpAddr,
    pub port: u16,
    pub socket: SocketOptions,
    pub session: SessionConfig,
    pub import: ImportPolicy,
    pub export: ExportPolicy,
}

/// What a session tells the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Up {
        peer: IpAddr,
        negotiated: Negotiated,
    },
    Down {
        peer: IpAddr,
        reason: String,
        /// The peer restarts gracefully (RFC 4724: it can, and the session ended without
        /// a NOTIFICATION): its routes are kept, stale, for this long while it comes back.
        graceful: Option<Duration>,
    },
    Routes {
        peer: IpAddr,
        delta: RibDelta,
    },
    /// The peer's initial table of `family` is complete (RFC 4724 End-of-RIB).
    EndOfRib {
        peer: IpAddr,
        family: Family,
    },
}

/// A snapshot for `crosslink status` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub peer: IpAddr,
    pub state: State,
    pub last_error: Option<String>,
    pub established_for: Option<Duration>,
    pub prefixes_received: usize,
    pub prefixes_rejected: u64,
    pub prefixes_advertised: usize,
    pub sent: MessageCounts,
    pub received: MessageCounts,
}

enum Command {
    Status(oneshot::Sender<Status>),
    SetExport(ExportPolicy),
    SetImport(ImportPolicy, oneshot::Sender<bool>),
    Accepted(TcpStream),
    Stop(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
    Teardown(crate::wire::Notification, Option<Instant>),
}

/// Controls one neighbour's session task; dropping every handle ends the task and closes
/// its connections without a NOTIFICATION (use `stop` for an orderly Cease).
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
}

impl Handle {
    pub async fn status(&self) -> Option<Status> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Replaces the export policy and re-announces (or withdraws) accordingly.
    pub async fn set_export(&self, export: ExportPolicy) {
        let _ = self.tx.send(Command::SetExport(export)).await;
    }

    /// Replaces the import policy without resetting the session: routes it no longer
    /// admits are withdrawn, and the peer is asked to send its routes again (RFC 2918 route
    /// refresh) for the ones it now admits. False, and nothing changed, when the session is
    /// up with a peer that does not support route refresh: only a new session can then
    /// learn what was refused.
    pub async fn set_import(&self, import: ImportPolicy) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::SetImport(import, tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Hands over a connection the listener accepted from this neighbour.
    pub(crate) async fn accepted(&self, stream: TcpStream) {
        let _ = self.tx.send(Command::Accepted(stream)).await;
    }

    /// Ends the task and closes its connections without a NOTIFICATION, as the agent's
    /// exit does: a graceful-restart peer keeps our routes while a new session comes up.
    /// Returns once the connections are closed.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Closes the session with `n` (e.g. Cease/BFD Down) and lets it come up again after
    /// the idle hold time, or at once when the peer connects.
    pub async fn teardown(&self, n: crate::wire::Notification) {
        let _ = self.tx.send(Command::Teardown(n, None)).await;
    }

    /// As `teardown`, but only a session that is Established and was so at `before` (a
    /// session that came up since is left alone: the reason to close it was older).
    pub async fn teardown_if_older(&self, n: crate::wire::Notification, before: Instant) {
        let _ = self.tx.send(Command::Teardown(n, Some(before))).await;
    }

    /// Sends Cease/Administrative Shutdown and ends the task.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the session task for one neighbour.
pub fn spawn(cfg: NeighborConfig, events: mpsc::Sender<Event>) -> Handle {
    let (tx, rx) = mpsc::channel(64);
    let task = Task::new(cfg, events);
    tokio::spawn(task.run(rx));
    Handle { tx }
}

enum ConnEvent {
    Frame(Vec<u8>),
    Error(DecodeError),
    Closed,
}

struct Conn {
    writer: OwnedWriteHalf,
    reader: JoinHandle<()>,
    local: SocketAddr,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

struct Task {
    cfg: NeighborConfig,
    fsm: Session,
    rib: AdjRibIn,
    events: mpsc::Sender<Event>,
    timers: HashMap<Timer, Instant>,
    conns: HashMap<ConnId, Conn>,
    next_conn: u64,
    connect: Option<JoinHandle<()>>,
    conn_tx: mpsc::Sender<(ConnId, ConnEvent)>,
    connect_tx: mpsc::Sender<std::io::Result<TcpStream>>,
    established_at: Option<Instant>,
    advertised: usize,
    warned_max_prefix: bool,
    stale_until: Option<Instant>,
    sent: MessageCounts,
    received: MessageCounts,
}

impl Task {
    fn new(cfg: NeighborConfig, events: mpsc::Sender<Event>) -> Task {
        let (conn_tx, _) = mpsc::channel(1);
        let (connect_tx, _) = mpsc::channel(1);
        Task {
            fsm: Session::new(cfg.session.clone()),
            rib: AdjRibIn::new(cfg.import.clone()),
            cfg,
            events,
            timers: HashMap::new(),
            conns: HashMap::new(),
            next_conn: 1,
            connect: None,
            conn_tx,
            connect_tx,
            established_at: None,
            advertised: 0,
            warned_max_prefix: false,
            stale_until: None,
            sent: MessageCounts::default(),
            received: MessageCounts::default(),
        }
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Command>) {
        let (conn_tx, mut conn_rx) = mpsc::channel(256);
        let (connect_tx, mut connect_rx) = mpsc::channel(4);
        self.conn_tx = conn_tx;
        self.connect_tx = connect_tx;
        self.input(Input::Start).await;
        loop {
            let next = self.timers.values().copied().chain(self.stale_until).min();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(Command::Stop(done)) => {
                        self.input(Input::Stop).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(Command::Close(done)) => {
                        // The FIN now, not when the reader task's half goes.
                        for c in self.conns.values_mut() {
                            let _ = c.writer.shutdown().await;
                        }
                        self.conns.clear();
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.command(cmd).await,
                    // Every handle is gone (the agent is exiting): close without a
                    // NOTIFICATION, which a graceful-restart peer treats as a restart.
                    None => return,
                },
                Some((id, ev)) = conn_rx.recv() => self.conn_event(id, ev).await,
                Some(res) = connect_rx.recv() => self.connected(res).await,
                () = sleep => self.fire_timers().await,
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Command::SetExport(export) => self.set_export(export).await,
            Command::SetImport(import, done) => {
                let applied = self.set_import(import).await;
                let _ = done.send(applied);
            }
            Command::Accepted(stream) => {
                let id = self.register(stream);
                self.input(Input::TcpAccepted(id)).await;
            }
            Command::Teardown(n, before) => {
                let applies = before.is_none_or(|b| {
                    self.fsm.state() == State::Established
                        && self.established_at.is_some_and(|t| t <= b)
                });
                if applies {
                    self.input(Input::Teardown(n)).await;
                }
            }
            Command::Stop(_) | Command::Close(_) => {}
        }
    }

    fn status(&self) -> Status {
        Status {
            peer: self.cfg.peer,
            state: self.fsm.state(),
            last_error: self.fsm.last_error().map(str::to_owned),
            established_for: self.established_at.map(|t| t.elapsed()),
            prefixes_received: self.rib.len(),
            prefixes_rejected: self.rib.rejected_total(),
            prefixes_advertised: self.advertised,
            sent: self.sent,
            received: self.received,
        }
    }

    async fn fire_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<Timer> = self
            .timers
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in due {
            self.timers.remove(&t);
            self.input(Input::TimerExpired(t)).await;
        }
        if self.stale_until.is_some_and(|t| t <= now) {
            self.stale_until = None;
            let gone = self.rib.sweep_stale(None);
            self.emit_withdrawn(gone).await;
        }
    }

    async fn connected(&mut self, res: std::io::Result<TcpStream>) {
        self.connect = None;
        match res {
            Ok(stream) => {
                let id = self.register(stream);
                self.input(Input::TcpConnected(id)).await;
            }
            Err(e) => {
                tracing::debug!(peer = %self.cfg.peer, error = %e, "BGP connect failed");
                self.input(Input::TcpConnectFailed).await;
            }
        }
    }

    fn register(&mut self, stream: TcpStream) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(self.cfg.peer, 0));
        let (rd, writer) = stream.into_split();
        let reader = tokio::spawn(read_frames(id, rd, self.conn_tx.clone()));
        self.conns.insert(
            id,
            Conn {
                writer,
                reader,
                local,
            },
        );
        id
    }

    async fn conn_event(&mut self, id: ConnId, ev: ConnEvent) {
        if !self.conns.contains_key(&id) {
            return;
        }
        match ev {
            ConnEvent::Frame(bytes) => {
                let ctx = self.fsm.negotiated().map_or(Ctx::default(), |n| n.ctx);
                match Message::decode(&bytes, &ctx) {
                    Ok(msg) => {
                        self.received.count(&msg);
                        self.input(Input::Received(id, msg)).await;
                    }
                    Err(e) => self.input(Input::DecodeFailed(id, e)).await,
                }
            }
            ConnEvent::Error(e) => self.input(Input::DecodeFailed(id, e)).await,
            ConnEvent::Closed => self.input(Input::TcpClosed(id)).await,
        }
    }

    /// Feeds one input to the FSM and carries out what it asks, including inputs that
    /// its outputs generate (announcing on Established, teardown on max-prefix).
    async fn input(&mut self, input: Input) {
        let mut queue = vec![input];
        while let Some(input) = queue.pop() {
            let outputs = self.fsm.process(input, Instant::now());
            for out in outputs {
                if let Some(next) = self.output(out).await {
                    queue.push(next);
                }
            }
        }
    }

    async fn output(&mut self, out: Output) -> Option<Input> {
        match out {
            Output::Connect => self.start_connect(),
            Output::AbortConnect => {
                if let Some(h) = self.connect.take() {
                    h.abort();
                }
            }
            Output::Send(id, msg) => self.send(id, &msg).await,
            Output::Close(id) => {
                self.conns.remove(&id);
            }
            Output::ArmTimer(t, at) => {
                self.timers.insert(t, at);
            }
            Output::StopTimer(t) => {
                self.timers.remove(&t);
            }
            Output::Established(neg) => return self.on_established(neg).await,
            Output::Down {
                reason,
                keep_stale_for,
            } => self.on_down(reason, keep_stale_for).await,
            Output::Update(u) => return self.on_update(&u).await,
            Output::RouteRefresh(f) => {
                let neg = self.fsm.negotiated().cloned()?;
                return Some(Input::Send(self.announcements(&neg, Some(f))));
            }
        }
        None
    }

    fn start_connect(&mut self) {
        if let Some(h) = self.connect.take() {
            h.abort();
        }
        let peer = SocketAddr::new(self.cfg.peer, self.cfg.port);
        let opts = self.cfg.socket.clone();
        let tx = self.connect_tx.clone();
        let timeout = self.cfg.session.connect_retry;
        self.connect = Some(tokio::spawn(async move {
            let res = async {
                let sock = socket::connect_socket(peer.ip(), &opts)?;
                tokio::time::timeout(timeout, sock.connect(peer))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                    })?
            }
            .await;
            let _ = tx.send(res).await;
        }));
    }

    async fn send(&mut self, id: ConnId, msg: &Message) {
        let ctx = self.fsm.negotiated().map_or(Ctx::default(), |n| n.ctx);
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let bytes = match msg.to_bytes(&ctx) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(peer = %self.cfg.peer, error = %e, "cannot encode a BGP message");
                return;
            }
        };
        // A write that fails means the connection is gone; its reader reports the close.
        match conn.writer.write_all(&bytes).await {
            Ok(()) => self.sent.count(msg),
            Err(e) => tracing::debug!(peer = %self.cfg.peer, error = %e, "BGP write failed"),
        }
    }

    async fn on_established(&mut self, neg: Negotiated) -> Option<Input> {
        tracing::info!(peer = %self.cfg.peer, asn = neg.peer_asn, hold = neg.hold_time, families = ?neg.families, "BGP session established");
        self.established_at = Some(Instant::now());
        self.warned_max_prefix = false;
        let local = self
            .fsm
            .established_conn()
            .and_then(|id| self.conns.get(&id))
            .map(|c| c.local.ip())
            // `register` falls back to the peer's address when ours is unknown.
            .filter(|a| *a != self.cfg.peer);
        self.rib.set_local(local);
        let _ = self
            .events
            .send(Event::Up {
                peer: self.cfg.peer,
                negotiated: neg.clone(),
            })
            .await;
        let mut updates = self.announcements(&neg, None);
        // End-of-RIB per family (RFC 4724 §2), so a graceful-restart peer can sweep.
        for &f in &neg.families {
            updates.push(match f {
                Family::Ipv4 => Update::default(),
                Family::Ipv6 => Update {
                    mp_unreach: Some(crate::wire::MpUnreach {
                        family: f,
                        withdrawn: Vec::new(),
                    }),
                    ..Update::default()
                },
            });
        }
        Some(Input::Send(updates))
    }

    /// Our announcements for the negotiated families (or just `only`), with next hops
    /// taken from the established connection's local address.
    fn announcements(&mut self, neg: &Negotiated, only: Option<Family>) -> Vec<Update> {
        let local = self
            .fsm
            .established_conn()
            .and_then(|id| self.conns.get(&id))
            .map(|c| c.local.ip());
        let (nh4, nh6): (Option<IpAddr>, Vec<IpAddr>) = match local {
            Some(a @ IpAddr::V4(_)) => (Some(a), Vec::new()),
            Some(a @ IpAddr::V6(_)) => (None, vec![a]),
            None => (None, Vec::new()),
        };
        let families: Vec<Family> = neg
            .families
            .iter()
            .copied()
            .filter(|f| only.is_none_or(|o| o == *f))
            .collect();
        let ups = self
            .cfg
            .export
            .announcements(&families, nh4, &nh6, &neg.ctx);
        if only.is_none() {
            self.advertised = ups.iter().map(|u| u.announced().count()).sum();
        }
        ups
    }

    async fn set_export(&mut self, export: ExportPolicy) {
        let old = std::mem::replace(&mut self.cfg.export, export);
        let Some(neg) = self.fsm.negotiated().cloned() else {
            return;
        };
        let mut updates = Vec::new();
        if self.cfg.export.withdrawn && !old.withdrawn {
            updates = old.withdrawals(&neg.families);
            self.advertised = 0;
        } else {
            // Prefixes no longer exported are withdrawn; the rest re-announced with the new
            // attributes (an announcement implicitly replaces the previous one).
            let gone: Vec<_> = old
                .prefixes
                .iter()
                .copied()
                .filter(|p| !self.cfg.export.prefixes.contains(p))
                .collect();
            let gone = ExportPolicy {
                prefixes: gone,
                ..old
            };
            updates.extend(gone.withdrawals(&neg.families));
            updates.extend(self.announcements(&neg, None));
        }
        self.input(Input::Send(updates)).await;
    }

    async fn set_import(&mut self, import: ImportPolicy) -> bool {
        let neg = self.fsm.negotiated().cloned();
        if neg.as_ref().is_some_and(|n| !n.route_refresh) {
            return false;
        }
        self.cfg.import = import.clone();
        let gone = self.rib.set_policy(import);
        self.emit_withdrawn(gone).await;
        if let Some(n) = neg {
            self.input(Input::RequestRefresh(n.families.clone())).await;
        }
        true
    }

    async fn on_down(&mut self, reason: String, keep_stale_for: Option<Duration>) {
        tracing::warn!(peer = %self.cfg.peer, %reason, "BGP session down");
        self.established_at = None;
        self.advertised = 0;
        let _ = self
            .events
            .send(Event::Down {
                peer: self.cfg.peer,
                reason,
                graceful: keep_stale_for.filter(|d| !d.is_zero()),
            })
            .await;
        match keep_stale_for {
            // RFC 4724 §4.2: keep the routes, marked stale, for the peer's restart time.
            Some(d) if !d.is_zero() => {
                self.rib.mark_stale();
                self.stale_until = Some(Instant::now() + d);
            }
            _ => {
                let gone = self.rib.clear();
                self.emit_withdrawn(gone).await;
            }
        }
    }

    async fn on_update(&mut self, u: &Update) -> Option<Input> {
        if let Some(why) = u.treat_as_withdraw {
            tracing::warn!(peer = %self.cfg.peer, reason = why, "malformed UPDATE treated as withdraw (RFC 7606)");
        }
        for why in &u.discarded {
            tracing::info!(peer = %self.cfg.peer, reason = why, "attribute discarded (RFC 7606)");
        }
        if let Some(f) = u.end_of_rib() {
            let gone = self.rib.sweep_stale(Some(f));
            self.emit_withdrawn(gone).await;
            let _ = self
                .events
                .send(Event::EndOfRib {
                    peer: self.cfg.peer,
                    family: f,
                })
                .await;
            return None;
        }
        let ebgp = self.cfg.session.peer_asn != self.cfg.session.local_asn;
        let mut delta = self.rib.apply(u, ebgp);
        let over = delta.over_limit.take();
        if !delta.added.is_empty() || !delta.withdrawn.is_empty() || !delta.rejected.is_empty() {
            if !delta.rejected.is_empty() {
                tracing::debug!(peer = %self.cfg.peer, count = delta.rejected.len(), first = ?delta.rejected.first(), "prefixes refused by the import filter");
            }
            let _ = self
                .events
                .send(Event::Routes {
                    peer: self.cfg.peer,
                    delta,
                })
                .await;
        }
        let limit = over?;
        match self.cfg.import.action {
            MaxPrefixAction::Warn => {
                if !self.warned_max_prefix {
                    self.warned_max_prefix = true;
                    tracing::warn!(peer = %self.cfg.peer, limit, received = self.rib.len(), "more prefixes than max_prefixes");
                }
                None
            }
            MaxPrefixAction::Teardown => {
                let family = u.announced().next().map_or(Family::Ipv4, Family::of);
                tracing::error!(peer = %self.cfg.peer, limit, "more prefixes than max_prefixes: closing the session");
                Some(Input::Teardown(self.rib.max_prefix_notification(family)))
            }
        }
    }

    async fn emit_withdrawn(&mut self, gone: Vec<ipnet::IpNet>) {
        if !gone.is_empty() {
            let delta = RibDelta {
                withdrawn: gone,
                ..RibDelta::default()
            };
            let _ = self
                .events
                .send(Event::Routes {
                    peer: self.cfg.peer,
                    delta,
                })
                .await;
        }
    }
}

/// Reads a connection and cuts it into messages; never decodes (the session knows the
/// negotiated encoding). The buffer never holds more than one message plus one read.
async fn read_frames(
    id: ConnId,
    mut rd: tokio::net::tcp::OwnedReadHalf,
    tx: mpsc::Sender<(ConnId, ConnEvent)>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(2 * MAX_MESSAGE_LEN);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        loop {
            match frame_len(&buf) {
                Ok(Some(len)) => {
                    let frame: Vec<u8> = buf.drain(..len).collect();
                    if tx.send((id, ConnEvent::Frame(frame))).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send((id, ConnEvent::Error(e))).await;
                    return;
                }
            }
        }
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                let _ = tx.send((id, ConnEvent::Closed)).await;
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
