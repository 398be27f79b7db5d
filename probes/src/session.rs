//! One BFD session (RFC 5880 §6), sans-IO: `process(input, now)` returns packets to send,
//! timers to arm and state changes. The driver owns sockets and clocks.
//!
//! Asynchronous mode only (no Demand, no Echo). Transmission runs at 1 s or slower until
//! the session is Up (§6.8.3), then at the configured interval, with 75-100% jitter (at most
//! 90% with a multiplier of 1). Timer changes while Up run a Poll Sequence and take effect
//! as §6.8.3 orders. A Poll Sequence is also how round-trip time is measured: it works with
//! any standard peer, which must answer a Poll with a Final at once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::wire::{verify_sha1, Auth, AuthType, DecodeError, Diag, Packet, State};

/// §6.8.3: the slowest a session transmits while it is not Up.
const SLOW_TX: Duration = Duration::from_secs(1);
/// Receive times kept for the loss estimate, at most.
const RX_HISTORY: usize = 8192;
/// §6.8.7: the shortest a jittered transmit interval may be, as a fraction of it.
const MIN_JITTER: f64 = 0.75;
/// A transmit timer may fire up to this fraction of the interval before its jittered time.
const TX_WINDOW_DIVISOR: u32 = 8;
/// The shortest stall of the driver that earns a detection its grace (see `Input::Stalled`):
/// below it, a late wake-up is ordinary scheduling.
pub const STALL_MIN: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub kind: AuthType,
    pub key_id: u8,
    pub key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our discriminator: non-zero and unique among this system's sessions.
    pub local_disc: u32,
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub detect_mult: u8,
    pub auth: Option<AuthConfig>,
    /// Start AdminDown, for a client that admits the session later (`Input::AdminUp`):
    /// BFD with a line router runs once the BGP session with it is up.
    pub start_admin_down: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    Transmit,
    Detect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A packet for this session, as received (raw, for the auth digest), and when it
    /// arrived: a driver that reads its sockets late still times silence and round trips
    /// from the arrival.
    Received {
        packet: Vec<u8>,
        arrived: Instant,
    },
    TimerExpired(Timer),
    /// Take the session administratively down (it tells the peer: AdminDown, diag 7).
    AdminDown,
    AdminUp,
    /// New timer parameters; while Up they are negotiated with a Poll Sequence.
    SetIntervals {
        desired_min_tx: Duration,
        required_min_rx: Duration,
    },
    /// A new detection multiplier. It takes effect with the next packet, without a Poll
    /// Sequence (§6.8.12 asks one only for the intervals): the peer computes its
    /// detection time from each packet's multiplier, and we keep sending at the agreed rate.
    SetDetectMult(u8),
    /// Start a Poll Sequence to sample the round-trip time (ignored while one runs).
    MeasureRtt,
    /// The driver was kept from running this long (its wake-up came that late: a CPU busy
    /// in a long system call, a vCPU the hypervisor paused). Packets that reached the host
    /// meanwhile may not be in its sockets yet, and a peer on the same stalled host could
    /// not send at all. A detection that expires before the driver has looked again for
    /// as long (at most one receive interval) waits for that, once per silence: the stall
    /// was ours, not the path's. A real failure is declared that much later, no more.
    /// A stall that could hide a packet also starts the loss estimate's span afresh.
    Stalled(Duration),
}

/// When an armed timer is to fire: at `at`, or anywhere from `earliest` on. The window lets
/// a driver serve several sessions in one wake-up, which is most of what BFD costs; only
/// transmit timers have one, and it stays within the jitter range §6.8.7 allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub earliest: Instant,
    pub at: Instant,
}

