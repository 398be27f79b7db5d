//! The BGP finite state machine (RFC 4271 §8), sans-IO.
//!
//! `Session::process(input, now)` takes one event and the current time and returns what to
//! do: connect, send, close, arm a timer, report the session up or down, hand over a
//! received UPDATE. No socket, clock or task lives here, so every path through the FSM is
//! tested with virtual time.
//!
//! Two TCP connections can exist at once (ours and the peer's); each runs its own OPEN
//! exchange and collisions are resolved by BGP Identifier (§6.8). The session's RFC state is
//! the most advanced state among them. After a failure the session waits an idle hold time
//! that doubles with each failure in a row (up to a cap) before it connects again, so a
//! broken or flapping peer is not hammered; the peer's own connections are accepted
//! meanwhile.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::wire::{
    err, Ctx, DecodeError, Family, GracefulRestart, Message, Notification, Open, RouteRefresh,
    Update,
};

/// RFC 4271 §8.2.2 states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

/// Identifies one TCP connection; assigned by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    ConnectRetry,
    /// The wait before restarting after a failure (the "IdleHoldTimer" of RFC 4271 §8.1.1).
    IdleHold,
    Hold(ConnId),
    Keepalive(ConnId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub local_asn: u32,
    pub local_id: Ipv4Addr,
    pub peer_asn: u32,
    /// Proposed hold time in seconds (0 disables keepalives; else at least 3).
    pub hold_time: u16,
    pub families: Vec<Family>,
    /// Only accept connections; never initiate.
    pub passive: bool,
    pub connect_retry: Duration,
    pub idle_hold_base: Duration,
    pub idle_hold_max: Duration,
    /// Established at least this long counts as stable: the backoff starts over.
    pub stable_after: Duration,
    /// Seconds the peer should keep our routes while we restart (RFC 4724, restarting
    /// speaker); `None`: receiving speaker only.
    pub restart_time: Option<u16>,
    /// This process is a restart of one whose forwarding state survives (the R bit of the
    /// first OPEN).
    pub restarted: bool,
}

impl SessionConfig {
    pub fn new(local_asn: u32, local_id: Ipv4Addr, peer_asn: u32) -> SessionConfig {
        SessionConfig {
            local_asn,
            local_id,
            peer_asn,
            hold_time: 90,
            families: vec![Family::Ipv4, Family::Ipv6],
            passive: false,
            connect_retry: Duration::from_secs(5),
            idle_hold_base: Duration::from_secs(1),
            idle_hold_max: Duration::from_secs(120),
            stable_after: Duration::from_secs(60),
            restart_time: None,
            restarted: false,
        }
    }
}

/// What both sides agreed on in their OPENs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_asn: u32,
    pub peer_id: Ipv4Addr,
    /// Seconds; 0 means no keepalives and no hold timer.
    pub hold_time: u16,
    pub ctx: Ctx,
    pub families: Vec<Family>,
    pub route_refresh: bool,
    pub graceful_restart: Option<GracefulRestart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Administrative start (RFC event 1).
    Start,
    /// Administrative stop (event 2): NOTIFICATION Cease/Administrative Shutdown.
    Stop,
    /// Tear down with a given NOTIFICATION (e.g. Cease/Maximum Number of Prefixes Reached)
    /// and restart after the idle hold time.
    Teardown(Notification),
    /// Our outgoing connection is up (event 16).
    TcpConnected(ConnId),
    /// The peer connected to us (event 17).
    TcpAccepted(ConnId),
    /// Our connection attempt failed (event 18 before the connection existed).
    TcpConnectFailed,
    /// An established connection closed or failed (event 18).
    TcpClosed(ConnId),
    Received(ConnId, Message),
    /// The bytes on a connection did not decode (events 21, 22, 28).
    DecodeFailed(ConnId, DecodeError),
    TimerExpired(Timer),
    /// UPDATEs to send; dropped unless Established.
    Send(Vec<Update>),
    /// Ask the peer for its routes of these families again (RFC 2918), e.g. after our
    /// import filter widened; dropped unless Established with a peer that supports it.
    RequestRefresh(Vec<Family>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a connection to the peer; answer with `TcpConnected` or `TcpConnectFailed`.
    Connect,
    /// Give up a pending connection attempt.
    AbortConnect,
    Send(ConnId, Message),
    Close(ConnId),
    ArmTimer(Timer, Instant),
    StopTimer(Timer),
    Established(Negotiated),
    /// The session left Established. `keep_stale_for`: the peer supports graceful restart
    /// and the session ended without a NOTIFICATION, so its routes are kept as stale for
    /// this long (RFC 4724 §4.2, receiving speaker).
    Down {
        reason: String,
        keep_stale_for: Option<Duration>,
    },
    /// An UPDATE received while Established (treat-as-withdraw already flagged on it).
    Update(Box<Update>),
    /// The peer asked for our routes again (RFC 2918).
    RouteRefresh(Family),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Debug, Clone)]
