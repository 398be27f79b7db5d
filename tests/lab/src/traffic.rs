//! A traffic probe: sequenced UDP from one namespace to another at a fixed rate, reporting
//! what an application would have felt: packets lost and the longest silence. It keeps
//! every arrival with the TTL (hop limit) it came with, so that a lab that marks each path
//! with a TTL of its own (`paths`) can tell which path carried each packet.

use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};

use crate::netns;

const MAGIC: u32 = 0x786c_7072; // "xlpr"
const PACKET: usize = 16;
/// Time given to packets in flight after the last one is sent.
const DRAIN: Duration = Duration::from_millis(200);
/// Hard bound on a probe's life, whatever its caller does.
const MAX_RUN: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Longest time without an arrival while the sender was sending, in milliseconds.
    pub longest_gap_ms: f64,
    /// When the longest gap began (the arrival before it, or the first send), on the
    /// wall clock the daemons' logs use.
    pub longest_gap_at: std::time::SystemTime,
    pub duration: Duration,
}

impl ProbeReport {
    pub fn loss_fraction(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.lost as f64 / self.sent as f64
        }
    }
}

impl std::fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {} received {} lost {} ({:.1}%) longest gap {:.1} ms over {:.1} s",
            self.sent,
            self.received,
            self.lost,
            self.loss_fraction() * 100.0,
            self.longest_gap_ms,
            self.duration.as_secs_f64()
        )
    }
}

/// One packet received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub seq: u64,
    pub at: Instant,
    /// The IPv4 TTL or IPv6 hop limit it arrived with; 0 when the kernel did not say.
    pub ttl: u8,
}

type Arrivals = Vec<Arrival>;

/// Everything a probe saw: its schedule and each arrival, for analysis by time window.
#[derive(Debug, Clone)]
pub struct Trace {
    pub started: Instant,
    /// Time between two packets of the schedule.
    pub period: Duration,
    pub sent: u64,
    pub last_send: Instant,
    /// In arrival order.
    pub arrivals: Vec<Arrival>,
}

impl Trace {
    /// When packet `seq` was due to leave (the sender keeps an absolute schedule).
    pub fn due(&self, seq: u64) -> Instant {
        self.started + self.period * u32::try_from(seq).unwrap_or(u32::MAX)
    }

    /// The first sequence number due at or after `t`.
    fn seq_due_at(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.started);
        u64::try_from(since.as_nanos().div_ceil(self.period.as_nanos().max(1))).unwrap_or(u64::MAX)
    }

    /// The report for the packets due to leave in `[from, to)`: how many were lost, and
    /// the longest time without an arrival of theirs.
    pub fn between(&self, from: Instant, to: Instant) -> ProbeReport {
        let from = from.max(self.started);
        let to = to.min(self.last_send).max(from);
        let first = self.seq_due_at(from).min(self.sent);
        let end = self.seq_due_at(to).min(self.sent);
        let s = SenderResult {
            sent: end - first,
            started: from,
            last_send: to,
        };
        let arrivals: Vec<Arrival> = self
            .arrivals
            .iter()
            .filter(|a| (first..end).contains(&a.seq))
            .map(|a| Arrival {
                seq: a.seq - first,
                ..*a
            })
            .collect();
        report(&s, &arrivals)
    }

    /// The whole run's report.
    pub fn report(&self) -> ProbeReport {
        let s = SenderResult {
            sent: self.sent,
            started: self.started,
            last_send: self.last_send,
        };
        report(&s, &self.arrivals)
    }

    /// Arrivals in `[from, to)` counted per TTL, most first.
    pub fn ttls_between(&self, from: Instant, to: Instant) -> Vec<(u8, u64)> {
        let mut counts = [0u64; 256];
        for a in self.arrivals.iter().filter(|a| a.at >= from && a.at < to) {
            counts[usize::from(a.ttl)] += 1;
        }
        let mut out: Vec<(u8, u64)> = (0..=255u8).zip(counts).filter(|&(_, n)| n > 0).collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }

    /// When the first packet with a TTL that `pick` accepts arrived at or after `after`.
    pub fn first_arrival(&self, after: Instant, pick: impl Fn(u8) -> bool) -> Option<Instant> {
        self.arrivals
            .iter()
            .find(|a| a.at >= after && pick(a.ttl))
            .map(|a| a.at)
    }
}

