#!/usr/bin/env bash
# Put throughput of the SQL adapter, two builds side by side (a change's before and after),
# on PostgreSQL 15 and MariaDB 10.11 started by the script (loopback, fsync on), beside each
# database's own single-row commit rate (pgbench / mysqlslap, as in benches/sql.sh).
# Rounds alternate the two builds. Usage (as root): [PIN=1] benches/sql-puts.sh BEFORE AFTER [rounds]
# (PIN: see benches/sql-databases.sh)
set -u
OLD=$1 NEW=$2 ROUNDS=${3:-2}
D=$(mktemp -d /tmp/cairn-sql-puts.XXXX); chmod 755 "$D"
. "$(dirname "$0")/sql-databases.sh"
start_databases
commit_rates

n=0
for round in $(seq 1 "$ROUNDS"); do
  for build in before after; do
    B=$OLD; [ $build = after ] && B=$NEW
    for db in postgres mariadb; do
      for m in 1 3; do
        n=$((n + 1))
        members "$B" "$(new_database $db "${db}_$n")" $m
        E=$(seq -s, -f "127.0.0.%g:36379" 1 $m)
        for clients in 1 16 64; do
          [ $m = 3 ] && [ $clients != 64 ] && continue
          out=$($CLIENT_PIN "$B" bench put --endpoints "$E" --clients $clients --duration 5s --json 2>/dev/null \
            | python3 -c "import json,sys; r=json.load(sys.stdin); print('%.0f ops/s p50 %.2f ms p99 %.2f ms errors %d' % (r['ops_per_sec'], r['p50_ms'], r['p99_ms'], r['errors']))")
          echo "round $round $build $db members=$m put clients=$clients: $out"
        done
        stop_members
      done
    done
  done
done
stop_databases
