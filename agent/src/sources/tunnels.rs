//! The agent's WireGuard tunnels (wg crate): one per `[[tunnel]]`, started at once and
//! polled for the health `status` shows. The tunnels run on the wg crate's data-plane
//! runtime; the poller and the start retries are tasks of the control runtime, and what
//! they report is applied to the state in the supervisor's task. A tunnel that cannot start (key unreadable, port
//! taken) is logged and shown with the reason; the others run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use wg::{PublicKey, SecretKey, Tunnel, TunnelConfig, TunnelStats};

use crate::config::{Config, Tunnel as TunnelCfg};
use crate::core::events::EventKind;
use crate::state::{lock, AgentState};
use crate::supervisor::{Input, Inputs};

/// MTU when the config sets none: 1500 less WireGuard over IPv6 (40 + 8 + 32).
pub const DEFAULT_MTU: u16 = 1420;
/// A handshake older than this means the session is gone: WireGuard rejects data on a
/// session after 180 s (REJECT_AFTER_TIME) and rekeys well before while traffic flows.
pub const HANDSHAKE_STALE: Duration = Duration::from_secs(180);

/// What the agent knows of one tunnel.
#[derive(Debug, Clone, Default)]
pub struct TunnelView {
    pub stats: Option<TunnelStats>,
    /// The handshake was fresh at the last poll (see `polled`).
    pub fresh: bool,
    /// Why the tunnel is not running.
    pub error: Option<String>,
}

/// Time since the last completed handshake, if there was one. A handshake stamped after
/// `now` (the wall clock stepped back, or read a moment before the tunnel's) is fresh, not
/// missing.
pub fn handshake_age(stats: &TunnelStats, now: SystemTime) -> Option<Duration> {
    stats
        .last_handshake
        .map(|t| now.duration_since(t).unwrap_or_default())
}

/// The wg crate's config for `t`: allowed IPs cover the site's prefixes and aggregates
/// and the tunnel's own subnets (where the remote end's address and probes live).
pub fn tunnel_config(cfg: &Config, t: &TunnelCfg) -> anyhow::Result<TunnelConfig> {
    let site = cfg
        .sites
        .iter()
        .find(|s| s.name.get_ref() == t.site.get_ref())
        .ok_or_else(|| anyhow::anyhow!("tunnel names an unknown site"))?;
    let mut allowed: Vec<IpNet> = site
        .prefixes
        .iter()
        .map(|p| p.get_ref().0)
        .chain(site.aggregates.iter().map(|a| a.get_ref().prefix.0))
        .chain(t.addresses.iter().map(IpNet::trunc))
        .collect();
    allowed.sort_unstable();
    allowed.dedup();
    let keepalive = t.persistent_keepalive.0.as_secs();
    Ok(TunnelConfig {
        interface: t.interface.get_ref().clone(),
        private_key: SecretKey::load(t.private_key_file.get_ref())?,
        preshared_key: t
            .preshared_key_file
            .as_ref()
            .map(|f| SecretKey::load(f.get_ref()))
            .transpose()?,
        peer_public_key: PublicKey::parse(t.peer_public_key.get_ref())?,
        endpoints: t.endpoints.get_ref().clone(),
        listen_port: t.listen_port,
        uplink: Some(t.uplink.clone()),
        persistent_keepalive: (keepalive > 0).then(|| u16::try_from(keepalive).unwrap_or(u16::MAX)),
        allowed_ips: allowed,
        mtu: t.mtu.as_ref().map_or(DEFAULT_MTU, |m| *m.get_ref()),
        addresses: t.addresses.clone(),
        queues: 2,
    })
}

/// How often a tunnel that could not start is tried again (its uplink may come later).
const RETRY: Duration = Duration::from_secs(5);

/// The running tunnels by name.
type Running = Arc<Mutex<BTreeMap<String, Tunnel>>>;
/// The config in force and the tunnels of it that could not start yet.
type Pending = Arc<Mutex<(Config, BTreeSet<String>)>>;
/// Held by whatever starts, stops or replaces a tunnel (a reload, the hand-over to a
/// successor, the retry, a repair) across its awaits: each finds `running` as the last
/// left it, never a tunnel taken out for a while by another (a reload would start it a
/// second time on the same port and interface).
type Lifecycle = Arc<tokio::sync::Mutex<()>>;

