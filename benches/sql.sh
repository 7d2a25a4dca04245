#!/usr/bin/env bash
# The SQL adapter (issue 13): put, txn and range throughput and latency on PostgreSQL 15 and
# MariaDB 10.11 (throwaway servers on loopback, fsync on), through 1 and 3 members, from 1,
# 16 and 64 clients; beside each database's own single-row commit rate on the same server
# (pgbench / mysqlslap with a one-row insert per transaction) as the physical limit; and the
# latency of a latest-value prefix range (kine's query) at 10 k and at 1 M history rows.
# Usage (as root): benches/sql.sh [path/to/release/cairn]
set -u
B=${1:-"$(cd "$(dirname "$0")/.." && pwd)/target/release/cairn"}
D=$(mktemp -d /tmp/cairn-sql-bench.XXXX); chmod 755 "$D"
. "$(dirname "$0")/sql-databases.sh"
start_databases
commit_rates

run() { # label endpoints workload clients
  local out
  out=$("$B" bench "$3" --endpoints "$2" --clients "$4" --duration 5s --json 2>/dev/null \
    | python3 -c "import json,sys; r=json.load(sys.stdin); print('%.0f ops/s p50 %.2f ms p99 %.2f ms errors %d' % (r['ops_per_sec'], r['p50_ms'], r['p99_ms'], r['errors']))")
  echo "$1 $3 clients=$4: $out"
}

for db in postgres mariadb; do
  for n in 1 3; do
    url=$(new_database $db "${db}_$n")
    members "$B" "$url" $n
    E=$(seq -s, -f "127.0.0.%g:36379" 1 $n)
    echo "== $db, $n member(s)"
    for clients in 1 16 64; do
      for wl in put txn range; do run "$db/$n" "$E" $wl $clients; done
    done
    stop_members
  done
done

echo "== latest-value prefix range (kine's query, 100 keys) as history grows (PostgreSQL, 1 member)"
members "$B" "$(new_database postgres history)" 1
rangeq() { "$B" bench range --endpoints 127.0.0.1:36379 --clients 1 --duration 5s --key-space 10000 --range-keys 100 --no-prefill --json 2>/dev/null \
  | python3 -c "import json,sys; r=json.load(sys.stdin); print('p50 %.2f ms p99 %.2f ms' % (r['p50_ms'], r['p99_ms']))"; }
"$B" bench fill --endpoints 127.0.0.1:36379 --key-space 10000 --clients 16 >/dev/null 2>&1
echo "10 k history rows: $(rangeq)"
for i in $(seq 1 99); do "$B" bench fill --endpoints 127.0.0.1:36379 --key-space 10000 --clients 16 >/dev/null 2>&1; done
echo "1 M history rows: $(rangeq)"
stop_members
stop_databases
