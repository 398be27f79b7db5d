//! The crosslink lab: two clouds in network namespaces (see `topology` for the picture and
//! the addressing plan), with BIRD 2 as the dedicated-line routers and either crosslink or a
//! BIRD baseline on the gateways. Integration tests, benchmarks and the demo all build it here.
//!
//! One lab runs per machine at a time (a lock file serialises them). Everything the lab
//! creates is removed when the `Lab` is dropped, also while a test panics; a lab left behind
//! by a killed run is removed by the next `Lab::up`, and its daemons die with their parent.

pub mod bird;
pub mod container;
pub mod demo;
pub mod fault;
pub mod frr;
pub mod netns;
pub mod paths;
pub mod process;
pub mod timeline;
pub mod topology;
pub mod traffic;
pub mod wggo;

mod setup;

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};

pub use bird::BfdTimers;
pub use fault::Cut;
use process::Proc;
pub use topology::{Line, Node, Side, Tunnel, Uplink};
pub use traffic::{ProbeReport, TrafficProbe};

const LOCK_FILE: &str = "/run/crosslink-lab.lock";
/// How long `Lab::up` waits for another lab on this machine to finish.
const LOCK_WAIT: Duration = Duration::from_secs(30 * 60);

/// What runs on the gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayMode {
    /// The agent under test.
    Crosslink,
    /// The baseline an engineer would build instead: BIRD 2 with BGP and BFD to both lines.
    Bird,
}

/// What runs on the line routers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineRouter {
    #[default]
    Bird,
    /// FRR's zebra, bgpd and bfdd (see `frr`).
    Frr,
}

/// Rewrites a generated config before it is written: `(node, text) -> text`.
pub type ConfigHook = Arc<dyn Fn(Node, String) -> String + Send + Sync>;

#[derive(Clone)]
pub struct LabOptions {
    pub mode: GatewayMode,
    pub bfd: BfdTimers,
    /// The `crosslink` binary; found next to the running executable when not given.
    pub crosslink_bin: Option<PathBuf>,
    /// Applied to every BIRD config (line routers and baseline gateways).
    pub bird_hook: Option<ConfigHook>,
    /// Applied to the crosslink configs of the gateways.
    pub crosslink_hook: Option<ConfigHook>,
    /// The line routers' BGP sessions with this side's gateway do not follow BFD (BFD with
    /// it still runs, on its own). As when each cloud has its own line router: a silent
    /// failure at that gateway's end of a line then reaches the other gateway only through
    /// end-to-end BFD, or else the BGP hold time.
    pub line_bgp_ignores_bfd: Option<Side>,
    pub line_router: LineRouter,
}

impl LabOptions {
    pub fn new(mode: GatewayMode) -> LabOptions {
        LabOptions {
            mode,
            bfd: BfdTimers::default(),
            crosslink_bin: None,
            bird_hook: None,
            crosslink_hook: None,
            line_bgp_ignores_bfd: None,
            line_router: LineRouter::Bird,
        }
    }

    pub fn bird_hook(
        mut self,
        f: impl Fn(Node, String) -> String + Send + Sync + 'static,
    ) -> LabOptions {
        self.bird_hook = Some(Arc::new(f));
        self
    }

    pub fn crosslink_hook(
        mut self,
        f: impl Fn(Node, String) -> String + Send + Sync + 'static,
    ) -> LabOptions {
        self.crosslink_hook = Some(Arc::new(f));
        self
    }
}

pub struct Lab {
    opts: LabOptions,
    dir: PathBuf,
    procs: Vec<Proc>,
    namespaces: Vec<String>,
    // Dropped last: the next lab may start only once this one is gone.
    _lock: Flock<File>,
}

