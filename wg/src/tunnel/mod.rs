//! One WireGuard tunnel: a TUN device, a UDP socket and the protocol's `noise::Peer`,
//! driven by crosslink's own tokio tasks on the data plane's threads (`plane`). Each TUN
//! queue has a task that encrypts towards the network; one task decrypts towards the TUN;
//! one runs WireGuard's timers. The tasks share the `Peer` behind a priority-inheriting
//! mutex (`pi`) held for its bookkeeping only: the cryptography runs outside it
//! (`noise::Sealer`, `noise::Opener`), so the directions, the queues and the real-time path
//! seal and open at the same time on both cores, and several tunnels run in parallel.
//!
//! Dropping a `Tunnel` stops its tasks and leaves the interface in place (persistent), so a
//! restarting agent adopts it and the routes through it never vanish.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use ipnet::IpNet;
use tokio::io::unix::AsyncFd;

use crate::adopt::Adopted;
use crate::key::{PublicKey, SecretKey};
use crate::noise::{self, Peer};
use crate::pi::Mutex;
use crate::udp::Udp;
use crate::{handover, link, steer, tun, uapi};

mod control;
mod lifecycle;
mod plane;
mod receive;
mod send;
pub use control::keep_control_on;
use lifecycle::Task;
use plane::Placement;
pub use plane::DATA_PLANE_NICE;
use receive::udp_to_tun;
use send::tun_to_udp;

/// How long an endpoint candidate gets to complete a handshake before the next is tried:
/// a little over WireGuard's REKEY_TIMEOUT, so the first retransmission had its chance.
const CANDIDATE_TIMEOUT: Duration = Duration::from_secs(6);
/// WireGuard's timers want a call about this often.
const TIMER_TICK: Duration = Duration::from_millis(250);
/// Largest datagram or TUN packet handled, plus WireGuard's overhead.
const BUF: usize = 65_536 + 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    pub interface: String,
    pub private_key: SecretKey,
    pub preshared_key: Option<SecretKey>,
    pub peer_public_key: PublicKey,
    /// Candidates for the peer's address, tried in order until one answers.
    pub endpoints: Vec<SocketAddr>,
    pub listen_port: u16,
    /// The uplink the encrypted packets leave by (SO_BINDTODEVICE).
    pub uplink: Option<String>,
    pub persistent_keepalive: Option<u16>,
    /// What the peer may send from (WireGuard's cryptokey routing).
    pub allowed_ips: Vec<IpNet>,
    pub mtu: u16,
    pub addresses: Vec<IpNet>,
    /// TUN queues for data, each with its own encrypting task. One more queue carries
    /// control packets (BFD) ahead of the data when the kernel lets us steer them there.
    pub queues: usize,
}

/// Health and counters, for status and metrics. Bytes are WireGuard datagram payloads, as
/// `wg show` counts them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TunnelStats {
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Inner packets dropped because their source is outside the allowed IPs.
    pub rx_disallowed: u64,
    /// Packets dropped because they waited too long in the receive queue: the tunnel was
    /// receiving more than this host could decrypt and deliver (see `shed`).
    pub rx_shed: u64,
    /// TUN reads dropped because their virtio-net header made no sense (see `offload`).
    #[serde(default)]
    pub tx_malformed: u64,
    /// Datagrams the real-time path took (marked network control, see `udp_steer`).
    #[serde(default)]
    pub rx_control: u64,
    pub endpoint: Option<SocketAddr>,
}

#[derive(Default)]
struct Counters {
    rx_bytes: AtomicU64,
    tx_bytes: AtomicU64,
    rx_packets: AtomicU64,
    tx_packets: AtomicU64,
    rx_disallowed: AtomicU64,
    rx_shed: AtomicU64,
    tx_malformed: AtomicU64,
    rx_control: AtomicU64,
}

struct Endpoint {
    candidate: usize,
    chosen_at: Instant,
    /// Set when the peer was heard from an address of its own choosing (roaming).
    learned: bool,
}

