//! The agent's BGP: one session per line neighbour, built from the config, and the agent's
//! view of each (state, learned routes, counters) as `status` shows it. The sessions run
//! as the `bgp` crate's driver tasks; a forwarder sends their events to the supervisor as
//! inputs, and the functions that apply them to the state run in the supervisor's task
//! (through the engine).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bgp::driver::{self, Event, Handle, Listener, NeighborConfig, Peer, SocketOptions, BGP_PORT};
use bgp::fsm::SessionConfig;
use bgp::rib::{ExportPolicy, ImportBound, ImportPolicy, MaxPrefixAction};
use bgp::wire::Family;
use tokio::sync::mpsc;

use crate::config::{self, Community, Config, DrainMode, Line};
use crate::core::events::EventKind;
use crate::policy::Advertise;
use crate::state::lock;
use crate::supervisor::{Input, Inputs};

mod view;
pub use view::{apply, NeighborState};
pub(crate) use view::{gone, neighbor, polled};

/// AS-path prepends added to a drained line's announcements (on top of its own).
const DRAIN_PREPEND: u8 = 3;

/// One running session and the config it was started with.
struct Running {
    line: String,
    config: NeighborConfig,
    handle: Handle,
    /// Passes this session's events on; ends once the session has ended and its last
    /// event is passed on.
    forwarder: tokio::task::JoinHandle<()>,
}

/// How long a stopped session's last events may take to reach the supervisor.
const LAST_EVENTS_WITHIN: Duration = Duration::from_secs(1);

pub(crate) type Handles = Arc<Mutex<Vec<(IpAddr, Handle)>>>;

/// The running sessions. Dropping this ends them without a NOTIFICATION (see
/// `driver::Handle`).
pub struct Sessions {
    running: BTreeMap<IpAddr, Running>,
    /// The same handles, for the counters' poll.
    handles: Handles,
    /// Whether the sessions started now announce a restart (the agent's first start over
    /// routes a previous run left; not sessions a reload adds later).
    restarted: bool,
    /// Line name -> its export policy as currently announced.
    exports: HashMap<String, ExportPolicy>,
    /// Lines announced as drained.
    drained: HashSet<String>,
    listener: Option<Listener>,
}

fn community_values(cs: &[Community]) -> (Vec<u32>, Vec<[u32; 3]>) {
    let mut std = Vec::new();
    let mut large = Vec::new();
    for c in cs {
        match *c {
            Community::Standard(a, v) => std.push((u32::from(a) << 16) | u32::from(v)),
            Community::Large(a, b, c) => large.push([a, b, c]),
        }
    }
    (std, large)
}

/// The export policy of a line: our announcements with the line's attributes.
pub fn export_policy(cfg: &Config, line: &Line, withdrawn: bool) -> ExportPolicy {
    let (communities, large_communities) = community_values(&line.export.communities);
    ExportPolicy {
        local_asn: *cfg.gateway.asn.get_ref(),
        prefixes: cfg.gateway.announce.iter().map(|p| p.get_ref().0).collect(),
        med: line.export.med,
        prepend: *line.export.prepend.get_ref(),
        communities,
        large_communities,
        withdrawn,
    }
}