impl Lab {
    /// Builds the whole topology and starts its daemons. Returns once the namespaces,
    /// links and daemons exist; use `wait_for` helpers for sessions to come up.
    pub fn up(opts: LabOptions) -> Result<Lab> {
        preflight()?;
        let lock = acquire_lock()?;
        remove_stale()?;
        // One directory per lab of this process: a kept one (CROSSLINK_LAB_KEEP) is not
        // overwritten by the next.
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("crosslink-lab-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut lab = Lab {
            opts,
            dir,
            procs: Vec::new(),
            namespaces: Vec::new(),
            _lock: lock,
        };
        if lab.opts.mode == GatewayMode::Crosslink {
            warn_if_stale(&lab.crosslink_bin()?);
        }
        // On error the partly built lab is dropped here, which tears it down.
        setup::topology(&mut lab)?;
        setup::daemons(&mut lab)?;
        Ok(lab)
    }

    pub fn mode(&self) -> GatewayMode {
        self.opts.mode
    }

    pub fn bfd(&self) -> BfdTimers {
        self.opts.bfd
    }

    /// Where configs, sockets and logs of this lab live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs a command in `node`'s namespace and returns its stdout.
    pub fn exec(&self, node: Node, args: &[&str]) -> Result<String> {
        netns::exec(&node.ns(), args)
    }

    pub fn bird_socket(&self, node: Node) -> PathBuf {
        self.dir.join(format!("{node}.bird.ctl"))
    }

    pub fn birdc(&self, node: Node, cmd: &str) -> Result<String> {
        bird::birdc(node, &self.bird_socket(node), cmd)
    }

    /// `(name, state, info)` of each BIRD protocol on `node`.
    pub fn bird_protocols(&self, node: Node) -> Result<Vec<(String, String, String)>> {
        Ok(bird::protocols(&self.birdc(node, "show protocols")?))
    }

    /// The route `node` uses towards `dest`, as `ip route get` prints it.
    pub fn route_get(&self, node: Node, dest: IpAddr) -> Result<String> {
        self.exec(node, &["ip", "route", "get", &dest.to_string()])
    }

    /// The line `node` routes `dest` over right now, if any.
    pub fn line_towards(&self, node: Node, dest: IpAddr) -> Result<Option<Line>> {
        let route = self.route_get(node, dest)?;
        Ok(Line::ALL
            .into_iter()
            .find(|l| route.contains(&format!("dev {} ", l.ifname()))))
    }

    /// Whether both gateways send the other side's host traffic over `line`.
    pub fn both_on(&self, line: Line) -> Result<bool> {
        Ok(
            self.line_towards(Node::Gwa, Side::B.host_addr(false))? == Some(line)
                && self.line_towards(Node::Gwb, Side::A.host_addr(false))? == Some(line),
        )
    }

    /// The devices a route of `node` forwards over (`prefix` as `ip route show` takes
    /// it). A route using a nexthop group (crosslink's) is resolved through the group:
    /// with `nexthop_compat_mode=0` the route dump shows only its `nhid`.
    pub fn route_devices(&self, node: Node, prefix: &str) -> Result<Vec<String>> {
        let route = self.exec(node, &["ip", "route", "show", prefix])?;
        let word_after = |text: &str, key: &str| -> Vec<String> {
            let words: Vec<&str> = text.split_whitespace().collect();
            words
                .windows(2)
                .filter(|w| w[0] == key)
                .map(|w| w[1].to_owned())
                .collect()
        };
        let Some(nhid) = word_after(&route, "nhid").into_iter().next() else {
            return Ok(word_after(&route, "dev"));
        };
        let group = self.exec(node, &["ip", "nexthop", "show", "id", &nhid])?;
        let members: Vec<String> = match word_after(&group, "group").into_iter().next() {
            // "A,weight/B": member ids with optional weights.
            Some(g) => g
                .split('/')
                .filter_map(|m| m.split(',').next())
                .map(str::to_owned)
                .collect(),
            None => vec![nhid],
        };
        let mut devs = Vec::new();
        for id in members {
            let nh = self.exec(node, &["ip", "nexthop", "show", "id", &id])?;
            devs.extend(word_after(&nh, "dev"));
        }
        Ok(devs)
    }

