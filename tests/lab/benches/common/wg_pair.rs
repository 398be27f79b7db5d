//! A crosslink tunnel against wireguard-go over the lab's first uplink: wireguard-go with
//! `wg` on gwb (interface `xlb-t1`, 10.77.0.2), as an operator would set it up, and the
//! wg crate's tunnel run by this process in gwa's namespace (`xla-t1`, 10.77.0.1). Shared
//! by the interop test and the soak benchmark.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use lab::{netns, Lab, Node, Side, Uplink};
use wg::{SecretKey, TunnelConfig};

pub struct Pair {
    /// crosslink's public key, as `wg` shows it.
    pub a_public: String,
    /// Where each end listens.
    pub a_endpoint: String,
    pub b_ip: IpAddr,
    /// Dropping it stops crosslink's tunnel.
    pub stop: std::sync::mpsc::Sender<()>,
}

fn genkey(dir: &Path, name: &str) -> (std::path::PathBuf, SecretKey) {
    let path = dir.join(name);
    lab::wg_keypair(&path).expect("key pair");
    let key = SecretKey::load(&path).expect("key file");
    (path, key)
}

/// A crosslink tunnel running in `node`'s namespace until the returned sender is dropped.
fn crosslink_tunnel(node: Node, cfg: TunnelConfig) -> std::sync::mpsc::Sender<()> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    netns::spawn_in(&node.ns(), move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let t = wg::Tunnel::start(cfg).await;
            let ok = t.is_ok();
            let _ = ready_tx.send(t.as_ref().err().map(|e| e.to_string()));
            if ok {
                let _ = tokio::task::spawn_blocking(move || stopped.recv()).await;
            }
            drop(t);
        });
    });
    if let Some(e) = ready.recv().unwrap() {
        panic!("tunnel did not start: {e}");
    }
    stop
}

/// Sets the pair up; `keepalive` is both ends' persistent keepalive.
pub fn start(lab: &mut Lab, keepalive: Option<u16>) -> Pair {
    let dir = lab.dir().to_path_buf();
    let (_, a_key) = genkey(&dir, "a.key");
    let (b_path, b_key) = genkey(&dir, "b.key");
    let a_ip = Uplink(1).addr(Side::A, false, false);
    let b_ip = Uplink(1).addr(Side::B, false, false);
    lab.spawn(
        "wireguard-go-gwb",
        Node::Gwb,
        &["wireguard-go", "-f", "xlb-t1"],
    )
    .unwrap();
    lab.wait_for("wireguard-go's socket", Duration::from_secs(10), || {
        Ok(Path::new("/var/run/wireguard/xlb-t1.sock").exists())
    })
    .unwrap();
    let a_public = a_key.public().to_string();
    let a_endpoint = format!("{a_ip}:51820");
    let mut set = vec![
        "wg".to_owned(),
        "set".into(),
        "xlb-t1".into(),
        "private-key".into(),
        b_path.to_string_lossy().into_owned(),
        "listen-port".into(),
        "51820".into(),
        "peer".into(),
        a_public.clone(),
        "endpoint".into(),
        a_endpoint.clone(),
        "allowed-ips".into(),
        "10.77.0.1/32".into(),
    ];
    if let Some(k) = keepalive {
        set.extend(["persistent-keepalive".to_owned(), k.to_string()]);
    }
    let set: Vec<&str> = set.iter().map(String::as_str).collect();
    lab.exec(Node::Gwb, &set).unwrap();
    for cmd in [
        &["ip", "addr", "add", "10.77.0.2/30", "dev", "xlb-t1"][..],
        &["ip", "link", "set", "dev", "xlb-t1", "up"],
    ] {
        lab.exec(Node::Gwb, cmd).unwrap();
    }
    let cfg = TunnelConfig {
        interface: "xla-t1".into(),
        private_key: a_key,
        preshared_key: None,
        peer_public_key: b_key.public(),
        endpoints: vec![SocketAddr::new(b_ip, 51820)],
        listen_port: 51820,
        uplink: Some("up1".into()),
        persistent_keepalive: keepalive,
        allowed_ips: vec!["10.77.0.2/32".parse().unwrap()],
        mtu: 1420,
        addresses: vec!["10.77.0.1/30".parse().unwrap()],
        queues: 2,
    };
    let stop = crosslink_tunnel(Node::Gwa, cfg);
    Pair {
        a_public,
        a_endpoint,
        b_ip,
        stop,
    }
}
