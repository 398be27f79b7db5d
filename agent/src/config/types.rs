//! The configuration schema: what a gateway's TOML file may say, with defaults.
//!
//! Fields that a cross-reference error may point at are `Spanned`, so that `validate` can
//! report `FILE:LINE:COLUMN` for them. Everything else gets its location from the TOML
//! deserializer when it fails to parse.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use toml::Spanned;

pub use super::values::{Aggregate, Community, Dur, Prefix};

pub const DEFAULT_SOCKET: &str = "/run/crosslink/control.sock";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: Gateway,
    #[serde(default)]
    pub control: Control,
    #[serde(default)]
    pub metrics: Metrics,
    #[serde(default)]
    pub policy: Policy,
    /// The BFD thread's place on the host (the sessions' timers are per line).
    #[serde(default, rename = "bfd")]
    pub bfd_host: BfdHost,
    #[serde(default, rename = "site")]
    pub sites: Vec<Site>,
    #[serde(default, rename = "line")]
    pub lines: Vec<Line>,
    #[serde(default, rename = "tunnel")]
    pub tunnels: Vec<Tunnel>,
    /// What the file may get wrong though it is valid (see `warnings`); not a key.
    #[serde(skip)]
    pub warnings: Vec<super::ConfigError>,
    /// The text it was parsed from (a record of the agent's inputs holds it).
    #[serde(skip)]
    pub source: String,
    /// `[debug]`: what helps to find out what happened.
    #[serde(default)]
    pub debug: Debug,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Debug {
    /// Record the supervisor's inputs and outputs to this file (JSON lines), for
    /// `crosslink replay`; relative to the config file's directory.
    #[serde(default)]
    pub record: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub name: String,
    pub asn: Spanned<u32>,
    pub router_id: Ipv4Addr,
    /// Local prefixes announced to the line routers.
    #[serde(default)]
    pub announce: Vec<Spanned<Prefix>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Group allowed to open the socket besides root.
    #[serde(default = "default_group")]
    pub group: String,
    /// Where the operator's failovers and drains are kept across restarts.
    #[serde(default = "default_state_file")]
    pub state_file: PathBuf,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            socket: default_socket(),
            group: default_group(),
            state_file: default_state_file(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfdHost {
    #[serde(default)]
    pub cpu: BfdCpu,
}

/// Which CPU the BFD thread keeps to itself: the agent's other threads that enter the
/// kernel for long (route programming) stay off it. `Auto`: the last CPU the agent may
/// use, when it may use two or more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BfdCpu {
    #[default]
    Auto,
    None,
    Cpu(usize),
}

impl<'de> Deserialize<'de> for BfdCpu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(usize),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(BfdCpu::Cpu(n)),
            Raw::Word(w) if w == "auto" => Ok(BfdCpu::Auto),
            Raw::Word(w) if w == "none" => Ok(BfdCpu::None),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "cpu must be \"auto\", \"none\" or a CPU number, not {w:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: default_metrics_listen(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// How long every signal of a line must stay up before traffic returns to it.
    #[serde(default = "secs::<30>")]
    pub hold_down: Dur,
    /// Fraction of probes lost over `loss_window` above which a path counts as degraded.
    #[serde(default = "default_loss_threshold")]
    pub loss_threshold: Spanned<f64>,
    #[serde(default = "secs::<10>")]
    pub loss_window: Dur,
    /// How long a drained line keeps carrying our traffic after the far side was told.
    #[serde(default = "secs::<30>")]
    pub drain_delay: Dur,
    #[serde(default)]
    pub damping: Damping,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            hold_down: secs::<30>(),
            loss_threshold: default_loss_threshold(),
            loss_window: secs::<10>(),
            drain_delay: secs::<30>(),
            damping: Damping::default(),
        }
    }
}

/// RFC 2439 style flap damping; the defaults are the classic router defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Damping {
    #[serde(default = "default_penalty")]
    pub penalty: u32,
    #[serde(default = "secs::<900>")]
    pub half_life: Dur,
    #[serde(default = "default_suppress")]
    pub suppress: Spanned<u32>,
    #[serde(default = "default_reuse")]
    pub reuse: Spanned<u32>,
    #[serde(default = "secs::<3600>")]
    pub max_suppress: Dur,
}

