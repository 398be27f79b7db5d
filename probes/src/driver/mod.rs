//! The BFD driver: every session of the process runs on one dedicated OS thread, outside
//! any async runtime, so that a BGP table being ingested, a burst of route changes or a
//! slow netlink call can never delay a packet. The thread sleeps in `ppoll(2)` with a
//! nanosecond timeout on its sockets and a wake-up eventfd, with a timer slack of 1 µs.
//!
//! Wake-ups are a large part of what BFD costs (a context switch each, expensive in a VM),
//! so the thread takes as few as it can without losing precision: transmit timers fire
//! anywhere in their jitter window (see `session::Due`), serving every session due in one
//! wake-up, and sessions that sent together keep one schedule (`Engine::align`); and when
//! a timer is due within `max_read_delay` the sockets are left until then and read in one
//! batch. Packets carry their kernel receive time, so a late read skews neither detection
//! nor round-trip times measured here. It does delay our answer to a peer's Poll until our
//! next wake-up, which a peer timing its Poll Sequences (another crosslink) sees as
//! round-trip time.
//!
//! A wake-up that comes `session::STALL_MIN` or more after its time means the thread was
//! kept from running (a CPU inside a long system call on a kernel that does not preempt,
//! a vCPU the hypervisor paused). Every session is told (`Input::Stalled`) before the
//! timers fire: a detection expiring then waits once for the thread to have looked again
//! for as long, at most one receive interval, since what the peer sent meanwhile may not
//! have reached our sockets yet (and a peer on the same paused host could not send).
//!
//! Commands arrive on a channel (and a write to the eventfd); state changes leave on a
//! tokio channel; status is answered on a oneshot.

pub mod fate;
pub use fate::{judge, FarEnd, Witness};
mod net;
pub mod priority;
mod timing;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;
use tokio::sync::{mpsc as tmpsc, oneshot};

use crate::session::{AuthConfig, Due, Input, Output, Session, SessionConfig, Timer, STALL_MIN};
use crate::wire::{Diag, State};

use timing::{aligned, p99_and_max, rtt_due, Clock, WAKE_EARLY};

/// What to run: one session towards one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpec {
    /// For events and status (e.g. the line's name).
    pub name: String,
    pub peer: IpAddr,
    /// The peer's port; 3784 single-hop, 4784 multi-hop unless a test says otherwise.
    pub peer_port: u16,
    pub local: Option<IpAddr>,
    /// Single-hop sessions are bound to their line's interface.
    pub interface: Option<String>,
    pub multihop: bool,
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub detect_mult: u8,
    pub auth: Option<AuthConfig>,
    /// Sessions to the same far end share a fate group: when one goes down, the others
    /// tell whether the path failed or the far end itself went quiet (see `FarEnd`).
    pub fate: Option<String>,
    /// Starts AdminDown until `Bfd::set_admin_up` (see `SessionConfig::start_admin_down`).
    pub start_admin_down: bool,
}

impl SessionSpec {
    pub fn single_hop(
        name: &str,
        peer: IpAddr,
        interface: &str,
        interval: Duration,
        mult: u8,
    ) -> SessionSpec {
        SessionSpec {
            name: name.to_owned(),
            peer,
            peer_port: net::SINGLE_HOP_PORT,
            local: None,
            interface: Some(interface.to_owned()),
            multihop: false,
            desired_min_tx: interval,
            required_min_rx: interval,
            detect_mult: mult,
            auth: None,
            fate: None,
            start_admin_down: false,
        }
    }