/// What a tunnel's tasks share. Every lock here is priority-inheriting (`pi`); none is
/// held while another of them is taken (the peer's may take a session's replay window
/// inside it, never the other way). The real-time control thread waits for none that a data
/// thread holds: a holder preempted on a CPU inside a long system call (a route insert
/// resizing a large FIB trie) does not run again until that ends on a kernel that does
/// not preempt, boost or not (seen in the lab: 6.9 and 9.3 ms). It seals and opens on the
/// published sessions when the peer's lock is held (`noise::Published`), and reads the
/// allowed IPs and the endpoint from their published copies.
pub(crate) struct Shared {
    pub(crate) cfg: TunnelConfig,
    /// The allowed IPs in force: they change with the site's prefixes while the tunnel
    /// runs (see `Tunnel::set_allowed_ips`); `cfg`'s are the ones it started with. Read for
    /// every packet received, without a lock.
    allowed_ips: ArcSwap<Vec<IpNet>>,
    peer: Mutex<Peer>,
    /// The peer's sessions for the real-time path (see `noise::Published`).
    published: Arc<noise::Published>,
    udp: Udp,
    endpoint: Mutex<Endpoint>,
    /// Where datagrams to the peer go now, read without a lock; written under
    /// `endpoint`'s, which keeps how it was chosen.
    endpoint_now: ArcSwapOption<SocketAddr>,
    counters: Counters,
    last_handshake: Mutex<Option<SystemTime>>,
    /// The TUN puts a virtio-net header before each packet, both ways (`offload`).
    vnet: bool,
}

impl Shared {
    /// Records the time since the last handshake as a wall-clock time (for the UAPI's
    /// epoch timestamps and the agent's handshake age).
    fn note_handshake(&self, since: Option<Duration>) {
        *self.last_handshake.lock() = since.and_then(|d| SystemTime::now().checked_sub(d));
    }

    pub(crate) fn stats(&self) -> TunnelStats {
        let c = &self.counters;
        let last_handshake = *self.last_handshake.lock();
        let endpoint = self.endpoint();
        TunnelStats {
            last_handshake,
            rx_bytes: c.rx_bytes.load(Ordering::Relaxed),
            tx_bytes: c.tx_bytes.load(Ordering::Relaxed),
            rx_packets: c.rx_packets.load(Ordering::Relaxed),
            tx_packets: c.tx_packets.load(Ordering::Relaxed),
            rx_disallowed: c.rx_disallowed.load(Ordering::Relaxed),
            rx_shed: c.rx_shed.load(Ordering::Relaxed),
            tx_malformed: c.tx_malformed.load(Ordering::Relaxed),
            rx_control: c.rx_control.load(Ordering::Relaxed),
            endpoint,
        }
    }

    fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint_now.load().as_deref().copied()
    }

    async fn send(&self, datagram: &[u8], to: SocketAddr) {
        if self.udp.send(datagram, to).await.is_ok() {
            self.count_tx(datagram.len(), 1);
        }
    }

    fn count_tx(&self, bytes: usize, packets: usize) {
        let c = &self.counters;
        c.tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        c.tx_packets.fetch_add(packets as u64, Ordering::Relaxed);
    }

    fn allowed(&self, src: IpAddr) -> bool {
        self.allowed_ips.load().iter().any(|n| n.contains(&src))
    }

    pub(crate) fn allowed_ips(&self) -> Vec<IpNet> {
        self.allowed_ips.load().to_vec()
    }
}

/// A running tunnel.
pub struct Tunnel {
    shared: Arc<Shared>,
    tasks: Vec<Task>,
    /// The TUN queues in the order they were attached (see `descriptors`).
    queues: Vec<Arc<AsyncFd<OwnedFd>>>,
    /// The UDP control socket (see `udp_steer`), as its task has it: for a successor.
    control_udp: Option<OwnedFd>,
    _socket: uapi::SocketFile,
}

impl Tunnel {
    /// Creates or adopts the interface, configures it, binds the UDP socket, serves the
    /// UAPI socket and starts the handshake at once. The tunnel runs on the data plane's
    /// threads (see `plane`), whichever runtime awaits this.
    pub async fn start(cfg: TunnelConfig) -> io::Result<Tunnel> {
        Tunnel::start_adopting(cfg, Adopted::default()).await
    }

