//! Replication and crash recovery: writes through followers, leader crash, catch-up by log and by
//! snapshot, whole-cluster crash. Only acknowledged writes are required to survive.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Result};
use cairn_tests::etcd_client::GetOptions;
use cairn_tests::{Cluster, ClusterOptions};
use common::*;

/// Writes through each follower are visible to linearizable reads on every node; a paused follower
/// catches up when resumed.
#[tokio::test(flavor = "multi_thread")]
async fn writes_through_followers_visible_everywhere() {
    let cluster = start_nodes(3).await;
    writes_through_followers_body(&cluster).await.unwrap();
}

async fn writes_through_followers_body(cluster: &Cluster) -> Result<()> {
    let followers = cluster.followers().await?;
    ensure!(followers.len() == 2, "3 nodes = 1 leader + 2 followers, got {followers:?}");
    let mut acked = BTreeMap::new();
    for &f in &followers {
        let mut c = cluster.client(f).await?;
        for n in 0..20 {
            let (k, v) = (format!("repl/follow/f{f}/{n:03}"), format!("v{n}-via-{f}"));
            c.put(k.as_str(), v.as_str(), None).await?;
            acked.insert(k.clone(), v);
            // Read-your-write on every node, immediately (linearizable).
            for j in 0..cluster.len() {
                let resp = cluster.client(j).await?.get(k.as_str(), None).await?;
                ensure!(
                    resp.kvs().first().map(|kv| kv.value()) == Some(acked[&k].as_bytes()),
                    "node {j} does not see {k} right after it was acknowledged by node {f}"
                );
            }
        }
    }
    let mut revs = Vec::new();
    for j in 0..cluster.len() {
        check_acked(j, &read_prefix(cluster, j, "repl/follow/", false).await?, &acked)?;
        revs.push(current_rev(&mut cluster.client(j).await?).await?);
    }
    ensure!(revs.windows(2).all(|w| w[0] == w[1]), "nodes report different revisions: {revs:?}");

    // A paused follower misses writes, then catches up once resumed.
    let paused = followers[0];
    cluster.pause(paused)?;
    let other = (0..cluster.len()).find(|&j| j != paused).unwrap();
    let mut c = cluster.client(other).await?;
    for n in 0..20 {
        let (k, v) = (format!("repl/follow/paused/{n:03}"), format!("p{n}"));
        c.put(k.as_str(), v.as_str(), None).await?;
        acked.insert(k, v);
    }
    cluster.resume(paused)?;
    wait_caught_up(cluster, paused, "repl/follow/", &acked, CONVERGE).await?;
    check_acked(paused, &read_prefix(cluster, paused, "repl/follow/", false).await?, &acked)?;
    Ok(())
}

/// A write through a follower is answered only once that follower applied it (as etcd does):
/// a serializable read on the same member right after sees it, at a revision no older than the
/// write's. Also with many writes in flight at once (the forwarding stream).
#[tokio::test(flavor = "multi_thread")]
async fn follower_reads_its_own_writes() {
    let cluster = start_nodes(3).await;
    follower_reads_its_own_writes_body(&cluster).await.unwrap();
}