    pub fn multi_hop(
        name: &str,
        peer: IpAddr,
        local: Option<IpAddr>,
        interval: Duration,
        mult: u8,
    ) -> SessionSpec {
        SessionSpec {
            name: name.to_owned(),
            peer,
            peer_port: net::MULTI_HOP_PORT,
            local,
            interface: None,
            multihop: true,
            desired_min_tx: interval,
            required_min_rx: interval,
            detect_mult: mult,
            auth: None,
            fate: None,
            start_admin_down: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverOptions {
    pub single_hop_port: u16,
    pub multi_hop_port: u16,
    pub bind_v4: Ipv4Addr,
    /// `None`: no IPv6 receive sockets (hosts without IPv6).
    pub bind_v6: Option<Ipv6Addr>,
    /// How often an Up session samples its round-trip time with a Poll Sequence.
    pub rtt_every: Duration,
    /// How long a received packet may wait for a wake-up the thread takes anyway; also
    /// capped at half the fastest session's transmit interval. Zero: read at once. Reads
    /// come before timers in every wake-up, so a late read never fakes a Down; with the
    /// transmit timers aligned (`Engine::align`) most reads ride on a transmit wake-up.
    pub max_read_delay: Duration,
    /// The CPU the thread keeps to (see `priority::pin_current_thread`); `None`: any.
    pub cpu: Option<usize>,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            single_hop_port: net::SINGLE_HOP_PORT,
            multi_hop_port: net::MULTI_HOP_PORT,
            bind_v4: Ipv4Addr::UNSPECIFIED,
            bind_v6: Some(Ipv6Addr::UNSPECIFIED),
            rtt_every: Duration::from_secs(1),
            max_read_delay: Duration::from_millis(5),
            cpu: None,
        }
    }
}

/// Identifies a session: its local discriminator.
pub type SessionId = u32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: SessionId,
    pub name: String,
    pub peer: IpAddr,
    pub from: State,
    pub to: State,
    pub diag: Diag,
    pub remote_diag: Option<Diag>,
    /// The state the peer last said it was in.
    pub remote_state: Option<State>,
    /// When the peer last said Up: for a session going down, the last sign of life.
    pub last_up_rx: Option<Instant>,
    /// For an Up session going down in a fate group: what the group says about the far end.
    pub far_end: FarEnd,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionStatus {
    pub id: SessionId,
    pub name: String,
    pub peer: IpAddr,
    pub multihop: bool,
    pub state: State,
    pub remote_state: Option<State>,
    pub local_diag: Diag,
    pub remote_diag: Option<Diag>,
    pub detection_time: Duration,
    pub tx_interval: Duration,
    pub rtt: Option<Duration>,
    pub loss: Option<f64>,
    pub up_for: Option<Duration>,
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub discarded: u64,
    /// 99th percentile of the gaps between periodic transmissions (last 4,096).
    pub tx_gap_p99: Option<Duration>,
    /// The largest of those gaps.
    pub tx_gap_max: Option<Duration>,
    /// Detections that waited for this thread to look again after it was stalled
    /// (`session::Input::Stalled`).
    #[serde(default)]
    pub stall_graces: u64,
}

enum Cmd {
    Add(SessionSpec, oneshot::Sender<io::Result<SessionId>>),
    Remove(SessionId),
    Admin(SessionId, bool),
    SetIntervals(SessionId, Duration, Duration),
    SetDetectMult(SessionId, u8),
    Status(Duration, oneshot::Sender<Vec<SessionStatus>>),
    Shutdown,
}

/// Handle to the BFD thread; dropping it stops the thread.
pub struct Bfd {
    cmds: mpsc::Sender<Cmd>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
    priority: priority::Priority,
    cpu: Option<Result<usize, String>>,
}

impl Bfd {
    /// Binds the receive sockets and starts the thread.
    pub fn start(opts: DriverOptions, events: tmpsc::UnboundedSender<Event>) -> io::Result<Bfd> {
        let mut rx = vec![
            (
                net::rx_socket(IpAddr::V4(opts.bind_v4), opts.single_hop_port)?,
                false,
            ),
            (
                net::rx_socket(IpAddr::V4(opts.bind_v4), opts.multi_hop_port)?,
                true,
            ),
        ];
        if let Some(v6) = opts.bind_v6 {
            rx.push((net::rx_socket(IpAddr::V6(v6), opts.single_hop_port)?, false));
            rx.push((net::rx_socket(IpAddr::V6(v6), opts.multi_hop_port)?, true));
        }
        let wake = Arc::new(EventFd::from_value_and_flags(
            0,
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        let (tx, cmds) = mpsc::channel();
        let (prio_tx, prio_rx) = mpsc::channel();
        let w = wake.clone();
        let thread = std::thread::Builder::new()
            .name("bfd".into())
            .spawn(move || {
                // Wake-ups exactly on time: the default slack is 50 µs.
                let _ = nix::sys::prctl::set_timerslack(1_000);
                let pinned = opts.cpu.map(|c| {
                    priority::pin_current_thread(&[c])
                        .map(|()| c)
                        .map_err(|e| format!("CPU {c}: {e}"))
                });
                let _ = prio_tx.send((priority::raise_current_thread(), pinned));
                Engine {
                    opts,
                    rx,
                    sessions: HashMap::new(),
                    events,
                    next_disc: initial_disc(),
                }
                .run(&cmds, &w);
            })?;
        let (priority, cpu) = prio_rx
            .recv()
            .map_err(|_| io::Error::other("BFD thread died at start"))?;
        Ok(Bfd {
            cmds: tx,
            wake,
            thread: Some(thread),
            priority,
            cpu,
        })
    }

    /// The scheduling priority the BFD thread got, for the log.
    pub fn priority(&self) -> priority::Priority {
        self.priority
    }

    /// The CPU the thread keeps to, if it was asked to keep to one; or why it could not.
    pub fn cpu(&self) -> Option<&Result<usize, String>> {
        self.cpu.as_ref()
    }

    fn send(&self, c: Cmd) {
        if self.cmds.send(c).is_ok() {
            let _ = self.wake.write(1);
        }
    }

    pub async fn add(&self, spec: SessionSpec) -> io::Result<SessionId> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Add(spec, tx));
        rx.await.map_err(|_| io::Error::other("BFD thread gone"))?
    }

