//! Scheduling priority for the BFD thread. Separate threads keep BFD off the async
//! runtime, but on a two-core gateway a table ingest, forwarding softirqs and tunnel crypto
//! can still leave it waiting in the run queue for milliseconds, which at 10 ms x 3 is most
//! of a detection time. So the thread asks to run first: real-time (SCHED_FIFO, a low
//! priority) when the process may, which without CAP_SYS_NICE means an RLIMIT_RTPRIO
//! (systemd: `LimitRTPRIO=`); otherwise a negative nice value within RLIMIT_NICE
//! (`LimitNICE=`); otherwise it stays as it is and says so.

use std::fmt;

/// SCHED_FIFO priority asked for: above every ordinary thread, below the kernel's own
/// real-time threads and anything an operator gave a higher priority on purpose.
pub const RT_PRIORITY: i32 = 10;
/// The nice value tried when real-time scheduling is not allowed.
pub const NICE: i32 = -10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    RealTime(i32),
    Nice(i32),
    /// Neither was allowed: the errno of the real-time attempt.
    Normal(i32),
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Priority::RealTime(p) => write!(f, "SCHED_FIFO priority {p}"),
            Priority::Nice(n) => write!(f, "nice {n}"),
            Priority::Normal(e) => write!(
                f,
                "normal (real-time refused: {}; allow it with LimitRTPRIO={RT_PRIORITY})",
                nix::errno::Errno::from_raw(*e)
            ),
        }
    }
}

/// Raises the calling thread's priority as far as allowed (see the module comment).
pub fn raise_current_thread() -> Priority {
    let param = libc::sched_param {
        sched_priority: RT_PRIORITY,
    };
    #[allow(unsafe_code)]
    // SAFETY: pid 0 names the calling thread; `param` is a valid sched_param that outlives
    // the call, which only reads it.
    let rt = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rt == 0 {
        return Priority::RealTime(RT_PRIORITY);
    }
    let errno = nix::errno::Errno::last_raw();
    let tid = nix::unistd::gettid().as_raw();
    #[allow(unsafe_code)]
    // SAFETY: plain integer arguments; on Linux PRIO_PROCESS with a thread id affects only
    // that thread.
    let nice = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE) };
    if nice == 0 {
        Priority::Nice(NICE)
    } else {
        Priority::Normal(errno)
    }
}

/// Keeps the calling thread to `cpus`. On a kernel without preemption (PREEMPT_NONE, the
/// usual server build) a real-time thread that wakes on a CPU busy inside a system call
/// waits until that call returns, and one route insert that resizes a large FIB trie holds
/// a CPU for milliseconds: measured in the lab, behind BIRD's and our own route programming.
/// Threads that program routes therefore keep off the BFD thread's CPU, and the BFD thread
/// keeps to it (see the agent's `cpus`).
pub fn pin_current_thread(cpus: &[usize]) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    for &c in cpus {
        set.set(c)?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

/// The CPUs the calling thread may run on, in order.
pub fn allowed_cpus() -> nix::Result<Vec<usize>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))?;
    Ok((0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_thread_runs_where_it_was_put() {
        let all = allowed_cpus().unwrap();
        let last = *all.last().unwrap();
        let got = std::thread::spawn(move || {
            pin_current_thread(&[last]).unwrap();
            #[allow(unsafe_code)]
            // SAFETY: plain syscall wrapper, no arguments.
            let on = unsafe { libc::sched_getcpu() };
            (allowed_cpus().unwrap(), on)
        })
        .join()
        .unwrap();
        assert_eq!(got.0, [last]);
        assert_eq!(got.1, last as i32);
        // The spawning thread is untouched.
        assert_eq!(allowed_cpus().unwrap(), all);
    }

    /// Whatever the test runs with (root or not), the result names what the kernel did.
    #[test]
    fn reports_the_priority_the_thread_really_has() {
        let (got, policy, nice) = std::thread::spawn(|| {
            let got = raise_current_thread();
            #[allow(unsafe_code)]
            // SAFETY: plain calls about the calling thread; no pointers.
            let (policy, nice) = unsafe {
                (
                    libc::sched_getscheduler(0),
                    libc::getpriority(libc::PRIO_PROCESS, 0),
                )
            };
            (got, policy, nice)
        })
        .join()
        .unwrap();
        match got {
            Priority::RealTime(p) => {
                assert_eq!(policy, libc::SCHED_FIFO);
                assert_eq!(p, RT_PRIORITY);
            }
            Priority::Nice(n) => {
                assert_eq!(policy, libc::SCHED_OTHER);
                assert_eq!(nice, n);
            }
            Priority::Normal(_) => assert_eq!(policy, libc::SCHED_OTHER),
        }
        assert!(!got.to_string().is_empty());
    }
}
