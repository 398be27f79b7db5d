//! The agent's BGP: one session per line neighbour, built from the config, and the agent's
//! view of each (state, learned routes, counters) as `status` shows it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bgp::driver::{self, Event, Handle, Listener, NeighborConfig, Peer, SocketOptions, BGP_PORT};
use bgp::fsm::{SessionConfig, State};
use bgp::rib::{ExportPolicy, ImportBound, ImportPolicy, MaxPrefixAction};
use bgp::wire::Family;
use ipnet::IpNet;
use tokio::sync::mpsc;

use crate::config::{self, Community, Config, DrainMode, Line};
use crate::control::proto::BgpStatus;
use crate::core::events::EventKind;
use crate::policy::Advertise;
use crate::state::{lock, AgentState};

/// AS-path prepends added to a drained line's announcements (on top of its own).
const DRAIN_PREPEND: u8 = 3;

/// What the agent knows of one BGP session.
#[derive(Debug, Clone)]
pub struct NeighborState {
    pub line: String,
    pub peer: IpAddr,
    /// False until the session first reported: its state is then unknown, not Idle.
    pub reported: bool,
    pub state: State,
    pub established_at: Option<Instant>,
    /// When routes last came or went: a table still streaming in is not re-learned yet.
    pub last_routes_at: Option<Instant>,
    pub last_error: Option<String>,
    /// The peer announced graceful restart, so it marks the end of its initial table of
    /// each family with End-of-RIB (RFC 4724 §2).
    pub sends_end_of_rib: bool,
    /// Families whose initial table the peer has finished sending, this session.
    pub synced: HashSet<Family>,
    /// While the peer restarts gracefully (RFC 4724), until when its routes are kept.
    pub restarting_until: Option<Instant>,
    pub rejected: u64,
    /// What the import filter refused, by reason.
    pub refused: crate::refused::Refused,
    pub advertised: usize,
    /// Routes learned from this neighbour: prefix -> next hop.
    pub learned: HashMap<IpNet, IpAddr>,
    /// Those of `learned` tagged GRACEFUL_SHUTDOWN (RFC 8326): the far side drains the line.
    pub graceful_shutdown: HashSet<IpNet>,
}

impl NeighborState {
    pub(crate) fn new(line: &str, peer: IpAddr) -> NeighborState {
        NeighborState {
            line: line.to_owned(),
            peer,
            reported: false,
            state: State::Idle,
            established_at: None,
            last_routes_at: None,
            last_error: None,
            sends_end_of_rib: false,
            synced: HashSet::new(),
            restarting_until: None,
            rejected: 0,
            refused: Default::default(),
            advertised: 0,
            learned: HashMap::new(),
            graceful_shutdown: HashSet::new(),
        }
    }

    pub fn state_name(&self) -> &'static str {
        if self.reported {
            self.state.as_str()
        } else {
            "unknown"
        }
    }

    pub fn status(&self) -> BgpStatus {
        BgpStatus {
            neighbor: self.peer.to_string(),
            state: self.state_name().to_owned(),
            established_seconds: self.established_at.map(|t| t.elapsed().as_secs()),
            prefixes_received: self.learned.len(),
            prefixes_rejected: self.rejected,
            rejected_by_reason: self
                .refused
                .by_reason
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            prefixes_advertised: self.advertised,
            last_error: self.last_error.clone(),
        }
    }
}

/// One running session and the config it was started with.
struct Running {
    line: String,
    config: NeighborConfig,
    handle: Handle,
}

pub(crate) type Handles = Arc<Mutex<Vec<(IpAddr, Handle)>>>;

