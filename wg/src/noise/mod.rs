//! WireGuard's protocol for one peer, sans-IO: handshakes, sessions, timers and cookies,
//! with time as an input. Crosslink's own, rather than boringtun's `Tunn`, for one reason
//! `Tunn` cannot meet: a restarting agent must carry its sessions over (`handover`), or
//! every packet the peer sends between the old process's exit and the new handshake is
//! lost (37-51 at 1,000 packets/s, measured under systemd). It is also where the tunnel's
//! batching of the cryptography starts.
//!
//! Whitepaper references are to "WireGuard: Next Generation Kernel Network Tunnel"; the
//! timer rules follow its §6 as wireguard-go implements them.

mod crypto;
mod data;
mod handover;
mod handshake;
mod published;
mod session;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub use handover::{HandoverError, MAX_LEN as HANDOVER_MAX_LEN};
use handshake::{Identity, Pending, COOKIE_REPLY, INITIATION, RESPONSE};
pub use handshake::{COOKIE_REPLY_LEN, INITIATION_LEN, RESPONSE_LEN};
pub use published::Published;
pub use session::{Opener, Sealer, DATA_HEADER as DATA_OFFSET, PADDING};
use session::{Session, DATA, DATA_HEADER, REJECT_AFTER_TIME};

pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
const COOKIE_LIFETIME: Duration = Duration::from_secs(120);
/// An initiation sooner than this after the last one is a flood, not a peer (wireguard-go).
const INITIATION_MIN_GAP: Duration = Duration::from_millis(20);
/// Handshake messages per second past which we answer with cookies instead of DH.
const UNDER_LOAD: u32 = 16;
/// Packets kept while a handshake is under way; the oldest go first.
const QUEUE: usize = 256;
/// Largest output of any call: a handshake message or a sealed packet of `packet` bytes.
pub const fn overhead() -> usize {
    DATA_HEADER + PADDING + crypto::TAG
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("malformed message")]
    Malformed,
    #[error("mac1 or mac2 invalid")]
    Mac,
    #[error("no session or handshake with that index")]
    UnknownIndex,
    #[error("authentication failed")]
    Decrypt,
    #[error("static key of an unknown peer")]
    UnknownPeer,
    #[error("replayed or stale message")]
    Replay,
    #[error("initiation too soon after the last one")]
    TooSoon,
    #[error("a key of small order")]
    BadKey,
    #[error("inner packet is not IPv4 or IPv6, or longer than its message")]
    BadInner,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub private_key: [u8; 32],
    pub peer_public_key: [u8; 32],
    pub preshared_key: Option<[u8; 32]>,
    pub persistent_keepalive: Option<u16>,
    /// The tunnel's MTU: padding never takes a packet past it.
    pub mtu: usize,
}

/// What a received datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// An inner packet at `datagram[DATA_OFFSET..DATA_OFFSET + len]` from `src`.
    Data { len: usize, src: IpAddr },
    /// A keepalive.
    Keepalive,
    /// Send `out[..len]` back to where the datagram came from (a response or a cookie).
    Reply(usize),
    /// We initiated and the handshake completed: call `flush` until it returns `None`.
    Established,
    /// Taken in, nothing to do (a cookie reply).
    Nothing,
}

#[derive(Default)]
struct Sessions {
    previous: Option<Session>,
    current: Option<Session>,
    /// The responder's new session until the initiator's first data confirms it.
    next: Option<Session>,
}

