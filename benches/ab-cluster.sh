# Shared by benches/ab-put.sh and benches/ab-watch.sh (sourced, not run): start a 3-member
# Cairn or etcd 3.4 cluster on loopback under "$W", wait until it takes a put, stop it.
# Sets EPS (the client endpoints) and PID1 (member 1's pid); wait_ready uses "$GEN";
# all_rounds runs the caller's `run LABEL ROUND` on before ($A), after ($B) and, with ETCD=1,
# etcd, in turns, ROUNDS times.

start_cairn() { # bin dir
  local bin=$1 d=$2 C=n1=127.0.0.1:42380,n2=127.0.0.2:42380,n3=127.0.0.3:42380
  for i in 1 2 3; do
    "$bin" serve --name n$i --data-dir "$d/n$i" --client-addr 127.0.0.$i:42379 \
      --peer-addr 127.0.0.$i:42380 --initial-cluster $C >"$d/n$i.log" 2>&1 &
    [ $i = 1 ] && PID1=$!
  done
  EPS=127.0.0.1:42379,127.0.0.2:42379,127.0.0.3:42379
}
start_etcd() { # dir
  local d=$1 E=e1=http://127.0.0.4:42380,e2=http://127.0.0.5:42380,e3=http://127.0.0.6:42380
  for i in 1 2 3; do
    local ip=127.0.0.$((i + 3))
    /usr/bin/etcd --name e$i --data-dir "$d/e$i" --listen-client-urls http://$ip:42379 \
      --advertise-client-urls http://$ip:42379 --listen-peer-urls http://$ip:42380 \
      --initial-advertise-peer-urls http://$ip:42380 --initial-cluster $E \
      --initial-cluster-state new >"$d/e$i.log" 2>&1 &
    [ $i = 1 ] && PID1=$!
  done
  EPS=127.0.0.4:42379,127.0.0.5:42379,127.0.0.6:42379
}
stop_all() { # SIGTERM, then SIGKILL after 10 s: the next cluster needs the ports
  pkill -f "$W" || true
  for _ in $(seq 50); do pgrep -f "$W" >/dev/null || return 0; sleep 0.2; done
  echo "# a member did not stop within 10 s of SIGTERM: killed" >&2; pkill -9 -f "$W" || true; sleep 0.5
}
wait_ready() { # until a put succeeds
  for _ in $(seq 100); do
    "$GEN" bench put --endpoints "$EPS" --clients 1 --total 1 --json >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "cluster at $EPS did not become ready" >&2; return 1
}
all_rounds() {
  echo "# $(date -u) load: $(cut -d' ' -f1-3 /proc/loadavg)"
  for r in $(seq "$ROUNDS"); do
    for which in before after etcd; do
      [ "$which" = etcd ] && [ -z "${ETCD:-}" ] && continue
      d="$W/$which-$r"; mkdir -p "$d"
      case $which in before) start_cairn "$A" "$d" ;; after) start_cairn "$B" "$d" ;; etcd) start_etcd "$d" ;; esac
      run "$which" "$r"
      stop_all
    done
  done
  echo "# end load: $(cut -d' ' -f1-3 /proc/loadavg)"
}
