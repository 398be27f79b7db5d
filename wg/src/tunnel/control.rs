//! The real-time path for network control (BFD) through the tunnels, both ways: one thread
//! for every tunnel, at real-time priority where allowed, that reads the TUN's control
//! queue (what the steering program sends there, see `steer`) and the UDP control socket
//! (marked datagrams, see `udp_steer`), so that a BFD packet never waits behind a bulk
//! burst or for a data-plane thread to get a CPU. The data plane's threads run at nice −5
//! among iperf3, softirqs and each other; measured inside a saturated tunnel at 3 ms × 3,
//! that wait was what made the BFD there miss now and then.
//!
//! What reaches this thread is bounded: only small datagrams are steered to it, and it
//! takes at most `RATE` a second (`Budget`); a peer or a stranger that marks bulk as
//! control gets that much real-time CPU and no more, the rest waits in the socket.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use super::receive::receive;
use super::{tun_write, Shared, BUF};
use crate::offload;
use crate::shed::Admit;
use crate::udp::Udp;

/// Datagrams a second the control path takes, all tunnels' together, and how many it may
/// take at once: far above what BFD needs (a session at 3 ms is 333 a second), far below
/// what would keep a CPU busy (a small datagram costs a few microseconds).
const RATE: f64 = 20_000.0;
const BURST: f64 = 2_000.0;

/// SCHED_FIFO priority of the thread: one below the BFD thread's (the probes' driver), so
/// a session's own timers still come first.
const RT_PRIORITY: i32 = 9;
/// The nice value tried when real-time scheduling is not allowed.
const NICE: i32 = -10;

/// Where the control thread runs, if not on every CPU (see `keep_control_on`).
static CPUS: OnceLock<Vec<usize>> = OnceLock::new();

/// Keeps the tunnels' control thread on `cpus`. On a kernel without preemption a woken
/// real-time thread waits until its CPU leaves the kernel, and route programming holds a
/// CPU for milliseconds when it resizes a large FIB trie: the agent gives this thread the
/// BFD thread's CPU, which route programming keeps off. Without it the thread runs on
/// every CPU. Takes effect if called before the first tunnel starts.
pub fn keep_control_on(cpus: Vec<usize>) {
    let _ = CPUS.set(cpus);
}

/// The control runtime: one thread, started with the first tunnel.
pub(super) fn runtime() -> io::Result<&'static tokio::runtime::Handle> {
    static RUNTIME: OnceLock<io::Result<tokio::runtime::Handle>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| super::plane::runtime_thread("wg-control".into(), raise_priority))
        .as_ref()
        .map_err(|e| io::Error::new(e.kind(), format!("tunnel control runtime: {e}")))
}

/// Real time where allowed (root, CAP_SYS_NICE or `LimitRTPRIO=`), else nice −10, else as
/// it is; on the CPUs `keep_control_on` gave, else every CPU of the process.
fn raise_priority() {
    let param = libc::sched_param {
        sched_priority: RT_PRIORITY,
    };
    #[allow(unsafe_code)]
    // SAFETY: pid 0 names the calling thread; `param` outlives the call, which only reads it.
    let rt = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    let how = if rt == 0 {
        format!("SCHED_FIFO priority {RT_PRIORITY}")
    } else {
        #[allow(unsafe_code)]
        // SAFETY: plain syscall; on Linux PRIO_PROCESS with id 0 is the calling thread.
        let nice = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
        if nice == 0 {
            format!("nice {NICE}")
        } else {
            "normal".to_owned()
        }
    };
    match CPUS.get() {
        Some(cpus) => {
            let mut set = nix::sched::CpuSet::new();
            for &c in cpus {
                let _ = set.set(c);
            }
            if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
                tracing::warn!(error = %e, ?cpus, "tunnel control thread not kept to its CPUs");
            }
        }
        None => super::plane::all_cpus(),
    }
    tracing::debug!(priority = %how, cpus = ?CPUS.get(), "tunnel control thread started");
}

/// A token bucket: how many datagrams the control path may take now. Sans-IO.
#[derive(Debug)]
pub(crate) struct Budget {
    tokens: f64,
    at: Option<Instant>,
}

impl Budget {
    pub(crate) fn new() -> Budget {
        Budget {
            tokens: BURST,
            at: None,
        }
    }

    /// Takes one token at `now`; if there is none, how long until there is.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(at) = self.at {
            let earned = now.saturating_duration_since(at).as_secs_f64() * RATE;
            self.tokens = (self.tokens + earned).min(BURST);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / RATE))
        }
    }
}

/// Reads the control socket `fd` (see `Udp::bind_control`) and delivers what it carries to
/// the TUN (`tun`), ahead of the bulk. Runs on the control runtime.
pub(super) async fn udp_to_tun(
    shared: Arc<Shared>,
    fd: OwnedFd,
    tun: Arc<AsyncFd<OwnedFd>>,
) -> io::Result<()> {
    // Unusable, it still takes the marked datagrams (it is in the socket group the
    // steering program picks from): the task ends so the tunnel is started again.
    let udp = Udp::from_fd(fd, shared.udp.is_v6())
        .map_err(|e| io::Error::new(e.kind(), format!("the UDP control socket: {e}")))?;
    let mut buf = vec![0u8; BUF];
    let mut out = vec![0u8; BUF];
    let mut budget = Budget::new();
    loop {
        if let Err(wait) = budget.take(Instant::now()) {
            tokio::time::sleep(wait).await;
            continue;
        }
        let r = match udp.recv(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "control UDP receive failed");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let c = &shared.counters;
        c.rx_bytes.fetch_add(r.bytes as u64, Ordering::Relaxed);
        c.rx_packets.fetch_add(1, Ordering::Relaxed);
        c.rx_control.fetch_add(1, Ordering::Relaxed);
        let datagram = &mut buf[..r.bytes];
        let Some(inner) = receive(&shared, datagram, r.from, Admit::Deliver, true, &mut out).await
        else {
            continue;
        };
        let header = shared.vnet.then_some(&offload::vnet::PLAIN[..]);
        tun_write(tun.get_ref(), header, &datagram[inner]);
    }
}

/// Registers `fd` with the control runtime (its readiness is then driven there).
pub(super) async fn register(fd: OwnedFd) -> io::Result<Arc<AsyncFd<OwnedFd>>> {
    super::plane::on(runtime()?, move || super::register(fd)).await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_a_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = Budget::new();
        for _ in 0..BURST as usize {
            assert_eq!(b.take(t0), Ok(()));
        }
        let wait = b.take(t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs_f64(1.0 / RATE));
        // One second later: RATE more, never more than a burst.
        let t1 = t0 + Duration::from_secs(1);
        let taken = (0..BURST as usize * 2)
            .take_while(|_| b.take(t1).is_ok())
            .count();
        assert_eq!(taken, BURST as usize);
        // A millisecond earns RATE / 1000.
        let t2 = t1 + Duration::from_millis(1);
        let taken = (0..100).take_while(|_| b.take(t2).is_ok()).count();
        assert!((19..=20).contains(&taken), "{taken}");
    }
}
