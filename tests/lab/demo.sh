#!/usr/bin/env bash
# The lab demo: two clouds in network namespaces, traffic between their hosts, line 1 cut
# and healed. Needs root. Extra arguments go to `crosslink-lab demo` (see --help there).
set -euo pipefail
cd "$(dirname "$0")/../.."
tests/install-deps.sh
cargo build --locked -q -p crosslink -p crosslink-lab
exec target/debug/crosslink-lab demo "$@"