    /// Packets received so far on `iface` of `node` (kernel counters, all protocols).
    pub fn rx_packets(&self, node: Node, iface: &str) -> Result<u64> {
        let path = format!("/sys/class/net/{iface}/statistics/rx_packets");
        Ok(self.exec(node, &["cat", &path])?.trim().parse()?)
    }

    /// Runs the crosslink CLI in a gateway's namespace against that gateway's agent.
    pub fn crosslink(&self, gateway: Node, args: &[&str]) -> Result<String> {
        let bin = self.crosslink_bin()?;
        let cfg = self.crosslink_config(gateway);
        let mut full = vec![
            bin.to_str().unwrap_or_default(),
            "--config",
            cfg.to_str().unwrap_or_default(),
        ];
        full.extend_from_slice(args);
        self.exec(gateway, &full)
    }

    /// iperf3 TCP from ha to hb (a server must run on hb, see `spawn`) with the extra
    /// `args`; iperf3's JSON report.
    pub fn iperf3(&self, args: &[&str]) -> Result<serde_json::Value> {
        let to = Side::B.host_addr(false).to_string();
        let mut full = vec!["iperf3", "-c", &to, "-J"];
        full.extend_from_slice(args);
        Ok(serde_json::from_str(&self.exec(Node::Ha, &full)?)?)
    }