    pub fn remove(&self, id: SessionId) {
        self.send(Cmd::Remove(id));
    }

    /// AdminDown (`false`) tells the peer the session is administratively down.
    pub fn set_admin_up(&self, id: SessionId, up: bool) {
        self.send(Cmd::Admin(id, up));
    }

    pub fn set_intervals(
        &self,
        id: SessionId,
        desired_min_tx: Duration,
        required_min_rx: Duration,
    ) {
        self.send(Cmd::SetIntervals(id, desired_min_tx, required_min_rx));
    }

    pub fn set_detect_mult(&self, id: SessionId, mult: u8) {
        self.send(Cmd::SetDetectMult(id, mult));
    }

    /// Every session's status, with loss measured over `loss_window`.
    pub async fn status(&self, loss_window: Duration) -> Vec<SessionStatus> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Status(loss_window, tx));
        rx.await.unwrap_or_default()
    }
}

impl Drop for Bfd {
    fn drop(&mut self) {
        self.send(Cmd::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn initial_disc() -> u32 {
    // Distinct across restarts, so a peer never mistakes a new session for the old one.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() ^ std::process::id().rotate_left(16)) | 1
}

struct Entry {
    spec: SessionSpec,
    session: Session,
    /// `None` while the session's interface does not exist (not yet created, or gone):
    /// reopened at the next transmission, so a tunnel or line interface that appears
    /// later, or is re-created with a new index, gets its session back.
    sock: Option<UdpSocket>,
    dest: SocketAddr,
    ifindex: Option<u32>,
    tx: Option<Due>,
    detect: Option<Due>,
    rtt: Due,
    last_periodic_tx: Option<Instant>,
    tx_gaps: VecDeque<Duration>,
}

impl Entry {
    fn apply(&mut self, id: SessionId, out: Vec<Output>, events: &mut Vec<Event>) {
        for o in out {
            match o {
                Output::Send(bytes) => self.send(&bytes),
                Output::ArmTimer(Timer::Transmit, due) => self.tx = Some(due),
                Output::ArmTimer(Timer::Detect, due) => self.detect = Some(due),
                Output::StopTimer(Timer::Transmit) => self.tx = None,
                Output::StopTimer(Timer::Detect) => self.detect = None,
                Output::StateChange { from, to, diag } => {
                    // Transmit gaps are measured at one rate: start over on each change.
                    self.tx_gaps.clear();
                    self.last_periodic_tx = None;
                    events.push(Event {
                        id,
                        name: self.spec.name.clone(),
                        peer: self.spec.peer,
                        from,
                        to,
                        diag,
                        remote_diag: self.session.stats().remote_diag,
                        remote_state: self.session.stats().remote_state,
                        last_up_rx: self.session.stats().last_up_rx,
                        far_end: FarEnd::Unjudged,
                    });
                }
                Output::Discarded(_) | Output::Rtt(_) => {}
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        if self.sock.is_none() {
            let s = &self.spec;
            self.sock = net::tx_socket(
                s.peer,
                s.local,
                s.interface.as_deref(),
                self.session.local_disc(),
            )
            .ok();
            self.ifindex = s.interface.as_deref().and_then(net::ifindex);
        }
        let Some(sock) = &self.sock else { return };
        // A full socket buffer or an unreachable peer loses this packet, which is what BFD
        // is there to notice. A vanished interface also needs a new socket.
        if let Err(e) = sock.send_to(bytes, self.dest) {
            if is_missing_interface(&e) {
                self.sock = None;
            }
        }
    }

    fn note_periodic_tx(&mut self, now: Instant) {
        if let Some(prev) = self.last_periodic_tx.replace(now) {
            if self.tx_gaps.len() == 4096 {
                self.tx_gaps.pop_front();
            }
            self.tx_gaps.push_back(now - prev);
        }
    }
}

fn is_missing_interface(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ENXIO))
}

struct Engine {
    opts: DriverOptions,
    rx: Vec<(UdpSocket, bool)>,
    sessions: HashMap<SessionId, Entry>,
    events: tmpsc::UnboundedSender<Event>,
    next_disc: u32,
}

impl Engine {
    fn run(mut self, cmds: &mpsc::Receiver<Cmd>, wake: &EventFd) {
        let mut buf = [0u8; 2048];
        let mut ready = vec![false; self.rx.len() + 1];
        loop {
            let now = Instant::now();
            // A little ahead of `at` where the window allows (transmit timers), so that
            // the wake-up's own latency does not stretch an interval past 100 %.
            let next = self
                .sessions
                .values()
                .flat_map(|e| [e.tx, e.detect, Some(e.rtt)])
                .flatten()
                .map(|d| {
                    d.at.checked_sub(WAKE_EARLY)
                        .map_or(d.at, |t| t.max(d.earliest))
                })
                .min();
            let timeout = next.map(|t| TimeSpec::from(t.saturating_duration_since(now)));
            let batch = next.is_some_and(|t| t <= now + self.read_delay());
            ready.fill(false);
            {
                let mut fds: Vec<PollFd<'_>> =
                    std::iter::once(PollFd::new(wake.as_fd(), PollFlags::POLLIN))
                        .chain(
                            self.rx
                                .iter()
                                .map(|(s, _)| PollFd::new(s.as_fd(), PollFlags::POLLIN)),
                        )
                        .collect();
                let watched = if batch { 1 } else { fds.len() };
                let mut polled = ppoll(&mut fds[..watched], timeout, None).is_ok();
                if batch {
                    // Whatever arrived while we slept, in one call.
                    polled &=
                        ppoll(&mut fds[1..], Some(TimeSpec::from(Duration::ZERO)), None).is_ok();
                }
                if polled {
                    for (r, fd) in ready.iter_mut().zip(&fds) {
                        *r = fd
                            .revents()
                            .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR));
                    }
                }
            }
            if ready[0] {
                let _ = wake.read();
                while let Ok(c) = cmds.try_recv() {
                    if !self.command(c) {
                        return;
                    }
                }
            }
            let clock = Clock::now();
            for i in 0..self.rx.len() {
                if ready[i + 1] {
                    self.drain(i, &mut buf, &clock);
                }
            }
            let now = Instant::now();
            if let Some(late) = next.map(|t| now.saturating_duration_since(t)) {
                if late >= STALL_MIN {
                    for (id, e) in self.sessions.iter_mut() {
                        let out = e.session.process(Input::Stalled(late), now);
                        e.apply(*id, out, &mut Vec::new());
                    }
                }
            }
            self.fire_timers(now);
        }
    }

    fn read_delay(&self) -> Duration {
        let fastest = self
            .sessions
            .values()
            .map(|e| e.session.tx_interval())
            .min()
            .unwrap_or(Duration::MAX);
        self.opts.max_read_delay.min(fastest / 2)
    }

    /// Returns false on shutdown.
    fn command(&mut self, c: Cmd) -> bool {
        let now = Instant::now();
        match c {
            Cmd::Add(spec, reply) => {
                let _ = reply.send(self.add(spec, now));
            }
            Cmd::Remove(id) => {
                if let Some(mut e) = self.sessions.remove(&id) {
                    // Tell the peer, so it does not count this as a failure.
                    let out = e.session.process(Input::AdminDown, now);
                    for o in out {
                        if let Output::Send(b) = o {
                            e.send(&b);
                        }
                    }
                }
            }
            Cmd::Admin(id, up) => {
                self.input(id, if up { Input::AdminUp } else { Input::AdminDown }, now)
            }
            Cmd::SetIntervals(id, tx, rx) => self.input(
                id,
                Input::SetIntervals {
                    desired_min_tx: tx,
                    required_min_rx: rx,
                },
                now,
            ),
            Cmd::SetDetectMult(id, m) => self.input(id, Input::SetDetectMult(m), now),
            Cmd::Status(window, reply) => {
                let _ = reply.send(self.status(window, now));
            }
            Cmd::Shutdown => return false,
        }
        true
    }

    fn add(&mut self, spec: SessionSpec, now: Instant) -> io::Result<SessionId> {
        let id = self.next_disc;
        self.next_disc = self.next_disc.wrapping_add(1).max(1);
        let sock = match net::tx_socket(spec.peer, spec.local, spec.interface.as_deref(), id) {
            Ok(s) => Some(s),
            Err(e) if is_missing_interface(&e) => None,
            Err(e) => return Err(e),
        };
        let cfg = SessionConfig {
            local_disc: id,
            desired_min_tx: spec.desired_min_tx,
            required_min_rx: spec.required_min_rx,
            detect_mult: spec.detect_mult,
            auth: spec.auth.clone(),
            start_admin_down: spec.start_admin_down,
        };
        let mut session = Session::new(cfg, now);
        let first = session.take_outputs();
        let entry = Entry {
            dest: SocketAddr::new(spec.peer, spec.peer_port),
            ifindex: spec.interface.as_deref().and_then(net::ifindex),
            spec,
            session,
            sock,
            tx: None,
            detect: None,
            rtt: rtt_due(now, self.opts.rtt_every),
            last_periodic_tx: None,
            tx_gaps: VecDeque::with_capacity(4096),
        };
        self.sessions.insert(id, entry);
        self.apply(id, first);
        Ok(id)
    }

    fn input(&mut self, id: SessionId, input: Input, now: Instant) {
        let Some(e) = self.sessions.get_mut(&id) else {
            return;
        };
        let out = e.session.process(input, now);
        self.apply(id, out);
    }

    fn apply(&mut self, id: SessionId, out: Vec<Output>) {
        let mut fired = Vec::new();
        if let Some(e) = self.sessions.get_mut(&id) {
            e.apply(id, out, &mut fired);
        }
        self.emit(fired);
    }

    /// Sends state changes, judging an Up session's fall against its fate group.
    fn emit(&self, fired: Vec<Event>) {
        for mut ev in fired {
            let me = self.sessions.get(&ev.id);
            if let (State::Up, Some(me), Some(group)) =
                (ev.from, me, me.and_then(|m| m.spec.fate.as_ref()))
            {
                let heard = (me.session.stats().last_up_rx, me.session.rx_interval());
                let others: Vec<Witness> = self
                    .sessions
                    .iter()
                    .filter(|(id, o)| **id != ev.id && o.spec.fate.as_ref() == Some(group))
                    .map(|(_, o)| Witness {
                        last_up: o.session.stats().last_up_rx,
                        down_at: o.session.stats().down_at,
                    })
                    .collect();
                ev.far_end = judge(ev.diag, ev.remote_diag, heard, &others);
            }
            let _ = self.events.send(ev);
        }
    }

    /// Serves every timer whose window has opened, so sessions due close together share
    /// one wake-up.
    fn fire_timers(&mut self, now: Instant) {
        let rtt_every = self.opts.rtt_every;
        let mut fired = Vec::new();
        // Sessions that sent now, by transmit interval, with the first one's next timer.
        let mut sent: Vec<(Duration, Due, SessionId)> = Vec::new();
        for (id, e) in self.sessions.iter_mut() {
            let opened = |d: Option<Due>| d.is_some_and(|d| d.earliest <= now);
            if opened(e.tx) {
                e.tx = None;
                e.note_periodic_tx(now);
                let out = e.session.process(Input::TimerExpired(Timer::Transmit), now);
                e.apply(*id, out, &mut fired);
                if let Some(due) = e.tx {
                    sent.push((e.session.tx_interval(), due, *id));
                }
            }
            if opened(e.detect) {
                e.detect = None;
                let out = e.session.process(Input::TimerExpired(Timer::Detect), now);
                e.apply(*id, out, &mut fired);
            }
            if opened(Some(e.rtt)) {
                e.rtt = rtt_due(now, rtt_every);
                if e.session.state() == State::Up {
                    let out = e.session.process(Input::MeasureRtt, now);
                    e.apply(*id, out, &mut fired);
                }
            }
        }
        self.align(&mut sent);
        self.emit(fired);
    }

    /// Sessions that sent together at one rate send together next time: each draws its
    /// own jittered interval, and all take the one drawn by the first of them (in map
    /// order, which follows nothing the sessions do). Every interval stays random within
    /// 75-100 % as RFC 5880 §6.8.7 asks, only no longer independent between our own
    /// sessions, and a wake-up serves all of them: wake-ups are what BFD costs here
    /// (measured, 16 sessions at 10 ms: 1,080 wake-ups/s and 3.7-4.3 % of a core before
    /// reads were deferred and timers aligned).
    fn align(&mut self, sent: &mut [(Duration, Due, SessionId)]) {
        for (id, due) in aligned(sent) {
            if let Some(e) = self.sessions.get_mut(&id) {
                e.tx = Some(due);
            }
        }
    }

    fn drain(&mut self, i: usize, buf: &mut [u8], clock: &Clock) {
        // Bounded: a flood cannot keep the thread from its timers.
        for _ in 0..256 {
            let d = match net::recv(&self.rx[i].0, buf) {
                Ok(Some(d)) => d,
                Ok(None) | Err(_) => return,
            };
            let multihop = self.rx[i].1;
            // RFC 5881 §5: single-hop packets must arrive with TTL 255 (GTSM).
            if !multihop && d.ttl != Some(255) {
                continue;
            }
            let pkt = &buf[..d.len];
            let Some(id) = self.demux(pkt, d.from.ip(), d.ifindex, multihop) else {
                continue;
            };
            let input = Input::Received {
                packet: pkt.to_vec(),
                arrived: clock.arrival(d.stamp),
            };
            self.input(id, input, clock.mono);
        }
    }

    /// RFC 5880 §6.8.6: by Your Discriminator; while it is zero, by source and interface.
    fn demux(
        &self,
        pkt: &[u8],
        from: IpAddr,
        ifindex: Option<u32>,
        multihop: bool,
    ) -> Option<SessionId> {
        let your = u32::from_be_bytes(pkt.get(8..12)?.try_into().ok()?);
        if your != 0 {
            return self.sessions.contains_key(&your).then_some(your);
        }
        self.sessions
            .iter()
            .find(|(_, e)| {
                e.spec.peer == from
                    && e.spec.multihop == multihop
                    && (multihop || e.ifindex.is_none() || e.ifindex == ifindex)
            })
            .map(|(id, _)| *id)
    }

    fn status(&mut self, window: Duration, now: Instant) -> Vec<SessionStatus> {
        let mut v: Vec<SessionStatus> = self
            .sessions
            .iter_mut()
            .map(|(id, e)| {
                let stats = e.session.stats().clone();
                let (tx_gap_p99, tx_gap_max) = p99_and_max(e.tx_gaps.iter().copied().collect());
                SessionStatus {
                    id: *id,
                    name: e.spec.name.clone(),
                    peer: e.spec.peer,
                    multihop: e.spec.multihop,
                    state: e.session.state(),
                    remote_state: stats.remote_state,
                    local_diag: e.session.local_diag(),
                    remote_diag: stats.remote_diag,
                    detection_time: e.session.detection_time(),
                    tx_interval: e.session.tx_interval(),
                    rtt: stats.last_rtt,
                    loss: e.session.loss(window, now),
                    up_for: stats.up_since.map(|t| now.saturating_duration_since(t)),
                    tx_packets: stats.tx_packets,
                    rx_packets: stats.rx_packets,
                    discarded: stats.discarded,
                    tx_gap_p99,
                    tx_gap_max,
                    stall_graces: stats.stall_graces,
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.peer.cmp(&b.peer)));
        v
    }
}
