#!/usr/bin/env bash
# Before/after watch fan-out of two cairn binaries (and optionally etcd 3.4) in one run, in
# turns A B A B on fresh 3-member clusters on loopback, with the same load generator:
# WATCHERS watches of one key, all on member 1 (streams of 100), one putter writing that key
# RATE times a second through all three members; latency = put acknowledgement → event.
#
#   benches/ab-watch.sh BEFORE_BIN AFTER_BIN [ROUNDS] [SECONDS] [WATCHERS] [RATE]
#   ETCD=1 benches/ab-watch.sh ...    # also etcd 3.4 (/usr/bin/etcd) in each round
#
# Prints one line per run: label, round, p50 / p99 / max ms, events/s (delivered, including
# the drain of up to 5 s after the last put), events lost, put p50 ms.
# The load generator is AFTER_BIN's `cairn bench`.
set -euo pipefail
A=$(realpath "$1"); B=$(realpath "$2"); ROUNDS=${3:-2}; SECS=${4:-10}
WATCHERS=${5:-10000}; RATE=${6:-10}
GEN=$B
W=$(mktemp -d /tmp/ab-watch.XXXX)
trap 'pkill -f "$W" 2>/dev/null || true; sleep 0.5; rm -rf "$W"' EXIT

# shellcheck source=benches/ab-cluster.sh
. "$(dirname "$0")/ab-cluster.sh"
run() { # label round
  wait_ready
  "$GEN" bench watch --endpoints "$EPS" --watchers "$WATCHERS" --watchers-per-stream 100 \
    --clients 1 --rate "$RATE" --duration "${SECS}s" --server-pid "$PID1" --json |
    python3 -c "
import json,sys; r=json.load(sys.stdin); x=r['extra']
print('$1 round $2: p50 %.2f ms p99 %.2f ms max %.1f ms, %.0f events/s, lost %d, put p50 %.2f ms, errors %s, rss/watcher %.0f B'
  % (r['p50_ms'], r['p99_ms'], r['max_ms'], r['ops_per_sec'], x['events_lost'], x['watch_put_p50_ms'], r['errors'], x.get('server_bytes_per_watcher', float('nan'))))"
}

all_rounds
