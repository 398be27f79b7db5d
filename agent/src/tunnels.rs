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

impl TunnelView {
    pub fn to_status(&self, now: SystemTime) -> TunnelStatus {
        let s = self.stats.as_ref();
        TunnelStatus {
            running: self.error.is_none() && s.is_some(),
            error: self.error.clone(),
            endpoint: s.and_then(|s| s.endpoint).map(|e| e.to_string()),
            handshake_age_seconds: s
                .and_then(|s| s.last_handshake)
                .and_then(|t| now.duration_since(t).ok())
                .map(|d| d.as_secs()),
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

/// The running tunnels; dropping them stops their tasks and leaves the interfaces.
pub struct Tunnels {
    _running: Vec<Arc<Tunnel>>,
}

fn lock(state: &Mutex<AgentState>) -> std::sync::MutexGuard<'_, AgentState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

pub async fn start(cfg: &Config, state: Arc<Mutex<AgentState>>) -> Tunnels {
    let mut running = Vec::new();
    let mut views = BTreeMap::new();
    for t in &cfg.tunnels {
        let name = t.name.get_ref().clone();
        let started = match tunnel_config(cfg, t) {
            Ok(tc) => Tunnel::start(tc).await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        match started {
            Ok(tunnel) => {
                tracing::info!(tunnel = %name, interface = %tunnel.interface(), "tunnel up");
                running.push((name.clone(), Arc::new(tunnel)));
                views.insert(name, TunnelView::default());
            }
            Err(e) => {
                let msg = format!("tunnel {name} could not start: {e:#}");
                tracing::error!("{msg}");
                lock(&state).record("tunnel-error", Some(&name), msg.clone());
                views.insert(
                    name,
                    TunnelView {
                        stats: None,
                        error: Some(format!("{e:#}")),
                    },
                );
            }
        }
    }
    lock(&state).tunnels = views;
    let polled: Vec<(String, Arc<Tunnel>)> = running.clone();
    tokio::spawn(poll(polled, state));
    Tunnels {
        _running: running.into_iter().map(|(_, t)| t).collect(),
    }
}

/// Counters and handshake times, twice a second; a handshake gained or lost is an event.
async fn poll(tunnels: Vec<(String, Arc<Tunnel>)>, state: Arc<Mutex<AgentState>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let now = SystemTime::now();
        let mut st = lock(&state);
        for (name, t) in &tunnels {
            let stats = t.stats();
            let fresh = |s: &TunnelStats| {
                s.last_handshake
                    .and_then(|h| now.duration_since(h).ok())
                    .is_some_and(|age| age < HANDSHAKE_STALE)
            };
            let was = st
                .tunnels
                .get(name)
                .and_then(|v| v.stats.as_ref())
                .is_some_and(fresh);
            let is = fresh(&stats);
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
                st.record(
                    if is { "tunnel-up" } else { "tunnel-down" },
                    Some(name),
                    msg,
                );
            }
        }
    }
}