/// The running tunnels; dropping them stops their tasks and leaves the interfaces.
pub struct Tunnels {
    running: Running,
    pending: Pending,
    lifecycle: Lifecycle,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    inputs: Inputs,
}

impl Drop for Tunnels {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts `t`, from the descriptors a previous run left with systemd when they still fit,
/// and hands its own to systemd for the next run.
async fn try_start(cfg: &Config, t: &TunnelCfg) -> anyhow::Result<Tunnel> {
    let tc = tunnel_config(cfg, t)?;
    let adopted = crate::fdstore::take(&tc.interface);
    let tunnel = Tunnel::start_adopting(tc, adopted).await?;
    crate::fdstore::keep(&tunnel);
    Ok(tunnel)
}

/// How a running tunnel becomes `new`: in place when only the allowed IPs differ (a
/// site's prefixes changed; the session and its traffic carry on), else by a restart on
/// the same interface (the routes over it stay).
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    AllowedIps,
    Restart,
}

pub fn change(old: &TunnelConfig, new: &TunnelConfig) -> Option<Change> {
    if old == new {
        return None;
    }
    let same_but_allowed = TunnelConfig {
        allowed_ips: new.allowed_ips.clone(),
        ..old.clone()
    };
    Some(if same_but_allowed == *new {
        Change::AllowedIps
    } else {
        Change::Restart
    })
}

pub async fn start(cfg: &Config, inputs: Inputs) -> Tunnels {
    let running = Running::default();
    let pending: Pending = Arc::new(Mutex::new((cfg.clone(), BTreeSet::new())));
    let lifecycle = Lifecycle::default();
    let tasks = vec![
        tokio::spawn(poll(
            running.clone(),
            pending.clone(),
            lifecycle.clone(),
            inputs.clone(),
        )),
        tokio::spawn(retry(
            pending.clone(),
            running.clone(),
            lifecycle.clone(),
            inputs.clone(),
        )),
    ];
    let mut tunnels = Tunnels {
        running,
        pending,
        lifecycle,
        tasks,
        inputs,
    };
    tunnels.apply(cfg).await;
    let configured: Vec<&str> = cfg
        .tunnels
        .iter()
        .map(|t| t.interface.get_ref().as_str())
        .collect();
    crate::fdstore::release_unclaimed(&configured);
    tunnels
}

/// Starts `t` or, failing that, leaves it to the retry task; the view says which.
async fn launch(
    cfg: &Config,
    t: &TunnelCfg,
    running: &Running,
    pending: &Pending,
    inputs: &Inputs,
) {
    let name = t.name.get_ref().clone();
    match try_start(cfg, t).await {
        Ok(tunnel) => {
            tracing::info!(tunnel = %name, interface = %tunnel.interface(), "tunnel up");
            lock(running).insert(name.clone(), tunnel);
            lock(pending).1.remove(&name);
            inputs.send(Input::TunnelStarted {
                name,
                retried: false,
            });
        }
        Err(e) => {
            let msg = format!(
                "tunnel {name} could not start: {e:#}; retrying every {} s",
                RETRY.as_secs()
            );
            tracing::error!("{msg}");
            lock(pending).1.insert(name.clone());
            inputs.record(EventKind::TunnelError, Some(&name), msg);
            inputs.send(Input::TunnelFailed {
                name,
                error: format!("{e:#}"),
                told: true,
            });
        }
    }
}

impl Tunnels {
    /// Stops every tunnel for a successor (a restart or a re-exec) and returns what it
    /// takes over, named: the TUN queues, the UDP sockets and the WireGuard sessions.
    /// Nothing runs on the tunnels after this; packets wait in the kernel's queues.
    pub async fn hand_over(&mut self) -> Vec<(String, std::os::fd::OwnedFd)> {
        let lifecycle = self.lifecycle.clone();
        let _held = lifecycle.lock().await;
        let running = std::mem::take(&mut *lock(&self.running));
        let mut out = Vec::new();
        for (name, t) in running {
            let iface = t.interface().to_owned();
            match t.retire().await {
                Ok(adopted) => out.extend(adopted.into_named(&iface)),
                Err(e) => {
                    tracing::warn!(tunnel = %name, error = %e, "tunnel not handed over; the next run opens it anew")
                }
            }
        }
        out
    }

