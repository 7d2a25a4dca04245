#!/usr/bin/env bash
# The in-process client against gRPC on loopback, on one member in the same process
# (issue 15): `cairn bench --embedded inproc|inproc-channel|grpc` (the client calling the
# services directly; the same services over HTTP/2 on in-memory pipes, as before 0.3), put, range and lock (etcd's Lock service:
# lock + unlock of an uncontended name, the cost of the lock recipe's round trips),
# 1/16/64 clients, rounds in alternation. Usage: benches/embedded.sh [path/to/release/cairn]
set -u
B=${1:-"$(cd "$(dirname "$0")/.." && pwd)/target/release/cairn"}
run() { # workload clients mode
  local out
  out=$("$B" bench "$1" --embedded "$3" --clients "$2" --duration 5s --json 2>/dev/null \
    | python3 -c "import json,sys; r=json.load(sys.stdin); print('%.0f ops/s p50 %.3f ms p99 %.3f ms client CPU %.1f us/op' % (r['ops_per_sec'], r['p50_ms'], r['p99_ms'], 1e6 * r['client_cpu_s'] / max(r['ops'], 1)))")
  echo "$1 clients=$2 $3: $out"
}
for round in A B; do
  for clients in 1 16 64; do
    for wl in put range lock; do
      run $wl $clients inproc
      run $wl $clients inproc-channel
      run $wl $clients grpc
    done
  done
done
