//! The data plane's threads. Every tunnel's tasks run on threads of their own, apart from
//! the agent's: a task there that parses a 100,000-prefix table or waits on netlink does
//! not yield until it is done, and a packet whose task sits behind it on the same worker
//! waits as long — measured in the lab, the BFD inside a tunnel then missed its detection
//! time under table churn, on the idle tunnel as often as on the loaded one. As threads of
//! their own, the kernel shares the cores between the two; and it gives them a little more
//! (`DATA_PLANE_NICE`), as a router serves forwarding before its control plane.
//!
//! One thread per CPU of the process, each a single-threaded runtime (a shard), and each
//! task placed on one for its life: a tunnel's receiving task on one shard, its sending
//! tasks on the others, tunnels dealt round. A work-stealing runtime moved the same
//! tasks between its workers, and each time one made another runnable it woke an idle
//! worker to steal it: measured under one TCP flow, 25,000 of the 65,000 context switches
//! a second were workers of one runtime waking each other, each an interrupt to a halted
//! vCPU. Here a thread wakes only for its own descriptors.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tokio::runtime::Handle;

/// Nice value of the data plane's threads: ahead of ordinary threads (the agent's BGP and
/// route programming among them), behind the BFD thread (real-time, or nice -10).
pub const DATA_PLANE_NICE: i32 = -5;

/// The shards, started with the first tunnel.
fn shards() -> io::Result<&'static [Handle]> {
    static SHARDS: OnceLock<io::Result<Vec<Handle>>> = OnceLock::new();
    SHARDS
        .get_or_init(|| {
            let cpus = nix::sched::sched_getaffinity(nix::unistd::getpid())
                .map(|set| {
                    (0..nix::sched::CpuSet::count())
                        .filter(|&c| set.is_set(c).unwrap_or(false))
                        .count()
                })
                .unwrap_or(1);
            (0..cpus.max(1)).map(shard).collect()
        })
        .as_ref()
        .map(Vec::as_slice)
        .map_err(|e| io::Error::new(e.kind(), format!("data plane runtime: {e}")))
}

/// Starts shard `i`.
fn shard(i: usize) -> io::Result<Handle> {
    runtime_thread(format!("wg-{i}"), enter_data_plane)
}

/// A thread named `name` that calls `enter` (its priority and CPUs), then runs a
/// single-threaded runtime until the process ends: a shard, or the control thread.
pub(super) fn runtime_thread(name: String, enter: fn()) -> io::Result<Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new().name(name).spawn(move || {
        enter();
        rt.block_on(std::future::pending::<()>());
    })?;
    Ok(handle)
}

/// Where one tunnel's tasks run (see the module's comment).
#[derive(Clone)]
pub(super) struct Placement {
    shards: &'static [Handle],
    first: usize,
}

impl Placement {
    /// The next tunnel's place.
    pub(super) fn next() -> io::Result<Placement> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        Ok(Placement {
            shards: shards()?,
            first: NEXT.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The shard of the receiving task, the timers and the UAPI socket.
    pub(super) fn receiving(&self) -> &'static Handle {
        &self.shards[receiving(self.first, self.shards.len())]
    }

    /// The shard of the task that reads data queue `queue`: another than the receiving
    /// task's where there is one, so that a flow's packets one way never wait for the
    /// other way's (a TCP flow's ACKs for its data).
    pub(super) fn sending(&self, queue: usize) -> &'static Handle {
        &self.shards[sending(self.first, queue, self.shards.len())]
    }
}

/// Of `n` shards, the one that receives for the tunnel placed `first`.
fn receiving(first: usize, n: usize) -> usize {
    first % n
}

/// Of `n` shards, the one that reads data queue `queue` of the tunnel placed `first`.
fn sending(first: usize, queue: usize, n: usize) -> usize {
    let step = if n > 1 { 1 + queue % (n - 1) } else { 0 };
    (first + step) % n
}

/// Runs `f` on `shard` and waits for it: what registers a descriptor must run on the
/// runtime that will poll it.
pub(super) async fn on<T: Send + 'static>(
    shard: &Handle,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    shard
        .spawn(async move { f() })
        .await
        .map_err(|e| io::Error::other(format!("data plane runtime: {e}")))
}

/// Applies `DATA_PLANE_NICE` to the calling thread where allowed (root, CAP_SYS_NICE, or
/// systemd's `LimitNICE=`; otherwise the thread stays at the process's priority), and
/// every CPU of the process.
fn enter_data_plane() {
    #[allow(unsafe_code)]
    // SAFETY: plain syscall; on Linux PRIO_PROCESS with id 0 is the calling thread.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, DATA_PLANE_NICE) };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "data plane thread keeps its nice value");
    }
    all_cpus();
}

/// Lets the calling thread run on every CPU of the process. A thread inherits its
/// creator's CPUs, and the runtime may be built from a thread the agent keeps to some of
/// them (its control threads stay off the BFD CPU). The data plane needs every core the
/// process has: those of the main thread, which the agent never narrows.
pub(super) fn all_cpus() {
    use nix::sched::{sched_getaffinity, sched_setaffinity};
    use nix::unistd::{getpid, Pid};
    if let Ok(all) = sched_getaffinity(getpid()) {
        let _ = sched_setaffinity(Pid::from_raw(0), &all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunnel_sends_on_other_shards_than_it_receives_on() {
        assert_eq!(
            (receiving(5, 1), sending(5, 0, 1), sending(5, 1, 1)),
            (0, 0, 0)
        );
        for first in 0..4 {
            // Two CPUs: every data queue on the shard the receiving task leaves free.
            let r = receiving(first, 2);
            assert!((0..2).all(|q| sending(first, q, 2) == 1 - r));
        }
        // Four: the queues spread over the three others, tunnels dealt round.
        let sends: Vec<usize> = (0..3).map(|q| sending(1, q, 4)).collect();
        assert_eq!((receiving(1, 4), sends), (1, vec![2, 3, 0]));
        let receivers: Vec<usize> = (0..4).map(|t| receiving(t, 4)).collect();
        assert_eq!(receivers, [0, 1, 2, 3]);
    }
}
