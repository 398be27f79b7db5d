//! A network namespace of a test's own, for the root tests against the real kernel.

use std::process::Command;

/// Deleted on drop, also when the test panics.
pub struct Netns(pub String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `f` on a thread inside a network namespace of its own (named `xl-TAG-PID`, given
/// to `f`), deleted afterwards, also when `f` panics. Threads and processes `f` starts
/// are made from that thread, so they are in the namespace too.
pub fn in_netns(tag: &str, f: impl FnOnce(&str) + Send + 'static) {
    let ns = Netns(format!("xl-{tag}-{}", std::process::id()));
    let _ = Command::new("ip").args(["netns", "del", &ns.0]).status();
    assert!(Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap()
        .success());
    let name = ns.0.clone();
    std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f(&name)
    })
    .join()
    .unwrap();
}