struct Conn {
    id: ConnId,
    outbound: bool,
    state: ConnState,
    negotiated: Option<Negotiated>,
}

/// Hold time used before the OPENs are exchanged (RFC 4271 §8.2.2: "a large value").
const OPEN_HOLD: Duration = Duration::from_secs(240);

pub struct Session {
    cfg: SessionConfig,
    started: bool,
    connecting: bool,
    idle_until: Option<Instant>,
    conns: Vec<Conn>,
    failures: u32,
    established_at: Option<Instant>,
    /// Some session of this process reached Established (the R bit is then cleared).
    was_established: bool,
    last_error: Option<String>,
    out: Vec<Output>,
}

impl Session {
    pub fn new(cfg: SessionConfig) -> Session {
        Session {
            cfg,
            started: false,
            connecting: false,
            idle_until: None,
            conns: Vec::new(),
            failures: 0,
            established_at: None,
            was_established: false,
            last_error: None,
            out: Vec::new(),
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// The RFC state: the most advanced among the connections.
    pub fn state(&self) -> State {
        let best = self.conns.iter().map(|c| match c.state {
            ConnState::OpenSent => State::OpenSent,
            ConnState::OpenConfirm => State::OpenConfirm,
            ConnState::Established => State::Established,
        });
        match best.max() {
            Some(s) => s,
            None if !self.started || self.idle_until.is_some() => State::Idle,
            None if self.connecting => State::Connect,
            None => State::Active,
        }
    }

    /// Why the session last went down or failed to come up.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.established().and_then(|c| c.negotiated.as_ref())
    }

    /// The connection carrying the Established session.
    pub fn established_conn(&self) -> Option<ConnId> {
        self.established().map(|c| c.id)
    }

    fn established(&self) -> Option<&Conn> {
        self.conns
            .iter()
            .find(|c| c.state == ConnState::Established)
    }

    pub fn process(&mut self, input: Input, now: Instant) -> Vec<Output> {
        match input {
            Input::Start => self.on_start(now),
            Input::Stop => self.on_stop(),
            Input::Teardown(n) => self.on_teardown(n, now),
            Input::TcpConnected(id) => self.on_tcp_up(id, true, now),
            Input::TcpAccepted(id) => self.on_tcp_up(id, false, now),
            Input::TcpConnectFailed => self.on_connect_failed(now),
            Input::TcpClosed(id) => self.on_tcp_closed(id, now),
            Input::Received(id, msg) => self.on_message(id, msg, now),
            Input::DecodeFailed(id, e) => self.on_decode_error(id, e, now),
            Input::TimerExpired(t) => self.on_timer(t, now),
            Input::Send(updates) => self.on_send(updates, now),
            Input::RequestRefresh(families) => self.on_request_refresh(&families),
        }
        std::mem::take(&mut self.out)
    }

    fn arm(&mut self, timer: Timer, at: Instant) {
        self.out.push(Output::ArmTimer(timer, at));
    }

    fn idle_hold(&self) -> Duration {
        let factor = 1u32
            .checked_shl(self.failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.cfg
            .idle_hold_base
            .saturating_mul(factor)
            .min(self.cfg.idle_hold_max)
    }

    // --- administrative events -------------------------------------------------------

    fn on_start(&mut self, now: Instant) {
        if self.started {
            return;
        }
        self.started = true;
        self.begin_connecting(now);
    }

    fn begin_connecting(&mut self, now: Instant) {
        self.idle_until = None;
        if self.cfg.passive {
            return;
        }
        self.connecting = true;
        self.out.push(Output::Connect);
        self.arm(Timer::ConnectRetry, now + self.cfg.connect_retry);
    }

    fn on_stop(&mut self) {
        if !self.started {
            return;
        }
        self.started = false;
        if self.established().is_some() {
            self.established_at = None;
            self.out.push(Output::Down {
                reason: "administratively stopped".into(),
                keep_stale_for: None,
            });
        }
        let n = Notification::new(err::CEASE, err::CEASE_ADMIN_SHUTDOWN);
        self.close_all(Some(n));
        self.stop_connecting();
        self.idle_until = None;
        self.out.push(Output::StopTimer(Timer::IdleHold));
    }

    fn on_teardown(&mut self, n: Notification, now: Instant) {
        let reason = format!("torn down: {n}");
        if let Some(id) = self.established_conn() {
            return self.fail_conn(id, n, &reason, now);
        }
        self.close_all(Some(n));
        self.fail(reason, now);
    }

    fn stop_connecting(&mut self) {
        if self.connecting {
            self.connecting = false;
            self.out.push(Output::AbortConnect);
        }
        self.out.push(Output::StopTimer(Timer::ConnectRetry));
    }

    // --- transport events --------------------------------------------------------------

    fn on_tcp_up(&mut self, id: ConnId, outbound: bool, now: Instant) {
        if outbound {
            self.connecting = false;
            self.out.push(Output::StopTimer(Timer::ConnectRetry));
        }
        let duplicate = self.conns.iter().any(|c| c.outbound == outbound);
        // The idle hold only paces our own attempts: a peer that connects to us is ready,
        // and refusing it would stretch an outage to our backoff time.
        if !self.started || self.established().is_some() || duplicate {
            // RFC 4271 §6.8: a connection arriving while one is Established is refused.
            let n = Notification::new(err::CEASE, err::CEASE_CONNECTION_REJECTED);
            self.out.push(Output::Send(id, Message::Notification(n)));
            self.out.push(Output::Close(id));
            return;
        }
        let mut open = Open::new(
            self.cfg.local_asn,
            self.cfg.hold_time,
            self.cfg.local_id,
            &self.cfg.families,
        );
        if let Some(t) = self.cfg.restart_time {
            // Only the first session of a restarted process says so: later ones are
            // ordinary reconnects.
            let restarted = self.cfg.restarted && !self.was_established;
            open = open.with_graceful_restart(t, restarted, &self.cfg.families);
        }
        self.out.push(Output::Send(id, Message::Open(open)));
        self.arm(Timer::Hold(id), now + OPEN_HOLD);
        self.conns.push(Conn {
            id,
            outbound,
            state: ConnState::OpenSent,
            negotiated: None,
        });
    }

    /// RFC 4271 §8.2.2, Connect state, event 18: go to Active and keep the ConnectRetry
    /// timer running. A refused connection is not a protocol error: backing off here would
    /// only make us refuse the peer's own connection when it comes back.
    fn on_connect_failed(&mut self, _now: Instant) {
        if !self.connecting {
            return;
        }
        self.connecting = false;
        if self.conns.is_empty() && self.last_error.is_none() {
            self.last_error = Some("cannot connect to the peer".into());
        }
    }

    fn on_tcp_closed(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.remove(id) else { return };
        self.out.push(Output::Close(id));
        self.conn_lost(
            conn,
            "connection closed by the peer or the network",
            true,
            now,
        );
    }

    fn on_timer(&mut self, t: Timer, now: Instant) {
        match t {
            Timer::ConnectRetry => self.on_connect_retry(now),
            Timer::IdleHold => self.on_idle_hold_expired(now),
            Timer::Hold(id) => self.on_hold_expired(id, now),
            Timer::Keepalive(id) => self.on_keepalive_timer(id, now),
        }
    }

    fn on_connect_retry(&mut self, now: Instant) {
        if !self.started || self.idle_until.is_some() || self.cfg.passive || !self.conns.is_empty()
        {
            return;
        }
        if self.connecting {
            self.out.push(Output::AbortConnect);
        }
        self.connecting = true;
        self.out.push(Output::Connect);
        self.arm(Timer::ConnectRetry, now + self.cfg.connect_retry);
    }

    fn on_idle_hold_expired(&mut self, now: Instant) {
        if !self.started || self.idle_until.is_none_or(|t| t > now) {
            return;
        }
        self.idle_until = None;
        // A connection the peer opened meanwhile is in progress: no need for ours.
        if self.conns.is_empty() {
            self.begin_connecting(now);
        }
    }

    fn on_hold_expired(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.close_conn(id, Some(Notification::new(err::HOLD_TIMER_EXPIRED, 0)))
        else {
            return;
        };
        self.conn_lost(conn, "hold timer expired", true, now);
    }

    fn on_keepalive_timer(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conn(id) else { return };
        if conn.state == ConnState::OpenSent {
            return;
        }
        let hold = conn.negotiated.as_ref().map_or(0, |n| n.hold_time);
        self.out.push(Output::Send(id, Message::Keepalive));
        if hold > 0 {
            self.arm(Timer::Keepalive(id), now + keepalive_interval(hold));
        }
    }

    // --- messages ------------------------------------------------------------------------

    fn on_message(&mut self, id: ConnId, msg: Message, now: Instant) {
        let Some(state) = self.conn(id).map(|c| c.state) else {
            return;
        };
        match (state, msg) {
            (_, Message::Notification(n)) => self.on_notification(id, n, now),
            (ConnState::OpenSent, Message::Open(o)) => self.on_open(id, o, now),
            (ConnState::OpenConfirm, Message::Keepalive) => {
                self.on_keepalive_in_openconfirm(id, now)
            }
            (ConnState::Established, Message::Keepalive) => self.restart_hold(id, now),
            (ConnState::Established, Message::Update(u)) => {
                self.restart_hold(id, now);
                self.out.push(Output::Update(u));
            }
            (ConnState::Established, Message::RouteRefresh(r)) => {
                self.restart_hold(id, now);
                // Only a plain request (subtype 0) asks for our routes: we announce no
                // Enhanced Route Refresh, so BoRR and EoRR mean nothing to us, and other
                // subtypes are ignored (RFC 7313 §5). So is a family we did not negotiate
                // (RFC 2918 §4).
                let negotiated = self.conn(id).and_then(|c| c.negotiated.as_ref());
                if let Some(f) = Family::from_afi_safi(r.afi, r.safi).filter(|f| {
                    r.subtype == 0 && negotiated.is_some_and(|n| n.families.contains(f))
                }) {
                    self.out.push(Output::RouteRefresh(f));
                }
            }
            (state, _) => {
                // RFC 4271 §6.6: any other message is a Finite State Machine Error.
                let sub = match state {
                    ConnState::OpenSent => err::FSM_UNEXPECTED_IN_OPENSENT,
                    ConnState::OpenConfirm => err::FSM_UNEXPECTED_IN_OPENCONFIRM,
                    ConnState::Established => err::FSM_UNEXPECTED_IN_ESTABLISHED,
                };
                self.fail_conn(
                    id,
                    Notification::new(err::FSM, sub),
                    "unexpected message for the state",
                    now,
                );
            }
        }
    }

    fn on_notification(&mut self, id: ConnId, n: Notification, now: Instant) {
        let Some(conn) = self.remove(id) else { return };
        self.out.push(Output::Close(id));
        // A NOTIFICATION is a deliberate reset: graceful restart does not apply.
        self.conn_lost(conn, &format!("peer sent NOTIFICATION {n}"), false, now);
    }

    fn on_decode_error(&mut self, id: ConnId, e: DecodeError, now: Instant) {
        let reason = format!("malformed message from the peer: {e}");
        self.fail_conn(id, e.into(), &reason, now);
    }

    fn on_open(&mut self, id: ConnId, open: Open, now: Instant) {
        let neg = match self.negotiate(&open) {
            Ok(n) => n,
            Err((n, why)) => return self.fail_conn(id, n, &why, now),
        };
        if !self.resolve_collision(id, &neg) {
            return;
        }
        self.out.push(Output::Send(id, Message::Keepalive));
        let hold = neg.hold_time;
        if hold > 0 {
            self.arm(Timer::Hold(id), now + Duration::from_secs(u64::from(hold)));
            self.arm(Timer::Keepalive(id), now + keepalive_interval(hold));
        } else {
            self.out.push(Output::StopTimer(Timer::Hold(id)));
        }
        if let Some(c) = self.conn_mut(id) {
            c.state = ConnState::OpenConfirm;
            c.negotiated = Some(neg);
        }
    }

    /// Checks the peer's OPEN against the configuration (RFC 4271 §6.2) and agrees on the
    /// session parameters.
    fn negotiate(&self, open: &Open) -> Result<Negotiated, (Notification, String)> {
        let asn = open.asn();
        // RFC 7607 §2: AS 0, in the My AS field or the 4-octet capability, is refused
        // whatever the configuration says.
        if asn != self.cfg.peer_asn || asn == 0 || open.my_as == 0 {
            let mut n = Notification::new(err::OPEN, err::OPEN_BAD_PEER_AS);
            n.data = open.my_as.to_be_bytes().to_vec();
            return Err((
                n,
                format!("peer ASN {asn} is not the configured {}", self.cfg.peer_asn),
            ));
        }
        if open.bgp_id == self.cfg.local_id && asn == self.cfg.local_asn {
            // RFC 6286 §2.2: the identifiers must differ within an AS.
            return Err((
                Notification::new(err::OPEN, err::OPEN_BAD_BGP_ID),
                "peer uses our BGP identifier".into(),
            ));
        }
        let theirs = open.families();
        let families: Vec<Family> = self
            .cfg
            .families
            .iter()
            .copied()
            .filter(|f| theirs.contains(f))
            .collect();
        Ok(Negotiated {
            peer_asn: asn,
            peer_id: open.bgp_id,
            hold_time: self.cfg.hold_time.min(open.hold_time),
            ctx: Ctx {
                four_octet_as: open.four_octet_as(),
                ibgp: asn == self.cfg.local_asn,
            },
            families,
            route_refresh: open.route_refresh(),
            graceful_restart: open.graceful_restart().cloned(),
        })
    }

    /// RFC 4271 §6.8. Returns whether connection `id` survives.
    fn resolve_collision(&mut self, id: ConnId, neg: &Negotiated) -> bool {
        let Some(other) = self
            .conns
            .iter()
            .find(|c| c.id != id && c.state != ConnState::OpenSent)
            .map(|c| (c.id, c.outbound))
        else {
            return true;
        };
        let this_outbound = self.conn(id).is_some_and(|c| c.outbound);
        // The connection initiated by the speaker with the higher BGP Identifier wins; with
        // equal identifiers (eBGP only: §6.2 refuses them on iBGP), the one initiated by the
        // speaker with the larger AS number (RFC 6286 §2.3).
        let (ours, theirs) = (u32::from(self.cfg.local_id), u32::from(neg.peer_id));
        let local_wins = if ours == theirs {
            self.cfg.local_asn > neg.peer_asn
        } else {
            ours > theirs
        };
        let keep_outbound = local_wins;
        let loser = if this_outbound == keep_outbound {
            other.0
        } else {
            id
        };
        self.close_conn(
            loser,
            Some(Notification::new(err::CEASE, err::CEASE_COLLISION)),
        );
        loser != id
    }

    fn on_keepalive_in_openconfirm(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conn_mut(id) else { return };
        c.state = ConnState::Established;
        let neg = c.negotiated.clone();
        self.restart_hold(id, now);
        // Whatever connection is still opening has lost the race.
        let others: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.id != id)
            .map(|c| c.id)
            .collect();
        for o in others {
            self.close_conn(o, Some(Notification::new(err::CEASE, err::CEASE_COLLISION)));
        }
        self.stop_connecting();
        if self.idle_until.take().is_some() {
            self.out.push(Output::StopTimer(Timer::IdleHold));
        }
        self.established_at = Some(now);
        self.was_established = true;
        self.last_error = None;
        if let Some(n) = neg {
            self.out.push(Output::Established(n));
        }
    }

    fn restart_hold(&mut self, id: ConnId, now: Instant) {
        let hold = self
            .conn(id)
            .and_then(|c| c.negotiated.as_ref())
            .map_or(0, |n| n.hold_time);
        if hold > 0 {
            self.arm(Timer::Hold(id), now + Duration::from_secs(u64::from(hold)));
        }
    }

    fn on_send(&mut self, updates: Vec<Update>, now: Instant) {
        let Some(c) = self.established() else { return };
        let (id, hold) = (c.id, c.negotiated.as_ref().map_or(0, |n| n.hold_time));
        for u in updates {
            self.out
                .push(Output::Send(id, Message::Update(Box::new(u))));
        }
        // RFC 4271 §4.4: sending an UPDATE restarts the KeepaliveTimer.
        if hold > 0 {
            self.arm(Timer::Keepalive(id), now + keepalive_interval(hold));
        }
    }

    fn on_request_refresh(&mut self, families: &[Family]) {
        let Some(c) = self.established() else { return };
        if !c.negotiated.as_ref().is_some_and(|n| n.route_refresh) {
            return;
        }
        let id = c.id;
        for &f in families {
            let rr = RouteRefresh::request(f);
            self.out.push(Output::Send(id, Message::RouteRefresh(rr)));
        }
    }

    // --- failure handling ----------------------------------------------------------------

    /// Sends `n` on connection `id`, closes it, and accounts the failure.
    fn fail_conn(&mut self, id: ConnId, n: Notification, reason: &str, now: Instant) {
        if let Some(conn) = self.close_conn(id, Some(n)) {
            self.conn_lost(conn, reason, false, now);
        }
    }

    /// A connection is gone. The reason is kept even when another connection carries on,
    /// so the operator sees why (say) the peer's OPEN was refused.
    fn conn_lost(&mut self, conn: Conn, reason: &str, graceful: bool, now: Instant) {
        self.last_error = Some(reason.to_owned());
        if conn.state == ConnState::Established {
            self.session_down(reason, conn.negotiated.as_ref(), graceful, now);
        } else if self.conns.is_empty() && !self.connecting {
            self.fail(reason.to_owned(), now);
        }
    }

    fn session_down(
        &mut self,
        reason: &str,
        neg: Option<&Negotiated>,
        graceful: bool,
        now: Instant,
    ) {
        let stable = self
            .established_at
            .is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.stable_after);
        if stable {
            self.failures = 0;
        }
        self.established_at = None;
        let keep_stale_for = neg
            .and_then(|n| n.graceful_restart.as_ref())
            .filter(|_| graceful)
            .map(|g| Duration::from_secs(u64::from(g.restart_time)));
        self.out.push(Output::Down {
            reason: reason.to_owned(),
            keep_stale_for,
        });
        self.close_all(None);
        self.fail(reason.to_owned(), now);
    }