struct SenderResult {
    sent: u64,
    started: Instant,
    last_send: Instant,
}

/// What the probe's threads share while it runs, so that it can be read before it stops.
#[derive(Default)]
struct Progress {
    arrivals: Mutex<Arrivals>,
    sent: AtomicU64,
    started: OnceLock<Instant>,
}

pub struct TrafficProbe {
    period: Duration,
    progress: Arc<Progress>,
    stop_send: Arc<AtomicBool>,
    stop_recv: Arc<AtomicBool>,
    sender: Option<JoinHandle<Result<SenderResult>>>,
    receiver: Option<JoinHandle<Result<()>>>,
}

impl TrafficProbe {
    /// Starts sending `rate` packets per second from namespace `from_ns` to `to` (an
    /// address inside `to_ns`), as one flow.
    pub fn start(from_ns: &str, to_ns: &str, to: IpAddr, rate: u32) -> Result<TrafficProbe> {
        TrafficProbe::start_flows(from_ns, to_ns, to, rate, 1)
    }

    /// As `start`, with the packets spread round-robin over `flows` source ports: an
    /// ECMP route hashing on L4 ports spreads them as it would spread as many connections.
    pub fn start_flows(
        from_ns: &str,
        to_ns: &str,
        to: IpAddr,
        rate: u32,
        flows: u16,
    ) -> Result<TrafficProbe> {
        let stop_send = Arc::new(AtomicBool::new(false));
        let stop_recv = Arc::new(AtomicBool::new(false));
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let id = std::process::id().rotate_left(16) ^ NEXT.fetch_add(1, Ordering::Relaxed);
        let (port_tx, port_rx) = mpsc::channel();
        let to_ns = to_ns.to_owned();
        let stop = stop_recv.clone();
        let progress = Arc::new(Progress::default());
        let p = progress.clone();
        let receiver = std::thread::spawn(move || receive(&to_ns, to, id, &stop, &p, port_tx));
        let port: u16 = port_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow!("probe receiver did not start"))?
            .map_err(|e| anyhow!("probe receiver: {e}"))?;
        let from_ns = from_ns.to_owned();
        let stop = stop_send.clone();
        let dest = SocketAddr::new(to, port);
        let rate = rate.max(1);
        let flows = flows.max(1);
        let p = progress.clone();
        let sender = std::thread::spawn(move || send(&from_ns, dest, id, (rate, flows), &stop, &p));
        Ok(TrafficProbe {
            period: Duration::from_secs(1) / rate,
            progress,
            stop_send,
            stop_recv,
            sender: Some(sender),
            receiver: Some(receiver),
        })
    }

    /// Stops sending, waits for packets in flight, and reports.
    pub fn stop(self) -> Result<ProbeReport> {
        Ok(self.stop_trace()?.report())
    }

    /// What the probe has seen so far, while it goes on. Packets sent in the last
    /// milliseconds may still be on their way.
    pub fn so_far(&self) -> Trace {
        let now = Instant::now();
        Trace {
            started: *self.progress.started.get().unwrap_or(&now),
            period: self.period,
            sent: self.progress.sent.load(Ordering::Relaxed),
            last_send: now,
            arrivals: lock(&self.progress.arrivals).clone(),
        }
    }

    /// Stops as `stop` does and returns everything seen, for analysis by time window.
    pub fn stop_trace(mut self) -> Result<Trace> {
        self.stop_send.store(true, Ordering::Relaxed);
        let s = self
            .sender
            .take()
            .context("probe already stopped")?
            .join()
            .map_err(|_| anyhow!("probe sender panicked"))??;
        std::thread::sleep(DRAIN);
        self.stop_recv.store(true, Ordering::Relaxed);
        self.receiver
            .take()
            .context("probe already stopped")?
            .join()
            .map_err(|_| anyhow!("probe receiver panicked"))??;
        let arrivals = std::mem::take(&mut *lock(&self.progress.arrivals));
        Ok(Trace {
            started: s.started,
            period: self.period,
            sent: s.sent,
            last_send: s.last_send,
            arrivals,
        })
    }
}

