# Sourced by benches/sql.sh and benches/sql-puts.sh: throwaway PostgreSQL 15 and MariaDB 10.11
# on loopback (fsync on, `innodb_flush_log_at_trx_commit=1`) in the directory $D, their own
# single-row commit rate, and Cairn members on them. Run as root.
PG=$(ls -d /usr/lib/postgresql/*/bin | head -1)
# PIN=1: the databases on CPU 1, everything else (members, bench, pgbench, mysqlslap) on
# CPU 0, so that a database gets the same share of the machine in its own commit-rate
# measurement and under Cairn (as on a server of its own).
DB_PIN="" CLIENT_PIN=""
if [ "${PIN:-0}" = 1 ]; then DB_PIN="taskset -c 1" CLIENT_PIN="taskset -c 0"; fi

start_databases() {
  cd "$D" || exit 1
  mkdir pg && chown postgres pg
  runuser -u postgres -- "$PG/initdb" -D "$D/pg/data" -U cairn --auth=trust >/dev/null
  # A server left running by an earlier run would be measured instead: refuse.
  if ss -ltn | grep -qE ':(35432|33306) '; then echo "port 35432 or 33306 is taken: stop the old server first" >&2; exit 1; fi
  $DB_PIN runuser -u postgres -- "$PG/pg_ctl" -D "$D/pg/data" -o "-p 35432 -k $D/pg -c listen_addresses=127.0.0.1 -c max_connections=300" -l "$D/pg/log" -w start >/dev/null || exit 1
  mkdir my && chown mysql my
  runuser -u mysql -- mariadb-install-db --no-defaults --datadir="$D/my/data" --auth-root-authentication-method=normal --skip-test-db >/dev/null
  $DB_PIN runuser -u mysql -- mariadbd --no-defaults --datadir="$D/my/data" --port=33306 --bind-address=127.0.0.1 --socket="$D/my/sock" --pid-file="$D/my/pid" --log-error="$D/my/err" --innodb-flush-log-at-trx-commit=1 --max-connections=300 &
  sleep 5
}

psql() { runuser -u postgres -- "$PG/psql" -h 127.0.0.1 -p 35432 -U cairn -d postgres -q "$@"; }
my() { mariadb -h 127.0.0.1 -P 33306 -u root "$@"; }

# Each database's own single-row commit rate (one INSERT per transaction): the physical limit.
commit_rates() {
  echo "== the databases' own single-row commit rate (one INSERT per transaction)"
  psql -c "CREATE TABLE one (id bigserial PRIMARY KEY, v bytea)"
  echo "INSERT INTO one (v) VALUES ('\\x00');" > "$D/insert.sql"
  my -e "CREATE DATABASE bench; CREATE TABLE bench.one (id BIGINT AUTO_INCREMENT PRIMARY KEY, v BLOB) ENGINE=InnoDB"
  for c in 1 16 64; do
    tps=$($CLIENT_PIN runuser -u postgres -- "$PG/pgbench" -h 127.0.0.1 -p 35432 -U cairn -n -f "$D/insert.sql" -c $c -j 2 -T 5 postgres 2>/dev/null | awk '/^tps/ {print $3; exit}')
    echo "postgres pgbench clients=$c: $tps tps"
  done
  for c in 1 16 64; do
    q=$((c * 2000))
    secs=$($CLIENT_PIN mysqlslap -h 127.0.0.1 -P 33306 -u root --create-schema=bench --query="INSERT INTO one (v) VALUES ('x')" --concurrency=$c --number-of-queries=$q 2>/dev/null | awk '/Average number of seconds/ {print $9}')
    echo "mariadb mysqlslap clients=$c: $(python3 -c "print('%.0f' % ($q / $secs))" 2>/dev/null) tps ($q inserts in $secs s)"
  done
}

# A fresh database named $2 on $1 (postgres|mariadb); prints its backend URL.
new_database() {
  if [ "$1" = postgres ]; then psql -c "CREATE DATABASE $2" >/dev/null; echo "postgres://cairn@127.0.0.1:35432/$2"
  else my -e "CREATE DATABASE $2" >/dev/null; echo "mysql://root@127.0.0.1:33306/$2"; fi
}

members() { # binary url count: members on 127.0.0.N:36379
  for i in $(seq 1 "$3"); do $CLIENT_PIN "$1" serve --backend "$2" --name m$i --client-addr 127.0.0.$i:36379 > "$D/m$i.log" 2>&1 & done
  sleep 3
}
stop_members() { pkill -f "client-addr 127.0.0.[123]:36379"; sleep 1; }

stop_databases() {
  runuser -u postgres -- "$PG/pg_ctl" -D "$D/pg/data" -m fast stop >/dev/null
  pkill -f "datadir=$D/my/data"
  sleep 1; rm -rf "$D"
}