    /// As `start`, from the descriptors a previous run handed over where they still fit
    /// the config (see `adopt`): the interface never loses its carrier.
    pub async fn start_adopting(cfg: TunnelConfig, adopted: Adopted) -> io::Result<Tunnel> {
        crate::pi::supported()?;
        let place = Placement::next()?;
        place
            .receiving()
            .spawn(Tunnel::start_here(cfg, adopted, place.clone()))
            .await
            .map_err(|e| io::Error::other(format!("tunnel start: {e}")))?
    }

    /// Runs on the tunnel's receiving shard: what it registers there (the UDP socket)
    /// is polled there.
    async fn start_here(
        cfg: TunnelConfig,
        mut adopted: Adopted,
        place: Placement,
    ) -> io::Result<Tunnel> {
        let uplink = cfg.uplink.as_deref();
        let udp_error = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!(
                    "UDP port {} on uplink {}: {e}",
                    cfg.listen_port,
                    uplink.unwrap_or("any")
                ),
            )
        };
        let handed_over = match adopted.take_udp() {
            Some(fd) => Udp::adopt(fd, cfg.listen_port, uplink).map_err(udp_error)?,
            None => None,
        };
        // The control socket serves beside the data socket it was bound after (the
        // steering program counts on that order): a stale one is closed before a new data
        // socket joins the group.
        let adopted_control = adopted.take_udp_control().filter(|_| handed_over.is_some());
        // The socket first: a missing uplink or a taken port must not leave a new
        // (persistent) interface behind.
        let udp = match handed_over {
            Some(udp) => udp,
            None => Udp::bind(cfg.listen_port, uplink).map_err(udp_error)?,
        };
        let server = uapi::Server::bind(&cfg.interface)?;
        let data_queues = cfg.queues.max(1);
        let mut fds = match adopted.take_tun(&cfg.interface, data_queues + 1) {
            Some(fds) => fds,
            None => tun::open_with(&cfg.interface, data_queues + 1, true)?,
        };
        // The device's mode, whoever opened it: queues still held by a previous run
        // (through the descriptor store) keep the one it had.
        let vnet = tun::vnet_hdr(&fds[0])?;
        if vnet {
            if let Err(e) = tun::enable_offloads(&fds[0]) {
                tracing::warn!(interface = %cfg.interface, error = %e,
                    "TUN offloads refused: every packet read one at a time");
            }
        }
        let handover = adopted.take_sessions(&cfg.interface);
        let control_udp = control_socket(&udp, adopted_control, &cfg);
        drop(adopted);
        let control = match steer::attach(&fds[0], data_queues as u32) {
            Ok(()) => Some(fds.remove(0)),
            Err(e) => {
                // A program left on the device by an earlier run would otherwise keep
                // steering into a queue no task here treats as the control queue.
                let _ = steer::detach(&fds[0]);
                tracing::warn!(interface = %cfg.interface, error = %e,
                    "control packets share the TUN queues with data (loading the steering program needs CAP_BPF)");
                None
            }
        };
        link::configure(&cfg.interface, cfg.mtu, &cfg.addresses).await?;
        let now = Instant::now();
        let mut peer = Peer::new(
            &noise::Config {
                private_key: cfg.private_key.bytes(),
                peer_public_key: cfg.peer_public_key.0,
                preshared_key: cfg.preshared_key.as_ref().map(SecretKey::bytes),
                persistent_keepalive: cfg.persistent_keepalive,
                mtu: usize::from(cfg.mtu),
            },
            now,
        )
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("tunnel {}: the peer's public key: {e}", cfg.interface),
            )
        })?;
        if let Some(state) = handover {
            match handover::take_up(&mut peer, &state, now) {
                Ok(()) => tracing::info!(interface = %cfg.interface,
                    sessions = peer.has_session(now),
                    "WireGuard sessions taken over from the previous run"),
                Err(e) => tracing::warn!(interface = %cfg.interface, error = %e,
                    "the previous run's WireGuard sessions were not taken over; a new handshake instead"),
            }
        }
        // Sessions taken over come with their handshake's time: a tunnel started again must
        // not look, until its timers first run, as if it never had one.
        let handshake_at = peer
            .time_since_last_handshake(now)
            .and_then(|d| SystemTime::now().checked_sub(d));
        let shared = Arc::new(Shared {
            endpoint_now: ArcSwapOption::from(cfg.endpoints.first().copied().map(Arc::new)),
            endpoint: Mutex::new(Endpoint {
                candidate: 0,
                chosen_at: Instant::now(),
                learned: false,
            }),
            allowed_ips: ArcSwap::from_pointee(cfg.allowed_ips.clone()),
            published: peer.published(),
            cfg,
            peer: Mutex::new(peer),
            udp,
            counters: Counters::default(),
            last_handshake: Mutex::new(handshake_at),
            vnet,
        });
        let mut tasks = Vec::new();
        let mut write_fd = None;
        let mut queues = Vec::new();
        let control_rt = control::runtime()?;
        let control = match control {
            Some(fd) => Some(control::register(fd).await?),
            None => None,
        };
        if let Some(c) = &control {
            queues.push(c.clone());
            let handle = control_rt.spawn(tun_to_udp(shared.clone(), c.clone(), None));
            tasks.push(Task::new("TUN control queue", handle));
        }
        for (i, fd) in fds.into_iter().enumerate() {
            let shard = place.sending(i);
            let fd = plane::on(shard, move || register(fd)).await??;
            queues.push(fd.clone());
            write_fd.get_or_insert_with(|| fd.clone());
            let handle = shard.spawn(tun_to_udp(shared.clone(), fd, control.clone()));
            tasks.push(Task::new(format!("TUN queue {i}"), handle));
        }
        let write_fd = write_fd.ok_or_else(|| io::Error::other("no TUN queue"))?;
        let control_udp_kept = match &control_udp {
            Some(fd) => Some(fd.try_clone()?),
            None => None,
        };
        if let Some(fd) = control_udp {
            let task = control::udp_to_tun(shared.clone(), fd, write_fd.clone());
            tasks.push(Task::new("UDP control socket", control_rt.spawn(task)));
        }
        let receiving = tokio::spawn(udp_to_tun(shared.clone(), write_fd));
        tasks.push(Task::new("UDP receive", receiving));
        tasks.push(Task::new("timers", tokio::spawn(timers(shared.clone()))));
        let socket = server.file();
        let uapi = tokio::spawn(server.serve(shared.clone()));
        tasks.push(Task::new("UAPI socket", uapi));
        Ok(Tunnel {
            shared,
            tasks,
            queues,
            control_udp: control_udp_kept,
            _socket: socket,
        })
    }

    /// The descriptors a successor can start from (`start_adopting`): the TUN queues in
    /// their order, then the UDP socket. Named for systemd's file-descriptor store.
    pub fn descriptors(&self) -> Vec<(String, BorrowedFd<'_>)> {
        let iface = &self.shared.cfg.interface;
        let mut out: Vec<(String, BorrowedFd<'_>)> = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| (crate::adopt::tun_name(iface, i), q.get_ref().as_fd()))
            .collect();
        out.push((crate::adopt::udp_name(iface), self.shared.udp.as_fd()));
        if let Some(fd) = &self.control_udp {
            out.push((crate::adopt::udp_control_name(iface), fd.as_fd()));
        }
        out
    }

    pub fn stats(&self) -> TunnelStats {
        self.shared.stats()
    }

    /// Whether a session can carry data now (one taken over from a previous run counts).
    pub fn has_session(&self) -> bool {
        self.shared.peer.lock().has_session(Instant::now())
    }

    pub fn interface(&self) -> &str {
        &self.shared.cfg.interface
    }

    /// The config the tunnel started with.
    pub fn config(&self) -> &TunnelConfig {
        &self.shared.cfg
    }

    /// Replaces what the peer may send from, without touching the session (a site's
    /// prefixes changed; the handshake and the traffic carry on).
    pub fn set_allowed_ips(&self, allowed: Vec<IpNet>) {
        self.shared.allowed_ips.store(Arc::new(allowed));
    }
}

