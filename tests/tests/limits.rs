//! Limits against slow and hostile clients: a member's memory stays bounded and other clients
//! are served while one client holds thousands of idle streams, never reads what it asked
//! for, or creates watches without end; a connection gets at most
//! `--max-concurrent-streams` streams at once; and an idle cluster uses almost no CPU. The
//! first two and the last run on etcd as well (no flag); the others use Cairn's flags.
//! Memory is read from `/proc/<pid>/status` (VmRSS), CPU time from `/proc/<pid>/stat`; the
//! bounds are generous multiples of what Cairn uses (docs/security.md records the figures).

mod common;

use std::time::{Duration, Instant};

use cairn_tests::etcd_client::{Client, ConnectOptions};
use cairn_tests::{Cluster, ClusterOptions, Target};
use common::*;

const MIB: u64 = 1 << 20;

fn rss_bytes(cluster: &Cluster, i: usize) -> u64 {
    let pid = cluster.pid(i).expect("the node runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kb * 1024
}

/// A second client is served while the first misbehaves: a put and a linearizable get.
async fn others_are_served(cluster: &Cluster) -> Duration {
    let mut other = cluster.client(0).await.unwrap();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), async {
        other.put("limits/other", "ok", None).await.unwrap();
        let got = other.get("limits/other", None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"ok");
    })
    .await
    .expect("another client's put and get are served");
    started.elapsed()
}

