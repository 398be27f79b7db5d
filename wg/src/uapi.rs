//! The cross-platform WireGuard UAPI (https://www.wireguard.com/xplatform/), read-only: `wg
//! show` and `wg showconf` work on crosslink's tunnels. Changes come from crosslink's
//! config, so `set=1` is answered with EPERM. The socket is `/var/run/wireguard/<iface>.sock`,
//! mode 0600: the answer carries the private key, as the protocol requires for showconf.

use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::tunnel::Shared;

pub const DIR: &str = "/var/run/wireguard";

pub fn socket_path(interface: &str) -> PathBuf {
    PathBuf::from(DIR).join(format!("{interface}.sock"))
}

pub(crate) struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The socket file, removed when the tunnel is dropped: the serving task is only aborted
/// then, and at process exit it may never run again to drop its `Server` — a stale file
/// makes `wg` and other WireGuard implementations think the interface is served. Only
/// the file this tunnel bound is removed, never a successor's.
pub(crate) struct SocketFile {
    path: PathBuf,
    ino: Option<u64>,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::metadata(&self.path).is_ok_and(|m| Some(m.ino()) == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Server {
    /// Binds the socket, replacing a stale one; a live one (another process serving this
    /// interface) is an error.
    pub(crate) fn bind(interface: &str) -> io::Result<Server> {
        let path = socket_path(interface);
        // Under a sandbox (ProtectSystem=strict) the directory must be made writable by
        // the service: say which path, or the operator is left guessing.
        let at = |what: &str, p: &std::path::Path, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!(
                    "{what} {} for `wg show`: {e} (the service needs write access to {DIR})",
                    p.display()
                ),
            )
        };
        std::fs::create_dir_all(DIR).map_err(|e| at("creating", DIR.as_ref(), e))?;
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is served by another process", path.display()),
                ));
            }
            std::fs::remove_file(&path).map_err(|e| at("removing the stale", &path, e))?;
        }
        let listener = UnixListener::bind(&path).map_err(|e| at("binding", &path, e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| at("restricting", &path, e))?;
        Ok(Server { listener, path })
    }

    /// Who removes the socket file when the tunnel goes (see `SocketFile`).
    pub(crate) fn file(&self) -> SocketFile {
        SocketFile {
            path: self.path.clone(),
            ino: std::fs::metadata(&self.path).map(|m| m.ino()).ok(),
        }
    }

    pub(crate) async fn serve(self, shared: Arc<Shared>) -> io::Result<()> {
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let _ = answer(stream, &shared).await;
            });
        }
    }
}

async fn answer(stream: UnixStream, shared: &Shared) -> io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    // One request: an operation line, then key=value lines up to an empty line.
    let Some(op) = lines.next_line().await? else {
        return Ok(());
    };
    while let Some(l) = lines.next_line().await? {
        if l.is_empty() {
            break;
        }
    }
    let reply = match op.as_str() {
        "get=1" => get(shared),
        // Read-only: the config file is the one source of truth. The protocol carries a
        // number only (negative, as wireguard-go sends it: `wg` prints
        // "Unable to modify interface: Operation not permitted"), so the why goes to the
        // log, where the operator looks next.
        "set=1" => {
            tracing::warn!(
                interface = %shared.cfg.interface,
                "`wg set` refused: read-only: crosslink owns this tunnel's configuration; change the config file and reload"
            );
            "errno=-1\n\n".to_owned()
        }
        _ => "errno=-22\n\n".to_owned(),
    };
    w.write_all(reply.as_bytes()).await?;
    w.shutdown().await
}

/// The `get=1` answer.
pub(crate) fn get(shared: &Shared) -> String {
    let cfg = &shared.cfg;
    let st = shared.stats();
    let mut s = String::new();
    let _ = writeln!(s, "private_key={}", cfg.private_key.hex());
    let _ = writeln!(s, "listen_port={}", cfg.listen_port);
    let _ = writeln!(s, "public_key={}", cfg.peer_public_key.hex());
    if let Some(psk) = &cfg.preshared_key {
        let _ = writeln!(s, "preshared_key={}", psk.hex());
    }
    let _ = writeln!(s, "protocol_version=1");
    if let Some(e) = st.endpoint {
        let _ = writeln!(s, "endpoint={e}");
    }
    let (sec, nsec) = st
        .last_handshake
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()));
    let _ = writeln!(s, "last_handshake_time_sec={sec}");
    let _ = writeln!(s, "last_handshake_time_nsec={nsec}");
    let _ = writeln!(s, "tx_bytes={}", st.tx_bytes);
    let _ = writeln!(s, "rx_bytes={}", st.rx_bytes);
    let _ = writeln!(
        s,
        "persistent_keepalive_interval={}",
        cfg.persistent_keepalive.unwrap_or(0)
    );
    for a in shared.allowed_ips() {
        let _ = writeln!(s, "allowed_ip={a}");
    }
    s.push_str("errno=0\n\n");
    s
}
