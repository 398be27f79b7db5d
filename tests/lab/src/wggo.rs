//! wireguard-go + wg on a gateway: the baseline's backup tunnels (and the reference the
//! throughput benchmark measures crosslink against), set up as an operator would.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns;
use crate::topology::{network, Side, Tunnel, Uplink};
use crate::Lab;

/// Starts wireguard-go for tunnel `t` on `side`'s gateway: interface `t.ifname(side)`,
/// the same keys, ports and addresses crosslink's config uses for that tunnel, the far
/// gateway's lan in its allowed IPs. Returns once the interface is up and addressed.
pub fn start(lab: &mut Lab, side: Side, t: Tunnel) -> Result<()> {
    let gw = side.gateway();
    let iface = t.ifname(side);
    let name = format!("wireguard-go-{iface}");
    lab.spawn(&name, gw, &["wireguard-go", "-f", &iface])?;
    let sock = format!("/var/run/wireguard/{iface}.sock");
    // Answering, not just present: the path is shared by every namespace, so a file can
    // be a dead process's, and wireguard-go creates it before it listens. `wg` talking to
    // neither falls back to kernel netlink ("Protocol not supported" here).
    lab.wait_for(&format!("{name}'s socket"), Duration::from_secs(10), || {
        Ok(std::os::unix::net::UnixStream::connect(&sock).is_ok())
    })?;
    let (key, _) = crate::setup::tunnel_key(lab, side, t)?;
    let (_, peer) = crate::setup::tunnel_key(lab, side.other(), t)?;
    let far = side.other();
    let endpoint = format!("{}:{}", Uplink(t.0).addr(far, false, false), t.port());
    let allowed = [
        network(far.host_addr(false)),
        network(far.host_addr(true)),
        format!("{}/31", t.addr(far, false)),
        format!("{}/127", t.addr(far, true)),
    ]
    .join(",");
    netns::exec(
        &gw.ns(),
        &[
            "wg",
            "set",
            &iface,
            "private-key",
            key.to_str().unwrap_or_default(),
            "listen-port",
            &t.port().to_string(),
            "peer",
            &peer,
            "endpoint",
            &endpoint,
            "allowed-ips",
            &allowed,
            "persistent-keepalive",
            "5",
        ],
    )
    .with_context(|| format!("wg set {iface}"))?;
    for (addr, len) in [(t.addr(side, false), 31), (t.addr(side, true), 127)] {
        netns::exec(
            &gw.ns(),
            &["ip", "addr", "add", &format!("{addr}/{len}"), "dev", &iface],
        )?;
    }
    netns::exec(
        &gw.ns(),
        &["ip", "link", "set", "dev", &iface, "mtu", "1420", "up"],
    )?;
    Ok(())
}
