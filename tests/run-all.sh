#!/usr/bin/env bash
# Runs every test: unit tests, the CLI tests, the network-namespace lab tests against BIRD 2
# and FRR, and the Debian package under the real systemd (built first). The lab tests need
# root; they are never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/install-deps.sh
# The Debian package the systemd test installs (target/debian/crosslink_*.deb).
cargo deb --locked -p crosslink
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