/// The running sessions. Dropping this ends them without a NOTIFICATION (see
/// `driver::Handle`).
pub struct Sessions {
    running: BTreeMap<IpAddr, Running>,
    /// The same handles, for the counters' poll.
    handles: Handles,
    events: mpsc::Sender<Event>,
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

/// Starts a session per line neighbour and the passive listener, and the tasks that fold
/// their events into the agent state.
pub async fn start(
    cfg: &Config,
    state: Arc<Mutex<AgentState>>,
    restarted: bool,
    nudge: mpsc::UnboundedSender<crate::coupling::Nudge>,
) -> Sessions {
    let (tx, rx) = mpsc::channel(1024);
    let handles = Handles::default();
    tokio::spawn(fold_events(rx, state.clone(), nudge));
    tokio::spawn(poll_counters(handles.clone(), state.clone()));
    let mut s = Sessions {
        running: BTreeMap::new(),
        handles,
        events: tx,
        restarted,
        exports: HashMap::new(),
        drained: HashSet::new(),
        listener: None,
    };
    s.apply(cfg, &state).await;
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
    pub async fn apply(&mut self, cfg: &Config, state: &Mutex<AgentState>) -> Vec<String> {
        let (want, errors) = wanted(cfg, self.restarted);
        let mut done = Vec::new();
        for (_, e) in &errors {
            tracing::error!("{e}; a running session keeps its settings");
            lock(state).record(EventKind::BgpError, None, e.clone());
            done.push(e.clone());
        }
        let plan = crate::reload::diff(&self.running, &want, |r, (line, n)| {
            unchanged(&r.line, &r.config, line, n)
        });
        let broken = |peer: &IpAddr| errors.iter().any(|(p, _)| p == peer);
        // Import bounds alone (a site's prefixes or aggregates) change in place, with a
        // route refresh; anything else restarts the session.
        let mut restart = Vec::new();
        for peer in &plan.changed {
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
        let plan = crate::reload::Diff {
            changed: restart,
            ..plan
        };
        for peer in plan.removed.iter().chain(&plan.changed) {
            if broken(peer) {
                continue;
            }
            let Some(r) = self.running.remove(peer) else {
                continue;
            };
            if plan.changed.contains(peer) && r.config.session.restart_time.is_some() {
                // Like an agent restart: the connection closes without a NOTIFICATION,
                // so the router keeps our routes as stale while the new session comes up
                // (graceful restart). A config the router refuses then costs the far
                // side nothing until its restart time.
                r.handle.close().await;
            } else {
                r.handle.stop().await;
            }
            let mut st = lock(state);
            st.bgp.remove(peer);
            // Its learned prefixes leave the sites' prefix sets.
            st.routes_generation += 1;
            st.touch();
            drop(st);
            if plan.removed.contains(peer) {
                done.push(format!("BGP with {peer} ({}) stopped", r.line));
            }
        }
        for peer in plan.added.iter().chain(&plan.changed) {
            let Some((line, ncfg)) = want.get(peer) else {
                continue;
            };
            let mut ncfg = ncfg.clone();
            // Our forwarding state survives a session's restart (the R bit).
            ncfg.session.restarted |= plan.changed.contains(peer);
            // The neighbour's state goes in before its session runs: a router that was
            // waiting for us (a restart) brings the session up within a millisecond, and
            // an event for a peer not in the state is dropped — a lost Up left the line
            // "waiting for its prefixes" and a lost UPDATE left it announcing nothing.
            lock(state)
                .bgp
                .insert(*peer, NeighborState::new(line, *peer));
            let handle = driver::spawn(ncfg.clone(), self.events.clone());
            self.running.insert(
                *peer,
                Running {
                    line: line.clone(),
                    config: ncfg,
                    handle,
                },
            );
            done.push(if plan.added.contains(peer) {
                format!("BGP with {peer} ({line}) started")
            } else {
                format!("BGP with {peer} ({line}) restarted with its new settings")
            });
        }
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
        if !plan.is_empty() {
            self.listen();
        }
        done
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
    pub async fn sync_exports(&mut self, cfg: &Config, state: &Mutex<AgentState>) -> Vec<String> {
        let mut changed = Vec::new();
        for line in &cfg.lines {
            let name = line.name.get_ref();
            let (drained, peers) = {
                let st = lock(state);
                let drained = st.advertise.get(name) == Some(&Advertise::Unattractive);
                let peers: Vec<IpAddr> = st
                    .bgp
                    .values()
                    .filter(|n| &n.line == name)
                    .map(|n| n.peer)
                    .collect();
                (drained, peers)
            };
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
            for (peer, r) in &self.running {
                if peers.contains(peer) {
                    r.handle.set_export(new.clone()).await;
                }
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
                lock(state).record(EventKind::BgpExport, Some(name), msg);
            }
            changed.push(name.clone());
        }
        changed
    }
}

async fn fold_events(
    mut rx: mpsc::Receiver<Event>,
    state: Arc<Mutex<AgentState>>,
    nudge: mpsc::UnboundedSender<crate::coupling::Nudge>,
) {
    while let Some(ev) = rx.recv().await {
        let session = matches!(ev, Event::Up { .. } | Event::Down { .. });
        apply(&mut lock(&state), ev);
        if session {
            // BFD with the router follows (see `coupling`); no task without BFD.
            let _ = nudge.send(crate::coupling::Nudge::Changed);
        }
    }
}

/// Applies one session event to the agent state and the event log.
pub fn apply(st: &mut AgentState, ev: Event) {
    let (peer, record) = match ev {
        Event::Up { peer, negotiated } => {
            let Some(n) = st.bgp.get_mut(&peer) else {
                return;
            };
            n.reported = true;
            n.state = State::Established;
            n.established_at = Some(Instant::now());
            n.sends_end_of_rib = negotiated.graceful_restart.is_some();
            n.synced.clear();
            n.last_error = None;
            n.restarting_until = None;
            let msg = format!(
                "BGP session with {peer} (AS{}) established: hold {} s, families {:?}",
                negotiated.peer_asn, negotiated.hold_time, negotiated.families
            );
            (peer, Some((EventKind::BgpUp, msg)))
        }
        Event::Down {
            peer,
            reason,
            graceful,
        } => {
            let Some(n) = st.bgp.get_mut(&peer) else {
                return;
            };
            n.reported = true;
            n.state = State::Idle;
            n.established_at = None;
            n.synced.clear();
            n.last_error = Some(reason.clone());
            n.restarting_until = graceful.map(|d| Instant::now() + d);
            let reason = match graceful {
                Some(d) => format!(
                    "{reason}; the peer restarts gracefully, its routes are kept for {} s",
                    d.as_secs()
                ),
                None => reason,
            };
            (
                peer,
                Some((
                    EventKind::BgpDown,
                    format!("BGP session with {peer} down: {reason}"),
                )),
            )
        }
        Event::EndOfRib { peer, family } => {
            if let Some(n) = st.bgp.get_mut(&peer) {
                n.synced.insert(family);
                // A table judged withdrawn may be judged now.
                st.touch();
            }
            return;
        }
        Event::Routes { peer, delta } => {
            let Some(n) = st.bgp.get_mut(&peer) else {
                return;
            };
            for p in &delta.withdrawn {
                n.learned.remove(p);
                n.graceful_shutdown.remove(p);
            }
            for (p, _) in &delta.added {
                n.graceful_shutdown.remove(p);
            }
            n.learned.extend(delta.added.iter().copied());
            n.graceful_shutdown
                .extend(delta.graceful_shutdown.iter().copied());
            n.rejected += delta.rejected.len() as u64;
            let refused = n.refused.note(&delta.rejected);
            let line = n.line.clone();
            n.last_routes_at = Some(Instant::now());
            st.routes_generation += 1;
            st.routes_changed_at = n.last_routes_at;
            tell_refused(st, peer, &line, refused);
            (peer, None)
        }
    };
    st.touch();
    if let Some((kind, msg)) = record {
        let line = st.bgp.get(&peer).map(|n| n.line.clone());
        st.record(kind, line.as_deref(), msg);
    }
}

/// Logs each newly refused prefix; the first are events too, and so is each power of ten
/// the count passes (see `refused`).
fn tell_refused(st: &mut AgentState, peer: IpAddr, line: &str, tell: crate::refused::Tell) {
    for (p, why) in &tell.log {
        tracing::warn!(%peer, path = %line, prefix = %p, reason = why.label(), "prefix refused: {why}");
    }
    for (p, why) in tell.events {
        st.record(
            EventKind::PrefixRefused,
            Some(line),
            format!("{p} from {peer} refused ({}): {why}", why.label()),
        );
    }
    if let Some(total) = tell.milestone {
        let by = st
            .bgp
            .get(&peer)
            .map(|n| n.refused.summary())
            .unwrap_or_default();
        st.record(
            EventKind::PrefixRefused,
            Some(line),
            format!("{total} prefixes from {peer} refused so far ({by})"),
        );
    }
}

/// Session state and counters the events do not carry (state while connecting, what we
/// advertise), refreshed every second.
async fn poll_counters(handles: Handles, state: Arc<Mutex<AgentState>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let handles = lock(&handles).clone();
        for (peer, h) in &handles {
            let Some(s) = h.status().await else { continue };
            let mut st = lock(&state);
            if let Some(n) = st.bgp.get_mut(peer) {
                n.reported = true;
                n.state = s.state;
                n.advertised = s.prefixes_advertised;
                n.rejected = s.prefixes_rejected;
                if s.last_error.is_some() {
                    n.last_error = s.last_error;
                }
            }
        }
    }
}
