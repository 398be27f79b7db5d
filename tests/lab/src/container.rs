//! A Debian host booted with the real systemd as its PID 1 (`systemd-nspawn --boot`) inside
//! a lab namespace: the gateway the way it runs in the field, so that the unit, the package
//! and the service manager's features (notify, watchdog, reload, sandboxing, the
//! file-descriptor store) are exercised for real rather than read.
//!
//! Facts of these machines that shape it: no systemd or D-Bus on the host, so nspawn runs
//! with `--register=no --keep-unit`; the host keeps cgroup v1 controllers (so resource limits
//! such as MemoryMax are not enforced inside), and each container gets cgroup directories of
//! its own (name=systemd and unified) so that one left behind never meets the next. A
//! service inside gets no real-time priority (its RLIMIT_RTPRIO stays 0 whatever
//! LimitRTPRIO says), and nspawn makes /dev/net/tun 0600 where udev makes it 0666: tests
//! that run a service as a user set the mode themselves. Its /sys/class/net is made to
//! show the namespace's interfaces (see `net_sysfs`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Debian release of the container.
const SUITE: &str = "bookworm";
/// What the container needs beyond minbase: the service manager, `ip`, `ps`, `wg show`,
/// and what Ansible needs to manage it over SSH.
const PACKAGES: &str =
    "systemd,systemd-sysv,dbus,iproute2,procps,wireguard-tools,openssh-server,python3";
