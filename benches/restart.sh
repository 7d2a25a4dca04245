#!/usr/bin/env bash
# Restart time of a single member holding KEYS keys: fill it, kill -9, start it again, and
# time until a linearizable get succeeds (rounds of kill -9 + start on the same data).
#
#   benches/restart.sh BIN [KEYS] [ROUNDS]
#   COLD=1 benches/restart.sh ...   # drop the page cache before each start (needs root)
#
# Prints the data directory's size and one line per round. The fill uses BIN's
# `cairn bench fill` (256-byte values), so BIN must be 0.1 or later.
set -euo pipefail
BIN=$(realpath "$1"); KEYS=${2:-1000000}; ROUNDS=${3:-3}
W=$(mktemp -d /tmp/restart.XXXX)
trap 'pkill -9 -f "$W" 2>/dev/null || true; sleep 0.5; rm -rf "$W"' EXIT
EP=127.0.0.1:43379
start() { "$BIN" serve --data-dir "$W/d" --client-addr $EP --peer-addr 127.0.0.1:43380 >>"$W/log" 2>&1 & PID=$!; }
ready() { until etcdctl --endpoints $EP --command-timeout=1s get ready-probe >/dev/null 2>&1; do sleep 0.02; done; }
start; ready
"$BIN" bench fill --endpoints $EP --key-space "$KEYS" --clients 16 2>&1 | grep -iE "keys|ops" | head -3
kill -9 $PID; wait $PID 2>/dev/null || true
echo "data directory: $(du -sh "$W/d" | cut -f1) for $KEYS keys"
for r in $(seq "$ROUNDS"); do
  if [ "${COLD:-0}" = 1 ]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
  t0=$(date +%s%N); start; ready; t1=$(date +%s%N)
  echo "round $r: ready after $(( (t1 - t0) / 1000000 )) ms"
  kill -9 $PID; wait $PID 2>/dev/null || true
done