fn neighbor_config(
    cfg: &Config,
    line: &Line,
    peer: IpAddr,
    restarted: bool,
) -> anyhow::Result<NeighborConfig> {
    let site = cfg
        .sites
        .iter()
        .find(|s| s.name.get_ref() == line.site.get_ref())
        .context("line names an unknown site")?;
    let md5_key = match &line.md5_key_file {
        Some(f) => {
            let key = std::fs::read_to_string(f.get_ref())
                .with_context(|| format!("reading {}", f.get_ref().display()))?;
            Some(key.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
        }
        None => None,
    };
    let local_asn = *cfg.gateway.asn.get_ref();
    let peer_asn = *line.peer_asn.get_ref();
    let mut session = SessionConfig::new(local_asn, cfg.gateway.router_id, peer_asn);
    session.hold_time = u16::try_from(line.hold_time.0.as_secs()).unwrap_or(u16::MAX);
    session.families = vec![Family::Ipv4, Family::Ipv6];
    let restart = u16::try_from(line.restart_time.0.as_secs()).unwrap_or(0x0fff);
    session.restart_time = (restart > 0).then_some(restart);
    session.restarted = restarted;
    Ok(NeighborConfig {
        peer,
        port: BGP_PORT,
        socket: SocketOptions {
            local: None,
            interface: Some(line.interface.get_ref().clone()),
            md5_key,
            gtsm: line.ttl_security,
        },
        session,
        import: ImportPolicy {
            bounds: site
                .import_bounds()
                .into_iter()
                .map(|(net, max_len)| ImportBound { net, max_len })
                .collect(),
            max_prefixes: line.max_prefixes,
            action: match line.max_prefix_action {
                config::MaxPrefixAction::Warn => MaxPrefixAction::Warn,
                config::MaxPrefixAction::Teardown => MaxPrefixAction::Teardown,
            },
            local_asn,
            peer_asn,
        },
        export: export_policy(cfg, line, false),
    })
}

/// Starts a session per line neighbour and the passive listener, and the tasks that pass
/// their events on to the supervisor.
pub async fn start(cfg: &Config, inputs: Inputs, restarted: bool) -> Sessions {
    let handles = Handles::default();
    tokio::spawn(poll_counters(handles.clone(), inputs.clone()));
    let mut s = Sessions {
        running: BTreeMap::new(),
        handles,
        restarted,
        exports: HashMap::new(),
        drained: HashSet::new(),
        listener: None,
    };
    s.apply(cfg, &inputs).await;
    s.restarted = false;
    s
}

/// The sessions `cfg` asks for, by neighbour: its line and config. A neighbour whose
/// config cannot be built (its TCP-MD5 key file unreadable) is in the second list.
pub(crate) type Wanted = BTreeMap<IpAddr, (String, NeighborConfig)>;

pub(crate) fn wanted(cfg: &Config, restarted: bool) -> (Wanted, Vec<(IpAddr, String)>) {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for line in &cfg.lines {
        let name = line.name.get_ref();
        for &peer in line.neighbors.get_ref() {
            match neighbor_config(cfg, line, peer, restarted) {
                Ok(n) => {
                    out.insert(peer, (name.clone(), n));
                }
                Err(e) => errors.push((peer, format!("BGP with {peer} on {name}: {e:#}"))),
            }
        }
    }
    (out, errors)
}

/// Whether a running session (`old` on `old_line`) already is what `new` asks. The
/// announcements are left out (they change in place, see `sync_exports`), as is the
/// restart flag of the first OPEN.
pub(crate) fn unchanged(
    old_line: &str,
    old: &NeighborConfig,
    line: &str,
    new: &NeighborConfig,
) -> bool {
    let mut new = new.clone();
    new.export = old.export.clone();
    new.session.restarted = old.session.restarted;
    old_line == line && *old == new
}

/// Whether only the import bounds differ (they change in place, see `Handle::set_import`).
pub(crate) fn import_only(
    old_line: &str,
    old: &NeighborConfig,
    line: &str,
    new: &NeighborConfig,
) -> bool {
    let mut new = new.clone();
    new.import = old.import.clone();
    unchanged(old_line, old, line, &new)
}

impl Sessions {
    /// The running sessions' handles, kept current across reloads.
    pub(crate) fn handles(&self) -> Handles {
        self.handles.clone()
    }

    /// Brings the sessions to what `cfg` asks: new neighbours start, removed ones end
    /// with a Cease, changed ones (AS, timers, key, interface, import bounds) restart;
    /// the others are not touched. A neighbour whose new config cannot be built keeps
    /// running as it was. Returns what was done, for the reload's report.
    pub async fn apply(&mut self, cfg: &Config, inputs: &Inputs) -> Vec<String> {
        let (want, errors) = wanted(cfg, self.restarted);
        let mut done = Vec::new();
        for (_, e) in &errors {
            tracing::error!("{e}; a running session keeps its settings");
            inputs.record(EventKind::BgpError, None, e.clone());
            done.push(e.clone());
        }
        let plan = crate::reload::diff(&self.running, &want, |r, (line, n)| {
            unchanged(&r.line, &r.config, line, n)
        });
        let broken = |peer: &IpAddr| errors.iter().any(|(p, _)| p == peer);
        let restart = self.change_imports(&plan.changed, &want, &mut done).await;
        let plan = crate::reload::Diff {
            changed: restart,
            ..plan
        };
        for peer in plan.removed.iter().chain(&plan.changed) {
            if broken(peer) {
                continue;
            }
            let Some(line) = self.end(peer, plan.changed.contains(peer), inputs).await else {
                continue;
            };
            if plan.removed.contains(peer) {
                done.push(format!("BGP with {peer} ({line}) stopped"));
            }
        }
        for peer in plan.added.iter().chain(&plan.changed) {
            let Some((line, ncfg)) = want.get(peer) else {
                continue;
            };
            let mut ncfg = ncfg.clone();
            // Our forwarding state survives a session's restart (the R bit).
            ncfg.session.restarted |= plan.changed.contains(peer);
            self.begin(*peer, line, ncfg, inputs);
            done.push(if plan.added.contains(peer) {
                format!("BGP with {peer} ({line}) started")
            } else {
                format!("BGP with {peer} ({line}) restarted with its new settings")
            });
        }
        self.follow_running();
        if !plan.is_empty() {
            self.listen();
        }
        done
    }

    /// Ends `peer`'s session; returns its line. A session `restarting` with new settings
    /// closes gracefully where it can (below); the supervisor hears it is gone once its
    /// last events are in.
    async fn end(&mut self, peer: &IpAddr, restarting: bool, inputs: &Inputs) -> Option<String> {
        let r = self.running.remove(peer)?;
        if restarting && r.config.session.restart_time.is_some() {
            // Like an agent restart: the connection closes without a NOTIFICATION,
            // so the router keeps our routes as stale while the new session comes up
            // (graceful restart). A config the router refuses then costs the far
            // side nothing until its restart time.
            r.handle.close().await;
        } else {
            r.handle.stop().await;
        }
        // Its last events (Down, the withdrawal of its routes) reach the supervisor
        // before it hears the session is gone: one for the next session of this
        // neighbour must not get them.
        if tokio::time::timeout(LAST_EVENTS_WITHIN, r.forwarder)
            .await
            .is_err()
        {
            tracing::warn!(%peer, "a stopped BGP session's last events did not arrive within {LAST_EVENTS_WITHIN:?}");
        }
        inputs.send(Input::BgpGone(*peer));
        Some(r.line)
    }

    /// Starts `peer`'s session on `line`.
    fn begin(&mut self, peer: IpAddr, line: &str, ncfg: NeighborConfig, inputs: &Inputs) {
        // The neighbour's state goes in before its session runs: a router that was
        // waiting for us (a restart) brings the session up within a millisecond, and
        // an event for a peer not in the state is dropped — a lost Up left the line
        // "waiting for its prefixes" and a lost UPDATE left it announcing nothing.
        // One channel keeps the order: this goes in before the session's events.
        inputs.send(Input::BgpNeighbor {
            line: line.to_owned(),
            peer,
        });
        // A channel of its own: see `Running::forwarder`.
        let (events, rx) = mpsc::channel(1024);
        let forwarder = tokio::spawn(forward(rx, inputs.clone()));
        let handle = driver::spawn(ncfg.clone(), events);
        self.running.insert(
            peer,
            Running {
                line: line.to_owned(),
                config: ncfg,
                handle,
                forwarder,
            },
        );
    }

    /// Import bounds alone (a site's prefixes or aggregates) change in place, with a route
    /// refresh; returns the sessions among `changed` that must restart instead.
    async fn change_imports(
        &mut self,
        changed: &[IpAddr],
        want: &Wanted,
        done: &mut Vec<String>,
    ) -> Vec<IpAddr> {
        let mut restart = Vec::new();
        for peer in changed {
            let (Some(r), Some((line, n))) = (self.running.get_mut(peer), want.get(peer)) else {
                continue;
            };
            if import_only(&r.line, &r.config, line, n)
                && r.handle.set_import(n.import.clone()).await
            {
                r.config.import = n.import.clone();
                done.push(format!(
                    "BGP with {peer} ({line}): import bounds updated, routes refreshed"
                ));
            } else {
                restart.push(*peer);
            }
        }
        restart
    }

    /// The handles and the lines' announcements follow the running sessions.
    fn follow_running(&mut self) {
        *lock(&self.handles) = self
            .running
            .iter()
            .map(|(p, r)| (*p, r.handle.clone()))
            .collect();
        // Each line's announcements as last sent, which `sync_exports` compares against.
        let lines: HashSet<&String> = self.running.values().map(|r| &r.line).collect();
        self.exports.retain(|l, _| lines.contains(l));
        self.drained.retain(|l| lines.contains(l));
        for r in self.running.values() {
            self.exports
                .entry(r.line.clone())
                .or_insert_with(|| r.config.export.clone());
        }
    }

    /// The passive side for the running neighbours. Active connects work without it; a
    /// port held by another daemon costs only the passive side, so it is a warning.
    fn listen(&mut self) {
        let peers: HashMap<IpAddr, Peer> = self
            .running
            .iter()
            .map(|(ip, r)| {
                let peer = Peer {
                    handle: r.handle.clone(),
                    md5_key: r.config.socket.md5_key.clone(),
                    gtsm: r.config.socket.gtsm,
                };
                (*ip, peer)
            })
            .collect();
        if let Some(l) = &self.listener {
            if let Err(e) = l.set_peers(peers) {
                tracing::warn!(error = %e, "cannot update the BGP listener's TCP-MD5 keys; changed neighbours will only connect actively");
            }
            return;
        }
        if peers.is_empty() {
            return;
        }
        let addrs = [
            SocketAddr::from(([0, 0, 0, 0], BGP_PORT)),
            SocketAddr::from(([0u16; 8], BGP_PORT)),
        ];
        match Listener::bind(&addrs, peers) {
            Ok(l) => self.listener = Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen on port 179; BGP sessions will only connect actively")
            }
        }
    }

    /// Brings each line's announcements to what the config and the policy want: the
    /// line's export attributes, made unattractive to the far side while it is drained.
    /// Sessions of lines whose export did not change are not touched. Returns the names of
    /// the lines re-announced.
    pub async fn sync_exports(
        &mut self,
        cfg: &Config,
        advertise: &BTreeMap<String, Advertise>,
        inputs: &Inputs,
    ) -> Vec<String> {
        let mut changed = Vec::new();
        for line in &cfg.lines {
            let name = line.name.get_ref();
            let drained = advertise.get(name) == Some(&Advertise::Unattractive);
            let mut new = export_policy(cfg, line, false);
            if drained {
                match line.export.drain {
                    // RFC 8326: a far side that honours GRACEFUL_SHUTDOWN (crosslink
                    // does) moves at once; one that does not sees the longer path.
                    DrainMode::Prepend => {
                        new.prepend = new.prepend.saturating_add(DRAIN_PREPEND);
                        new.communities.push(bgp::wire::GRACEFUL_SHUTDOWN);
                    }
                    DrainMode::Withdraw => new.withdrawn = true,
                }
            }
            let Some(old) = self.exports.get_mut(name) else {
                continue;
            };
            if *old == new {
                continue;
            }
            *old = new.clone();
            // Logged when the drain turns, not on every reload of a drained line.
            let drain_changed = if drained {
                self.drained.insert(name.clone())
            } else {
                self.drained.remove(name)
            };
            for r in self.running.values().filter(|r| &r.line == name) {
                r.handle.set_export(new.clone()).await;
            }
            if drain_changed {
                let msg = if drained {
                    format!(
                        "announcements on {name} made unattractive to the far side ({:?})",
                        line.export.drain
                    )
                } else {
                    format!("announcements on {name} restored")
                };
                tracing::info!("{msg}");
                inputs.record(EventKind::BgpExport, Some(name), msg);
            }
            changed.push(name.clone());
        }
        changed
    }
}

/// Passes the sessions' events on, in order.
async fn forward(mut rx: mpsc::Receiver<Event>, inputs: Inputs) {
    while let Some(ev) = rx.recv().await {
        inputs.send(Input::Bgp(ev));
    }
}

/// Session state and counters the events do not carry (state while connecting, what we
/// advertise), refreshed every second.
async fn poll_counters(handles: Handles, inputs: Inputs) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let handles = lock(&handles).clone();
        for (_, h) in &handles {
            if let Some(s) = h.status().await {
                inputs.send(Input::BgpPolled(s));
            }
        }
    }
}