impl Sessions {
    fn find(&mut self, index: u32) -> Option<(&mut Session, Slot)> {
        for (s, slot) in [
            (&mut self.current, Slot::Current),
            (&mut self.next, Slot::Next),
            (&mut self.previous, Slot::Previous),
        ] {
            if let Some(s) = s.as_mut().filter(|s| s.local_index == index) {
                return Some((s, slot));
            }
        }
        None
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Previous,
    Current,
    Next,
}

pub struct Peer {
    id: Identity,
    mtu: usize,
    persistent_keepalive: Option<Duration>,
    sessions: Sessions,
    /// Our initiations in flight, newest first: a late response to the one before the
    /// retransmission still completes the handshake.
    pending: [Option<Pending>; 2],
    /// When the present attempt to handshake began (given up after REKEY_ATTEMPT_TIME).
    attempt_since: Option<Instant>,
    /// Drawn once per initiation: up to a third of a second added to REKEY_TIMEOUT.
    retransmit_jitter: Duration,
    /// Our index and mac1 of the last response we sent: a cookie reply to it names them.
    response_sent: Option<(u32, [u8; 16])>,
    rekey_wanted: bool,
    /// The wall clock, read for each initiation's timestamp (a clock set by NTP after the
    /// start must count: a peer refuses timestamps below the last it saw).
    wall: fn() -> SystemTime,
    timestamp_sent: [u8; 12],
    /// The greatest timestamp the peer has initiated with: older ones are replays.
    timestamp_received: [u8; 12],
    initiation_received: Option<Instant>,
    cookie: Option<([u8; 16], Instant)>,
    cookie_secret: ([u8; 32], Instant),
    load: (Instant, u32),
    last_handshake: Option<Instant>,
    /// Any authenticated message sent or received: what persistent keepalives count from.
    last_traffic: Option<Instant>,
    /// Data sent and nothing heard since: a new handshake after 15 s (§6.4).
    unanswered_since: Option<Instant>,
    /// Data received and nothing sent since: a keepalive after 10 s (§6.5).
    keepalive_owed: Option<Instant>,
    /// The initiator's first message on a new session confirms it to the responder.
    confirm_owed: bool,
    /// When an authenticated message was last sent and heard, by either path: how the
    /// real-time path's activity orders against the locked path's (`note_published`).
    last_sent: Option<Instant>,
    last_heard: Option<Instant>,
    queue: VecDeque<Vec<u8>>,
    /// The sessions for the real-time path, without this lock (see `published`).
    published: Arc<Published>,
    /// What `published` showed before its last change, freed at the next one here rather
    /// than by the real-time thread.
    retired: Option<Arc<published::Sessions>>,
}

impl Peer {
    pub fn new(cfg: &Config, now: Instant) -> Result<Peer, Error> {
        let id = Identity::new(cfg.private_key, cfg.peer_public_key, cfg.preshared_key)
            .ok_or(Error::BadKey)?;
        Ok(Peer {
            id,
            mtu: cfg.mtu,
            persistent_keepalive: cfg
                .persistent_keepalive
                .filter(|&s| s > 0)
                .map(|s| Duration::from_secs(u64::from(s))),
            sessions: Sessions::default(),
            pending: [None, None],
            attempt_since: None,
            retransmit_jitter: Duration::ZERO,
            response_sent: None,
            rekey_wanted: false,
            wall: SystemTime::now,
            timestamp_sent: [0; 12],
            timestamp_received: [0; 12],
            initiation_received: None,
            cookie: None,
            cookie_secret: (crypto::random(), now),
            load: (now, 0),
            last_handshake: None,
            last_traffic: None,
            unanswered_since: None,
            keepalive_owed: None,
            confirm_owed: false,
            queue: VecDeque::new(),
            published: Arc::new(Published::new(cfg.mtu, now)),
            retired: None,
            last_sent: None,
            last_heard: None,
        })
    }

    /// The sessions as the real-time path uses them when a data thread holds this peer's
    /// lock (see `published`); the same for the peer's whole life.
    pub fn published(&self) -> Arc<Published> {
        self.published.clone()
    }

    pub fn time_since_last_handshake(&self, now: Instant) -> Option<Duration> {
        self.last_handshake
            .map(|t| now.saturating_duration_since(t))
    }

    /// Whether packets wait for a session (`flush` sends them once there is one).
    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether a session can carry data now.
    pub fn has_session(&self, now: Instant) -> bool {
        self.sessions
            .current
            .as_ref()
            .is_some_and(|s| s.usable(now))
    }