    /// Brings the tunnels to what `cfg` asks: new ones start, removed ones stop and their
    /// interface goes, changed ones change in place or restart; the others are not
    /// touched. A tunnel whose new config cannot be built (a key file unreadable) keeps
    /// running as it was. Returns what was done, for the reload's report.
    pub async fn apply(&mut self, cfg: &Config) -> Vec<String> {
        let lifecycle = self.lifecycle.clone();
        let _held = lifecycle.lock().await;
        let mut done = Vec::new();
        let mut want = BTreeMap::new();
        for t in &cfg.tunnels {
            let name = t.name.get_ref().clone();
            match tunnel_config(cfg, t) {
                Ok(tc) => {
                    want.insert(name, (t, Some(tc)));
                }
                Err(e) => {
                    let msg = format!("tunnel {name}: {e:#}");
                    if lock(&self.running).contains_key(&name) {
                        tracing::error!("{msg}; it keeps running as it was");
                        self.inputs
                            .record(EventKind::TunnelError, Some(&name), msg.clone());
                        done.push(msg);
                    }
                    want.insert(name, (t, None));
                }
            }
        }
        {
            let mut p = lock(&self.pending);
            p.0 = cfg.clone();
            p.1.retain(|n| want.contains_key(n));
        }
        let configs: BTreeMap<String, TunnelConfig> = lock(&self.running)
            .iter()
            .map(|(n, t)| (n.clone(), t.config().clone()))
            .collect();
        self.stop_or_change(&configs, &want, &mut done).await;
        // Not running: new, restarted, or never started (an unbuildable one too: `launch`
        // reports why and the retry task keeps trying, its key file may come later).
        for (name, (t, _)) in &want {
            if lock(&self.running).contains_key(name) {
                continue;
            }
            if !configs.contains_key(name) && !lock(&self.pending).1.contains(name) {
                done.push(format!("tunnel {name} added"));
            }
            launch(cfg, t, &self.running, &self.pending, &self.inputs).await;
        }
        self.inputs
            .send(Input::TunnelsKept(want.keys().cloned().collect()));
        done
    }

    /// The running tunnels `want` no longer has stop (their interface goes); changed ones
    /// change in place or stop to start again.
    async fn stop_or_change(
        &mut self,
        configs: &BTreeMap<String, TunnelConfig>,
        want: &BTreeMap<String, (&TunnelCfg, Option<TunnelConfig>)>,
        done: &mut Vec<String>,
    ) {
        for (name, old) in configs {
            let stop = match want.get(name) {
                None => {
                    done.push(format!("tunnel {name} removed"));
                    true
                }
                // Unbuildable: kept as it runs (reported above).
                Some((_, None)) => false,
                Some((_, Some(new))) => match change(old, new) {
                    None => false,
                    Some(Change::AllowedIps) => {
                        if let Some(t) = lock(&self.running).get(name) {
                            t.set_allowed_ips(new.allowed_ips.clone());
                        }
                        done.push(format!("tunnel {name}: allowed IPs updated in place"));
                        false
                    }
                    Some(Change::Restart) => {
                        done.push(format!("tunnel {name} restarted with its new settings"));
                        true
                    }
                },
            };
            if !stop {
                continue;
            }
            let Some(t) = lock(&self.running).remove(name) else {
                continue;
            };
            let iface = t.interface().to_owned();
            crate::fdstore::forget(&iface);
            t.stop().await;
            // A restart starts again on the same interface, which keeps the routes; one
            // that moved to another interface, or left, takes its interface with it.
            let kept = matches!(want.get(name), Some((_, Some(new))) if new.interface == iface);
            if !kept {
                if let Err(e) = wg::tun::remove(&iface) {
                    tracing::warn!(interface = %iface, error = %e, "cannot remove the tunnel interface");
                }
            }
        }
    }
}

/// Tries the tunnels that could not start, every RETRY.
async fn retry(pending: Pending, running: Running, lifecycle: Lifecycle, inputs: Inputs) {
    loop {
        tokio::time::sleep(RETRY).await;
        let _held = lifecycle.lock().await;
        let (cfg, names) = lock(&pending).clone();
        for name in names {
            let Some(t) = cfg.tunnels.iter().find(|t| t.name.get_ref() == &name) else {
                continue;
            };
            match try_start(&cfg, t).await {
                Ok(tunnel) => {
                    // A reload removed it meanwhile: let it go again.
                    let still_wanted = lock(&pending).1.remove(&name);
                    if !still_wanted {
                        crate::fdstore::forget(tunnel.interface());
                        tunnel.stop().await;
                        continue;
                    }
                    tracing::info!("tunnel {name} started on retry");
                    lock(&running).insert(name.clone(), tunnel);
                    inputs.send(Input::TunnelStarted {
                        name: name.clone(),
                        retried: true,
                    });
                }
                Err(e) => inputs.send(Input::TunnelFailed {
                    name: name.clone(),
                    error: format!("{e:#}"),
                    told: false,
                }),
            }
        }
    }
}

