#!/usr/bin/env bash
# Preliminary put-throughput probe: 3-node Cairn vs 3-node etcd 3.4 on loopback, same disk.
set -u
B="$(cd "$(dirname "$0")/.." && pwd)/target/release"  # cargo build --release -p cairn --bin cairn -p cairn-tests --example putload
L=$B/examples/putload
rm -rf /tmp/qb && mkdir -p /tmp/qb && cd /tmp/qb
C=n1=127.0.0.1:32380,n2=127.0.0.2:32380,n3=127.0.0.3:32380
for i in 1 2 3; do $B/cairn serve --name n$i --data-dir c$i --client-addr 127.0.0.$i:32379 --peer-addr 127.0.0.$i:32380 --initial-cluster $C > c$i.log 2>&1 & done
E=e1=http://127.0.0.4:32380,e2=http://127.0.0.5:32380,e3=http://127.0.0.6:32380
for i in 1 2 3; do ip=127.0.0.$((i+3)); etcd --name e$i --data-dir e$i --listen-client-urls http://$ip:32379 --advertise-client-urls http://$ip:32379 --listen-peer-urls http://$ip:32380 --initial-advertise-peer-urls http://$ip:32380 --initial-cluster $E --initial-cluster-state new > e$i.log 2>&1 & done
sleep 5
CE=127.0.0.1:32379,127.0.0.2:32379,127.0.0.3:32379
EE=127.0.0.4:32379,127.0.0.5:32379,127.0.0.6:32379
for round in A B; do
  for clients in 1 16 64; do
    echo "cairn $round $($L $CE $clients 5)"
    echo "etcd  $round $($L $EE $clients 5)"
  done
done
pkill -f "cairn serve --name n"; pkill -f "etcd --name e"
