#!/usr/bin/env bash
# Before/after put benchmark of two cairn binaries (and optionally etcd) in one run, in turns
# A B A B on fresh 3-member clusters on loopback, with the same load generator.
#
#   benches/ab-put.sh BEFORE_BIN AFTER_BIN [ROUNDS] [SECONDS] [CLIENTS...]
#   ETCD=1 benches/ab-put.sh ...      # also etcd 3.4 (/usr/bin/etcd) in each round
#   WORKLOAD=range BENCH_ARGS="--consistency s" benches/ab-put.sh ...   # another `cairn bench`
#                                      # workload (default put) with extra flags
#
# Prints one line per run: label, round, clients, ops/s, p50 ms, p99 ms, the worst p99 of
# any one second of the run, errors, and the CPU time the three members used per operation
# (user + system, from /proc: less noisy than ops/s on a busy host).
# The load generator is AFTER_BIN's `cairn bench`.
set -euo pipefail
A=$(realpath "$1"); B=$(realpath "$2"); ROUNDS=${3:-2}; SECS=${4:-5}
shift $(( $# < 4 ? $# : 4 ))
CLIENTS=("${@:-1 16 256}"); [ $# -eq 0 ] && CLIENTS=(1 16 256)
GEN=$B
W=$(mktemp -d /tmp/ab-put.XXXX)
trap 'pkill -f "$W" 2>/dev/null || true; sleep 0.5; rm -rf "$W"' EXIT

# shellcheck source=benches/ab-cluster.sh
. "$(dirname "$0")/ab-cluster.sh"
# CPU seconds (user + system) used so far by the members (every process with "$W" in its
# command line; the load generator has not).
members_cpu() {
  local t=0 pid
  for pid in $(pgrep -f "$W"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$t $(getconf CLK_TCK)" | awk '{printf "%.3f", $1 / $2}'
}
run() { # label round
  wait_ready
  for c in "${CLIENTS[@]}"; do
    local cpu0; cpu0=$(members_cpu)
    # shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
    "$GEN" bench "${WORKLOAD:-put}" ${BENCH_ARGS:-} --endpoints "$EPS" --clients "$c" --duration "${SECS}s" --json >"$W/last.json"
    local cpu; cpu=$(awk -v a="$cpu0" -v b="$(members_cpu)" 'BEGIN { print b - a }')
    python3 -c "import json,sys; r=json.load(open('$W/last.json')); t=r.get('timeline', []); w=max(range(len(t)), key=lambda i: t[i]['p99_ms'], default=None); worst='%.1f ms in second %d' % (t[w]['p99_ms'], w) if w is not None else 'none'; print('$1 round $2 clients $c: %.0f ops/s p50 %.3f ms p99 %.3f ms (worst 1-s p99 %s) errors %s, members CPU %.1f us/op' % (r['ops_per_sec'], r['p50_ms'], r['p99_ms'], worst, r['errors'], $cpu * 1e6 / max(r['ops'], 1)))"
  done
}

all_rounds
