//! The tunnel's lock against the real kernel (root, for real-time scheduling): a real-time
//! thread waiting on it lends its priority to the ordinary thread holding it, and takes it
//! back when the lock is handed over (see `wg::pi`).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The kernel's effective priority of thread `tid` of this process (field 18 of its
/// `stat`): 20 + nice for an ordinary thread, −1 − rtprio for a real-time one; a boost by
/// priority inheritance shows here, not in `sched_getscheduler`.
fn effective_priority(tid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // The name in parentheses may hold spaces; the fields after it do not.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(15).unwrap().parse().unwrap()
}

/// Polls `tid`'s priority for up to two seconds until `want` holds; the last one read.
fn priority_until(tid: i32, want: impl Fn(i32) -> bool) -> i32 {
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let p = effective_priority(tid);
        if want(p) || Instant::now() > until {
            return p;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_real_time_waiter_lends_its_priority_to_the_holder() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root (real-time scheduling)"
    );
    wg::pi::supported().unwrap();
    let lock = Arc::new(wg::pi::Mutex::new(0u32));
    let (held_tx, held) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let (released_tx, released) = mpsc::channel();
    let (done, done_rx) = mpsc::channel::<()>();
    let holder = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            let mut g = lock.lock();
            held_tx.send(nix::unistd::gettid().as_raw()).unwrap();
            release_rx.recv().unwrap();
            *g = 1;
            drop(g);
            released_tx.send(()).unwrap();
            // Alive until its priority was read back.
            let _ = done_rx.recv();
        })
    };
    let holder_tid = held.recv().unwrap();
    let before = effective_priority(holder_tid);
    assert!(before >= 0, "the holder starts ordinary: {before}");

    let (waiting_tx, waiting) = mpsc::channel();
    let waiter = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            let param = libc::sched_param { sched_priority: 9 };
            #[allow(unsafe_code)]
            // SAFETY: pid 0 names the calling thread; `param` outlives the call.
            let rt = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
            assert_eq!(rt, 0, "SCHED_FIFO refused");
            waiting_tx.send(()).unwrap();
            let g = lock.lock();
            *g
        })
    };
    waiting.recv().unwrap();
    let boosted = priority_until(holder_tid, |p| p < 0);
    assert_eq!(boosted, -10, "the holder runs at the waiter's SCHED_FIFO 9");

    release.send(()).unwrap();
    released.recv().unwrap();
    // The waiter gets the lock with what the holder wrote under it, and the holder's
    // priority is its own again.
    assert_eq!(waiter.join().unwrap(), 1);
    let after = priority_until(holder_tid, |p| p >= 0);
    assert_eq!(after, before, "the boost ends with the hand-over");
    done.send(()).unwrap();
    holder.join().unwrap();
}
