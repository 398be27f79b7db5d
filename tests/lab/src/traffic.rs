//! A traffic probe: sequenced UDP from one namespace to another at a fixed rate, reporting
//! what an application would have felt: packets lost and the longest silence.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

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

/// Sequence number and arrival time of each packet received.
type Arrivals = Vec<(u64, Instant)>;

struct SenderResult {
    sent: u64,
    started: Instant,
    last_send: Instant,
}

pub struct TrafficProbe {
    stop_send: Arc<AtomicBool>,
    stop_recv: Arc<AtomicBool>,
    sender: Option<JoinHandle<Result<SenderResult>>>,
    receiver: Option<JoinHandle<Result<Arrivals>>>,
}

impl TrafficProbe {
    /// Starts sending `rate` packets per second from namespace `from_ns` to `to` (an
    /// address inside `to_ns`).
    pub fn start(from_ns: &str, to_ns: &str, to: IpAddr, rate: u32) -> Result<TrafficProbe> {
        let stop_send = Arc::new(AtomicBool::new(false));
        let stop_recv = Arc::new(AtomicBool::new(false));
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let id = std::process::id().rotate_left(16) ^ NEXT.fetch_add(1, Ordering::Relaxed);
        let (port_tx, port_rx) = mpsc::channel();
        let to_ns = to_ns.to_owned();
        let stop = stop_recv.clone();
        let receiver = std::thread::spawn(move || receive(&to_ns, to, id, &stop, port_tx));
        let port: u16 = port_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow!("probe receiver did not start"))?
            .map_err(|e| anyhow!("probe receiver: {e}"))?;
        let from_ns = from_ns.to_owned();
        let stop = stop_send.clone();
        let dest = SocketAddr::new(to, port);
        let sender = std::thread::spawn(move || send(&from_ns, dest, id, rate.max(1), &stop));
        Ok(TrafficProbe {
            stop_send,
            stop_recv,
            sender: Some(sender),
            receiver: Some(receiver),
        })
    }

    /// Stops sending, waits for packets in flight, and reports.
    pub fn stop(mut self) -> Result<ProbeReport> {
        self.stop_send.store(true, Ordering::Relaxed);
        let s = self
            .sender
            .take()
            .context("probe already stopped")?
            .join()
            .map_err(|_| anyhow!("probe sender panicked"))??;
        std::thread::sleep(DRAIN);
        self.stop_recv.store(true, Ordering::Relaxed);
        let arrivals = self
            .receiver
            .take()
            .context("probe already stopped")?
            .join()
            .map_err(|_| anyhow!("probe receiver panicked"))??;
        Ok(report(&s, &arrivals))
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
    port_tx: mpsc::Sender<Result<u16, String>>,
) -> Result<Vec<(u64, Instant)>> {
    let sock = netns::enter(ns).and_then(|()| {
        let s = UdpSocket::bind(SocketAddr::new(addr, 0))?;
        s.set_read_timeout(Some(Duration::from_millis(20)))?;
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
    let mut arrivals = Vec::with_capacity(64 * 1024);
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN + DRAIN {
        match sock.recv(&mut buf) {
            Ok(PACKET) => {
                let now = Instant::now();
                let magic = u32::from_be_bytes(buf[0..4].try_into().unwrap_or_default());
                let pid = u32::from_be_bytes(buf[4..8].try_into().unwrap_or_default());
                if magic == MAGIC && pid == id {
                    arrivals.push((
                        u64::from_be_bytes(buf[8..16].try_into().unwrap_or_default()),
                        now,
                    ));
                }
            }
            Ok(_) => {}
            // EINTR: a signal for another thread of the process (a bench once lost a
            // whole run to one).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(arrivals)
}

fn send(ns: &str, dest: SocketAddr, id: u32, rate: u32, stop: &AtomicBool) -> Result<SenderResult> {
    netns::enter(ns)?;
    let bind: SocketAddr = if dest.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let sock = UdpSocket::bind(bind)?;
    let period = Duration::from_secs(1) / rate;
    let started = Instant::now();
    let mut next = started;
    let mut seq = 0u64;
    let mut last_send = started;
    let mut pkt = [0u8; PACKET];
    pkt[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    pkt[4..8].copy_from_slice(&id.to_be_bytes());
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
        pkt[8..16].copy_from_slice(&seq.to_be_bytes());
        // A route that is gone or a blackholed interface makes sends fail (EHOSTUNREACH,
        // ENETUNREACH, ENOBUFS): that packet is lost, which is what we measure.
        let _ = sock.send_to(&pkt, dest);
        last_send = Instant::now();
        seq += 1;
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

fn report(s: &SenderResult, arrivals: &[(u64, Instant)]) -> ProbeReport {
    let mut seen = vec![false; s.sent as usize];
    let mut received = 0u64;
    let mut duplicates = 0u64;
    for &(seq, _) in arrivals {
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
    let mut prev = s.started;
    for &(_, t) in arrivals {
        longest = longest.max(t.saturating_duration_since(prev));
        prev = prev.max(t);
    }
    longest = longest.max(s.last_send.saturating_duration_since(prev));
    ProbeReport {
        sent: s.sent,
        received,
        lost: s.sent - received,
        duplicates,
        longest_gap_ms: longest.as_secs_f64() * 1000.0,
        duration: s.last_send.saturating_duration_since(s.started),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let arrivals = [
            (0, ms(1)),
            (1, ms(2)),
            (2, ms(3)),
            (7, ms(8)),
            (7, ms(8)),
            (8, ms(9)),
            (9, ms(10)),
        ];
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
        let r = report(&s, &[(0, t0 + Duration::from_millis(1))]);
        assert_eq!(r.lost, 99);
        assert!((r.longest_gap_ms - 99.0).abs() < 1e-6, "{r}");
    }
}