impl Drop for TrafficProbe {
    fn drop(&mut self) {
        self.stop_send.store(true, Ordering::Relaxed);
        self.stop_recv.store(true, Ordering::Relaxed);
        if let Some(h) = self.sender.take() {
            let _ = h.join();
        }
        if let Some(h) = self.receiver.take() {
            let _ = h.join();
        }
    }
}

fn receive(
    ns: &str,
    addr: IpAddr,
    id: u32,
    stop: &AtomicBool,
    progress: &Progress,
    port_tx: mpsc::Sender<Result<u16, String>>,
) -> Result<()> {
    let sock = netns::enter(ns).and_then(|()| {
        let s = UdpSocket::bind(SocketAddr::new(addr, 0))?;
        s.set_read_timeout(Some(Duration::from_millis(20)))?;
        if addr.is_ipv6() {
            setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true)?;
        } else {
            setsockopt(&s, sockopt::Ipv4RecvTtl, &true)?;
        }
        Ok(s)
    });
    let sock = match sock {
        Ok(s) => {
            let _ = port_tx.send(Ok(s.local_addr()?.port()));
            s
        }
        Err(e) => {
            let _ = port_tx.send(Err(e.to_string()));
            return Err(e);
        }
    };
    let started = Instant::now();
    lock(&progress.arrivals).reserve(64 * 1024);
    let mut buf = [0u8; 64];
    let mut cmsg = nix::cmsg_space!(libc::c_int);
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN + DRAIN {
        let got = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            )
            .map(|m| (m.bytes, ttl_of(&m)))
        };
        match got {
            Ok((PACKET, ttl)) => {
                let at = Instant::now();
                let magic = u32::from_be_bytes(buf[0..4].try_into().unwrap_or_default());
                let pid = u32::from_be_bytes(buf[4..8].try_into().unwrap_or_default());
                if magic == MAGIC && pid == id {
                    let seq = u64::from_be_bytes(buf[8..16].try_into().unwrap_or_default());
                    lock(&progress.arrivals).push(Arrival { seq, at, ttl });
                }
            }
            Ok(_) => {}
            // EINTR: a signal for another thread of the process (a bench once lost a
            // whole run to one).
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The arrivals, whatever a panicking thread left (the data is plain, never half-written).
fn lock(m: &Mutex<Arrivals>) -> std::sync::MutexGuard<'_, Arrivals> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The TTL or hop limit the kernel handed over with a datagram.
fn ttl_of<S>(m: &nix::sys::socket::RecvMsg<'_, '_, S>) -> u8 {
    m.cmsgs()
        .into_iter()
        .flatten()
        .find_map(|c| match c {
            ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                u8::try_from(t).ok()
            }
            _ => None,
        })
        .unwrap_or(0)
}