    /// `crosslink status --json` of a gateway's agent.
    pub fn status(&self, gateway: Node) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(
            &self.crosslink(gateway, &["status", "--json"])?,
        )?)
    }

    /// What carries the (one) site's traffic on a gateway, as its status says; empty when
    /// the agent does not answer or has not decided.
    pub fn active_path(&self, gateway: Node) -> String {
        self.status(gateway)
            .ok()
            .and_then(|s| s["sites"][0]["active_path"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Waits until `gateway`'s active path is `want`; returns how long that took. A test
    /// helper: past `timeout` it panics with the gateway's status, events and the daemons'
    /// logs, what one needs to see why.
    pub fn wait_active(&self, gateway: Node, want: &str, timeout: Duration) -> Duration {
        self.wait_for(&format!("{gateway} active path {want}"), timeout, || {
            Ok(self.active_path(gateway) == want)
        })
        .unwrap_or_else(|e| {
            let status = self.crosslink(gateway, &["status"]).unwrap_or_default();
            let events = self.crosslink(gateway, &["events"]).unwrap_or_default();
            panic!("{e:#}\n{status}\n{events}\n{}", self.log_tails(30))
        })
    }

    /// A scrape of a gateway's metrics endpoint, from inside its namespace.
    pub fn metrics(&self, gateway: Node) -> Result<String> {
        let get = "exec 3<>/dev/tcp/127.0.0.1/9474 && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 5 cat <&3";
        self.exec(gateway, &["bash", "-c", get])
    }

    pub fn crosslink_config(&self, gateway: Node) -> PathBuf {
        self.dir.join(format!("{gateway}.crosslink.toml"))
    }

    pub fn crosslink_bin(&self) -> Result<PathBuf> {
        if let Some(b) = &self.opts.crosslink_bin {
            return Ok(b.clone());
        }
        if let Some(b) = std::env::var_os("CROSSLINK_BIN") {
            return Ok(PathBuf::from(b));
        }
        // Test binaries live in target/<profile>/deps, the lab binary in target/<profile>.
        let exe = std::env::current_exe()?;
        for dir in exe.ancestors().skip(1).take(2) {
            let cand = dir.join("crosslink");
            if cand.is_file() {
                return Ok(cand);
            }
        }
        bail!("crosslink binary not found next to {}; build it (cargo build -p crosslink) or set CROSSLINK_BIN", exe.display())
    }

    /// Injects a fault on `line` at `side`'s gateway.
    pub fn cut(&self, side: Side, line: Line, how: Cut) -> Result<()> {
        fault::apply(&side.gateway().ns(), &line.ifname(), how)
    }

    /// Removes every fault from `line` at `side`'s gateway.
    pub fn heal(&self, side: Side, line: Line) -> Result<()> {
        fault::heal(&side.gateway().ns(), &line.ifname())?;
        setup::far_end_routes(side, line)
    }

    /// Marks the probe's packets with the path that carried them (see `paths`).
    pub fn mark_paths(&self) -> Result<()> {
        paths::mark()
    }

    /// Starts the traffic probe from `from`'s host to the other side's host.
    pub fn probe(&self, from: Side, v6: bool, rate: u32) -> Result<TrafficProbe> {
        let to = from.other();
        TrafficProbe::start(&from.host().ns(), &to.host().ns(), to.host_addr(v6), rate)
    }

    /// Polls `check` every 50 ms until it returns true, failing after `timeout` with the
    /// last error or state seen.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<bool>,
    ) -> Result<Duration> {
        let start = Instant::now();
        let mut last = String::from("never checked");
        while start.elapsed() < timeout {
            match check() {
                Ok(true) => return Ok(start.elapsed()),
                Ok(false) => last = "condition false".into(),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("timed out after {timeout:?} waiting for {what} ({last})")
    }

    /// Waits until every BGP and BFD protocol of the BIRDs in the lab is up.
    pub fn wait_bird_established(&self, timeout: Duration) -> Result<Duration> {
        let nodes: Vec<Node> = self.bird_nodes();
        self.wait_for("all BIRD protocols up", timeout, || {
            for &n in &nodes {
                let protos = self.bird_protocols(n)?;
                if let Some((name, state, info)) = protos.iter().find(|(_, state, _)| state != "up")
                {
                    bail!("{n}: {name} is {state} {info}");
                }
            }
            Ok(true)
        })
    }

    fn bird_nodes(&self) -> Vec<Node> {
        let mut nodes = Vec::new();
        if self.opts.line_router == LineRouter::Bird {
            nodes.extend([Node::Lr1, Node::Lr2]);
        }
        if self.opts.mode == GatewayMode::Bird {
            nodes.extend([Node::Gwa, Node::Gwb]);
        }
        nodes
    }

    pub fn line_router(&self) -> LineRouter {
        self.opts.line_router
    }

    /// `vtysh -c cmd` against an FRR line router.
    pub fn vtysh(&self, node: Node, cmd: &str) -> Result<String> {
        frr::vtysh(node, cmd)
    }

    /// The last lines of every daemon's log, for post-mortems.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for p in &self.procs {
            let text = std::fs::read_to_string(p.log()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("--- {} ({})\n", p.name(), p.log().display()));
            for l in tail.iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Kills `node`'s BIRD (SIGKILL, as a crash) and starts it again with the same config.
    pub fn restart_bird(&mut self, node: Node) -> Result<()> {
        let name = format!("bird-{node}");
        self.procs.retain(|p| p.name() != name);
        let _ = std::fs::remove_file(self.bird_socket(node));
        setup::start_bird_again(self, node)
    }

    /// The supervised processes of `line`'s router: BIRD, or FRR's zebra, bfdd and bgpd.
    fn line_router_procs(&self, line: Line) -> Vec<String> {
        let node = line.router();
        match self.opts.line_router {
            LineRouter::Bird => vec![format!("bird-{node}")],
            LineRouter::Frr => frr::DAEMONS.iter().map(|d| format!("{d}-{node}")).collect(),
        }
    }

    /// Kills every daemon of `line`'s router (SIGKILL: a crash or a power cut); they stay
    /// down until `restart_line_router`.
    pub fn kill_line_router(&mut self, line: Line) -> Result<()> {
        let names = self.line_router_procs(line);
        for p in self
            .procs
            .iter()
            .filter(|p| names.iter().any(|n| n == p.name()))
        {
            p.signal(nix::sys::signal::Signal::SIGKILL)?;
        }
        Ok(())
    }

    /// Kills every daemon of `line`'s router (SIGKILL: a crash or a power cut) and starts
    /// them again with the same config: BIRD, or FRR's zebra, bfdd and bgpd.
    pub fn restart_line_router(&mut self, line: Line) -> Result<()> {
        let node = line.router();
        match self.opts.line_router {
            LineRouter::Bird => self.restart_bird(node),
            LineRouter::Frr => {
                self.kill_line_router(line)?;
                let names = self.line_router_procs(line);
                // Dropping a process reaps it.
                self.procs.retain(|p| !names.iter().any(|n| n == p.name()));
                // A killed daemon leaves its sockets and pid files; the new ones refuse them.
                let run = frr::run_dir(node);
                for entry in std::fs::read_dir(&run)?.flatten() {
                    let _ = std::fs::remove_file(entry.path());
                }
                setup::start_frr_again(self, line)
            }
        }
    }

    /// Sends `sig` to the crosslink agent on `gateway`.
    pub fn signal_crosslink(&mut self, gateway: Node, sig: nix::sys::signal::Signal) -> Result<()> {
        self.process(&format!("crosslink-{gateway}"))
            .context("no crosslink on that gateway")?
            .signal(sig)
    }

    /// Stops `gateway`'s agent with `sig` (SIGTERM: a restart or upgrade; SIGKILL: a
    /// crash) and starts it again with the same config; returns when its control socket is
    /// back.
    pub fn restart_crosslink(
        &mut self,
        gateway: Node,
        sig: nix::sys::signal::Signal,
    ) -> Result<()> {
        let side = self.stop_crosslink(gateway, sig)?;
        setup::launch_crosslink(self, side)
    }

    /// Stops `gateway`'s agent with `sig` for good (another agent takes the gateway over,
    /// e.g. one under systemd in a container); what it left in the kernel stays.
    pub fn stop_crosslink(&mut self, gateway: Node, sig: nix::sys::signal::Signal) -> Result<Side> {
        let side = match gateway {
            Node::Gwa => Side::A,
            Node::Gwb => Side::B,
            other => anyhow::bail!("{other} runs no agent"),
        };
        let name = format!("crosslink-{gateway}");
        let proc = self
            .process(&name)
            .context("no crosslink on that gateway")?;
        proc.signal(sig)?;
        // Bounded: a process that ignores the signal is killed by stop().
        proc.stop(Duration::from_secs(5));
        self.procs.retain(|p| p.name() != name);
        // After a crash the socket file is left behind.
        let _ = std::fs::remove_file(self.dir.join(format!("{gateway}.crosslink.sock")));
        Ok(side)
    }

    /// Rewrites the crosslink config of `gateway` (then signal SIGHUP to apply it).
    pub fn rewrite_crosslink_config(
        &self,
        gateway: Node,
        f: impl FnOnce(String) -> String,
    ) -> Result<()> {
        let path = self.crosslink_config(gateway);
        let text = std::fs::read_to_string(&path)?;
        std::fs::write(&path, f(text))?;
        Ok(())
    }

    /// Starts a daemon of the test's own (e.g. `wireguard-go -f`) in `node`, supervised like
    /// the lab's: output in `<dir>/<name>.log`, stopped when the lab goes.
    pub fn spawn(&mut self, name: &str, node: Node, args: &[&str]) -> Result<()> {
        let log = self.dir.join(format!("{name}.log"));
        let p = Proc::spawn(name, &node.ns(), args, &log)?;
        self.procs.push(p);
        Ok(())
    }

    /// The supervised daemon called `name` (e.g. `bird-lr1`, `crosslink-gwa`).
    pub fn process(&mut self, name: &str) -> Option<&mut Proc> {
        self.procs.iter_mut().find(|p| p.name() == name)
    }
}

/// For each test function `name(router: LineRouter)`, a module `name` with the tests
/// `bird` and `frr`: the same test against each kind of line router (`name::bird`).
#[macro_export]
macro_rules! against_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn bird() {
                super::$name($crate::LineRouter::Bird)
            }
            #[test]
            fn frr() {
                super::$name($crate::LineRouter::Frr)
            }
        }
    )*};
}

