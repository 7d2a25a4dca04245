#!/usr/bin/env bash
# JSON gateway next to gRPC on the same member (issue 12): put and range throughput and
# latency, one 3-member cluster of Cairn and one of etcd 3.4 on loopback, the same load tool
# (`cairn bench`, JSON over HTTP/1.1 keep-alive with --gateway), rounds in alternation.
# Usage: benches/gateway.sh [path/to/release/cairn]   (build: cargo build --release -p cairn --bin cairn)
set -u
B=${1:-"$(cd "$(dirname "$0")/.." && pwd)/target/release/cairn"}
D=$(mktemp -d /tmp/cairn-gw-bench.XXXX)
cd "$D"
C=n1=127.0.0.1:34380,n2=127.0.0.2:34380,n3=127.0.0.3:34380
for i in 1 2 3; do "$B" serve --name n$i --data-dir c$i --client-addr 127.0.0.$i:34379 --peer-addr 127.0.0.$i:34380 --initial-cluster $C > c$i.log 2>&1 & done
E=e1=http://127.0.0.4:34380,e2=http://127.0.0.5:34380,e3=http://127.0.0.6:34380
for i in 1 2 3; do ip=127.0.0.$((i+3)); etcd --name e$i --data-dir e$i --listen-client-urls http://$ip:34379 --advertise-client-urls http://$ip:34379 --listen-peer-urls http://$ip:34380 --initial-advertise-peer-urls http://$ip:34380 --initial-cluster $E --initial-cluster-state new > e$i.log 2>&1 & done
sleep 6
run() { # target endpoint workload clients [--gateway]
  local out
  out=$("$B" bench "$3" --endpoints "$2" --clients "$4" --duration 5s --json ${5:-} 2>/dev/null \
    | python3 -c "import json,sys; r=json.load(sys.stdin); print('%.0f ops/s p50 %.2f ms p99 %.2f ms errors %d' % (r['ops_per_sec'], r['p50_ms'], r['p99_ms'], r['errors']))")
  echo "$1 $3 clients=$4 ${5:-grpc}: $out"
}
for round in A B; do
  for clients in 1 16 64; do
    for wl in put range; do
      run cairn 127.0.0.1:34379 $wl $clients
      run cairn 127.0.0.1:34379 $wl $clients --gateway
      run etcd 127.0.0.4:34379 $wl $clients
      run etcd 127.0.0.4:34379 $wl $clients --gateway
    done
  done
done
pkill -f "serve --name n[123] --data-dir c"; pkill -f "etcd --name e[123] --data-dir e"
sleep 1; rm -rf "$D"
