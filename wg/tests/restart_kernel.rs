//! A tunnel started again in place (`Tunnel::restart`) against the real kernel, in a
//! network namespace this test makes (root): it runs as it ran, allowed IPs set since its
//! start included; and a tunnel whose interface is deleted under it says so (`broken`)
//! and is made again by a restart.

use std::process::Command;
use std::time::{Duration, Instant};

use wg::{SecretKey, Tunnel, TunnelConfig};

#[path = "common/netns.rs"]
mod netns;

fn key(byte: u8) -> SecretKey {
    use base64::Engine;
    SecretKey::parse(&base64::engine::general_purpose::STANDARD.encode([byte; 32])).unwrap()
}

/// Asked of `ip`, which runs in this thread's namespace (sysfs shows the mounter's).
fn exists(iface: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", iface])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn a_restarted_tunnel_keeps_its_allowed_ips_and_a_deleted_interface_comes_back() {
    netns::in_netns("restart", |_| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(scenario());
    });
}

async fn scenario() {
    // Unique on the machine: the UAPI socket's directory is shared by every namespace.
    let iface = format!("xlr{}", std::process::id() % 100_000);
    let cfg = TunnelConfig {
        interface: iface.clone(),
        private_key: key(0x11),
        preshared_key: None,
        peer_public_key: key(0x22).public(),
        endpoints: vec!["192.0.2.1:51820".parse().unwrap()],
        listen_port: 51_999,
        uplink: None,
        persistent_keepalive: None,
        allowed_ips: vec!["10.1.0.0/16".parse().unwrap()],
        mtu: 1420,
        addresses: vec!["169.254.200.0/31".parse().unwrap()],
        queues: 2,
    };
    let tunnel = Tunnel::start(cfg).await.expect("tunnel starts");
    assert_eq!(tunnel.broken(), None);
    let now = vec!["10.2.0.0/16".parse().unwrap()];
    tunnel.set_allowed_ips(now.clone());

    let (why, restarted) = tunnel.restart().await;
    assert!(why.is_empty(), "nothing had ended: {why:?}");
    let tunnel = restarted.expect("restarts");
    assert_eq!(
        tunnel.config().allowed_ips,
        now,
        "the allowed IPs set since its start"
    );
    assert_eq!(tunnel.broken(), None);

    // Deleted under it: its TUN queues' tasks end, within a bounded wait.
    let out = Command::new("ip")
        .args(["link", "del", &iface])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while tunnel.broken().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let task = tunnel.broken().map(str::to_owned);
    assert!(
        task.as_deref().is_some_and(|t| t.starts_with("TUN")),
        "{task:?}"
    );
    let (why, restarted) = tunnel.restart().await;
    assert!(
        why.iter()
            .any(|w| w.contains("TUN read") && w.contains("EBADFD")),
        "{why:?}"
    );
    let tunnel = restarted.expect("restarts on a new interface");
    assert!(exists(&iface), "the interface is made again");
    assert_eq!(tunnel.broken(), None);
    assert_eq!(tunnel.config().allowed_ips, now);
    let why = tunnel.stop().await;
    assert!(why.is_empty(), "{why:?}");
    let _ = wg::tun::remove(&iface);
}
