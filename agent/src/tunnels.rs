//! The agent's WireGuard tunnels (wg crate): one per `[[tunnel]]`, started at once and
//! polled for the health `status` shows. A tunnel that cannot start (key unreadable, port
//! taken) is logged and shown with the reason; the others run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use wg::{PublicKey, SecretKey, Tunnel, TunnelConfig, TunnelStats};

use crate::config::{Config, Tunnel as TunnelCfg};
use crate::control::proto::TunnelStatus;
use crate::state::AgentState;

/// MTU when the config sets none: 1500 less WireGuard over IPv6 (40 + 8 + 32).
pub const DEFAULT_MTU: u16 = 1420;
/// A handshake older than this means the session is gone: WireGuard rejects data on a
/// session after 180 s (REJECT_AFTER_TIME) and rekeys well before while traffic flows.
pub const HANDSHAKE_STALE: Duration = Duration::from_secs(180);

/// What the agent knows of one tunnel.
#[derive(Debug, Clone, Default)]
pub struct TunnelView {
    pub stats: Option<TunnelStats>,
    /// Why the tunnel is not running.
    pub error: Option<String>,
}

/// Time since the last completed handshake, if there was one.
pub fn handshake_age(stats: &TunnelStats, now: SystemTime) -> Option<Duration> {
    stats
        .last_handshake
        .and_then(|t| now.duration_since(t).ok())
}

impl TunnelView {
    pub fn to_status(&self, now: SystemTime) -> TunnelStatus {
        let s = self.stats.as_ref();
        TunnelStatus {
            running: self.error.is_none() && s.is_some(),
            error: self.error.clone(),
            endpoint: s.and_then(|s| s.endpoint).map(|e| e.to_string()),
            handshake_age_seconds: s.and_then(|s| handshake_age(s, now)).map(|d| d.as_secs()),
            rx_bytes: s.map_or(0, |s| s.rx_bytes),
            tx_bytes: s.map_or(0, |s| s.tx_bytes),
            rx_packets: s.map_or(0, |s| s.rx_packets),
            tx_packets: s.map_or(0, |s| s.tx_packets),
        }
    }
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
        .chain(&site.aggregates)
        .map(|p| p.get_ref().0)
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

type Running = Arc<Mutex<Vec<(String, Arc<Tunnel>)>>>;

/// The running tunnels; dropping them stops their tasks and leaves the interfaces.
pub struct Tunnels {
    _running: Running,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Tunnels {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn try_start(cfg: &Config, t: &TunnelCfg) -> anyhow::Result<Tunnel> {
    let tc = tunnel_config(cfg, t)?;
    Ok(Tunnel::start(tc).await?)
}

pub async fn start(cfg: &Config, state: Arc<Mutex<AgentState>>) -> Tunnels {
    let running: Running = Arc::default();
    let mut failed = Vec::new();
    let mut views = BTreeMap::new();
    for t in &cfg.tunnels {
        let name = t.name.get_ref().clone();
        match try_start(cfg, t).await {
            Ok(tunnel) => {
                tracing::info!(tunnel = %name, interface = %tunnel.interface(), "tunnel up");
                lock(&running).push((name.clone(), Arc::new(tunnel)));
                views.insert(name, TunnelView::default());
            }
            Err(e) => {
                let msg = format!(
                    "tunnel {name} could not start: {e:#}; retrying every {} s",
                    RETRY.as_secs()
                );
                tracing::error!("{msg}");
                lock(&state).record("tunnel-error", Some(&name), msg);
                views.insert(
                    name,
                    TunnelView {
                        stats: None,
                        error: Some(format!("{e:#}")),
                    },
                );
                failed.push(t.clone());
            }
        }
    }
    lock(&state).tunnels = views;
    let mut tasks = vec![tokio::spawn(poll(running.clone(), state.clone()))];
    if !failed.is_empty() {
        tasks.push(tokio::spawn(retry(
            cfg.clone(),
            failed,
            running.clone(),
            state,
        )));
    }
    Tunnels {
        _running: running,
        tasks,
    }
}

async fn retry(
    cfg: Config,
    mut failed: Vec<TunnelCfg>,
    running: Running,
    state: Arc<Mutex<AgentState>>,
) {
    while !failed.is_empty() {
        tokio::time::sleep(RETRY).await;
        let mut still = Vec::new();
        for t in failed {
            let name = t.name.get_ref().clone();
            match try_start(&cfg, &t).await {
                Ok(tunnel) => {
                    let msg = format!("tunnel {name} started on retry");
                    tracing::info!("{msg}");
                    let mut st = lock(&state);
                    st.record("tunnel-started", Some(&name), msg);
                    st.tunnels.insert(name.clone(), TunnelView::default());
                    st.touch();
                    lock(&running).push((name, Arc::new(tunnel)));
                }
                Err(e) => {
                    if let Some(v) = lock(&state).tunnels.get_mut(&name) {
                        v.error = Some(format!("{e:#}"));
                    }
                    still.push(t);
                }
            }
        }
        failed = still;
    }
}

/// Counters and handshake times, twice a second, and every 50 ms while a tunnel waits for
/// its handshake: after a restart the first handshake is what lets traffic back onto the
/// tunnels, so it is noticed at once. A handshake gained or lost is an event.
async fn poll(running: Running, state: Arc<Mutex<AgentState>>) {
    let mut waiting = true;
    loop {
        tokio::time::sleep(if waiting {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(500)
        })
        .await;
        waiting = false;
        let now = SystemTime::now();
        let tunnels = lock(&running).clone();
        let mut st = lock(&state);
        for (name, t) in &tunnels {
            let stats = t.stats();
            let fresh =
                |s: &TunnelStats| handshake_age(s, now).is_some_and(|a| a < HANDSHAKE_STALE);
            let was = st
                .tunnels
                .get(name)
                .and_then(|v| v.stats.as_ref())
                .is_some_and(fresh);
            let is = fresh(&stats);
            waiting |= !is;
            if let Some(v) = st.tunnels.get_mut(name) {
                v.stats = Some(stats);
            }
            if is != was {
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
                    if is { "tunnel-up" } else { "tunnel-down" },
                    Some(name),
                    msg,
                );
            }
        }
    }
}