async fn one_connection(cluster: &Cluster) -> Client {
    // One endpoint, one HTTP/2 connection: every watch() below is a stream on it.
    Client::connect([cluster.endpoint(0)], Some(ConnectOptions::new())).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn thousands_of_idle_watch_streams_cost_bounded_memory() {
    const STREAMS: u64 = 3000;
    let cluster = start(ClusterOptions::nodes(1)).await;
    let mut c = one_connection(&cluster).await;
    c.put("limits/idle", "v", None).await.unwrap();
    let before = rss_bytes(&cluster, 0);
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let stream = c.watch(format!("limits/idle/{i}"), None).await.unwrap();
        streams.push(stream);
    }
    // Every stream was created: its first response arrived.
    for s in streams.iter_mut() {
        let created = s.message().await.unwrap().expect("created response");
        assert!(created.created());
    }
    let after = rss_bytes(&cluster, 0);
    let per_stream = after.saturating_sub(before) / STREAMS;
    let latency = others_are_served(&cluster).await;
    eprintln!(
        "{STREAMS} idle watch streams: RSS {} -> {} MiB, {per_stream} bytes per stream; another client's put+get took {latency:?}",
        before / MIB,
        after / MIB
    );
    assert!(per_stream < 256 * 1024, "an idle watch stream costs {per_stream} bytes");
    // The streams still work.
    c.put("limits/idle/7", "x", None).await.unwrap();
    let event = streams[7].message().await.unwrap().expect("an event");
    assert_eq!(event.events()[0].kv().unwrap().value(), b"x");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_holds_bounded_memory() {
    const WATCHERS: usize = 100;
    const PUTS: usize = 300;
    let value = vec![b'v'; 64 * 1024];
    let cluster = start(ClusterOptions::nodes(1)).await;
    let mut c = one_connection(&cluster).await;
    // One stream with 100 watches of one key: each put is 100 events (6.4 MiB) for a client
    // that never reads them: 1.9 GiB in all if the member kept them.
    let mut stuck = c.watch("limits/stuck", None).await.unwrap();
    for _ in 1..WATCHERS {
        stuck.watch("limits/stuck", None).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes(&cluster, 0);
    let mut writer = cluster.client(0).await.unwrap();
    for _ in 0..PUTS {
        writer.put("limits/stuck", value.clone(), None).await.unwrap();
    }
    let latency = others_are_served(&cluster).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_bytes(&cluster, 0);
    let events_bytes = (WATCHERS * PUTS * value.len()) as u64;
    eprintln!(
        "a client that never reads {} MiB of events: RSS {} -> {} MiB; another client's put+get took {latency:?}",
        events_bytes / MIB,
        before / MIB,
        after / MIB
    );
    assert!(
        after.saturating_sub(before) < 256 * MIB,
        "RSS grew by {} MiB for an unread stream",
        after.saturating_sub(before) / MIB
    );
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_stream_of_watch_creates_is_capped_per_stream() {
    let target = Target::from_env();
    if target.is_etcd() {
        eprintln!("etcd has no per-stream watch limit: Cairn only");
        return;
    }
    let opts = ClusterOptions {
        nodes: 1,
        extra_args: vec!["--max-watches-per-stream".into(), "100".into()],
        ..Default::default()
    };
    let cluster = Cluster::start(target, opts).await.unwrap();
    let mut c = one_connection(&cluster).await;
    // watch() sends the first create; 4999 more follow on the same stream.
    let (mut sender, mut responses) = c.watch("limits/many", None).await.unwrap().split();
    let creates = tokio::spawn(async move {
        for _ in 1..5000 {
            sender.watch("limits/many", None).await.unwrap();
        }
        sender
    });
    let (mut created, mut refused) = (0, 0);
    while created + refused < 5000 {
        let r = responses.message().await.unwrap().expect("a response per create");
        assert!(r.created(), "{r:?}");
        if r.canceled() {
            assert!(r.cancel_reason().contains("too many watches on this stream"), "{}", r.cancel_reason());
            refused += 1;
        } else {
            created += 1;
        }
    }
    let _sender = creates.await.unwrap();
    assert_eq!((created, refused), (100, 4900));
    // The 100 watches work.
    c.put("limits/many", "x", None).await.unwrap();
    let mut seen = 0;
    while seen < 100 {
        let r = responses.message().await.unwrap().expect("events");
        seen += r.events().len();
    }
    others_are_served(&cluster).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_gets_at_most_max_concurrent_streams() {
    let target = Target::from_env();
    if target.is_etcd() {
        eprintln!("etcd 3.4 has no --max-concurrent-streams: Cairn only");
        return;
    }
    let opts = ClusterOptions {
        nodes: 1,
        extra_args: vec!["--max-concurrent-streams".into(), "8".into()],
        ..Default::default()
    };
    let cluster = Cluster::start(target, opts).await.unwrap();
    let mut c = one_connection(&cluster).await;
    let mut open = Vec::new();
    for i in 0..8 {
        open.push(c.watch(format!("limits/s{i}"), None).await.unwrap());
    }
    // The ninth waits for a stream to end; other connections are served meanwhile.
    let mut c2 = c.clone();
    let ninth = tokio::spawn(async move { c2.watch("limits/s8", None).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!ninth.is_finished(), "a ninth stream opened past --max-concurrent-streams 8");
    others_are_served(&cluster).await;
    drop(open.pop());
    tokio::time::timeout(Duration::from_secs(10), ninth)
        .await
        .expect("the ninth stream opens once one ended")
        .unwrap()
        .unwrap();
}

/// Request deadlines: with the quorum gone, a write does not wait forever — it fails with
/// etcd's Unavailable error ("request timed out", or "no leader" once the member knows it has
/// none) well before a patient client's own deadline. On Cairn and etcd alike.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_without_a_quorum_fails_within_the_request_timeout() {
    let cluster = start(ClusterOptions::nodes(3)).await;
    let survivor = 0;
    let mut c = cluster.client(survivor).await.unwrap();
    c.put("limits/deadline", "before", None).await.unwrap();
    cluster.kill(1).unwrap();
    cluster.kill(2).unwrap();
    let started = Instant::now();
    let put = tokio::time::timeout(Duration::from_secs(60), c.put("limits/deadline", "after", None))
        .await
        .expect("the member answers before the client gives up");
    let took = started.elapsed();
    let (code, message) = cairn_tests::grpc_code(&put.unwrap_err()).expect("a gRPC status");
    eprintln!("a write without a quorum failed after {took:?}: {code:?} {message}");
    assert_eq!(code, tonic::Code::Unavailable, "{message}");
    assert!(message == "etcdserver: request timed out" || message == "etcdserver: no leader", "{message}");
}

/// CPU time (user + system) process `pid` has used so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux reports in USER_HZ, 100 per second on every platform Cairn targets.
    Duration::from_millis(ticks * 10)
}

/// An idle cluster stays idle: no member spins. (Every member once burnt most of a core in
/// a loop that re-subscribed to openraft's metrics on each turn and so never waited.) The
/// bound is 10 % of a core, far above what heartbeats cost and far below any busy loop.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_cluster_does_not_spin() {
    let cluster = start_nodes(3).await;
    let mut c = cluster.client(0).await.unwrap();
    c.put("idle/settled", "yes", None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let window = Duration::from_secs(3);
    let before: Vec<Duration> = (0..3).map(|i| cpu_time(cluster.pid(i).unwrap())).collect();
    tokio::time::sleep(window).await;
    for (i, was) in before.into_iter().enumerate() {
        let used = cpu_time(cluster.pid(i).unwrap()) - was;
        assert!(used < window / 10, "member {i} used {used:?} of CPU in {window:?} while idle");
    }
}