    /// A new initiation into `out` unless one went out less than REKEY_TIMEOUT ago.
    pub fn initiate(&mut self, out: &mut [u8], now: Instant) -> Option<usize> {
        let recent = self.pending[0]
            .as_ref()
            .is_some_and(|p| now.saturating_duration_since(p.sent_at) < REKEY_TIMEOUT);
        if recent {
            return None;
        }
        self.send_initiation(out, now)
    }

    fn send_initiation(&mut self, out: &mut [u8], now: Instant) -> Option<usize> {
        let timestamp =
            crypto::tai64n((self.wall)()).max(crypto::tai64n_after(&self.timestamp_sent));
        let cookie = self
            .cookie
            .filter(|(_, at)| now.saturating_duration_since(*at) < COOKIE_LIFETIME)
            .map(|(c, _)| c);
        let buf: &mut [u8; INITIATION_LEN] = out.get_mut(..INITIATION_LEN)?.try_into().ok()?;
        let pending = handshake::initiate(
            &self.id,
            self.new_index(),
            timestamp,
            cookie.as_ref(),
            buf,
            now,
        )
        .ok()?;
        self.timestamp_sent = timestamp;
        self.pending.swap(0, 1);
        self.pending[0] = Some(pending);
        self.attempt_since.get_or_insert(now);
        self.retransmit_jitter = jitter();
        self.rekey_wanted = false;
        Some(INITIATION_LEN)
    }

    /// A random index no session or initiation of ours uses.
    fn new_index(&self) -> u32 {
        loop {
            let i = u32::from_le_bytes(crypto::random());
            let s = &self.sessions;
            let taken = [&s.previous, &s.current, &s.next]
                .iter()
                .any(|s| s.as_ref().is_some_and(|s| s.local_index == i))
                || self.pending.iter().flatten().any(|p| p.local_index == i);
            if !taken {
                return i;
            }
        }
    }

    /// Takes in a datagram from `from`, decrypting a data message in place (see
    /// `Received::Data`); `out` receives a reply and must hold a response.
    pub fn decapsulate(
        &mut self,
        datagram: &mut [u8],
        from: SocketAddr,
        out: &mut [u8],
        now: Instant,
    ) -> Result<Received, Error> {
        self.catch_up(now);
        // The type is a little-endian u32 (reserved bytes zero), and each handshake
        // message has one length: anything else is refused before any work or reply, so
        // a spoofed sender gets nothing back larger than what it sent.
        let kind = match datagram.get(..4) {
            Some(&[k, 0, 0, 0]) => k,
            _ => return Err(Error::Malformed),
        };
        match (kind, datagram.len()) {
            (DATA, n) if n >= DATA_HEADER + crypto::TAG => self.receive_data(datagram, now),
            (INITIATION, INITIATION_LEN) | (RESPONSE, RESPONSE_LEN) => {
                self.receive_handshake(datagram, from, out, now)
            }
            (COOKIE_REPLY, COOKIE_REPLY_LEN) => self.receive_cookie(datagram, now),
            _ => Err(Error::Malformed),
        }
    }

    fn under_load(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.load.0) >= Duration::from_secs(1) {
            self.load = (now, 0);
        }
        self.load.1 += 1;
        self.load.1 > UNDER_LOAD
    }

