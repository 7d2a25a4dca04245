//! The periodic corruption check, on Cairn and etcd alike (`--corrupt-check-interval` /
//! etcd's `--experimental-corrupt-check-time`): the leader compares every member's HashKV at
//! one revision. A member whose data is damaged behind its back — a value changed in its
//! store while it was stopped, a change no checksum catches — raises the CORRUPT alarm
//! (Cairn's names that member; etcd 3.4.23's names member 0), after
//! which every member refuses writes with "etcdserver: corrupt cluster" while reads go on.
//! Until the damage, the check raises nothing.

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cairn_tests::etcd_client::{AlarmAction, AlarmType, GetOptions};
use cairn_tests::{eventually, Cluster, ClusterOptions, Target};
use common::*;
use tonic::Code;

const MARKER: &[u8] = b"precious-value-0123456789";
const DAMAGED: &[u8] = b"precious-value-0123456788";

fn check_every_second(target: &Target) -> Vec<String> {
    if target.is_etcd() {
        vec!["--experimental-corrupt-check-time".into(), "1s".into()]
    } else {
        vec!["--corrupt-check-interval".into(), "1".into()]
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_damaged_behind_its_back_raises_corrupt_and_writes_stop() {
    let target = Target::from_env();
    let opts = ClusterOptions { nodes: 3, extra_args: check_every_second(&target), ..Default::default() };
    let cluster = Cluster::start(target.clone(), opts).await.unwrap();
    let mut c = cluster.client_all().await.unwrap();
    c.put("corrupt/precious", MARKER, None).await.unwrap();
    for i in 0..20 {
        c.put(format!("corrupt/k{i}"), format!("v{i}"), None).await.unwrap();
    }

    // Several checks with agreeing members raise nothing.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let alarms = c.alarm(AlarmAction::Get, AlarmType::None, None).await.unwrap();
    let raised: Vec<_> = alarms.alarms().iter().map(|a| (a.member_id(), a.alarm())).collect();
    assert!(raised.is_empty(), "alarms before any damage: {raised:?}");

    // Damage a follower's store while it is stopped; it comes back with the bad value.
    let leader = cluster.leader().await.unwrap();
    let victim = (leader + 1) % 3;
    let victim_id = cluster.member_id(victim).await.unwrap();
    cluster.terminate(victim).await.unwrap();
    let changed = damage(&target, cluster.data_dir(victim)).unwrap();
    eprintln!("damaged {changed} stored value(s) of member {victim_id:x}");
    cluster.restart(victim).unwrap();
    cluster.wait_node_ready(victim, CONVERGE).await.unwrap();
    let mut v = cluster.client(victim).await.unwrap();
    let seen = v.get("corrupt/precious", Some(GetOptions::new().with_serializable())).await.unwrap();
    assert_eq!(seen.kvs()[0].value(), DAMAGED, "the damage is visible on the victim");

    eventually(Duration::from_secs(60), "the CORRUPT alarm for the damaged member", || async {
        let mut c = cluster.client(leader).await?;
        let alarms = c.alarm(AlarmAction::Get, AlarmType::None, None).await?;
        let raised: Vec<_> = alarms.alarms().iter().map(|a| (a.member_id(), a.alarm())).collect();
        ensure!(raised.iter().any(|(_, a)| *a == AlarmType::Corrupt), "raised: {raised:?}");
        // Cairn names the damaged member (etcd 3.4.23 raises it for member 0).
        if !target.is_etcd() {
            ensure!(
                raised == [(victim_id, AlarmType::Corrupt)],
                "only the damaged member is blamed: {raised:?}"
            );
        }
        Ok(())
    })
    .await
    .unwrap();
    let listed = ctl(&cluster, leader, &["alarm", "list"]).await.unwrap();
    assert!(listed.contains("alarm:CORRUPT"), "{listed}");

    // Every member refuses writes; reads go on.
    for i in 0..3 {
        eventually(CONVERGE, &format!("node {i} refuses writes"), || async {
            let mut ci = cluster.client(i).await?;
            expect_grpc_err(
                ci.put("corrupt/after", "x", None).await,
                Code::DataLoss,
                "etcdserver: corrupt cluster",
                "put",
            )
        })
        .await
        .unwrap();
        let mut ci = cluster.client(i).await.unwrap();
        let got = ci.get("corrupt/k1", Some(GetOptions::new().with_serializable())).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"v1");
    }
    let mut ci = cluster.client(leader).await.unwrap();
    expect_grpc_err(
        ci.delete("corrupt/k1", None).await,
        Code::DataLoss,
        "etcdserver: corrupt cluster",
        "delete",
    )
    .unwrap();
    let got = ci.get("corrupt/k2", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"v2", "a linearizable read is served");
}

/// Change every stored copy of [`MARKER`] to [`DAMAGED`] in a stopped member's store, the
/// way a silent disk or software fault would: through RocksDB's own API for Cairn (so its
/// checksums stay valid), in place in the bbolt file for etcd (whose pages have none).
fn damage(target: &Target, data_dir: &Path) -> Result<usize> {
    if target.is_etcd() {
        let db = data_dir.join("member/snap/db");
        let mut bytes = std::fs::read(&db).with_context(|| db.display().to_string())?;
        let mut changed = 0;
        let mut at = 0;
        while let Some(pos) = bytes[at..].windows(MARKER.len()).position(|w| w == MARKER) {
            let start = at + pos;
            bytes[start..start + MARKER.len()].copy_from_slice(DAMAGED);
            changed += 1;
            at = start + MARKER.len();
        }
        std::fs::write(&db, bytes)?;
        ensure!(changed > 0, "the marker is not in {}", db.display());
        return Ok(changed);
    }
    let path = data_dir.join("db");
    let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path)?;
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, &families)?;
    let mut changed = 0;
    // The state machine's rows only: the Raft log is not what HashKV covers.
    for name in families.iter().filter(|n| !n.starts_with("raft_")) {
        let cf = db.cf_handle(name).context("column family")?;
        let mut fixes = Vec::new();
        for row in db.iterator_cf(&cf, rocksdb::IteratorMode::Start) {
            let (k, v) = row?;
            if let Some(pos) = v.windows(MARKER.len()).position(|w| w == MARKER) {
                let mut v = v.to_vec();
                v[pos..pos + MARKER.len()].copy_from_slice(DAMAGED);
                fixes.push((k.to_vec(), v));
            }
        }
        for (k, v) in fixes {
            db.put_cf(&cf, k, v)?;
            changed += 1;
        }
    }
    db.flush()?;
    if changed == 0 {
        bail!("the marker is not in {}", path.display());
    }
    Ok(changed)
}
