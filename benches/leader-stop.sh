#!/usr/bin/env bash
# Writes blocked while the leader of a 3-member cluster is stopped with SIGTERM: a client
# writes one key after another through a follower (etcdctl, one process per put, ~20-30 ms
# each); the figure is the longest gap between two acknowledged puts around the SIGTERM.
#
#   benches/leader-stop.sh BIN [ROUNDS]
set -euo pipefail
BIN=$(realpath "$1"); ROUNDS=${2:-5}
W=$(mktemp -d /tmp/leader-stop.XXXX)
trap 'pkill -9 -f "$W" 2>/dev/null || true; sleep 0.5; rm -rf "$W"' EXIT
C=n1=127.0.0.1:44380,n2=127.0.0.2:44380,n3=127.0.0.3:44380
for r in $(seq "$ROUNDS"); do
  D=$W/r$r; mkdir -p "$D"
  for i in 1 2 3; do
    "$BIN" serve --name n$i --data-dir "$D/n$i" --client-addr 127.0.0.$i:44379 --peer-addr 127.0.0.$i:44380 \
      --initial-cluster $C >"$D/n$i.log" 2>&1 &
    echo $! > "$D/n$i.pid"
  done
  until etcdctl --endpoints 127.0.0.1:44379 --command-timeout=1s put ready x >/dev/null 2>&1; do sleep 0.1; done
  leader=""
  for i in 1 2 3; do
    if etcdctl --endpoints 127.0.0.$i:44379 endpoint status -w json 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; sys.exit(0 if s["leader"]==s["header"]["member_id"] else 1)'; then leader=$i; fi
  done
  follower=$(( leader % 3 + 1 ))
  ( while [ ! -e "$D/stop" ]; do
      if etcdctl --endpoints 127.0.0.$follower:44379 --command-timeout=5s put k v >/dev/null 2>&1; then date +%s%N >> "$D/acks"; fi
    done ) &
  writer=$!
  sleep 1.5
  kill_at=$(date +%s%N); kill -TERM "$(cat "$D/n$leader.pid")"
  sleep 4; touch "$D/stop"; wait $writer || true
  gap=$(python3 - "$D/acks" "$kill_at" <<'PY'
import sys
acks = [int(l) for l in open(sys.argv[1])]
kill = int(sys.argv[2])
before = [a for a in acks if a <= kill]
after = [a for a in acks if a > kill]
start = before[-1] if before else kill
gaps = [(b - a) for a, b in zip([start] + after, after)]
print(f"{max(gaps) / 1e6:.0f} ms longest gap after SIGTERM ({len(after)} puts acknowledged in 4 s after it)")
PY
)
  echo "round $r: leader n$leader stopped: $gap"
  pkill -9 -f "$D" || true; sleep 0.5
done