impl Due {
    pub fn exactly(at: Instant) -> Due {
        Due { earliest: at, at }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send(Vec<u8>),
    ArmTimer(Timer, Due),
    StopTimer(Timer),
    StateChange {
        from: State,
        to: State,
        diag: Diag,
    },
    /// A received packet was discarded (§6.8.6); for counters.
    Discarded(Discard),
    Rtt(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    Malformed(DecodeError),
    WrongDiscriminator,
    AuthMissing,
    AuthUnexpected,
    AuthFailed,
    AuthSequence,
}

/// Counters and measurements for status and metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub discarded: u64,
    pub last_rtt: Option<Duration>,
    pub up_since: Option<Instant>,
    pub remote_diag: Option<Diag>,
    pub remote_state: Option<State>,
    /// When the last packet saying Up arrived: proof the peer's BFD was alive then.
    pub last_up_rx: Option<Instant>,
    /// When the session last fell from Up.
    pub down_at: Option<Instant>,
    /// Detections that waited for the driver to look again after its stall.
    pub stall_graces: u64,
}

pub struct Session {
    cfg: SessionConfig,
    state: State,
    diag: Diag,
    remote_disc: u32,
    remote_state: State,
    remote_min_rx: Duration,
    remote_desired_tx: Duration,
    remote_mult: u8,
    /// The intervals in force; a Poll Sequence may be about to change them.
    tx_in_use: Duration,
    rx_in_use: Duration,
    /// The values we advertise; they become `*_in_use` as §6.8.3 allows.
    desired_tx: Duration,
    required_rx: Duration,
    /// When the last packet of a running Poll Sequence was sent.
    poll: Option<Instant>,
    /// When the transmit timer fires next.
    next_tx: Option<Instant>,
    rcv_auth_seq: u32,
    auth_seq_known: bool,
    xmit_auth_seq: u32,
    rng: u64,
    last_rx: Option<Instant>,
    last_tx: Option<Instant>,
    rx_times: VecDeque<Instant>,
    /// Until when an expiring detection waits, after the driver's last stall.
    stall_grace: Option<Instant>,
    /// This silence already had its grace (cleared by the next packet).
    grace_used: bool,
    /// Where the loss estimate's span starts when a stall cut the receive history (see
    /// `Input::Stalled`).
    rx_history_from: Option<Instant>,
    stats: Stats,
    out: Vec<Output>,
}

impl Session {
    pub fn new(cfg: SessionConfig, now: Instant) -> Session {
        let seed = u64::from(cfg.local_disc).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let (state, diag) = if cfg.start_admin_down {
            (State::AdminDown, Diag::AdministrativelyDown)
        } else {
            (State::Down, Diag::None)
        };
        let mut s = Session {
            state,
            diag,
            remote_disc: 0,
            remote_state: State::Down,
            remote_min_rx: Duration::from_micros(1),
            remote_desired_tx: Duration::ZERO,
            remote_mult: 0,
            tx_in_use: SLOW_TX.max(cfg.desired_min_tx),
            rx_in_use: cfg.required_min_rx,
            desired_tx: SLOW_TX.max(cfg.desired_min_tx),
            required_rx: cfg.required_min_rx,
            poll: None,
            next_tx: None,
            rcv_auth_seq: 0,
            auth_seq_known: false,
            // §6.7.3: the first sequence number should be random.
            xmit_auth_seq: (seed >> 17) as u32,
            rng: seed,
            last_rx: None,
            last_tx: None,
            rx_times: VecDeque::new(),
            stall_grace: None,
            grace_used: false,
            rx_history_from: None,
            stats: Stats::default(),
            out: Vec::new(),
            cfg,
        };
        s.schedule_tx(now);
        s
    }

    /// Outputs produced outside `process`: the first transmit timer `new` arms.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn local_diag(&self) -> Diag {
        self.diag
    }

    pub fn local_disc(&self) -> u32 {
        self.cfg.local_disc
    }