/// The UDP control socket beside `udp`: the one a previous run handed over if it still
/// fits, else a new one. None when the kernel refuses (control then shares the bulk path).
fn control_socket(udp: &Udp, adopted: Option<OwnedFd>, cfg: &TunnelConfig) -> Option<OwnedFd> {
    let uplink = cfg.uplink.as_deref();
    if let Some(fd) = adopted {
        if let Ok(Some(_)) = crate::udp::adoptable(&fd, cfg.listen_port, uplink) {
            return Some(fd);
        }
    }
    udp.bind_control(cfg.listen_port, uplink)
        .inspect_err(|e| {
            tracing::warn!(interface = %cfg.interface, error = %e,
                "no control socket: BFD datagrams wait with the bulk on the way in")
        })
        .ok()
}

/// Writes one packet to the TUN, behind `header` on a device with virtio-net headers. A
/// full TUN drops it, as a link would (the descriptor is non-blocking).
fn tun_write(fd: &OwnedFd, header: Option<&[u8]>, packet: &[u8]) {
    let _ = match header {
        Some(h) => nix::sys::uio::writev(fd, &[io::IoSlice::new(h), io::IoSlice::new(packet)]),
        None => nix::unistd::write(fd, packet),
    };
}

/// Registers a TUN queue for reading only: its writes never wait (a full TUN drops, see
/// `tun_write`), and a registration for writing would wake a thread of the runtime each
/// time the kernel frees a packet written to it (see `Udp`'s socket).
fn register(fd: OwnedFd) -> io::Result<Arc<AsyncFd<OwnedFd>>> {
    #[allow(unsafe_code)]
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same for
    // the AsyncFd's whole life.
    let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)?;
    Ok(Arc::new(fd))
}

