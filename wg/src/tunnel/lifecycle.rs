//! How a tunnel's tasks end: stopped for good, retired for a successor that adopts its
//! descriptors and sessions, or started again in place when one of them ended by itself
//! (a panic, or an error it logged), which would otherwise leave a direction or a queue
//! of the tunnel dead while the rest looks alive.

use std::io;

use tokio::task::JoinHandle;

use super::{Adopted, Tunnel, TunnelConfig};
use crate::handover;

/// One of a tunnel's tasks, named for the log. Each runs for the tunnel's whole life: one
/// that ended (a panic, or an error it logged) leaves the tunnel running in part.
pub(super) struct Task {
    name: String,
    handle: JoinHandle<io::Result<()>>,
}

impl Task {
    pub(super) fn new(name: impl Into<String>, handle: JoinHandle<io::Result<()>>) -> Task {
        Task {
            name: name.into(),
            handle,
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.handle.abort();
        }
    }
}

impl Tunnel {
    /// Stops the tunnel for a successor to take over (`start_adopting`): its tasks stop
    /// first, so nothing is sealed after its sessions are written down, then the TUN
    /// queues, the UDP socket and the sessions come back as a previous run's would.
    pub async fn retire(self) -> io::Result<Adopted> {
        self.retire_telling().await.1
    }

    /// `retire`, with how the tasks that had ended by themselves ended (`stop_tasks`).
    async fn retire_telling(mut self) -> (Vec<String>, io::Result<Adopted>) {
        let why = self.stop_tasks().await;
        (why, self.hand_over_descriptors())
    }

    /// The descriptors and sessions of a tunnel whose tasks have stopped.
    fn hand_over_descriptors(&mut self) -> io::Result<Adopted> {
        let iface = &self.shared.cfg.interface;
        let sessions = handover::write(&self.shared.peer.lock(), iface)
            .inspect_err(|e| {
                tracing::warn!(interface = %iface, error = %e,
                "WireGuard sessions not handed over: the next run handshakes anew")
            })
            .ok();
        let tun = self
            .queues
            .iter()
            .map(|q| q.get_ref().try_clone())
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Adopted {
            tun,
            udp: Some(self.shared.udp.as_fd().try_clone_to_owned()?),
            udp_control: self.control_udp.take(),
            sessions,
        })
    }

    /// Stops the tunnel and waits until its UDP port and UAPI socket are released, so that
    /// a tunnel started right after may take them. The interface stays (see `tun::remove`).
    /// Returns how the tasks that had ended by themselves ended (see `broken`).
    pub async fn stop(mut self) -> Vec<String> {
        self.stop_tasks().await
    }

    /// The first of the tunnel's tasks that ended by itself, by name: the tunnel runs in
    /// part only (a direction, a TUN queue or its timers stopped) and should start again
    /// (`restart`).
    pub fn broken(&self) -> Option<&str> {
        self.tasks
            .iter()
            .find(|t| t.handle.is_finished())
            .map(|t| t.name.as_str())
    }

    /// Starts a `broken` tunnel again as a successor would (`retire`, `start_adopting`):
    /// on its own TUN queues and sockets, so the interface keeps its carrier and routes,
    /// and with its sessions, so traffic need not wait for a handshake. A queue of a
    /// device that is gone (the interface was deleted) is not adopted: the interface is
    /// made again. Returns how the ended tasks ended.
    pub async fn restart(self) -> (Vec<String>, io::Result<Tunnel>) {
        // As it runs now: the allowed IPs may have changed since it started.
        let cfg = TunnelConfig {
            allowed_ips: self.shared.allowed_ips(),
            ..self.shared.cfg.clone()
        };
        let (why, retired) = self.retire_telling().await;
        let started = match retired {
            Ok(adopted) => Tunnel::start_adopting(cfg, adopted).await,
            Err(e) => Err(e),
        };
        (why, started)
    }

    /// Aborts the tasks and waits until each has ended (see `end`).
    async fn stop_tasks(&mut self) -> Vec<String> {
        end(std::mem::take(&mut self.tasks), &self.shared.cfg.interface).await
    }
}

/// Aborts `tasks` and waits until each has ended (an aborted task may still be in its
/// last step until awaited). Returns how those that had ended by themselves ended, one
/// line for the tasks that ended alike ("TUN queue 0, TUN queue 1 ended: ..."), and logs
/// each.
async fn end(tasks: Vec<Task>, interface: &str) -> Vec<String> {
    let ended: Vec<bool> = tasks.iter().map(|t| t.handle.is_finished()).collect();
    for t in &tasks {
        t.handle.abort();
    }
    let mut alike: Vec<(String, Vec<String>)> = Vec::new();
    for (t, ended) in tasks.into_iter().zip(ended) {
        let result = t.handle.await;
        if !ended {
            continue;
        }
        let how = match result {
            Ok(Ok(())) => "ended".to_owned(),
            Ok(Err(e)) => {
                tracing::warn!(interface, task = %t.name, error = %e, "a tunnel task ended");
                format!("ended: {e}")
            }
            Err(e) if e.is_panic() => {
                let msg = panic_message(e.into_panic());
                tracing::error!(interface, task = %t.name, panic = %msg, "a tunnel task panicked");
                format!("panicked: {msg}")
            }
            Err(_) => "was cancelled".to_owned(),
        };
        match alike.iter_mut().find(|(h, _)| *h == how) {
            Some((_, names)) => names.push(t.name),
            None => alike.push((how, vec![t.name])),
        }
    }
    alike
        .into_iter()
        .map(|(how, names)| format!("{} {how}", names.join(", ")))
        .collect()
}

/// What a task's panic said: its payload is a `&str` or a `String` unless it was raised
/// with something else.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast_ref::<&str>()
            .map_or_else(|| "(not a message)".to_owned(), |s| (*s).to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(
        name: &str,
        f: impl std::future::Future<Output = io::Result<()>> + Send + 'static,
    ) -> Task {
        Task::new(name, tokio::spawn(f))
    }

    /// Each way a task can end is told, alike endings on one line; a task still running
    /// when the tunnel stops is not among them.
    #[tokio::test]
    async fn how_the_tasks_ended_is_told() {
        let tasks = vec![
            task("TUN queue 0", async {
                Err(io::Error::other("TUN read: EBADFD"))
            }),
            task("timers", async { panic!("a {} message", "formatted") }),
            task("TUN queue 1", async {
                Err(io::Error::other("TUN read: EBADFD"))
            }),
            task("UAPI socket", async { panic!("a literal") }),
            task("UDP receive", std::future::pending()),
            task("UDP control socket", async { Ok(()) }),
        ];
        // Every task but the pending one has run to its end.
        for _ in 0..100 {
            if tasks.iter().filter(|t| t.handle.is_finished()).count() == 5 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let why = end(tasks, "t1").await;
        assert_eq!(
            why,
            [
                "TUN queue 0, TUN queue 1 ended: TUN read: EBADFD",
                "timers panicked: a formatted message",
                "UAPI socket panicked: a literal",
                "UDP control socket ended",
            ]
        );
    }
}
