#!/usr/bin/env bash
# Join time (issue 11): a one-member cluster holding KEYS keys (256-byte values, `cairn bench
# fill`); a second node is started empty with `--join`; the script prints, from the second
# node's exec, when it is listed as a learner, when it has applied everything the leader had
# (its Status applied index reaches the leader's; the leader is idle), and when the autopilot
# made it a voter (defaults: within 250 entries and in contact for 10 s). Rounds start a
# fresh joiner (the previous one is removed with `member remove` and its data wiped).
#
#   benches/join.sh BIN [KEYS] [ROUNDS]
set -euo pipefail
BIN=$(realpath "$1"); KEYS=${2:-1000000}; ROUNDS=${3:-1}
W=$(mktemp -d /tmp/join.XXXX)
trap 'pkill -9 -f "$W" 2>/dev/null || true; sleep 0.5; rm -rf "$W"' EXIT
EP1=127.0.0.1:45379; EP2=127.0.0.2:45379
"$BIN" serve --name n1 --data-dir "$W/n1" --client-addr $EP1 --peer-addr 127.0.0.1:45380 >"$W/n1.log" 2>&1 &
until etcdctl --endpoints $EP1 --command-timeout=1s put ready x >/dev/null 2>&1; do sleep 0.1; done
t0=$(date +%s%N)
"$BIN" bench fill --endpoints $EP1 --key-space "$KEYS" --clients 16 >"$W/fill.log" 2>&1
echo "filled $KEYS keys in $(( ($(date +%s%N) - t0) / 1000000 )) ms; n1's data directory: $(du -sh "$W/n1" | cut -f1)"
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); $1"; }
for r in $(seq "$ROUNDS"); do
  rm -rf "$W/n2"
  target=$(etcdctl --endpoints $EP1 endpoint status -w json | json 'print(d[0]["Status"]["raftAppliedIndex"])')
  t0=$(date +%s%N)
  "$BIN" serve --name n2 --data-dir "$W/n2" --client-addr $EP2 --peer-addr 127.0.0.2:45380 \
    --join 127.0.0.1:45380 >"$W/n2.$r.log" 2>&1 &
  pid=$!
  learner=""; caught=""; voter=""
  while [ -z "$voter" ]; do
    if ! kill -0 $pid 2>/dev/null; then echo "n2 exited:"; tail -20 "$W/n2.$r.log"; exit 1; fi
    members=$(etcdctl --endpoints $EP1 --command-timeout=2s member list -w json 2>/dev/null || true)
    state=$(echo "$members" | json 'm=[x for x in d.get("members",[]) if x.get("name")=="n2" or any("127.0.0.2" in u for u in x.get("peerURLs",[]))]; print("none" if not m else ("learner" if m[0].get("isLearner") else "voter"))' 2>/dev/null || echo none)
    [ -z "$learner" ] && [ "$state" != none ] && learner=$(ms $t0)
    if [ -z "$caught" ]; then
      applied=$(etcdctl --endpoints $EP2 --command-timeout=1s endpoint status -w json 2>/dev/null | json 'print(d[0]["Status"]["raftAppliedIndex"])' 2>/dev/null || echo 0)
      [ "$applied" -ge "$target" ] && caught=$(ms $t0)
    fi
    [ "$state" = voter ] && voter=$(ms $t0)
    sleep 0.05
  done
  echo "round $r: listed as learner after ${learner} ms, caught up (applied index ${target}) after ${caught:-?} ms, voter after ${voter} ms; n2's data directory: $(du -sh "$W/n2" | cut -f1)"
  if [ "$r" -lt "$ROUNDS" ]; then
    id=$(etcdctl --endpoints $EP1 member list -w json | json 'print([format(x["ID"],"x") for x in d["members"] if x.get("name")=="n2"][0])')
    etcdctl --endpoints $EP1 member remove "$id" >/dev/null
    wait $pid 2>/dev/null || true
  fi
done