    pub fn remote_disc(&self) -> u32 {
        self.remote_disc
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// §6.8.4: how long without a packet before the session is declared down.
    pub fn detection_time(&self) -> Duration {
        self.rx_in_use.max(self.remote_desired_tx) * u32::from(self.remote_mult.max(1))
    }

    /// The interval at which the peer transmits to us (before its jitter).
    pub fn rx_interval(&self) -> Duration {
        self.rx_in_use.max(self.remote_desired_tx)
    }

    /// The interval at which we transmit now (before jitter).
    pub fn tx_interval(&self) -> Duration {
        self.tx_in_use.max(self.remote_min_rx)
    }

    /// Fraction of the packets the peer should have sent over `window` that did not
    /// arrive: the holes up to the last packet that did. The peer sends every `max(its
    /// desired tx, our required rx)` less 0-25% jitter, so 87.5% of that interval is the
    /// expected mean spacing. Silence since the last packet is not counted: it is either
    /// a packet not yet due or a peer gone quiet, which the detection time judges (a
    /// far gateway that restarts must not look like loss on every path at once).
    pub fn loss(&mut self, window: Duration, now: Instant) -> Option<f64> {
        if self.state != State::Up {
            return None;
        }
        self.trim_rx(window, now);
        let up_for = self
            .stats
            .up_since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let kept = self
            .rx_history_from
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        let from = window.min(up_for).min(kept);
        let last = now.saturating_duration_since(*self.rx_times.back()?);
        let span = from.checked_sub(last)?;
        let mean = self.rx_in_use.max(self.remote_desired_tx).mul_f64(0.875);
        if span < mean * 4 || mean.is_zero() {
            return None;
        }
        let expected = span.as_secs_f64() / mean.as_secs_f64();
        let got = self
            .rx_times
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= from)
            .count() as f64;
        Some((1.0 - got / expected).clamp(0.0, 1.0))
    }