/// A WireGuard private key in `path` (made with `wg genkey`, mode 0600, when the file does
/// not exist yet) and its public key (`wg pubkey`), both base64.
pub fn wg_keypair(path: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};
    if !path.exists() {
        let out = Command::new("wg")
            .arg("genkey")
            .output()
            .context("wg genkey (wireguard-tools)")?;
        anyhow::ensure!(out.status.success(), "wg genkey failed");
        std::fs::write(path, &out.stdout)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    let key = std::fs::read(path)?;
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("wg pubkey")?;
    std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, &key)?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "wg pubkey failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Drop for Lab {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!(
                "lab torn down during a panic; daemon logs:\n{}",
                self.log_tails(30)
            );
        }
        self.procs.clear();
        for ns in self.namespaces.drain(..).rev() {
            netns::destroy(&ns);
        }
        // CROSSLINK_LAB_KEEP=1 keeps them after any run (the daemons' logs, for tracing).
        if panicking || std::env::var_os("CROSSLINK_LAB_KEEP").is_some() {
            eprintln!("lab files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn preflight() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab needs root (it creates network namespaces); run the tests as root, e.g. sudo -E cargo test");
    }
    for tool in ["ip", "nft", "bird", "birdc", "sysctl"] {
        if netns::run("sh", &["-c", &format!("command -v {tool}")]).is_err() {
            bail!("`{tool}` is missing: install the lab's packages (see .ci/run: iproute2 nftables bird2 procps)");
        }
    }
    Ok(())
}

