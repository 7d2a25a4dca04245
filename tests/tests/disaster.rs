//! Backup and disaster recovery: `etcdctl snapshot save` and `cairn snapshot save` stream a
//! whole backup; `cairn snapshot restore` makes new data directories from it, and the
//! cluster started on them has the same keys, history and revisions; a damaged backup is
//! refused; `cairn recover --force-new-cluster` makes the survivor of a lost quorum a
//! cluster of one that keeps every acknowledged write it held, and a dropped member that
//! comes back on its old data directory stops (exit 7).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Result};
use cairn_tests::etcd_client::{Client, GetOptions};
use cairn_tests::{eventually, Cluster, ClusterOptions, Target};
use common::*;

fn cairn(bin: &Path, args: &[&str]) -> Output {
    std::process::Command::new(bin)
        .args(args)
        .env_remove("CAIRN_ENDPOINTS")
        .env_remove("CAIRN_DATA_DIR")
        .env_remove("CAIRN_NAME")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Every key under `prefix` with (value, create revision, mod revision, version, lease).
async fn dump(c: &mut Client, prefix: &str) -> Result<BTreeMap<String, (String, i64, i64, i64, i64)>> {
    let resp = c.get(prefix, Some(GetOptions::new().with_prefix())).await?;
    Ok(resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                (
                    String::from_utf8_lossy(kv.value()).into_owned(),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version(),
                    kv.lease(),
                ),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_restores_into_a_new_cluster_with_the_same_revisions() {
    let target = Target::from_env();
    let cluster = Cluster::start(target.clone(), ClusterOptions::nodes(3)).await.unwrap();
    let mut c = cluster.client(0).await.unwrap();
    for i in 0..200 {
        c.put(format!("dr/{:03}", i % 120), format!("v{i}"), None).await.unwrap();
    }
    c.delete("dr/007", None).await.unwrap();
    let compacted = current_rev(&mut c).await.unwrap() - 30;
    c.compact(compacted, None).await.unwrap();
    let lease = c.lease_grant(600, None).await.unwrap().id();
    c.put("dr/leased", "l", Some(cairn_tests::etcd_client::PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let before = dump(&mut c, "dr/").await.unwrap();
    let revision = current_rev(&mut c).await.unwrap();

    // etcdctl's own command streams it (from a follower), on Cairn as on etcd.
    let backups = tempfile::tempdir().unwrap();
    let saved = backups.path().join("etcdctl.db");
    let follower = cluster.followers().await.unwrap()[0];
    let out = ctl(&cluster, follower, &["snapshot", "save", saved.to_str().unwrap()]).await.unwrap();
    assert!(out.contains("Snapshot saved at"), "{out}");
    assert!(std::fs::metadata(&saved).unwrap().len() > 1000);
    if !target.is_cairn() {
        return; // restoring etcd's bbolt file is etcdctl's business, not this test's
    }
    let bin = target.bin().to_path_buf();
    let ours = backups.path().join("cairn.db");
    let endpoint = cluster.client_addr(0).to_string();
    let out = cairn(&bin, &["snapshot", "save", ours.to_str().unwrap(), "--endpoints", &endpoint]);
    assert!(out.status.success() && text(&out).contains(&format!("revision {revision}")), "{}", text(&out));

    // A damaged backup is refused before anything is written.
    let mut bytes = std::fs::read(&ours).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    let damaged = backups.path().join("damaged.db");
    std::fs::write(&damaged, &bytes).unwrap();
    let scratch = backups.path().join("scratch");
    let out = cairn(
        &bin,
        &["snapshot", "restore", damaged.to_str().unwrap(), "--data-dir", scratch.to_str().unwrap()],
    );
    assert!(!out.status.success() && text(&out).contains("SHA-256"), "{}", text(&out));
    assert!(!scratch.join("db").exists(), "nothing restored from a damaged backup");

    // A new three-member cluster from the etcdctl-saved backup: one restore per member.
    let restored = Cluster::start(target.clone(), ClusterOptions::nodes(3)).await.unwrap();
    restored.kill_all().unwrap();
    for i in 0..3 {
        let dir = restored.data_dir(i);
        std::fs::remove_dir_all(dir).unwrap();
        let out = cairn(
            &bin,
            &["snapshot", "restore", saved.to_str().unwrap(), "--data-dir", dir.to_str().unwrap()],
        );
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains(&format!("revision {revision}")), "{}", text(&out));
    }
    let out = cairn(
        &bin,
        &[
            "snapshot",
            "restore",
            saved.to_str().unwrap(),
            "--data-dir",
            restored.data_dir(0).to_str().unwrap(),
        ],
    );
    assert!(!out.status.success() && text(&out).contains("not empty"), "{}", text(&out));
    restored.restart_stopped().unwrap();
    restored.wait_ready(CONVERGE).await.unwrap();
    for i in 0..3 {
        let mut r = restored.client(i).await.unwrap();
        assert_eq!(dump(&mut r, "dr/").await.unwrap(), before, "node {i}: the same keys and revisions");
    }
    let mut r = restored.client(1).await.unwrap();
    assert_eq!(current_rev(&mut r).await.unwrap(), revision);
    let old = r.get("dr/001", Some(GetOptions::new().with_revision(compacted - 5))).await;
    expect_grpc_err(
        old,
        tonic::Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
        "below the compaction",
    )
    .unwrap();
    let kept = r.get("dr/001", Some(GetOptions::new().with_revision(compacted + 1))).await.unwrap();
    assert_eq!(kept.header().unwrap().revision(), revision);
    let ttl = r.lease_time_to_live(lease, None).await.unwrap();
    assert!(ttl.ttl() > 0, "the lease came along: {ttl:?}");
    let put = r.put("dr/after", "x", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), revision + 1, "revisions go on from the backup's");
    let listed = r.member_list().await.unwrap();
    assert_eq!(listed.members().len(), 3, "the new cluster's members only: {:?}", listed.members());
}

#[tokio::test(flavor = "multi_thread")]
async fn force_new_cluster_makes_the_survivor_a_cluster_of_one() {
    let target = Target::from_env();
    if !target.is_cairn() {
        eprintln!("skipped: `cairn recover` (etcd has --force-new-cluster on its server)");
        return;
    }
    let bin = target.bin().to_path_buf();
    let cluster = Cluster::start(target, ClusterOptions::nodes(3)).await.unwrap();
    let writers = Writers::start(&cluster, &[0, 1, 2], "forced/", 4).await.unwrap();
    writers.wait_for(100, CONVERGE).await.unwrap();
    let survivor = cluster.followers().await.unwrap()[0];
    let lost: Vec<usize> = (0..3).filter(|i| *i != survivor).collect();
    // Two of three die for good; the writes they acknowledged reached the survivor only if
    // it was part of their quorum — wait for it to hold everything acknowledged so far.
    let acked = writers.stop().await.unwrap();
    wait_caught_up(&cluster, survivor, "forced/", &acked, CONVERGE).await.unwrap();
    for i in &lost {
        cluster.kill(*i).unwrap();
    }
    cluster.kill(survivor).unwrap();

    let dir = cluster.data_dir(survivor).to_str().unwrap().to_string();
    let name = cluster.node_name(survivor).to_string();
    let out = cairn(&bin, &["recover", "--data-dir", &dir, "--name", &name]);
    assert!(!out.status.success(), "--force-new-cluster is required: {}", text(&out));
    let out = cairn(&bin, &["recover", "--force-new-cluster", "--data-dir", &dir, "--name", &name]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("lost"), "says what may be lost: {}", text(&out));

    cluster.restart(survivor).unwrap();
    cluster.wait_node_ready(survivor, CONVERGE).await.unwrap();
    let mut s = cluster.client(survivor).await.unwrap();
    let got = read_prefix(&cluster, survivor, "forced/", false).await.unwrap();
    check_acked(survivor, &got, &acked).unwrap();
    s.put("forced/after", "alone", None).await.unwrap();
    let listed = s.member_list().await.unwrap();
    assert_eq!(listed.members().len(), 1, "{:?}", listed.members());

    // A dropped member restarted on its old data directory learns it was removed and stops.
    cluster.restart(lost[0]).unwrap();
    let exited = eventually(Duration::from_secs(60), "the dropped member stops", || async {
        cluster
            .unexpected_exits()
            .into_iter()
            .find(|(i, _)| *i == lost[0])
            .ok_or_else(|| anyhow::anyhow!("still running"))
    })
    .await
    .unwrap();
    assert_eq!(exited.1.code(), Some(7), "{}", cluster.log_tail(lost[0], 30));
    s.put("forced/still", "fine", None).await.unwrap();
    ensure_single(&mut s).await.unwrap();
}

async fn ensure_single(c: &mut Client) -> Result<()> {
    let listed = c.member_list().await?;
    ensure!(listed.members().len() == 1, "{:?}", listed.members());
    Ok(())
}