    fn trim_rx(&mut self, window: Duration, now: Instant) {
        while self
            .rx_times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            self.rx_times.pop_front();
        }
    }

    pub fn process(&mut self, input: Input, now: Instant) -> Vec<Output> {
        match input {
            Input::Received { packet, arrived } => self.on_packet(&packet, arrived.min(now), now),
            Input::TimerExpired(Timer::Transmit) => self.on_tx_timer(now),
            Input::TimerExpired(Timer::Detect) => self.on_detect_timer(now),
            Input::AdminDown => self.on_admin_down(now),
            Input::AdminUp => self.on_admin_up(now),
            Input::SetIntervals {
                desired_min_tx,
                required_min_rx,
            } => self.on_set_intervals(desired_min_tx, required_min_rx, now),
            // Zero is invalid on the wire (§6.8.6): kept as it was.
            Input::SetDetectMult(m) if m > 0 => self.cfg.detect_mult = m,
            Input::SetDetectMult(_) => {}
            Input::MeasureRtt => self.on_measure_rtt(now),
            Input::Stalled(d) if d >= STALL_MIN => {
                self.stall_grace = Some(now + d.min(self.rx_interval()));
                // A stall that could hide a packet leaves a hole in the receive history
                // that says nothing about the path: the loss estimate's span starts here
                // (else a session kept Up by the grace, or a slow session the stall did
                // not bring down, reads as lossy). Older receive times fall outside it.
                if d >= self.rx_interval() {
                    self.rx_history_from = Some(now);
                }
            }
            Input::Stalled(_) => {}
        }
        std::mem::take(&mut self.out)
    }

    // --- transmission ---------------------------------------------------------------------

    fn next_jitter(&mut self) -> f64 {
        // xorshift64*: deterministic per session, uniform enough for jitter.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
        // §6.8.7: reduce by 0-25%, and by at least 10% when the multiplier is 1.
        let max = if self.cfg.detect_mult == 1 { 0.90 } else { 1.0 };
        MIN_JITTER + r * (max - MIN_JITTER)
    }

    fn schedule_tx(&mut self, now: Instant) {
        let interval = self.tx_interval();
        let at = now + interval.mul_f64(self.next_jitter());
        // Firing early keeps the jittered interval random and inside 75-100%. Even a timer
        // always served at the start of its window only shortens the mean interval from
        // 87.5% to about 78%.
        let earliest = (at - interval / TX_WINDOW_DIVISOR).max(now + interval.mul_f64(MIN_JITTER));
        self.next_tx = Some(at);
        self.out
            .push(Output::ArmTimer(Timer::Transmit, Due { earliest, at }));
    }

    /// After the transmit interval shrank: a timer armed for the old, slower rate would
    /// leave the peer silent past its new detection time.
    fn reschedule_if_late(&mut self, now: Instant) {
        if self.next_tx.is_some_and(|t| t > now + self.tx_interval()) {
            self.schedule_tx(now);
        }
    }

    fn on_tx_timer(&mut self, now: Instant) {
        // §6.8.7: a peer asking for no packets (RequiredMinRx 0) gets none.
        if self.remote_disc == 0 || self.remote_min_rx > Duration::ZERO {
            self.send(false, now);
        }
        self.schedule_tx(now);
    }

    fn send(&mut self, fin: bool, now: Instant) {
        if self.poll.is_some() && !fin {
            // Round-trip time runs from the latest Poll: earlier ones may have been lost.
            self.poll = Some(now);
        }
        let auth = self.cfg.auth.as_ref().map(|a| Auth {
            kind: a.kind,
            key_id: a.key_id,
            sequence: self.xmit_auth_seq,
            digest: [0; 20],
        });
        if auth.is_some() {
            // Both SHA1 types may advance with every packet (meticulous must).
            self.xmit_auth_seq = self.xmit_auth_seq.wrapping_add(1);
        }
        let p = Packet {
            diag: self.diag,
            state: self.state,
            poll: self.poll.is_some() && !fin,
            fin,
            cpi: false,
            demand: false,
            detect_mult: self.cfg.detect_mult,
            my_disc: self.cfg.local_disc,
            your_disc: self.remote_disc,
            desired_min_tx_us: micros(self.desired_tx),
            required_min_rx_us: micros(self.required_rx),
            required_min_echo_rx_us: 0,
            auth,
        };
        self.stats.tx_packets += 1;
        self.last_tx = Some(now);
        self.out.push(Output::Send(
            p.encode(self.cfg.auth.as_ref().map(|a| a.key.as_slice())),
        ));
    }

    // --- reception (§6.8.6) ---------------------------------------------------------------

    fn discard(&mut self, why: Discard) {
        self.stats.discarded += 1;
        self.out.push(Output::Discarded(why));
    }

    fn on_packet(&mut self, raw: &[u8], arrived: Instant, now: Instant) {
        let p = match Packet::decode(raw) {
            Ok(p) => p,
            Err(e) => return self.discard(Discard::Malformed(e)),
        };
        if p.your_disc != 0 && p.your_disc != self.cfg.local_disc {
            return self.discard(Discard::WrongDiscriminator);
        }
        if let Err(why) = self.check_auth(&p, raw) {
            return self.discard(why);
        }
        self.stats.rx_packets += 1;
        self.last_rx = Some(arrived);
        self.grace_used = false;
        if self.rx_times.len() == RX_HISTORY {
            self.rx_times.pop_front();
        }
        self.rx_times.push_back(arrived);
        self.remote_disc = p.my_disc;
        self.remote_state = p.state;
        self.remote_min_rx = Duration::from_micros(u64::from(p.required_min_rx_us));
        self.remote_desired_tx = Duration::from_micros(u64::from(p.desired_min_tx_us));
        self.remote_mult = p.detect_mult;
        self.reschedule_if_late(now);
        self.stats.remote_diag = Some(p.diag);
        self.stats.remote_state = Some(p.state);
        if p.state == State::Up {
            self.stats.last_up_rx = Some(arrived);
        }
        if p.fin && self.poll.is_some() {
            self.end_poll(arrived);
        }
        if self.state == State::AdminDown {
            return;
        }
        self.arm_detect(arrived);
        let before = self.state;
        self.transition_on(p.state, now);
        if p.poll {
            // §6.8.6: answer a Poll with a Final at once, not at the next transmit time.
            self.send(true, now);
        } else if self.state != before && self.poll != Some(now) {
            // The peer waits for our answer to move on (Down -> Init -> Up): at the slow
            // rate that is up to a second per step, and a peer that replaced its session
            // (a new discriminator, Down) would otherwise wait as long to hear that ours
            // went down with it. One packet per change the peer caused; coming Up already
            // sent its Poll.
            self.send_early(now);
        }
    }

    /// A packet now rather than at the transmit timer, for a state change: at most one a
    /// quarter of the transmit interval (§6.8.7 spaces periodic packets by the interval;
    /// a peer cycling its state gets no faster stream than that), never to a peer asking
    /// for none, and the periodic timer counts from it.
    fn send_early(&mut self, now: Instant) {
        let spaced = self
            .last_tx
            .is_none_or(|t| now.saturating_duration_since(t) >= self.tx_interval() / 4);
        if spaced && (self.remote_disc == 0 || self.remote_min_rx > Duration::ZERO) {
            self.send(false, now);
            self.schedule_tx(now);
        }
    }

    /// §6.7.3 / §6.7.4 reception.
    fn check_auth(&mut self, p: &Packet, raw: &[u8]) -> Result<(), Discard> {
        let (cfg, got) = match (&self.cfg.auth, &p.auth) {
            (None, None) => return Ok(()),
            (None, Some(_)) => return Err(Discard::AuthUnexpected),
            (Some(_), None) => return Err(Discard::AuthMissing),
            (Some(c), Some(g)) => (c, g),
        };
        if got.kind != cfg.kind || got.key_id != cfg.key_id || !verify_sha1(raw, &cfg.key) {
            return Err(Discard::AuthFailed);
        }
        if self.auth_seq_known {
            let window = 3 * u32::from(p.detect_mult);
            let ahead = got.sequence.wrapping_sub(self.rcv_auth_seq);
            let ok = match cfg.kind {
                AuthType::KeyedSha1 => ahead <= window,
                AuthType::MeticulousKeyedSha1 => (1..=window).contains(&ahead),
            };
            if !ok {
                return Err(Discard::AuthSequence);
            }
        }
        self.rcv_auth_seq = got.sequence;
        self.auth_seq_known = true;
        Ok(())
    }

    fn arm_detect(&mut self, now: Instant) {
        self.out.push(Output::ArmTimer(
            Timer::Detect,
            Due::exactly(now + self.detection_time()),
        ));
    }

    /// The state table of §6.8.6.
    fn transition_on(&mut self, remote: State, now: Instant) {
        match (self.state, remote) {
            (State::Down | State::Init | State::Up, State::AdminDown)
                if self.state != State::Down =>
            {
                self.change(State::Down, Diag::NeighborSignaledSessionDown, now);
            }
            (State::Down, State::Down) => self.change(State::Init, Diag::None, now),
            (State::Down, State::Init) => self.change(State::Up, Diag::None, now),
            (State::Init, State::Init | State::Up) => self.change(State::Up, Diag::None, now),
            (State::Up, State::Down) => {
                self.change(State::Down, Diag::NeighborSignaledSessionDown, now)
            }
            _ => {}
        }
    }

    fn change(&mut self, to: State, diag: Diag, now: Instant) {
        let from = self.state;
        self.state = to;
        if diag != Diag::None || to == State::Up {
            self.diag = diag;
        }
        self.out.push(Output::StateChange { from, to, diag });
        match to {
            State::Up => {
                self.stats.up_since = Some(now);
                self.rx_times.clear();
                // §6.8.3: leave the 1 s slow start for the configured rate, by Poll.
                self.advertise(self.cfg.desired_min_tx, self.required_rx, now);
            }
            State::Down | State::AdminDown => {
                if from == State::Up {
                    self.stats.down_at = Some(now);
                }
                self.stats.up_since = None;
                self.poll = None;
                self.advertise(SLOW_TX.max(self.cfg.desired_min_tx), self.required_rx, now);
                self.tx_in_use = self.desired_tx;
            }
            State::Init => {}
        }
    }

    fn on_detect_timer(&mut self, now: Instant) {
        // The driver may deliver a stale expiry: only a real silence counts.
        let silent = self
            .last_rx
            .is_none_or(|t| now.saturating_duration_since(t) >= self.detection_time());
        if !silent || !matches!(self.state, State::Init | State::Up) {
            return;
        }
        if let Some(until) = self.stall_grace.filter(|u| now < *u && !self.grace_used) {
            self.grace_used = true;
            self.stats.stall_graces += 1;
            self.out
                .push(Output::ArmTimer(Timer::Detect, Due::exactly(until)));
            return;
        }
        self.change(State::Down, Diag::ControlDetectionTimeExpired, now);
        // §6.8.1: after a detection time without packets the peer is forgotten.
        self.remote_disc = 0;
        self.remote_min_rx = Duration::from_micros(1);
        self.auth_seq_known = false;
        self.out.push(Output::StopTimer(Timer::Detect));
    }

    // --- administration and timer changes -------------------------------------------------

    fn on_admin_down(&mut self, now: Instant) {
        if self.state != State::AdminDown {
            self.change(State::AdminDown, Diag::AdministrativelyDown, now);
            self.out.push(Output::StopTimer(Timer::Detect));
            self.send(false, now);
        }
    }

    fn on_admin_up(&mut self, now: Instant) {
        if self.state == State::AdminDown {
            self.change(State::Down, Diag::None, now);
            self.diag = Diag::None;
            // The peer learns at once that we are ready, not at the next slow packet.
            self.send_early(now);
        }
    }

    fn on_set_intervals(&mut self, tx: Duration, rx: Duration, now: Instant) {
        self.cfg.desired_min_tx = tx;
        self.cfg.required_min_rx = rx;
        let tx = if self.state == State::Up {
            tx
        } else {
            SLOW_TX.max(tx)
        };
        self.advertise(tx, rx, now);
    }

    /// Advertises new intervals. Up: a Poll Sequence, and §6.8.3's rules for when each
    /// takes effect; otherwise at once.
    fn advertise(&mut self, tx: Duration, rx: Duration, now: Instant) {
        if tx == self.desired_tx && rx == self.required_rx {
            return;
        }
        self.desired_tx = tx;
        self.required_rx = rx;
        if self.state != State::Up {
            self.tx_in_use = tx;
            self.rx_in_use = rx;
            return;
        }
        // A faster transmit rate or a slower receive rate is safe at once; the opposite
        // waits for the Final, so the peer's detection time never runs short.
        if tx < self.tx_in_use {
            self.tx_in_use = tx;
        }
        if rx > self.rx_in_use {
            self.rx_in_use = rx;
        }
        self.start_poll(now);
    }

    fn start_poll(&mut self, now: Instant) {
        self.poll = Some(now);
        self.send(false, now);
        self.reschedule_if_late(now);
    }

    fn end_poll(&mut self, arrived: Instant) {
        let started = self.poll.take();
        self.tx_in_use = self.desired_tx;
        self.rx_in_use = self.required_rx;
        if let Some(t) = started {
            let rtt = arrived.saturating_duration_since(t);
            self.stats.last_rtt = Some(rtt);
            self.out.push(Output::Rtt(rtt));
        }
    }

    fn on_measure_rtt(&mut self, now: Instant) {
        if self.state == State::Up && self.poll.is_none() {
            self.start_poll(now);
        }
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
