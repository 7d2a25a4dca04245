#!/usr/bin/env bash
# put-latency-at.sh <worktree>: release-build cairn in a worktree of some commit (its own
# release target dir, shared between commits), then measure 1-client put p50 on a 3-member
# cluster through the leader: for bisecting a latency regression
# (git worktree add /tmp/at <commit>; benches/put-latency-at.sh /tmp/at).
set -u
W=$1
cd "$W" && CARGO_TARGET_DIR=$HOME/.cache/cairn/target-release nice -n 5 cargo build --release -p cairn --bin cairn > /tmp/bisect-build.log 2>&1 || { echo "build failed"; tail -5 /tmp/bisect-build.log; exit 1; }
B=$HOME/.cache/cairn/target-release/release/cairn
cp "$B" /tmp/bisect-cairn
B=/tmp/bisect-cairn
D=$(mktemp -d /tmp/bis.XXXX); cd "$D"
C=n1=127.0.0.1:37380,n2=127.0.0.2:37380,n3=127.0.0.3:37380
for i in 1 2 3; do $B serve --name n$i --data-dir c$i --client-addr 127.0.0.$i:37379 --peer-addr 127.0.0.$i:37380 --initial-cluster $C > c$i.log 2>&1 & done
sleep 6
L=$(for i in 1 2 3; do etcdctl --endpoints 127.0.0.$i:37379 endpoint status 2>/dev/null | grep -q ", true," && echo $i; done)
for r in 1 2; do
  $B bench put --endpoints 127.0.0.$L:37379 --clients 1 --duration 4s --json 2>/dev/null | python3 -c "import json,sys; r=json.load(sys.stdin); print('leader n$L: %.0f ops/s p50 %.2f ms' % (r['ops_per_sec'], r['p50_ms']))"
done
pkill -f "serve --name n[123] --data-dir c[123] --client-addr 127.0.0.[123]:37379"
sleep 1; rm -rf "$D"
