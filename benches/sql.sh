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
PG=$(ls -d /usr/lib/postgresql/*/bin | head -1)
cd "$D"
mkdir pg && chown postgres pg
runuser -u postgres -- "$PG/initdb" -D "$D/pg/data" -U cairn --auth=trust >/dev/null
runuser -u postgres -- "$PG/pg_ctl" -D "$D/pg/data" -o "-p 35432 -k $D/pg -c listen_addresses=127.0.0.1 -c max_connections=300" -l "$D/pg/log" -w start >/dev/null
mkdir my && chown mysql my
runuser -u mysql -- mariadb-install-db --no-defaults --datadir="$D/my/data" --auth-root-authentication-method=normal --skip-test-db >/dev/null
runuser -u mysql -- mariadbd --no-defaults --datadir="$D/my/data" --port=33306 --bind-address=127.0.0.1 --socket="$D/my/sock" --pid-file="$D/my/pid" --log-error="$D/my/err" --innodb-flush-log-at-trx-commit=1 --max-connections=300 &
sleep 5
psql() { runuser -u postgres -- "$PG/psql" -h 127.0.0.1 -p 35432 -U cairn -d postgres -q "$@"; }
my() { mariadb -h 127.0.0.1 -P 33306 -u root "$@"; }

echo "== the databases' own single-row commit rate (one INSERT per transaction)"
psql -c "CREATE TABLE one (id bigserial PRIMARY KEY, v bytea)"
echo "INSERT INTO one (v) VALUES ('\\x00');" > insert.sql
for c in 1 16 64; do
  tps=$(runuser -u postgres -- "$PG/pgbench" -h 127.0.0.1 -p 35432 -U cairn -n -f "$D/insert.sql" -c $c -j 2 -T 5 postgres 2>/dev/null | awk '/^tps/ {print $3; exit}')
  echo "postgres pgbench clients=$c: $tps tps"
done
my -e "CREATE DATABASE bench; CREATE TABLE bench.one (id BIGINT AUTO_INCREMENT PRIMARY KEY, v BLOB) ENGINE=InnoDB"
for c in 1 16 64; do
  q=$((c * 300))
  secs=$(mysqlslap -h 127.0.0.1 -P 33306 -u root --create-schema=bench --query="INSERT INTO one (v) VALUES ('x')" --concurrency=$c --number-of-queries=$q 2>/dev/null | awk '/Average number of seconds/ {print $9}')
  echo "mariadb mysqlslap clients=$c: $(python3 -c "print('%.0f' % ($q / $secs))" 2>/dev/null) tps ($q inserts in $secs s)"
done

run() { # label endpoints workload clients
  local out
  out=$("$B" bench "$3" --endpoints "$2" --clients "$4" --duration 5s --json 2>/dev/null \
    | python3 -c "import json,sys; r=json.load(sys.stdin); print('%.0f ops/s p50 %.2f ms p99 %.2f ms errors %d' % (r['ops_per_sec'], r['p50_ms'], r['p99_ms'], r['errors']))")
  echo "$1 $3 clients=$4: $out"
}
members() { # url count
  for i in $(seq 1 "$2"); do "$B" serve --backend "$1" --name m$i --client-addr 127.0.0.$i:36379 > m$i.log 2>&1 & done
  sleep 3
}
stop_members() { pkill -f "client-addr 127.0.0.[123]:36379"; sleep 1; }

for db in postgres mariadb; do
  for n in 1 3; do
    name="${db}_$n"
    if [ $db = postgres ]; then psql -c "CREATE DATABASE $name"; url=postgres://cairn@127.0.0.1:35432/$name
    else my -e "CREATE DATABASE $name"; url=mysql://root@127.0.0.1:33306/$name; fi
    members "$url" $n
    E=$(seq -s, -f "127.0.0.%g:36379" 1 $n)
    echo "== $db, $n member(s)"
    for clients in 1 16 64; do
      for wl in put txn range; do run "$db/$n" "$E" $wl $clients; done
    done
    stop_members
  done
done

echo "== latest-value prefix range (kine's query, 100 keys) as history grows (PostgreSQL, 1 member)"
psql -c "CREATE DATABASE history"
members postgres://cairn@127.0.0.1:35432/history 1
rangeq() { "$B" bench range --endpoints 127.0.0.1:36379 --clients 1 --duration 5s --key-space 10000 --range-keys 100 --no-prefill --json 2>/dev/null \
  | python3 -c "import json,sys; r=json.load(sys.stdin); print('p50 %.2f ms p99 %.2f ms' % (r['p50_ms'], r['p99_ms']))"; }
"$B" bench fill --endpoints 127.0.0.1:36379 --key-space 10000 --clients 16 >/dev/null 2>&1
echo "10 k history rows: $(rangeq)"
for i in $(seq 1 99); do "$B" bench fill --endpoints 127.0.0.1:36379 --key-space 10000 --clients 16 >/dev/null 2>&1; done
echo "1 M history rows: $(rangeq)"
stop_members
runuser -u postgres -- "$PG/pg_ctl" -D "$D/pg/data" -m fast stop >/dev/null
pkill -f "datadir=$D/my/data"
sleep 1; rm -rf "$D"