    fn receive_handshake(
        &mut self,
        msg: &[u8],
        from: SocketAddr,
        out: &mut [u8],
        now: Instant,
    ) -> Result<Received, Error> {
        if !handshake::mac1_valid(&self.id, msg) {
            return Err(Error::Mac);
        }
        // Only now do messages count as load: each has a valid mac1 for us.
        if self.under_load(now) {
            if now.saturating_duration_since(self.cookie_secret.1) >= COOKIE_LIFETIME {
                self.cookie_secret = (crypto::random(), now);
            }
            let source = source_bytes(from);
            let cookie = handshake::cookie_for(&self.cookie_secret.0, &source);
            if !handshake::mac2_valid(&cookie, msg) {
                let buf: &mut [u8; COOKIE_REPLY_LEN] = out
                    .get_mut(..COOKIE_REPLY_LEN)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(Error::Malformed)?;
                handshake::cookie_reply(&self.id, &self.cookie_secret.0, &source, msg, buf);
                return Ok(Received::Reply(COOKIE_REPLY_LEN));
            }
        }
        if msg[0] == INITIATION {
            self.receive_initiation(msg, out, now)
        } else {
            self.receive_response(msg, now)
        }
    }

    fn receive_initiation(
        &mut self,
        msg: &[u8],
        out: &mut [u8],
        now: Instant,
    ) -> Result<Received, Error> {
        let init = handshake::consume_initiation(&self.id, msg)?;
        if init.timestamp <= self.timestamp_received {
            return Err(Error::Replay);
        }
        if self
            .initiation_received
            .is_some_and(|t| now.saturating_duration_since(t) < INITIATION_MIN_GAP)
        {
            return Err(Error::TooSoon);
        }
        let buf: &mut [u8; RESPONSE_LEN] = out
            .get_mut(..RESPONSE_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(Error::Malformed)?;
        let cookie = self
            .cookie
            .filter(|(_, at)| now.saturating_duration_since(*at) < COOKIE_LIFETIME)
            .map(|(c, _)| c);
        let (agreed, mac1) =
            handshake::respond(&self.id, &init, self.new_index(), cookie.as_ref(), buf)?;
        self.timestamp_received = init.timestamp;
        self.initiation_received = Some(now);
        self.response_sent = Some((agreed.local_index, mac1));
        self.last_traffic = Some(now);
        // As wireguard-go: at most the current session and this one, until it is confirmed.
        self.sessions.previous = None;
        self.sessions.next = Some(Session::new(
            agreed.local_index,
            agreed.remote_index,
            agreed.send,
            agreed.recv,
            now,
            false,
        ));
        self.publish();
        Ok(Received::Reply(RESPONSE_LEN))
    }

    fn receive_response(&mut self, msg: &[u8], now: Instant) -> Result<Received, Error> {
        let (_, ours) = handshake::response_indices(msg).ok_or(Error::Malformed)?;
        let i = self
            .pending
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.local_index == ours))
            .ok_or(Error::UnknownIndex)?;
        let pending = self.pending[i].as_ref().ok_or(Error::UnknownIndex)?;
        let agreed = handshake::consume_response(&self.id, pending, msg)?;
        let new = Session::new(
            agreed.local_index,
            agreed.remote_index,
            agreed.send,
            agreed.recv,
            now,
            true,
        );
        let s = &mut self.sessions;
        // A next session (the peer initiated, we answered) is what the peer sends on now,
        // so it stays as the previous one and the older current goes, as in wireguard-go.
        s.previous = match s.next.take() {
            Some(next) => Some(next),
            None => s.current.take(),
        };
        s.current = Some(new);
        self.publish();
        self.pending = [None, None];
        self.attempt_since = None;
        self.rekey_wanted = false;
        self.last_handshake = Some(now);
        self.last_traffic = Some(now);
        self.unanswered_since = None;
        self.confirm_owed = true;
        Ok(Received::Established)
    }

    fn receive_cookie(&mut self, msg: &[u8], now: Instant) -> Result<Received, Error> {
        let index = handshake::cookie_reply_index(msg).ok_or(Error::Malformed)?;
        // A reply to one of our initiations, or to our last response.
        let mac1 = self
            .pending
            .iter()
            .flatten()
            .map(|p| (p.local_index, p.mac1))
            .chain(self.response_sent)
            .find(|(i, _)| *i == index)
            .map(|(_, m)| m)
            .ok_or(Error::UnknownIndex)?;
        let cookie = handshake::consume_cookie_reply(&self.id, &mac1, msg).ok_or(Error::Decrypt)?;
        self.cookie = Some((cookie, now));
        Ok(Received::Nothing)
    }

    /// After `Received::Established`: the packets that waited, one per call, then a
    /// keepalive if none did (it confirms the session to the responder).
    pub fn flush(&mut self, out: &mut [u8], now: Instant) -> Option<usize> {
        if !self.has_session(now) {
            return None;
        }
        if let Some(p) = self.queue.pop_front() {
            return self.encapsulate(&p, out, now);
        }
        if self.confirm_owed {
            return self.encapsulate(&[], out, now);
        }
        None
    }

    /// WireGuard's timers (§6), called every few hundred milliseconds: retransmitted
    /// initiations, rekeying, keepalives, and keys erased when unused.
    pub fn tick(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        let mut out = vec![0u8; INITIATION_LEN.max(overhead())];
        self.note_published(now);
        if self
            .last_handshake
            .is_some_and(|t| now.saturating_duration_since(t) >= REJECT_AFTER_TIME * 3)
        {
            self.erase();
        }
        let s = &mut self.sessions;
        for slot in [&mut s.previous, &mut s.current, &mut s.next] {
            if slot.as_ref().is_some_and(|s| !s.usable(now)) {
                *slot = None;
            }
        }
        self.publish();
        let mut initiation = false;
        if let Some(since) = self.attempt_since {
            if now.saturating_duration_since(since) >= REKEY_ATTEMPT_TIME {
                // Given up: what waited is dropped, until a packet starts a new attempt.
                self.pending = [None, None];
                self.attempt_since = None;
                self.queue.clear();
            } else {
                initiation = self.pending[0].as_ref().is_none_or(|p| {
                    now.saturating_duration_since(p.sent_at)
                        >= REKEY_TIMEOUT + self.retransmit_jitter
                });
            }
        } else if self.rekey_wanted {
            initiation = true;
        }
        if self
            .unanswered_since
            .is_some_and(|t| now.saturating_duration_since(t) >= KEEPALIVE_TIMEOUT + REKEY_TIMEOUT)
        {
            self.unanswered_since = None;
            initiation |= self.attempt_since.is_none();
        }
        if initiation {
            if let Some(n) = self.send_initiation(&mut out, now) {
                sent.push(out[..n].to_vec());
            }
        }
        let passive = self
            .keepalive_owed
            .is_some_and(|t| now.saturating_duration_since(t) >= KEEPALIVE_TIMEOUT);
        let persistent = self.persistent_keepalive.is_some_and(|every| {
            self.last_traffic
                .is_none_or(|t| now.saturating_duration_since(t) >= every)
        });
        if passive || persistent {
            // Without a session a keepalive is a handshake (so a tunnel kept alive for a
            // NAT comes back by itself after an outage), as in wireguard-go.
            let sealed = if self.has_session(now) {
                self.encapsulate(&[], &mut out, now)
            } else if persistent && !initiation {
                self.initiate(&mut out, now)
            } else {
                None
            };
            if let Some(n) = sealed {
                sent.push(out[..n].to_vec());
            }
        }
        sent
    }

    /// Erases every key and what waited for one (§6.3: 3 × REJECT_AFTER_TIME unused).
    fn erase(&mut self) {
        self.sessions = Sessions::default();
        self.publish();
        self.pending = [None, None];
        self.attempt_since = None;
        self.rekey_wanted = false;
        self.queue.clear();
        self.last_handshake = None;
    }
}

/// Up to a third of a second, so two peers that retransmit do not stay in step.
fn jitter() -> Duration {
    Duration::from_millis(u64::from(u16::from_le_bytes(crypto::random()) % 334))
}

/// The sender's address as a cookie binds it: address bytes then port, big-endian.
fn source_bytes(from: SocketAddr) -> Vec<u8> {
    let mut b = match from.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    b.extend_from_slice(&from.port().to_be_bytes());
    b
}

#[cfg(test)]
mod tests;