fn acquire_lock() -> Result<Flock<File>> {
    let start = Instant::now();
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .with_context(|| format!("opening {LOCK_FILE}"))?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if start.elapsed() < LOCK_WAIT => {
                file = f;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err((_, e)) => bail!(
                "cannot lock {LOCK_FILE} ({e}): another lab has been running for {LOCK_WAIT:?}"
            ),
        }
    }
}

/// Holding the lock, any lab namespace still present belongs to a run that died.
fn remove_stale() -> Result<()> {
    for ns in netns::list()? {
        if ns.starts_with(topology::NS_PREFIX) {
            eprintln!("removing stale lab namespace {ns}");
            netns::destroy(&ns);
        }
    }
    Ok(())
}

/// Says so (once per process) when the agent binary the lab runs is older than the agent's
/// sources: `cargo bench -p crosslink-lab` and `cargo test -p crosslink-lab` build the lab,
/// not the agent, and a figure measured on an old binary is worse than none.
fn warn_if_stale(bin: &Path) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let built = std::fs::metadata(bin).and_then(|m| m.modified()).ok();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let newest = ["agent/src", "bgp/src", "probes/src", "wg/src"]
            .iter()
            .filter_map(|d| newest_file(&root.join(d)))
            .max();
        eprintln!("lab: agent binary {}", bin.display());
        if let (Some(built), Some((changed, file))) = (built, newest) {
            if changed > built {
                eprintln!(
                    "lab: WARNING: {} changed after this binary was built; rebuild it (cargo build [--release] -p crosslink)",
                    file.display()
                );
            }
        }
    });
}

/// The most recently modified file under `dir`, recursively.
fn newest_file(dir: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    let mut todo = vec![dir.to_path_buf()];
    // Bounded: the sources are a few dozen directories.
    for _ in 0..10_000 {
        let Some(d) = todo.pop() else { break };
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                todo.push(e.path());
            } else if let Ok(t) = meta.modified() {
                if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                    newest = Some((t, e.path()));
                }
            }
        }
    }
    newest
}