impl Default for Damping {
    fn default() -> Self {
        Damping {
            penalty: default_penalty(),
            half_life: secs::<900>(),
            suppress: default_suppress(),
            reuse: default_reuse(),
            max_suppress: secs::<3600>(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub name: Spanned<String>,
    /// Always routed towards the site, whether or not a line router announces them.
    pub prefixes: Vec<Spanned<Prefix>>,
    /// Bounds for what may be learned over BGP for this site; the prefixes when omitted.
    /// Without `le`, nothing longer than the site's longest configured prefix of the
    /// family is accepted (a more-specific would win over the site's own routes).
    #[serde(default)]
    pub aggregates: Vec<Spanned<Aggregate>>,
}

impl Site {
    /// The longest configured prefix length of the family of `net`, if the site has one.
    pub fn longest_prefix(&self, net: &IpNet) -> Option<u8> {
        self.prefixes
            .iter()
            .map(|p| p.get_ref().0)
            .filter(|p| p.addr().is_ipv4() == net.addr().is_ipv4())
            .map(|p| p.prefix_len())
            .max()
    }

    /// What may be learned over BGP for the site: `(aggregate, longest prefix accepted)`.
    pub fn import_bounds(&self) -> Vec<(IpNet, u8)> {
        let longest = |net: &IpNet| self.longest_prefix(net).unwrap_or(0).max(net.prefix_len());
        if self.aggregates.is_empty() {
            return self
                .prefixes
                .iter()
                .map(|p| (p.get_ref().0, longest(&p.get_ref().0)))
                .collect();
        }
        self.aggregates
            .iter()
            .map(|a| {
                let a = a.get_ref();
                (a.prefix.0, a.le.unwrap_or_else(|| longest(&a.prefix.0)))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub name: Spanned<String>,
    pub site: Spanned<String>,
    pub interface: Spanned<String>,
    /// BGP neighbour addresses of the line router on this line (one session each).
    pub neighbors: Spanned<Vec<IpAddr>>,
    pub peer_asn: Spanned<u32>,
    #[serde(default)]
    pub md5_key_file: Option<Spanned<PathBuf>>,
    /// Lower wins; lines of equal priority share the traffic.
    #[serde(default = "default_priority")]
    pub priority: u32,
    #[serde(default = "secs::<90>")]
    pub hold_time: Dur,
    /// BGP graceful restart (RFC 4724) as a restarting speaker: how long the line router
    /// should keep our routes while the agent restarts. 0 turns it off (receiving only).
    #[serde(default = "secs::<120>")]
    pub restart_time: Dur,
    /// GTSM (RFC 5082) for a directly connected router.
    #[serde(default)]
    pub ttl_security: bool,
    #[serde(default = "default_max_prefixes")]
    pub max_prefixes: u32,
    #[serde(default)]
    pub max_prefix_action: MaxPrefixAction,
    #[serde(default)]
    pub bfd: Bfd,
    /// The remote gateway's address, probed end to end across this line.
    #[serde(default)]
    pub probe_target: Option<IpAddr>,
    #[serde(default)]
    pub export: Export,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaxPrefixAction {
    Warn,
    #[default]
    Teardown,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bfd {
    /// BFD with the line router. Off when the router does not run it (many do not: AWS
    /// Direct Connect only when the customer asks for it): the line is then judged by its
    /// carrier, its BGP sessions (the hold time) and the end-to-end BFD over it to the far
    /// gateway when `probe_target` is set.
    #[serde(default = "default_true")]
    pub enabled: Spanned<bool>,
    #[serde(default = "default_bfd_interval")]
    pub interval: Dur,
    /// The end-to-end sessions' interval over this line, and the site's tunnels' when it
    /// is the site's fastest; default `interval`. Crosslink to crosslink holds shorter
    /// intervals than a line router may (see `[bfd] cpu`).
    #[serde(default)]
    pub end_to_end_interval: Option<Dur>,
    #[serde(default = "default_multiplier")]
    pub multiplier: Spanned<u8>,
    /// RFC 5880 §6.7 authentication of the sessions with the line router.
    #[serde(default)]
    pub auth: Option<BfdAuth>,
}

impl Default for Bfd {
    fn default() -> Self {
        Bfd {
            enabled: default_true(),
            interval: default_bfd_interval(),
            end_to_end_interval: None,
            multiplier: default_multiplier(),
            auth: None,
        }
    }
}

impl Bfd {
    pub fn end_to_end(&self) -> Duration {
        self.end_to_end_interval.unwrap_or(self.interval).0
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfdAuth {
    #[serde(rename = "type")]
    pub kind: BfdAuthType,
    #[serde(default = "default_key_id")]
    pub key_id: u8,
    /// The shared secret (1 to 20 bytes), mode 0600.
    pub key_file: Spanned<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BfdAuthType {
    KeyedSha1,
    MeticulousKeyedSha1,
}

fn default_key_id() -> u8 {
    1
}

/// How our local prefixes are announced on a line, so the far side prefers the primary.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    #[serde(default)]
    pub med: Option<u32>,
    #[serde(default = "unspanned")]
    pub prepend: Spanned<u8>,
    #[serde(default)]
    pub communities: Vec<Community>,
    /// How a drained line is made unattractive to the far side.
    #[serde(default)]
    pub drain: DrainMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrainMode {
    /// Announce with three more AS-path prepends and the GRACEFUL_SHUTDOWN community
    /// (RFC 8326): the far side prefers another line (a crosslink or a router honouring
    /// the community at once, others by path length), and still has this one if every
    /// other fails.
    #[default]
    Prepend,
    /// Withdraw our announcements on the line.
    Withdraw,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tunnel {
    pub name: Spanned<String>,
    pub site: Spanned<String>,
    /// The TUN interface crosslink creates; must be unique on the host.
    pub interface: Spanned<String>,
    /// The local internet uplink the encrypted packets leave by.
    pub uplink: String,
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    pub private_key_file: Spanned<PathBuf>,
    #[serde(default)]
    pub preshared_key_file: Option<Spanned<PathBuf>>,
    pub peer_public_key: Spanned<String>,
    /// Candidates for the remote gateway's address, tried in order.
    pub endpoints: Spanned<Vec<SocketAddr>>,
    /// Share of failover traffic relative to the site's other tunnels.
    #[serde(default = "default_weight")]
    pub weight: Spanned<u16>,
    #[serde(default = "secs::<5>")]
    pub persistent_keepalive: Dur,
    #[serde(default)]
    pub mtu: Option<Spanned<u16>>,
    /// Addresses on the tunnel interface, e.g. a /31 shared with the remote gateway.
    #[serde(default)]
    pub addresses: Vec<IpNet>,
    #[serde(default)]
    pub probe_target: Option<IpAddr>,
}

impl Default for Export {
    fn default() -> Self {
        Export {
            med: None,
            prepend: unspanned(),
            communities: Vec::new(),
            drain: DrainMode::Prepend,
        }
    }
}

/// A default value has no place in the file; errors about it point at the file's start.
fn unspanned<T: Default>() -> Spanned<T> {
    Spanned::new(0..0, T::default())
}
fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
fn default_state_file() -> PathBuf {
    PathBuf::from("/var/lib/crosslink/operator.json")
}
fn default_group() -> String {
    "crosslink".to_owned()
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9474))
}
fn secs<const N: u64>() -> Dur {
    Dur(Duration::from_secs(N))
}
fn default_loss_threshold() -> Spanned<f64> {
    Spanned::new(0..0, 0.05)
}
fn default_penalty() -> u32 {
    1000
}
fn default_suppress() -> Spanned<u32> {
    Spanned::new(0..0, 2000)
}
fn default_reuse() -> Spanned<u32> {
    Spanned::new(0..0, 750)
}
fn default_priority() -> u32 {
    100
}
fn default_max_prefixes() -> u32 {
    1000
}
fn default_bfd_interval() -> Dur {
    Dur(Duration::from_millis(100))
}
fn default_true() -> Spanned<bool> {
    Spanned::new(0..0, true)
}
fn default_multiplier() -> Spanned<u8> {
    Spanned::new(0..0, 3)
}
fn default_listen_port() -> u16 {
    51820
}
fn default_weight() -> Spanned<u16> {
    Spanned::new(0..0, 1)
}
