#!/usr/bin/env bash
# The cost of waking a sleeping thread on this machine (see benches/wake-latency.rs), and
# the cpuidle setting that decides it on a virtual machine (docs/operations.md, section 10).
#
#   benches/wake-latency.sh
set -euo pipefail
out=$(mktemp -d /tmp/wake-latency.XXXX)
trap 'rm -rf "$out"' EXIT
rustc -O --edition 2021 "$(dirname "$0")/wake-latency.rs" -o "$out/wake-latency"
echo "cpuidle driver: $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo none)," \
  "guest_halt_poll_ns: $(cat /sys/module/haltpoll/parameters/guest_halt_poll_ns 2>/dev/null || echo n/a)"
"$out/wake-latency"