async fn follower_reads_its_own_writes_body(cluster: &Cluster) -> Result<()> {
    for f in cluster.followers().await? {
        let mut tasks = Vec::new();
        for w in 0..8 {
            let mut c = cluster.client(f).await?;
            tasks.push(tokio::spawn(async move {
                for n in 0..25 {
                    let k = format!("ryw/f{f}/w{w}/{n:03}");
                    let put = c.put(k.as_str(), "v", None).await?;
                    let written = put.header().map_or(0, |h| h.revision());
                    let get = c.get(k.as_str(), Some(GetOptions::new().with_serializable())).await?;
                    let read = get.header().map_or(0, |h| h.revision());
                    ensure!(get.kvs().len() == 1, "member {f} does not see {k} right after acknowledging it");
                    ensure!(
                        read >= written,
                        "member {f} read {k} at revision {read}, older than its write at {written}"
                    );
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for t in tasks {
            t.await.map_err(|e| anyhow!("writer task: {e}"))??;
        }
    }
    Ok(())
}

/// kill -9 the leader while writers run: writes continue through the others, no acknowledged
/// write is lost, and the old leader catches up after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn leader_crash() {
    let cluster = start_nodes(3).await;
    leader_crash_body(&cluster).await.unwrap();
}

async fn leader_crash_body(cluster: &Cluster) -> Result<()> {
    let prefix = "repl/leader-crash/";
    let all: Vec<usize> = (0..cluster.len()).collect();
    let old_leader = cluster.leader().await?;
    let writers = Writers::start(cluster, &all, prefix, 3).await?;
    writers.wait_for(30, CONVERGE).await?;

    cluster.kill(old_leader)?;
    let at_kill = writers.acked_count();
    // Writes keep being acknowledged once the survivors have elected a new leader.
    writers.wait_for(at_kill + 60, Duration::from_secs(60)).await?;
    let acked = writers.stop().await?;

    let new_leader = cluster.leader().await?;
    ensure!(new_leader != old_leader, "the killed node cannot be the leader");
    for j in cluster.live_nodes() {
        check_acked(j, &read_prefix(cluster, j, prefix, false).await?, &acked)?;
    }

    // More writes while it is down, then restart it: it catches up.
    let mut c = cluster.client(new_leader).await?;
    let mut acked = acked;
    for n in 0..20 {
        let (k, v) = (format!("{prefix}after/{n:03}"), format!("a{n}"));
        c.put(k.as_str(), v.as_str(), None).await?;
        acked.insert(k, v);
    }
    cluster.restart(old_leader)?;
    wait_caught_up(cluster, old_leader, prefix, &acked, CONVERGE).await?;
    // The latest value of an overwritten key, too.
    let last = format!("{prefix}latest");
    for n in 0..5 {
        c.put(last.as_str(), format!("l{n}"), None).await?;
    }
    acked.insert(last.clone(), "l4".into());
    wait_caught_up(cluster, old_leader, prefix, &acked, CONVERGE).await?;
    cluster.wait_ready(CONVERGE).await?;
    for j in 0..cluster.len() {
        check_acked(j, &read_prefix(cluster, j, prefix, false).await?, &acked)?;
    }
    ensure!(cluster.unexpected_exits().is_empty(), "crashed: {:?}", cluster.unexpected_exits());
    Ok(())
}

/// A follower kept down while many more entries than `--snapshot-count` are written (so the
/// leader has purged the log it would need; etcd additionally keeps 5000 entries for slow
/// followers, hence 6000 writes) catches up after a restart, through a snapshot.
#[tokio::test(flavor = "multi_thread")]
async fn follower_catches_up_from_snapshot() {
    let cluster = start(ClusterOptions { snapshot_count: Some(100), ..ClusterOptions::nodes(3) }).await;
    follower_snapshot_body(&cluster).await.unwrap();
}

async fn follower_snapshot_body(cluster: &Cluster) -> Result<()> {
    const KEYS: usize = 6000;
    const CONCURRENCY: usize = 32;
    let prefix = "repl/snap/";
    let down = cluster.followers().await?[0];
    cluster.kill(down)?;
    let up: Vec<usize> = (0..cluster.len()).filter(|&i| i != down).collect();

    // KEYS writes, CONCURRENCY at a time, each through a live node.
    let client = cluster.client_with(&up, cairn_tests::default_connect_options()).await?;
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            for n in (t..KEYS).step_by(CONCURRENCY) {
                let (k, v) = (format!("{prefix}{n:05}"), format!("value-{n}"));
                let deadline = Instant::now() + Duration::from_secs(30);
                if !put_retrying(&mut client, &k, &v, deadline, None).await {
                    return Err(anyhow!("put {k} not acknowledged within 30 s"));
                }
                acked.insert(k, v);
            }
            Ok(acked)
        }));
    }
    let mut acked = BTreeMap::new();
    for t in tasks {
        acked.extend(t.await??);
    }
    ensure!(acked.len() == KEYS, "all {KEYS} writes acknowledged");

    cluster.restart(down)?;
    wait_caught_up(cluster, down, prefix, &acked, Duration::from_secs(60)).await?;
    let resp = cluster
        .client(down)
        .await?
        .get(prefix, Some(GetOptions::new().with_prefix().with_count_only().with_serializable()))
        .await?;
    ensure!(resp.count() == KEYS as i64, "restarted node counts {} keys", resp.count());
    // Cairn says in its log how it caught up: make sure this test took the snapshot path.
    if matches!(cluster.target(), cairn_tests::Target::Cairn { .. }) {
        let log = std::fs::read_to_string(cluster.log_path(down))?;
        ensure!(log.contains("installed snapshot"), "the restarted node caught up without a snapshot");
    }
    // It serves linearizable reads again and writes through it work.
    cluster.wait_node_ready(down, CONVERGE).await?;
    cluster.client(down).await?.put(format!("{prefix}via-restarted"), "x", None).await?;
    ensure!(cluster.unexpected_exits().is_empty(), "crashed: {:?}", cluster.unexpected_exits());
    Ok(())
}

