#!/usr/bin/env bash
# Installs the Debian packages the lab and the tests need. Idempotent; needs root.
set -euo pipefail

packages=(
  bird2       # BGP + BFD on the line routers and the baseline gateways
  frr         # the other line router: zebra, bgpd and bfdd, started by hand per namespace
  iproute2    # ip netns, veth, routes, nexthop objects
  nftables    # fault injection: silent drops and random loss
  procps      # sysctl inside the namespaces
  wireguard-go     # the foreign WireGuard peer (userspace; no kernel module here)
  wireguard-tools  # wg: configures wireguard-go, and `wg show` on crosslink's tunnels
  iperf3      # tunnel throughput benchmark and load
  iputils-ping  # ping across the tunnels in the WireGuard interop tests
  prometheus  # promtool: the alert rules' unit tests and the metrics lint
  systemd     # systemd-analyze verify / security on the unit (systemd need not run)
  util-linux  # unshare, nsenter and setpriv for the agent's integration tests
  ansible-core  # the rollout playbook, run against the lab's gateways
  debootstrap       # the Debian root file system of the systemd container (cached)
  systemd-container # systemd-nspawn: boots that container with the real systemd
  lintian     # checks the Debian package
  dpkg-dev    # dpkg-shlibdeps: cargo deb computes the package's library dependencies
  openssh-client  # the rollout test's Ansible reaches the gateway containers over SSH
  socat       # ...through a ProxyCommand that enters the gateway's namespace
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]}; run this as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# cargo deb builds the Debian package (tests/run-all.sh builds it before the tests).
if ! command -v cargo-deb >/dev/null 2>&1; then
  cargo install --locked cargo-deb@3.8.0
fi
