//! Compatibility with the previous release (ARCHITECTURE.md, "Compatibility"): a data
//! directory it wrote opens with this binary with revisions, history, the compaction point
//! and leases intact, and a 3-member cluster upgraded one member at a time while clients
//! write loses no acknowledged write. Cairn only (etcd cannot read Cairn's data).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use cairn_tests::etcd_client::{Client, GetOptions};
use cairn_tests::{free_port, previous_release_bin, Cluster, ClusterOptions, Code, Target};
use common::*;

/// The data directory `tests/fixtures/make-v0.1-data.sh` made with release 0.1.
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/v0.1-data.tar.gz");

fn cairn_bin() -> Option<std::path::PathBuf> {
    match Target::from_env() {
        Target::Cairn { bin } => Some(bin),
        Target::Etcd { .. } => None,
    }
}

struct Served {
    child: Child,
    endpoint: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cairn serve --name fixture` on `data_dir`, waiting until it answers.
async fn serve_fixture(bin: &Path, data_dir: &Path) -> Result<(Served, Client)> {
    let ip = std::net::Ipv4Addr::LOCALHOST;
    let client_addr = format!("127.0.0.1:{}", free_port(ip)?);
    let peer_addr = format!("127.0.0.1:{}", free_port(ip)?);
    let child = Command::new(bin)
        .args(["serve", "--name", "fixture", "--data-dir"])
        .arg(data_dir)
        .args(["--client-addr", &client_addr, "--peer-addr", &peer_addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting cairn on the fixture")?;
    let served = Served { child, endpoint: client_addr };
    let deadline = Instant::now() + CONVERGE;
    loop {
        if let Ok(mut c) = Client::connect([served.endpoint.as_str()], None).await {
            if c.get("a", None).await.is_ok() {
                return Ok((served, c));
            }
        }
        ensure!(Instant::now() < deadline, "cairn did not serve the fixture in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn value_at(resp: &cairn_tests::etcd_client::GetResponse) -> Option<(String, i64, i64, i64)> {
    resp.kvs().first().map(|kv| {
        (
            String::from_utf8_lossy(kv.value()).into_owned(),
            kv.create_revision(),
            kv.mod_revision(),
            kv.version(),
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_directory_of_the_previous_release_opens_intact() {
    let Some(bin) = cairn_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let untar = Command::new("tar").arg("-xzf").arg(FIXTURE).arg("-C").arg(dir.path()).status().unwrap();
    assert!(untar.success(), "cannot unpack {FIXTURE}");
    let data = dir.path().join("data");
    fixture_body(&bin, &data).await.unwrap();
    // Again, now that this version marked and wrote it: the first run's write is there.
    let (_served, mut c) = serve_fixture(&bin, &data).await.unwrap();
    let a = c.get("a", None).await.unwrap();
    assert_eq!(value_at(&a), Some(("4".into(), 2, 10, 4)));
    assert_eq!(a.header().unwrap().revision(), 10);
}

async fn fixture_body(bin: &Path, data: &Path) -> Result<()> {
    let (_served, mut c) = serve_fixture(bin, data).await?;
    // Current state and revisions (see make-v0.1-data.sh).
    let a = c.get("a", None).await?;
    ensure!(a.header().map(|h| h.revision()) == Some(9), "current revision: {:?}", a.header());
    ensure!(value_at(&a) == Some(("3".into(), 2, 9, 3)), "a: {:?}", value_at(&a));
    let c1 = c.get("c", None).await?;
    ensure!(value_at(&c1) == Some(("1".into(), 6, 6, 1)), "c: {:?}", value_at(&c1));
    ensure!(c.get("b", None).await?.kvs().is_empty(), "b was deleted at 5");
    let t = c.get("t", Some(GetOptions::new().with_prefix())).await?;
    let txn: Vec<(String, i64)> = t
        .kvs()
        .iter()
        .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.mod_revision()))
        .collect();
    ensure!(txn == vec![("t1".into(), 8), ("t2".into(), 8)], "the txn's keys share revision 8: {txn:?}");
    // History above the compaction point, and the point itself.
    let at4 = c.get("a", Some(GetOptions::new().with_revision(4))).await?;
    ensure!(value_at(&at4) == Some(("2".into(), 2, 4, 2)), "a at 4: {:?}", value_at(&at4));
    let b4 = c.get("b", Some(GetOptions::new().with_revision(4))).await?;
    ensure!(value_at(&b4).map(|v| v.0) == Some("1".into()), "b at 4 (deleted at 5): {:?}", value_at(&b4));
    let b5 = c.get("b", Some(GetOptions::new().with_revision(5))).await?;
    ensure!(b5.kvs().is_empty(), "b at 5 is deleted");
    let below = c.get("a", Some(GetOptions::new().with_revision(3))).await;
    ensure!(
        matches!(&below, Err(cairn_tests::etcd_client::Error::GRpcStatus(s)) if s.code() == Code::OutOfRange),
        "a read below the compaction point (4) must be refused as compacted: {below:?}"
    );
    // The lease and its key.
    let leases = c.leases().await?;
    ensure!(leases.leases().len() == 1, "one lease: {:?}", leases.leases());
    let id = leases.leases()[0].id();
    let ttl = c
        .lease_time_to_live(id, Some(cairn_tests::etcd_client::LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    ensure!(
        ttl.granted_ttl() == 3600 && ttl.ttl() > 3000,
        "lease TTL {} of {}",
        ttl.ttl(),
        ttl.granted_ttl()
    );
    ensure!(ttl.keys() == [b"leased".to_vec()], "lease keys: {:?}", ttl.keys());
    let leased = c.get("leased", None).await?;
    ensure!(leased.kvs().first().map(|kv| kv.lease()) == Some(id), "leased key carries the lease");
    // The next write continues the revision sequence.
    let put = c.put("a", "4", None).await?;
    ensure!(put.header().map(|h| h.revision()) == Some(10), "next revision: {:?}", put.header());
    Ok(())
}

/// Three members of the previous release, upgraded one at a time (followers first) while
/// writers keep writing through every member: every acknowledged write is on every member
/// at the end, and writes go on while members of both versions run together.
#[tokio::test(flavor = "multi_thread")]
async fn rolling_upgrade_from_the_previous_release_loses_no_write() {
    let Some(new_bin) = cairn_bin() else { return };
    let old_bin = previous_release_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let cluster = Cluster::start(Target::Cairn { bin: old_bin }, ClusterOptions::nodes(3))
        .await
        .unwrap_or_else(|e| panic!("previous-release cluster did not start: {e:#}"));
    rolling_upgrade_body(&cluster, &new_bin).await.unwrap();
}

async fn rolling_upgrade_body(cluster: &Cluster, new_bin: &Path) -> Result<()> {
    let prefix = "upgrade/rolling/";
    let all: Vec<usize> = (0..cluster.len()).collect();
    let writers = Writers::start(cluster, &all, prefix, 4).await?;
    writers.wait_for(50, CONVERGE).await?;
    let leader = cluster.leader().await?;
    let order: Vec<usize> = all.iter().copied().filter(|&i| i != leader).chain([leader]).collect();
    for &i in &order {
        let before = writers.acked_count();
        // Members of both versions ran together: none of the old ones may have stopped (a
        // command it cannot apply would stop it).
        ensure!(cluster.unexpected_exits().is_empty(), "members exited: {:?}", cluster.unexpected_exits());
        ensure!(cluster.is_running(i), "node {i} stopped before its upgrade");
        cluster.terminate(i).await?;
        cluster.set_node_bin(i, new_bin.to_path_buf());
        cluster.restart(i)?;
        cluster.wait_node_ready(i, CONVERGE).await?;
        // Mixed versions serve writes.
        writers.wait_for(before + 50, CONVERGE).await.with_context(|| format!("after upgrading node {i}"))?;
    }
    let acked = writers.stop().await?;
    ensure!(cluster.unexpected_exits().is_empty(), "members exited: {:?}", cluster.unexpected_exits());
    for i in all {
        wait_caught_up(cluster, i, prefix, &acked, CONVERGE).await?;
        check_acked(i, &read_prefix(cluster, i, prefix, false).await?, &acked)?;
    }
    Ok(())
}

/// Snapshots cross between releases both ways: a member of this release that was down while
/// the log moved on catches up from a previous-release leader's snapshot file, and a
/// previous-release member catches up from a snapshot this release writes out only when it
/// sends it (0.2: snapshots are the live state). Every acknowledged write is on both.
#[tokio::test(flavor = "multi_thread")]
async fn snapshots_cross_between_releases_both_ways() {
    let Some(new_bin) = cairn_bin() else { return };
    let old_bin = previous_release_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let opts = ClusterOptions { snapshot_count: Some(100), ..ClusterOptions::nodes(3) };
    let cluster = Cluster::start(Target::Cairn { bin: old_bin.clone() }, opts)
        .await
        .unwrap_or_else(|e| panic!("previous-release cluster did not start: {e:#}"));
    snapshots_across_body(&cluster, &old_bin, &new_bin).await.unwrap();
}

/// More writes than the leader keeps in its log behind a snapshot (at most 5000) while
/// member `down` is stopped; then it restarts on `bin` and must have caught up by snapshot.
async fn catch_up_by_snapshot(cluster: &Cluster, down: usize, bin: &Path, prefix: &str) -> Result<()> {
    const WRITES: usize = 6000;
    cluster.terminate(down).await?;
    let up: Vec<usize> = (0..cluster.len()).filter(|&i| i != down).collect();
    let writers = Writers::start(cluster, &up, prefix, 16).await?;
    writers.wait_for(WRITES, Duration::from_secs(120)).await?;
    let acked = writers.stop().await?;
    cluster.set_node_bin(down, bin.to_path_buf());
    cluster.restart(down)?;
    wait_caught_up(cluster, down, prefix, &acked, CONVERGE).await?;
    check_acked(down, &read_prefix(cluster, down, prefix, false).await?, &acked)?;
    let log = std::fs::read_to_string(cluster.log_path(down))?;
    ensure!(log.contains("installed snapshot"), "node {down} caught up without a snapshot");
    ensure!(cluster.unexpected_exits().is_empty(), "members exited: {:?}", cluster.unexpected_exits());
    Ok(())
}

async fn snapshots_across_body(cluster: &Cluster, old_bin: &Path, new_bin: &Path) -> Result<()> {
    let leader = cluster.leader().await?;
    let upgraded = (leader + 1) % cluster.len();
    // A previous-release leader's snapshot to a member of this release.
    catch_up_by_snapshot(cluster, upgraded, new_bin, "upgrade/snap/old-to-new/").await?;

    // A leader of this release: upgrade the old leader too, then until a member of this
    // release leads, restart the previous-release one that does.
    let old = (0..cluster.len()).find(|&i| i != leader && i != upgraded).expect("three members");
    cluster.terminate(leader).await?;
    cluster.set_node_bin(leader, new_bin.to_path_buf());
    cluster.restart(leader)?;
    cluster.wait_node_ready(leader, CONVERGE).await?;
    for _ in 0..20 {
        if cluster.leader().await? != old {
            break;
        }
        cluster.terminate(old).await?;
        cluster.restart(old)?;
        cluster.wait_node_ready(old, CONVERGE).await?;
    }
    ensure!(cluster.leader().await? != old, "the previous-release member kept leading");
    // This release's snapshot to a previous-release member.
    catch_up_by_snapshot(cluster, old, old_bin, "upgrade/snap/new-to-old/").await
}