/// kill -9 every node while writers run; after restarting them all, every acknowledged write is
/// there on every node.
#[tokio::test(flavor = "multi_thread")]
async fn whole_cluster_crash() {
    let cluster = start_nodes(3).await;
    whole_cluster_crash_body(&cluster).await.unwrap();
}

async fn whole_cluster_crash_body(cluster: &Cluster) -> Result<()> {
    let prefix = "repl/crash-all/";
    let all: Vec<usize> = (0..cluster.len()).collect();
    let writers = Writers::start(cluster, &all, prefix, 4).await?;
    writers.wait_for(200, CONVERGE).await?;
    cluster.kill_all()?;
    // Includes acknowledgements that raced with the kill: acknowledged = committed = durable.
    let acked = writers.stop().await?;

    cluster.restart_stopped()?;
    cluster.wait_ready(Duration::from_secs(60)).await?;
    for j in 0..cluster.len() {
        check_acked(j, &read_prefix(cluster, j, prefix, false).await?, &acked)?;
    }
    // And the cluster takes writes again.
    cluster.client(0).await?.put(format!("{prefix}after"), "x", None).await?;
    ensure!(cluster.unexpected_exits().is_empty(), "crashed: {:?}", cluster.unexpected_exits());
    Ok(())
}

/// Rolling graceful restart (SIGTERM, leader included): every node exits within the grace period,
/// no acknowledged write is lost, and the cluster keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn rolling_graceful_restart() {
    let cluster = start_nodes(3).await;
    rolling_graceful_restart_body(&cluster).await.unwrap();
}

async fn rolling_graceful_restart_body(cluster: &Cluster) -> Result<()> {
    let prefix = "repl/rolling/";
    let mut acked = BTreeMap::new();
    let leader = cluster.leader().await?;
    // Leader last.
    let order: Vec<usize> = (0..cluster.len()).filter(|&i| i != leader).chain([leader]).collect();
    for (round, &i) in order.iter().enumerate() {
        let other = (0..cluster.len()).find(|&j| j != i).unwrap();
        let mut c = cluster.client(other).await?;
        let deadline = Instant::now() + CONVERGE;
        for n in 0..10 {
            let (k, v) = (format!("{prefix}r{round}/{n:03}"), format!("v{n}"));
            ensure!(put_retrying(&mut c, &k, &v, deadline, None).await, "put {k}");
            acked.insert(k, v);
        }
        cluster.terminate(i).await?;
        ensure!(!cluster.is_running(i), "node {i} still running after SIGTERM");
        let survivors: Vec<usize> = cluster.live_nodes();
        let mut c = cluster.client_with(&survivors, cairn_tests::default_connect_options()).await?;
        let deadline = Instant::now() + CONVERGE;
        for n in 0..10 {
            let (k, v) = (format!("{prefix}r{round}/down/{n:03}"), format!("d{n}"));
            ensure!(put_retrying(&mut c, &k, &v, deadline, None).await, "put {k} with node {i} down");
            acked.insert(k, v);
        }
        cluster.restart(i)?;
        cluster.wait_node_ready(i, CONVERGE).await?;
        wait_caught_up(cluster, i, prefix, &acked, CONVERGE).await?;
    }
    for j in 0..cluster.len() {
        check_acked(j, &read_prefix(cluster, j, prefix, false).await?, &acked)?;
    }
    Ok(())
}