/// Counters and handshake times, twice a second, and every 50 ms while a tunnel waits for
/// its handshake: after a restart the first handshake is what lets traffic back onto the
/// tunnels, so it is noticed at once. A tunnel found `broken` is started again (`repair`).
async fn poll(running: Running, pending: Pending, lifecycle: Lifecycle, inputs: Inputs) {
    let mut waiting = true;
    let mut repaired = BTreeMap::new();
    loop {
        tokio::time::sleep(if waiting {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(500)
        })
        .await;
        let broken: Vec<String> = lock(&running)
            .iter()
            .filter(|(_, t)| t.broken().is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for name in broken {
            let _held = lifecycle.lock().await;
            // A reload may have replaced or removed it meanwhile.
            let t = {
                let mut r = lock(&running);
                match r.get(&name).and_then(Tunnel::broken) {
                    Some(_) => r.remove(&name),
                    None => None,
                }
            };
            if let Some(t) = t {
                repair(name, t, &mut repaired, &running, &pending, &inputs).await;
            }
        }
        let now = SystemTime::now();
        let tunnels: Vec<(String, TunnelStats)> = lock(&running)
            .iter()
            .map(|(n, t)| (n.clone(), t.stats()))
            .collect();
        waiting = tunnels.iter().any(|(_, s)| !fresh(s, now));
        inputs.send(Input::TunnelStats(tunnels));
    }
}

/// A tunnel that breaks again this soon after it was started again in place is stopped
/// and left to the retry task, to start anew without its sessions: what it carried over
/// may be what breaks it, and the retry paces the attempts.
const REPAIR_QUIET: Duration = Duration::from_secs(60);

/// Starts again a tunnel one of whose tasks ended (`Tunnel::broken`: a panic, or an error
/// such as its interface deleted under it), which otherwise would keep a direction or a
/// queue dead while the rest of it, its handshakes among them, looked alive. In place,
/// with its descriptors and sessions, so traffic over it need not wait for a handshake.
async fn repair(
    name: String,
    t: Tunnel,
    repaired: &mut BTreeMap<String, Instant>,
    running: &Running,
    pending: &Pending,
    inputs: &Inputs,
) {
    let iface = t.interface().to_owned();
    let again = repaired
        .get(&name)
        .is_some_and(|at| at.elapsed() < REPAIR_QUIET);
    let (why, started) = if again {
        let why = t.stop().await;
        (why, None)
    } else {
        let (why, started) = t.restart().await;
        (why, Some(started))
    };
    let why = why.join("; ");
    // What systemd keeps for the next run must be what runs now: a queue of a deleted
    // interface is replaced, and a stopped tunnel's descriptors must not stay attached.
    crate::fdstore::forget(&iface);
    let msg = match started {
        Some(Ok(tunnel)) => {
            crate::fdstore::keep(&tunnel);
            repaired.insert(name.clone(), Instant::now());
            let sessions = if tunnel.has_session() {
                "its sessions carried over"
            } else {
                "handshaking anew"
            };
            lock(running).insert(name.clone(), tunnel);
            let msg = format!("tunnel {name}: {why}; started again in place, {sessions}");
            tracing::error!("{msg}");
            inputs.record(EventKind::TunnelError, Some(&name), msg);
            return;
        }
        Some(Err(e)) => format!(
            "tunnel {name}: {why}; it could not start again: {e:#}; retrying every {} s",
            RETRY.as_secs()
        ),
        None => format!(
            "tunnel {name}: {why}, again within {} s of its restart; stopped, to start anew without its sessions (retrying every {} s)",
            REPAIR_QUIET.as_secs(),
            RETRY.as_secs()
        ),
    };
    tracing::error!("{msg}");
    lock(pending).1.insert(name.clone());
    inputs.record(EventKind::TunnelError, Some(&name), msg.clone());
    inputs.send(Input::TunnelFailed {
        name,
        error: msg,
        told: true,
    });
}

fn fresh(s: &TunnelStats, now: SystemTime) -> bool {
    handshake_age(s, now).is_some_and(|a| a < HANDSHAKE_STALE)
}

/// A tunnel runs (in the supervisor).
pub(crate) fn started(st: &mut AgentState, name: String, retried: bool) {
    if retried {
        st.record(
            EventKind::TunnelStarted,
            Some(&name),
            format!("tunnel {name} started on retry"),
        );
    }
    st.tunnels.insert(name, TunnelView::default());
    st.touch();
}

/// A tunnel that could not start, or start again (in the supervisor); only a failure
/// that is news changes the view of a tunnel not known yet.
pub(crate) fn failed(st: &mut AgentState, name: String, error: String, told: bool) {
    match st.tunnels.get_mut(&name) {
        Some(v) => v.error = Some(error),
        None if told => {
            st.tunnels.insert(
                name,
                TunnelView {
                    error: Some(error),
                    ..TunnelView::default()
                },
            );
        }
        None => {}
    }
}

/// Applies a poll (in the supervisor): a handshake gained or lost is an event, and a
/// decision follows it.
pub(crate) fn polled(st: &mut AgentState, all: Vec<(String, TunnelStats)>) {
    let now = st.now().wall;
    for (name, stats) in all {
        let is = fresh(&stats, now);
        let Some(v) = st.tunnels.get_mut(&name) else {
            continue;
        };
        // Against the last poll's verdict, not its stats judged now: a handshake that
        // ages past HANDSHAKE_STALE between two polls is a change too.
        let was = std::mem::replace(&mut v.fresh, is);
        v.stats = Some(stats);
        if is == was {
            continue;
        }
        let msg = if is {
            format!("tunnel {name}: handshake with the peer")
        } else {
            format!(
                "tunnel {name}: no handshake for {} s",
                HANDSHAKE_STALE.as_secs()
            )
        };
        tracing::info!("{msg}");
        st.touch();
        st.record(
            if is {
                EventKind::TunnelUp
            } else {
                EventKind::TunnelDown
            },
            Some(&name),
            msg,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{key_dir, parse_in, EXAMPLE};

    /// A key file gone after the config was checked: the tunnel is reported with the
    /// reason and left to the retry task, not silently dropped.
    #[test]
    fn a_tunnel_whose_key_is_unreadable_is_reported_and_retried() {
        let dir = key_dir();
        let cfg = parse_in(dir.path(), EXAMPLE).unwrap();
        std::fs::remove_file(dir.path().join("keys/inet1.key")).unwrap();
        let (inputs, mut rx) = Inputs::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let tunnels = rt.block_on(start(&cfg, inputs));
        let mut st = AgentState::new(
            cfg.clone(),
            std::path::Path::new("gw.toml"),
            crate::state::Now::read(),
        );
        let mut recorded = Vec::new();
        while let Ok(i) = rx.try_recv() {
            match i {
                Input::TunnelFailed { name, error, told } => failed(&mut st, name, error, told),
                Input::Record { kind, .. } => recorded.push(kind),
                _ => {}
            }
        }
        let error = st.tunnels["inet1"].error.clone().unwrap_or_default();
        assert!(error.contains("inet1.key"), "{error}");
        assert!(recorded.contains(&EventKind::TunnelError));
        assert!(lock(&tunnels.pending).1.contains("inet1"));
        assert!(lock(&tunnels.running).is_empty());
    }
}

#[cfg(test)]
mod age_tests {
    use super::*;

    #[test]
    fn a_handshake_stamped_after_now_is_fresh_not_missing() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let stats = |t: Option<SystemTime>| TunnelStats {
            last_handshake: t,
            ..Default::default()
        };
        assert_eq!(handshake_age(&stats(None), now), None);
        let ago = now - Duration::from_secs(7);
        assert_eq!(
            handshake_age(&stats(Some(ago)), now),
            Some(Duration::from_secs(7))
        );
        // The wall clock stepped back after the handshake.
        let ahead = now + Duration::from_millis(3);
        assert_eq!(
            handshake_age(&stats(Some(ahead)), now),
            Some(Duration::ZERO)
        );
        assert!(fresh(&stats(Some(ahead)), now));
    }
}