/// Bounds on booting and stopping.
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The container's root file system: `debootstrap --variant=minbase` of Debian's packages,
/// made once (about 40 s, 250 MB) and cached between runs; every container boots it with a
/// volatile overlay, so it never changes. `CROSSLINK_ROOTFS` names another cache directory.
pub fn rootfs() -> Result<PathBuf> {
    let cache = std::env::var_os("CROSSLINK_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/crosslink-lab"));
    // Named by what it holds, so that a changed package list makes a new one.
    let hash = PACKAGES
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let root = cache.join(format!("{SUITE}-{hash:08x}-rootfs"));
    if root.join("usr/lib/systemd/systemd").is_file() {
        return Ok(root);
    }
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    // Built beside, then renamed: an interrupted debootstrap never looks finished.
    let partial = root.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let mirror = std::env::var("CROSSLINK_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".to_owned());
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={PACKAGES}"), SUITE])
        .arg(&partial)
        .arg(&mirror)
        .output()
        .context("running debootstrap (package debootstrap)")?;
    if !out.status.success() {
        bail!(
            "debootstrap of {SUITE} from {mirror} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    std::fs::rename(&partial, &root)?;
    Ok(root)
}

/// A booted container; powered off (or killed, if it will not stop) on drop.
pub struct Container {
    name: String,
    nspawn: Child,
    leader: u32,
    cgroups: Vec<PathBuf>,
    log: PathBuf,
}

impl Container {
    /// Boots `rootfs` in the lab namespace `netns`, with `binds` (host path, container
    /// path) mounted read-only, and waits until its systemd answers. Console output goes to
    /// `log`. Beyond nspawn's defaults the container may administer the network (routes,
    /// TUN devices, BPF for the tunnels' steering program).
    pub fn boot(
        name: &str,
        rootfs: &Path,
        netns: &str,
        binds: &[(&Path, &str)],
        log: &Path,
    ) -> Result<Container> {
        let out = std::fs::File::create(log)?;
        let cgroups = own_cgroups(name)?;
        // A shell moves itself into the container's cgroups, then becomes nspawn.
        let mut script = String::new();
        for i in 1..=cgroups.len() {
            script.push_str(&format!("echo $$ > \"${i}\"/cgroup.procs && "));
        }
        script.push_str(&format!(
            "shift {} && exec systemd-nspawn \"$@\"",
            cgroups.len()
        ));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script, "sh"])
            .args(&cgroups)
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--volatile=overlay",
            ])
            .arg(format!("--machine={name}"))
            .arg("-D")
            .arg(rootfs)
            .arg(format!("--network-namespace-path=/run/netns/{netns}"))
            .arg("--capability=CAP_NET_ADMIN,CAP_BPF")
            // nspawn's own seccomp filter refuses bpf(2) unless told otherwise.
            .arg("--system-call-filter=bpf")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (host, inside) in binds {
            cmd.arg(format!("--bind-ro={}:{inside}", host.display()));
        }
        #[allow(unsafe_code)]
        // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
        // async-signal-safe; the death signal survives the exec of sh and of nspawn.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let nspawn = cmd
            .spawn()
            .context("starting systemd-nspawn (package systemd-container)")?;
        let mut c = Container {
            name: name.to_owned(),
            leader: 0,
            nspawn,
            cgroups,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            if let Some(status) = c.nspawn.try_wait()? {
                bail!(
                    "{name} exited while booting ({status}); see {}",
                    log.display()
                );
            }
            if c.leader == 0 {
                c.leader = find_init(c.nspawn.id()).unwrap_or(0);
            }
            // `systemctl` needs PID 1's bus, which exists a moment after boot starts.
            if c.leader != 0 {
                let state = c.exec(&["systemctl", "is-system-running"])?;
                let said = String::from_utf8_lossy(&state.stdout);
                if matches!(said.trim(), "running" | "degraded") {
                    c.net_sysfs()?;
                    return Ok(c);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} did not finish booting within {BOOT_TIMEOUT:?}; see {}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// With --network-namespace-path nspawn mounts the host's sysfs, whose
    /// /sys/class/net lists the host's interfaces, not the namespace's (where a real host's
    /// shows its own). A sysfs mounted from inside the namespace puts the namespace's
    /// interfaces there, for every service started after.
    /// Also gives /dev/net/tun the mode udev gives it on a real host (nspawn makes it
    /// 0600), so that a service running as a user can open it.
    fn net_sysfs(&self) -> Result<()> {
        self.sh(
            "chmod 0666 /dev/net/tun && mkdir -p /run/netns-sysfs && mount -t sysfs sysfs /run/netns-sysfs \
             && mount --bind /run/netns-sysfs/class/net /sys/class/net \
             && mount --bind /run/netns-sysfs/devices/virtual/net /sys/devices/virtual/net",
        )
        .map(drop)
    }

    /// Runs `args` inside the container (all its namespaces), as root.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        // A clean environment: nothing of the test's (CROSSLINK_CONFIG, RUST_LOG, …) inside.
        Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a"])
            .args([
                "env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("nsenter into {}", self.name))
    }

    /// Runs a shell script inside; its stdout, or an error with both outputs.
    pub fn sh(&self, script: &str) -> Result<String> {
        let out = self.exec(&["sh", "-c", script])?;
        if !out.status.success() {
            bail!(
                "in {}: `{script}` failed ({}):\n{}{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A property of `unit` as the container's systemd reports it (`systemctl show`).
    pub fn unit_property(&self, unit: &str, prop: &str) -> Result<String> {
        Ok(self
            .sh(&format!("systemctl show -p {prop} --value {unit}"))?
            .trim()
            .to_owned())
    }

    /// The container's journal for `unit`, for failure messages.
    pub fn journal(&self, unit: &str) -> String {
        self.exec(&["journalctl", "--no-pager", "-n", "60", "-u", unit])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("(no journal: {e})"))
    }

    /// Console output so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Container {
    /// SIGRTMIN+4 asks the container's systemd to power off (no nsenter, which could
    /// block); a container that does not stop in time loses its PID 1 to SIGKILL, which
    /// ends its whole PID namespace. Then its cgroups go.
    fn drop(&mut self) {
        let leader = nix::unistd::Pid::from_raw(self.leader as i32);
        if self.leader != 0 {
            power_off(self.leader);
        }
        if !self.wait_exit(STOP_TIMEOUT) {
            eprintln!(
                "container {} did not power off within {STOP_TIMEOUT:?}; killing it",
                self.name
            );
            if self.leader != 0 {
                let _ = nix::sys::signal::kill(leader, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = self.nspawn.kill();
            self.wait_exit(Duration::from_secs(5));
        }
        for c in &self.cgroups {
            if !remove_cgroup(c) {
                eprintln!("cgroup {} could not be removed", c.display());
            }
        }
    }
}

impl Container {
    fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if matches!(self.nspawn.try_wait(), Ok(Some(_)) | Err(_)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// systemd's PID 1 powers off on SIGRTMIN+4, a real-time signal nix has no name for.
fn power_off(leader: u32) {
    let sig = libc::SIGRTMIN() + 4;
    #[allow(unsafe_code)]
    // SAFETY: kill(2) takes a pid and a signal number; no memory is shared.
    unsafe {
        libc::kill(leader as libc::pid_t, sig);
    }
}

/// Fresh name=systemd and unified cgroup directories for one container.
fn own_cgroups(name: &str) -> Result<Vec<PathBuf>> {
    let leaf = format!("crosslink-lab-{name}-{}", std::process::id());
    let mut dirs = Vec::new();
    for hierarchy in ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"] {
        if !Path::new(hierarchy).join("cgroup.procs").exists() {
            continue;
        }
        sweep_stale_cgroups(Path::new(hierarchy));
        let dir = Path::new(hierarchy).join(&leaf);
        remove_cgroup(&dir);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        dirs.push(dir);
    }
    Ok(dirs)
}

/// Removes a cgroup directory and the ones the container's systemd made below it, deepest
/// first (a cgroup is removed with rmdir, and only once it has no children or processes:
/// the last of them may take a moment to be reaped). Whether it is gone.
fn remove_cgroup(dir: &Path) -> bool {
    for _ in 0..40 {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_cgroup(&e.path());
                }
            }
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Cgroups of containers whose test process died without cleaning up.
fn sweep_stale_cgroups(hierarchy: &Path) {
    let Ok(entries) = std::fs::read_dir(hierarchy) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("crosslink-lab-")
            .and_then(|rest| rest.rsplit('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            remove_cgroup(&e.path());
        }
    }
}

/// The container's PID 1 as the host sees it: the first descendant of nspawn running
/// systemd.
fn find_init(nspawn: u32) -> Option<u32> {
    let mut queue = vec![nspawn];
    // Bounded: nspawn's tree is two or three levels deep.
    for _ in 0..64 {
        let pid = queue.pop()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if pid != nspawn && comm.trim() == "systemd" {
            return Some(pid);
        }
        queue.extend(children(pid));
    }
    None
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// `deb` again as a newer version (its control file's Version with `+upgrade<n>`, rebuilt
/// with dpkg-deb) in `dir`: installing it is a real upgrade (prerm upgrade, unpack,
/// postinst configure with the old version), with the same files inside.
pub fn repackaged(deb: &Path, dir: &Path, n: u32) -> Result<PathBuf> {
    let tree = dir.join(format!("upgrade{n}-tree"));
    let _ = std::fs::remove_dir_all(&tree);
    let run = |args: &[&std::ffi::OsStr]| -> Result<()> {
        let out = Command::new(args[0]).args(&args[1..]).output()?;
        if !out.status.success() {
            bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    run(&[
        "dpkg-deb".as_ref(),
        "-R".as_ref(),
        deb.as_os_str(),
        tree.as_os_str(),
    ])?;
    let control = tree.join("DEBIAN/control");
    let text: String = std::fs::read_to_string(&control)?
        .lines()
        .map(|l| match l.strip_prefix("Version: ") {
            Some(v) => format!("Version: {v}+upgrade{n}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&control, text)?;
    let out = dir.join(format!("crosslink-upgrade{n}.deb"));
    run(&[
        "dpkg-deb".as_ref(),
        "--root-owner-group".as_ref(),
        "-b".as_ref(),
        tree.as_os_str(),
        out.as_os_str(),
    ])?;
    std::fs::remove_dir_all(&tree)?;
    Ok(out)
}

/// The crosslink package the tests install: `CROSSLINK_DEB`, or the newest in the
/// workspace's target/debian (`cargo deb -p crosslink`; tests/run-all.sh builds it first).
pub fn package() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CROSSLINK_DEB") {
        return Ok(PathBuf::from(p));
    }
    // Test binaries live in target/<profile>/deps.
    let exe = std::env::current_exe()?;
    let dir = exe
        .ancestors()
        .nth(3)
        .context("the test binary is not in target/<profile>/deps")?
        .join("debian");
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("crosslink_") && n.ends_with(".deb"))
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .with_context(|| {
            format!(
                "no crosslink package in {}: build it with `cargo deb -p crosslink` (tests/run-all.sh does) or set CROSSLINK_DEB",
                dir.display()
            )
        })
}
