//! The lock a tunnel's threads share its state under: one that lends the waiter's priority
//! to the holder (the kernel's priority-inheriting futexes, `FUTEX_LOCK_PI`).
//!
//! The real-time control thread (see `tunnel::control`) seals and opens BFD packets with
//! the same peer the data plane's threads use, under the same lock. A data thread holds it
//! for a few hundred nanoseconds, but it runs at an ordinary priority among softirqs and
//! iperf3, and can be preempted while holding it: traced in the lab inside a saturated
//! tunnel, the control thread sat 8.9 ms in `futex` behind the shard `wg-0`, which
//! ksoftirqd had taken the other CPU from; the BFD packet it held reached the TUN past its
//! detection time. With this lock the holder runs at the waiter's real-time priority until
//! it lets go, so the wait is the rest of the holder's hold, not its time off the CPU.
//!
//! The uncontended path is the same compare-and-swap as std's; contended, the waiter
//! sleeps in the kernel's rt_mutex, which hands the lock to the highest-priority waiter.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use linux_futex::{PiFutex, Private};

/// A mutex with priority inheritance. It is not poisoned: a panic while holding it
/// unlocks it on the way out, as the std locks here were used before (`into_inner`).
/// Locks are nested in one order only (the peer's, then a session's replay window inside
/// it, never the reverse), so the kernel's deadlock check (EDEADLK, which `linux_futex`
/// turns into a panic) has no cycle to find; a holder must not log, a blocking write.
pub type Mutex<T> = lock_api::Mutex<RawMutex, T>;
pub type MutexGuard<'a, T> = lock_api::MutexGuard<'a, RawMutex, T>;

/// Compare-and-swaps tried on a held lock before waiting in the kernel, as std's mutex
/// does: the data plane's threads hold these locks for a few hundred nanoseconds, and a
/// contended `FUTEX_LOCK_PI` costs a system call on both sides (the unlock too) where a
/// short spin usually finds the lock free. Measured without it, one tunnel's TCP
/// throughput lost ~10 %.
const SPINS: u32 = 100;

/// The futex word holds the owner's thread id (0 when free) and the kernel's waiters bit;
/// the kernel's protocol for `FUTEX_LOCK_PI` (futex(2)).
pub struct RawMutex(PiFutex<Private>);

fn tid() -> u32 {
    thread_local! {
        static TID: u32 = nix::unistd::gettid().as_raw() as u32;
    }
    TID.with(|t| *t)
}

impl RawMutex {
    fn try_acquire(&self, tid: u32) -> bool {
        self.0
            .value
            .compare_exchange(0, tid, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }
}

#[allow(unsafe_code)]
// SAFETY: the lock is exclusive: the word is set to the owner's id only from 0, by a
// compare-and-swap or by the kernel, and reset only by its owner (a guard is not Send, so
// the unlocking thread is the locking one).
unsafe impl lock_api::RawMutex for RawMutex {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: RawMutex = RawMutex(PiFutex::new(0));
    type GuardMarker = lock_api::GuardNoSend;

    fn lock(&self) {
        let tid = tid();
        for _ in 0..SPINS {
            let word = self.0.value.load(Ordering::Relaxed);
            // Someone already sleeps in the kernel: queue behind them by priority there.
            if word & PiFutex::<Private>::WAITERS != 0 {
                break;
            }
            if word == 0 && self.try_acquire(tid) {
                return;
            }
            std::hint::spin_loop();
        }
        // EAGAIN: the owner is exiting; the kernel asks to try again.
        while self.0.lock_pi().is_err() {}
    }

    fn try_lock(&self) -> bool {
        self.try_acquire(tid())
    }

    unsafe fn unlock(&self) {
        let released =
            self.0
                .value
                .compare_exchange(tid(), 0, Ordering::Release, Ordering::Relaxed);
        // A waiter set its bit: the kernel hands the lock over, to the highest priority.
        if released.is_err() {
            self.0.unlock_pi();
        }
    }
}

/// Whether this kernel has priority-inheriting futexes (`CONFIG_FUTEX_PI`, in every
/// distribution's kernel). Without them a contended `Mutex` cannot wait at all, so a tunnel
/// refuses to start rather than fail under load.
pub fn supported() -> io::Result<()> {
    let word = AtomicU32::new(0);
    #[allow(unsafe_code)]
    // SAFETY: FUTEX_TRYLOCK_PI reads and writes only the aligned u32 `word`, which outlives
    // the call; the remaining arguments are unused by this operation.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_TRYLOCK_PI | libc::FUTEX_PRIVATE_FLAG,
            0,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("priority-inheriting futexes (CONFIG_FUTEX_PI) unavailable: {e}"),
        ));
    }
    // The kernel wrote our thread id into the free word: ours, with no waiter to hand to.
    debug_assert_eq!(
        word.load(Ordering::Relaxed) & PiFutex::<Private>::TID_MASK,
        tid()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn this_kernel_has_them() {
        supported().unwrap();
    }

    #[test]
    fn contended_it_excludes_and_hands_over() {
        let m = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let mut g = m.lock();
                        // A read and a write apart: a lost update shows as a short total.
                        let v = *g;
                        std::hint::black_box(&mut *g);
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*m.lock(), 80_000);
    }
}