fn note_handshake(shared: &Shared) {
    let since = shared.peer.lock().time_since_last_handshake(Instant::now());
    shared.note_handshake(since);
}

/// The peer was heard, authenticated, from `from`: WireGuard follows it there.
fn roam(shared: &Shared, from: SocketAddr) {
    // Where it was heard from last time, nearly always: nothing to take a lock for.
    if shared.endpoint() == Some(from) {
        return;
    }
    let moved = {
        let mut e = shared.endpoint.lock();
        let moved = shared.endpoint() != Some(from);
        if moved {
            shared.endpoint_now.store(Some(Arc::new(from)));
        }
        e.learned |= moved;
        moved
    };
    // Logged once the lock is free: a write to the journal can block, and the real-time
    // control thread takes this lock for every packet.
    if moved {
        tracing::info!(interface = %shared.cfg.interface, endpoint = %from, "tunnel peer now at a new endpoint");
    }
}

async fn timers(shared: Arc<Shared>) -> io::Result<()> {
    let mut out = vec![0u8; BUF];
    // Start the handshake now, unless sessions were taken over: a restarted agent's
    // tunnel carries traffic again at once.
    let first = {
        let mut peer = shared.peer.lock();
        let now = Instant::now();
        (!peer.has_session(now))
            .then(|| peer.initiate(&mut out, now))
            .flatten()
    };
    if let (Some(len), Some(to)) = (first, shared.endpoint()) {
        shared.send(&out[..len], to).await;
    }
    let mut tick = tokio::time::interval(TIMER_TICK);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let (due, since) = {
            let mut peer = shared.peer.lock();
            (peer.tick(now), peer.time_since_last_handshake(now))
        };
        shared.note_handshake(since);
        if let Some(to) = shared.endpoint() {
            for datagram in due {
                shared.send(&datagram, to).await;
            }
        }
        next_candidate_if_silent(&shared, since);
    }
}

/// Moves to the next endpoint candidate when the current one has not completed a
/// handshake in its time. An endpoint the peer roamed to is kept.
fn next_candidate_if_silent(shared: &Shared, since_handshake: Option<Duration>) {
    let candidates = &shared.cfg.endpoints;
    let next = {
        let mut e = shared.endpoint.lock();
        let age = e.chosen_at.elapsed();
        let answered = since_handshake.is_some_and(|d| d < age);
        if e.learned || answered || candidates.len() < 2 || age < CANDIDATE_TIMEOUT {
            return;
        }
        e.candidate = (e.candidate + 1) % candidates.len();
        shared
            .endpoint_now
            .store(Some(Arc::new(candidates[e.candidate])));
        e.chosen_at = Instant::now();
        candidates[e.candidate]
    };
    // As in `roam`: logged with the lock free.
    tracing::info!(interface = %shared.cfg.interface, endpoint = %next, "no handshake yet; trying the next endpoint");
}
