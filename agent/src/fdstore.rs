//! The tunnels' descriptors kept by systemd across a restart or an upgrade (its
//! file-descriptor store: `FDSTORE=1`, given back through `LISTEN_FDS`). While the store
//! holds a tunnel's TUN queues, its interface keeps the carrier, so the kernel keeps the
//! nexthops and routes through it (a TUN nobody holds loses its carrier and the kernel
//! deletes them), and packets routed to it wait in its queues; the UDP socket keeps its
//! port and queues what arrives. The next run starts the tunnel from them (`wg::Adopted`).
//!
//! At a stop the tunnels' WireGuard sessions join them (`keep_sessions`), so the peer's
//! packets sealed for this run open in the next without a handshake.
//!
//! Names: `tun.<interface>.<queue>`, `udp.<interface>` and `wg.<interface>` (see
//! `wg::adopt`). An interface name may hold dots
//! (the queue is after the last one) but never a `:`, which the store's names may not hold.
//! Outside systemd (no NOTIFY_SOCKET) nothing is stored; a re-exec on SIGUSR2 hands the
//! same descriptors to the next image (`reexec`), and they are taken back here alike.

use std::collections::BTreeMap;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};

use sd_notify::NotifyState;

/// What systemd (or the image before a re-exec) handed back at start, by interface, with
/// the names it came under, until each tunnel takes its own.
static HANDED_OVER: Mutex<Option<BTreeMap<String, Handed>>> = Mutex::new(None);

#[derive(Default)]
struct Handed {
    fds: wg::Adopted,
    names: Vec<String>,
}
/// The names this run stored, by interface (to remove them when the tunnel goes).
static STORED: Mutex<BTreeMap<String, Vec<String>>> = Mutex::new(BTreeMap::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn managed() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Where a stored descriptor belongs.
#[derive(Debug, PartialEq, Eq)]
enum Slot {
    Tun { interface: String, queue: usize },
    Udp { interface: String },
    UdpControl { interface: String },
    Sessions { interface: String },
}

fn parse(name: &str) -> Option<Slot> {
    if let Some(interface) = name.strip_prefix("udpc.") {
        return (!interface.is_empty()).then(|| Slot::UdpControl {
            interface: interface.to_owned(),
        });
    }
    if let Some(interface) = name.strip_prefix("udp.") {
        return (!interface.is_empty()).then(|| Slot::Udp {
            interface: interface.to_owned(),
        });
    }
    if let Some(interface) = name.strip_prefix("wg.") {
        return (!interface.is_empty()).then(|| Slot::Sessions {
            interface: interface.to_owned(),
        });
    }
    let (interface, queue) = name.strip_prefix("tun.")?.rsplit_once('.')?;
    Some(Slot::Tun {
        interface: interface.to_owned(),
        queue: queue.parse().ok()?,
    })
}

/// Groups the named descriptors by interface, TUN queues in their order. Names that are
/// not ours are returned apart, to be dropped.
fn group(fds: Vec<(String, OwnedFd)>) -> (BTreeMap<String, Handed>, Vec<String>) {
    let mut queues: BTreeMap<String, Vec<(usize, OwnedFd)>> = BTreeMap::new();
    let mut out: BTreeMap<String, Handed> = BTreeMap::new();
    let mut strangers = Vec::new();
    for (name, fd) in fds {
        match parse(&name) {
            Some(Slot::Tun { interface, queue }) => {
                out.entry(interface.clone()).or_default().names.push(name);
                queues.entry(interface).or_default().push((queue, fd));
            }
            Some(Slot::Udp { interface }) => {
                let h = out.entry(interface).or_default();
                h.fds.udp = Some(fd);
                h.names.push(name);
            }
            Some(Slot::UdpControl { interface }) => {
                let h = out.entry(interface).or_default();
                h.fds.udp_control = Some(fd);
                h.names.push(name);
            }
            Some(Slot::Sessions { interface }) => {
                let h = out.entry(interface).or_default();
                h.fds.sessions = Some(fd);
                h.names.push(name);
            }
            None => strangers.push(name),
        }
    }
    for (interface, mut q) in queues {
        q.sort_by_key(|(i, _)| *i);
        out.entry(interface).or_default().fds.tun = q.into_iter().map(|(_, fd)| fd).collect();
    }
    (out, strangers)
}

fn handed_over() -> MutexGuard<'static, Option<BTreeMap<String, Handed>>> {
    let mut h = lock(&HANDED_OVER);
    if h.is_none() {
        let mut fds: Vec<(String, OwnedFd)> = match sd_notify::listen_fds_with_names() {
            Ok(fds) => fds.map(|(raw, name)| (name, own(raw))).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "descriptors handed back by systemd unreadable");
                Vec::new()
            }
        };
        if !fds.is_empty() {
            tracing::info!(
                descriptors = fds.len(),
                "systemd handed back the tunnels' descriptors: their interfaces kept their carrier"
            );
        }
        let exec = crate::reexec::handed_over();
        if !exec.is_empty() {
            tracing::info!(
                descriptors = exec.len(),
                "the previous image handed over the tunnels' descriptors (SIGUSR2): their interfaces kept their carrier"
            );
        }
        fds.extend(exec);
        let (grouped, strangers) = group(fds);
        for name in strangers {
            tracing::warn!(name, "a stored descriptor that is not a tunnel's; dropped");
            remove(&name);
        }
        *h = Some(grouped);
    }
    h
}

fn own(raw: RawFd) -> OwnedFd {
    #[allow(unsafe_code)]
    // SAFETY: systemd passed this descriptor to the process (LISTEN_FDS, checked against
    // LISTEN_PID by sd_notify); nothing else in the process knows or closes it.
    unsafe {
        OwnedFd::from_raw_fd(raw)
    }
}

