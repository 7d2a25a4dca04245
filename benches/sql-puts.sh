#!/usr/bin/env bash
# Put throughput of the SQL adapter, two builds side by side (a change's before and after),
# on PostgreSQL 15 and MariaDB 10.11 started by the script (loopback, fsync on), beside each
# database's own single-row commit rate (pgbench / mysqlslap, as in benches/sql.sh).
# Rounds alternate the two builds. Usage (as root): benches/sql-puts.sh BEFORE AFTER [rounds]
set -u
OLD=$1 NEW=$2 ROUNDS=${3:-2}
D=$(mktemp -d /tmp/cairn-sql-puts.XXXX); chmod 755 "$D"
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
my -e "CREATE DATABASE bench; CREATE TABLE bench.one (id BIGINT AUTO_INCREMENT PRIMARY KEY, v BLOB) ENGINE=InnoDB"
for c in 1 16 64; do
  tps=$(runuser -u postgres -- "$PG/pgbench" -h 127.0.0.1 -p 35432 -U cairn -n -f "$D/insert.sql" -c $c -j 2 -T 5 postgres 2>/dev/null | awk '/^tps/ {print $3; exit}')
  echo "postgres pgbench clients=$c: $tps tps"
  q=$((c * 300))
  secs=$(mysqlslap -h 127.0.0.1 -P 33306 -u root --create-schema=bench --query="INSERT INTO one (v) VALUES ('x')" --concurrency=$c --number-of-queries=$q 2>/dev/null | awk '/Average number of seconds/ {print $9}')
  echo "mariadb mysqlslap clients=$c: $(python3 -c "print('%.0f' % ($q / $secs))" 2>/dev/null) tps"
done

members() { # binary url count
  for i in $(seq 1 "$3"); do "$1" serve --backend "$2" --name m$i --client-addr 127.0.0.$i:36379 > m$i.log 2>&1 & done
  sleep 3
}
stop_members() { pkill -f "client-addr 127.0.0.[123]:36379"; sleep 1; }
n=0
for round in $(seq 1 "$ROUNDS"); do
  for build in before after; do
    B=$OLD; [ $build = after ] && B=$NEW
    for db in postgres mariadb; do
      for m in 1 3; do
        n=$((n + 1)); name="${db}_$n"
        if [ $db = postgres ]; then psql -c "CREATE DATABASE $name"; url=postgres://cairn@127.0.0.1:35432/$name
        else my -e "CREATE DATABASE $name"; url=mysql://root@127.0.0.1:33306/$name; fi
        members "$B" "$url" $m
        E=$(seq -s, -f "127.0.0.%g:36379" 1 $m)
        for clients in 1 16 64; do
          [ $m = 3 ] && [ $clients != 64 ] && continue
          out=$("$B" bench put --endpoints "$E" --clients $clients --duration 5s --json 2>/dev/null \
            | python3 -c "import json,sys; r=json.load(sys.stdin); print('%.0f ops/s p50 %.2f ms p99 %.2f ms errors %d' % (r['ops_per_sec'], r['p50_ms'], r['p99_ms'], r['errors']))")
          echo "round $round $build $db members=$m put clients=$clients: $out"
        done
        stop_members
      done
    done
  done
done
runuser -u postgres -- "$PG/pg_ctl" -D "$D/pg/data" -m fast stop >/dev/null
pkill -f "datadir=$D/my/data"
sleep 1; rm -rf "$D"
