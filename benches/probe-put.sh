#!/usr/bin/env bash
# Where a put's time goes: runs a 3-member cluster on loopback with CAIRN_PROBE_DIR set
# (crates/cairn-raft/src/probe.rs), a one-client put load on the leader, and prints the
# median (p10, p90) time from the proposal to each stage on the leader and each follower.
#
#   benches/probe-put.sh CAIRN_BIN [SECONDS] [CLIENTS]
set -euo pipefail
BIN=$(realpath "$1"); SECS=${2:-10}; CLIENTS=${3:-1}
W=$(mktemp -d /tmp/probe-put.XXXX)
trap 'pkill -f "$W" 2>/dev/null || true; sleep 1; rm -rf "$W"' EXIT
mkdir -p "$W/marks"
C=n1=127.0.0.1:42380,n2=127.0.0.2:42380,n3=127.0.0.3:42380
for i in 1 2 3; do
  CAIRN_PROBE_DIR="$W/marks" "$BIN" serve --name n$i --data-dir "$W/n$i" --client-addr 127.0.0.$i:42379 \
    --peer-addr 127.0.0.$i:42380 --initial-cluster $C >"$W/n$i.log" 2>&1 &
  echo "$! n$i" >>"$W/members"
done
EPS=127.0.0.1:42379,127.0.0.2:42379,127.0.0.3:42379
for _ in $(seq 100); do
  "$BIN" bench put --endpoints "$EPS" --clients 1 --total 1 --json >/dev/null 2>&1 && break
  sleep 0.2
done
"$BIN" bench put --endpoints "$EPS" --leader-only --clients "$CLIENTS" --duration "${SECS}s" --json >"$W/bench.json"
sleep 1.5 # the marks are written out each second
python3 "$(dirname "$0")/probe-report.py" "$W/members" "$W/marks" "$W/bench.json"