    /// Enters Idle for the (growing) idle hold time; then reconnects on its own.
    fn fail(&mut self, reason: String, now: Instant) {
        self.last_error = Some(reason);
        self.stop_connecting();
        if !self.started {
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let until = now + self.idle_hold();
        self.idle_until = Some(until);
        self.arm(Timer::IdleHold, until);
    }

    fn close_all(&mut self, n: Option<Notification>) {
        let ids: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
        for id in ids {
            self.close_conn(id, n.clone());
        }
    }

    fn close_conn(&mut self, id: ConnId, n: Option<Notification>) -> Option<Conn> {
        let conn = self.remove(id)?;
        if let Some(n) = n {
            self.out.push(Output::Send(id, Message::Notification(n)));
        }
        self.out.push(Output::Close(id));
        Some(conn)
    }

    fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let i = self.conns.iter().position(|c| c.id == id)?;
        let c = self.conns.remove(i);
        self.out.push(Output::StopTimer(Timer::Hold(id)));
        self.out.push(Output::StopTimer(Timer::Keepalive(id)));
        Some(c)
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.iter().find(|c| c.id == id)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| c.id == id)
    }
}

/// RFC 4271 §10: one third of the hold time.
fn keepalive_interval(hold: u16) -> Duration {
    Duration::from_millis(u64::from(hold) * 1000 / 3)
}

#[cfg(test)]
mod tests;