fn send(
    ns: &str,
    dest: SocketAddr,
    id: u32,
    (rate, flows): (u32, u16),
    stop: &AtomicBool,
    progress: &Progress,
) -> Result<SenderResult> {
    netns::enter(ns)?;
    let bind: SocketAddr = if dest.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let socks = (0..flows)
        .map(|_| UdpSocket::bind(bind))
        .collect::<std::io::Result<Vec<_>>>()?;
    let period = Duration::from_secs(1) / rate;
    let started = *progress.started.get_or_init(Instant::now);
    let mut next = started;
    let mut seq = 0u64;
    let mut last_send = started;
    let mut pkt = [0u8; PACKET];
    pkt[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    pkt[4..8].copy_from_slice(&id.to_be_bytes());
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
        pkt[8..16].copy_from_slice(&seq.to_be_bytes());
        let sock = &socks[(seq % socks.len() as u64) as usize];
        // A route that is gone or a blackholed interface makes sends fail (EHOSTUNREACH,
        // ENETUNREACH, ENOBUFS): that packet is lost, which is what we measure.
        let _ = sock.send_to(&pkt, dest);
        last_send = Instant::now();
        seq += 1;
        progress.sent.store(seq, Ordering::Relaxed);
        // Absolute schedule: a late wake-up is caught up, not accumulated as drift.
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(SenderResult {
        sent: seq,
        started,
        last_send,
    })
}

fn report(s: &SenderResult, arrivals: &[Arrival]) -> ProbeReport {
    let mut seen = vec![false; s.sent as usize];
    let mut received = 0u64;
    let mut duplicates = 0u64;
    for &Arrival { seq, .. } in arrivals {
        match seen.get_mut(seq as usize) {
            Some(slot) if !*slot => {
                *slot = true;
                received += 1;
            }
            Some(_) => duplicates += 1,
            None => {}
        }
    }
    let mut longest = Duration::ZERO;
    let mut longest_at = s.started;
    let mut prev = s.started;
    for &Arrival { at: t, .. } in arrivals {
        if t.saturating_duration_since(prev) > longest {
            (longest, longest_at) = (t.saturating_duration_since(prev), prev);
        }
        prev = prev.max(t);
    }
    if s.last_send.saturating_duration_since(prev) > longest {
        (longest, longest_at) = (s.last_send.saturating_duration_since(prev), prev);
    }
    let ago = Instant::now().saturating_duration_since(longest_at);
    ProbeReport {
        sent: s.sent,
        received,
        lost: s.sent - received,
        duplicates,
        longest_gap_ms: longest.as_secs_f64() * 1000.0,
        longest_gap_at: std::time::SystemTime::now() - ago,
        duration: s.last_send.saturating_duration_since(s.started),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(seq: u64, at: Instant, ttl: u8) -> Arrival {
        Arrival { seq, at, ttl }
    }

    /// 100 packets at 1 ms, each arriving 1 ms after it left; 40..=49 lost, and from 60 on
    /// they come with another TTL (another path).
    fn trace() -> Trace {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        Trace {
            started: t0,
            period: Duration::from_millis(1),
            sent: 100,
            last_send: ms(99),
            arrivals: (0..100)
                .filter(|s| !(40..50).contains(s))
                .map(|s| arrival(s, ms(s + 1), if s < 60 { 61 } else { 62 }))
                .collect(),
        }
    }

    #[test]
    fn a_window_counts_only_the_packets_due_in_it() {
        let t = trace();
        let ms = |n: u64| t.started + Duration::from_millis(n);
        let cut = t.between(ms(30), ms(70));
        assert_eq!((cut.sent, cut.lost), (40, 10), "{cut}");
        // From 39's arrival at 40 ms to 50's at 51 ms.
        assert!((cut.longest_gap_ms - 11.0).abs() < 1e-6, "{cut}");
        let calm = t.between(ms(60), ms(90));
        assert_eq!((calm.sent, calm.lost), (30, 0), "{calm}");
        assert_eq!(t.report().lost, 10);
    }

    #[test]
    fn ttls_tell_the_paths_apart() {
        let t = trace();
        let ms = |n: u64| t.started + Duration::from_millis(n);
        assert_eq!(t.ttls_between(ms(0), ms(200)), [(61, 50), (62, 40)]);
        assert_eq!(t.first_arrival(ms(0), |ttl| ttl == 62), Some(ms(61)));
        assert_eq!(t.first_arrival(ms(0), |ttl| ttl == 63), None);
    }

    #[test]
    fn report_counts_loss_duplicates_and_the_longest_gap() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let s = SenderResult {
            sent: 10,
            started: t0,
            last_send: ms(10),
        };
        // 0..=2 arrive, 3..=6 are lost (a 5 ms silence), 7 twice, 8 and 9 arrive.
        let arrivals = [(0, 1), (1, 2), (2, 3), (7, 8), (7, 8), (8, 9), (9, 10)]
            .map(|(seq, t)| arrival(seq, ms(t), 64));
        let r = report(&s, &arrivals);
        assert_eq!((r.sent, r.received, r.lost, r.duplicates), (10, 6, 4, 1));
        assert!((r.longest_gap_ms - 5.0).abs() < 1e-6, "{r}");
    }

    #[test]
    fn silence_until_the_end_counts_as_a_gap() {
        let t0 = Instant::now();
        let s = SenderResult {
            sent: 100,
            started: t0,
            last_send: t0 + Duration::from_millis(100),
        };
        let r = report(&s, &[arrival(0, t0 + Duration::from_millis(1), 64)]);
        assert_eq!(r.lost, 99);
        assert!((r.longest_gap_ms - 99.0).abs() < 1e-6, "{r}");
    }
}
