//! The agent as a systemd service (`Type=notify`): READY once the first reconcile ran (the
//! kernel's routes then match what the agent sees, so a rollout's health gate may start
//! looking), a one-line STATUS for `systemctl status`, and watchdog pings that prove the
//! route programming loop is still turning — a loop stuck on a lock or a hung netlink call
//! stops the pings, and systemd restarts the agent (the routes stay in the kernel).
//!
//! Without `NOTIFY_SOCKET` (run by hand, in the lab) every call here does nothing.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::control::proto::{Health, Status};
use crate::supervisor::Views;

/// How often STATUS is refreshed when no watchdog asks for more.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How long READY waits for the first reconcile before it is sent anyway (route
/// programming may be unable to start; the agent then still serves status).
const READY_WAIT: Duration = Duration::from_secs(30);

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "systemd notification not sent");
    }
}

fn managed() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Whether the route programming loop completed a pass within `fresh`. Before its first
/// pass the start counts instead, so a slow first reconcile is not killed at once.
fn alive(last_pass: Option<Instant>, fresh: Duration, started: Instant, now: Instant) -> bool {
    now.saturating_duration_since(last_pass.unwrap_or(started)) < fresh
}

/// One line for `systemctl status`: where each site's traffic goes.
fn status_line(status: &Status) -> String {
    let sites: Vec<String> = status
        .sites
        .iter()
        .map(|site| {
            let name = &site.name;
            let down = site.paths.iter().filter(|p| p.state != Health::Up).count();
            format!(
                "{name} via {}{}",
                site.active_path.as_deref().unwrap_or("nothing"),
                if down > 0 {
                    format!(" ({down} path(s) not up)")
                } else {
                    String::new()
                }
            )
        })
        .collect();
    sites.join("; ")
}

/// Notifies READY after the first reconcile, then keeps STATUS current and feeds the
/// watchdog while the route programming loop turns. `programming` is false when route
/// programming did not start: the watchdog then only proves the runtime is alive.
pub async fn supervise(views: Views, programming: bool) {
    if !managed() {
        return;
    }
    let started = Instant::now();
    while programming && views.borrow().last_programmed.is_none() && started.elapsed() < READY_WAIT
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = status_line(&views.borrow().status);
    notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
    tracing::info!("told systemd the agent is ready: {line}");
    let watchdog = sd_notify::watchdog_enabled();
    // Pings at half the timeout (as sd_watchdog_enabled(3) advises); the loop must have
    // turned within the other half. It passes at least once a second.
    let tick = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
    let fresh = watchdog.map_or(Duration::MAX, |w| w / 2);
    let mut last_line = line;
    let mut stalled = false;
    loop {
        tokio::time::sleep(tick).await;
        let view = views.borrow().clone();
        let ok = !programming || alive(view.last_pass, fresh, started, Instant::now());
        let line = status_line(&view.status);
        if line != last_line {
            notify(&[NotifyState::Status(&line)]);
            last_line = line;
        }
        if watchdog.is_none() {
            continue;
        }
        if ok {
            notify(&[NotifyState::Watchdog]);
            stalled = false;
        } else if !stalled {
            stalled = true;
            tracing::error!(
                "route programming has not completed a pass for {fresh:?}: no watchdog ping, systemd will restart the agent"
            );
        }
    }
}

/// Before a reload: systemd shows the unit as reloading until `reloaded`.
pub fn reloading() {
    if !managed() {
        return;
    }
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

pub fn reloaded(outcome: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(outcome)]);
}

pub fn stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping; routes stay in the kernel"),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_only_while_the_loop_turns() {
        let t0 = Instant::now();
        let fresh = Duration::from_secs(5);
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Before the first pass the start counts: a slow first reconcile gets `fresh`.
        assert!(alive(None, fresh, t0, at(4)));
        assert!(!alive(None, fresh, t0, at(6)));
        // A loop that passed a second ago is alive; one stuck for longer than `fresh` is not.
        assert!(alive(Some(at(9)), fresh, t0, at(10)));
        assert!(!alive(Some(at(9)), fresh, t0, at(15)));
    }
}