/// What the previous run left for the tunnel on `interface` (empty when nothing). From
/// here this process owns them: they leave systemd's store at once, so that a set that
/// does not fit (or a start that fails) is really closed (a stale queue left attached
/// would take packets nobody reads; a stale socket would hold the port), and `keep`
/// stores what the tunnel runs with.
pub fn take(interface: &str) -> wg::Adopted {
    let handed = handed_over()
        .as_mut()
        .and_then(|m| m.remove(interface))
        .unwrap_or_default();
    forget_names(&handed.names);
    handed.fds
}

/// Drops what no tunnel of `configured` (interface names) can claim (a tunnel removed
/// while the agent was down) and takes it out of the store. A configured tunnel that
/// could not start yet keeps its descriptors for the retry.
pub fn release_unclaimed(configured: &[&str]) {
    let mut gone = Vec::new();
    if let Some(map) = handed_over().as_mut() {
        map.retain(|interface, handed| {
            let keep = configured.contains(&interface.as_str());
            if !keep {
                gone.push((interface.clone(), std::mem::take(handed)));
            }
            keep
        });
    }
    for (interface, handed) in gone {
        tracing::info!(
            interface,
            "descriptors of a tunnel no longer configured: closed"
        );
        forget_names(&handed.names);
    }
}

/// Hands a running tunnel's descriptors to systemd. Nothing is stored under their names
/// then: what was left the store when it was taken (`take`) or its tunnel stopped
/// (`forget`).
pub fn keep(tunnel: &wg::Tunnel) {
    if !managed() {
        return;
    }
    let mut names = Vec::new();
    for (name, fd) in tunnel.descriptors() {
        store(&name, fd);
        names.push(name);
    }
    lock(&STORED).insert(tunnel.interface().to_owned(), names);
}

/// Hands the sessions of tunnels that stopped for a successor (`Tunnels::hand_over`) to
/// systemd; their other descriptors are there already (`keep`).
pub fn keep_sessions(retired: &[(String, OwnedFd)]) {
    if !managed() {
        return;
    }
    for (name, fd) in retired {
        if matches!(parse(name), Some(Slot::Sessions { .. })) {
            store(name, std::os::fd::AsFd::as_fd(fd));
        }
    }
}

/// Puts back what `Tunnels::hand_over` retired when the successor never came (a failed
/// re-exec): the tunnels start again from it as from a previous run's.
pub fn give_back(retired: Vec<(String, OwnedFd)>) {
    let (grouped, strangers) = group(retired);
    debug_assert!(strangers.is_empty(), "{strangers:?}");
    handed_over()
        .get_or_insert_with(BTreeMap::new)
        .extend(grouped);
}

/// Takes a tunnel's descriptors out of the store (it stops, or restarts anew).
pub fn forget(interface: &str) {
    let names = lock(&STORED).remove(interface).unwrap_or_default();
    forget_names(&names);
}

fn forget_names(names: &[String]) {
    if !managed() {
        return;
    }
    for name in names {
        remove(name);
    }
}

fn store(name: &str, fd: BorrowedFd<'_>) {
    let state = [NotifyState::FdStore, NotifyState::FdName(name)];
    if let Err(e) = sd_notify::notify_with_fds(&state, &[fd]) {
        tracing::warn!(name, error = %e, "descriptor not handed to systemd: a restart will drop this tunnel's carrier");
    }
}

fn remove(name: &str) {
    if !managed() {
        return;
    }
    let state = [NotifyState::FdStoreRemove, NotifyState::FdName(name)];
    if let Err(e) = sd_notify::notify(&state) {
        tracing::debug!(name, error = %e, "stored descriptor not removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_their_tunnel_and_queue() {
        assert_eq!(
            parse("tun.gwa-t1.2"),
            Some(Slot::Tun {
                interface: "gwa-t1".into(),
                queue: 2
            })
        );
        assert_eq!(
            parse("tun.wg.backup.0"),
            Some(Slot::Tun {
                interface: "wg.backup".into(),
                queue: 0
            })
        );
        assert_eq!(
            parse("udp.wg.backup"),
            Some(Slot::Udp {
                interface: "wg.backup".into()
            })
        );
        assert_eq!(
            parse("udpc.wg.backup"),
            Some(Slot::UdpControl {
                interface: "wg.backup".into()
            })
        );
        assert_eq!(
            parse("wg.gwa-t1"),
            Some(Slot::Sessions {
                interface: "gwa-t1".into()
            })
        );
        for other in ["udp.", "udpc.", "wg.", "tun.x", "tun.x.y", "stored", ""] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    #[test]
    fn queues_are_put_back_in_their_order() {
        let file = |_| OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let fds = vec![
            ("tun.t1.1".to_owned(), file(1)),
            ("udp.t1".to_owned(), file(2)),
            ("tun.t1.0".to_owned(), file(3)),
            ("other".to_owned(), file(4)),
        ];
        let raw: Vec<RawFd> = fds
            .iter()
            .map(|(_, f)| std::os::fd::AsRawFd::as_raw_fd(f))
            .collect();
        let (grouped, strangers) = group(fds);
        assert_eq!(strangers, ["other"]);
        let t1 = &grouped["t1"];
        let as_raw = std::os::fd::AsRawFd::as_raw_fd;
        let tun: Vec<RawFd> = t1.fds.tun.iter().map(as_raw).collect();
        assert_eq!(tun, [raw[2], raw[0]]);
        assert_eq!(t1.fds.udp.as_ref().map(as_raw), Some(raw[1]));
        assert_eq!(t1.names, ["tun.t1.1", "udp.t1", "tun.t1.0"]);
    }
}
