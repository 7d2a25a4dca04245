//! Secrets at rest (`--secret-prefix`, with a cluster key): values under the prefix are
//! sealed with AES-256-GCM before they are stored, and every Raft log entry is sealed too, so
//! the plaintext is nowhere in any member's data directory (RocksDB's tables and write-ahead
//! log, the Raft log, snapshot files) nor in a backup, while every read path — get, range,
//! txn compares, watch with previous values, the JSON gateway — returns it. Cairn only: etcd
//! has no such feature.

mod common;

use std::path::Path;

use cairn_tests::etcd_client::{Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions};
use cairn_tests::{Cluster, ClusterOptions, Target};
use common::*;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if contains(&std::fs::read(&path).unwrap_or_default(), needle) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_sealed_on_disk_and_read_back_in_the_clear() {
    let target = Target::from_env();
    if target.is_etcd() {
        eprintln!("etcd does not encrypt values at rest: Cairn only");
        return;
    }
    let secret: String = format!("s3cr3t-{:016x}", rand::random::<u64>());
    let second: String = format!("n3w-s3cr3t-{:016x}", rand::random::<u64>());
    let plain: String = format!("pl41n-{:016x}", rand::random::<u64>());
    let opts = ClusterOptions {
        nodes: 3,
        snapshot_count: Some(20),
        env: vec![("CAIRN_ENCRYPTION_KEY".into(), "a-cluster-key-of-32-characters!!".into())],
        extra_args: vec!["--secret-prefix".into(), "/secrets/".into()],
        ..Default::default()
    };
    let cluster = Cluster::start(target.clone(), opts).await.unwrap();
    let mut c = cluster.client(0).await.unwrap();
    let mut watch =
        c.watch("/secrets/", Some(WatchOptions::new().with_prefix().with_prev_key())).await.unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());

    let first = c.put("/secrets/db-password", secret.as_str(), None).await.unwrap();
    let first = first.header().unwrap().revision();
    c.put("/config/plain", plain.as_str(), None).await.unwrap();
    let txn = Txn::new()
        .when([Compare::value("/secrets/db-password", CompareOp::Equal, secret.as_str())])
        .and_then([TxnOp::put("/secrets/db-password", second.as_str(), None)]);
    assert!(c.txn(txn).await.unwrap().succeeded(), "a compare on a sealed value sees the plaintext");
    for i in 0..60 {
        c.put(format!("/other/{i}"), "x", None).await.unwrap(); // past --snapshot-count: snapshots
    }

    // Every read path returns the plaintext.
    for i in 0..3 {
        let mut ci = cluster.client(i).await.unwrap();
        let got = ci.get("/secrets/db-password", Some(GetOptions::new().with_serializable())).await.unwrap();
        assert_eq!(got.kvs()[0].value_str().unwrap(), second, "member {i}");
    }
    let old = c.get("/secrets/db-password", Some(GetOptions::new().with_revision(first))).await.unwrap();
    assert_eq!(old.kvs()[0].value_str().unwrap(), secret, "history is read back in the clear");
    let mut events = Vec::new();
    while events.len() < 2 {
        let r = watch.message().await.unwrap().unwrap();
        events.extend(r.events().to_vec());
    }
    assert_eq!(events[0].event_type(), EventType::Put);
    assert_eq!(events[0].kv().unwrap().value_str().unwrap(), secret);
    assert_eq!(events[1].kv().unwrap().value_str().unwrap(), second);
    assert_eq!(events[1].prev_kv().unwrap().value_str().unwrap(), secret);
    let out = ctl(&cluster, 1, &["get", "/secrets/db-password", "--print-value-only"]).await.unwrap();
    assert_eq!(out.trim(), second);

    // A backup holds the sealed bytes only.
    let backups = tempfile::tempdir().unwrap();
    let saved = backups.path().join("backup.db");
    let out = ctl(&cluster, 0, &["snapshot", "save", saved.to_str().unwrap()]).await.unwrap();
    assert!(out.contains("Snapshot saved at"), "{out}");
    let backup = std::fs::read(&saved).unwrap();
    assert!(!contains(&backup, secret.as_bytes()) && !contains(&backup, second.as_bytes()));

    // Stop every member: no file of any data directory holds a secret; the plain value is
    // there (the search works).
    for i in 0..3 {
        cluster.terminate(i).await.unwrap();
    }
    let mut plain_found = Vec::new();
    for i in 0..3 {
        for needle in [&secret, &second] {
            let found = files_containing(cluster.data_dir(i), needle.as_bytes());
            assert!(found.is_empty(), "member {i}: the plaintext of a secret is in {found:?}");
        }
        plain_found.extend(files_containing(cluster.data_dir(i), plain.as_bytes()));
    }
    assert!(!plain_found.is_empty(), "the unsealed value is found on disk (the search works)");

    // Restarted, the members read their secrets again.
    for i in 0..3 {
        cluster.restart(i).unwrap();
    }
    cluster.wait_ready(CONVERGE).await.unwrap();
    let mut c = cluster.client(2).await.unwrap();
    let got = c.get("/secrets/db-password", None).await.unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), second);
}

/// A rolling rotation of the cluster key: each member in turn restarts with the new key and
/// the old one as previous. Members on either key keep talking (the peer handshake accepts
/// the previous key, and a caller proves it to a member that has not switched), writes go on
/// throughout, and what the old key sealed is still read back on every member. Each member
/// then re-seals what it stores with the new key, online; once every member says so
/// (`cairn_reseal_pending 0`), the old key is dropped from their starts and every value, old
/// versions included, still reads back.
#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_key_rotation_keeps_the_cluster_and_its_secrets() {
    let target = Target::from_env();
    if target.is_etcd() {
        eprintln!("etcd has no cluster key: Cairn only");
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let (old, new) = (keys.path().join("old.key"), keys.path().join("new.key"));
    std::fs::write(&old, "the cluster key before the rotation").unwrap();
    std::fs::write(&new, "the cluster key after the rotation!").unwrap();
    let opts = ClusterOptions {
        nodes: 3,
        env: vec![("CAIRN_ENCRYPTION_KEY_FILE".into(), old.display().to_string())],
        extra_args: vec!["--secret-prefix".into(), "/secrets/".into()],
        ..Default::default()
    };
    let cluster = Cluster::start(target, opts).await.unwrap();
    let mut c = cluster.client_all().await.unwrap();
    let put = c.put("/secrets/before", "sealed with the old key", None).await.unwrap();
    let first_revision = put.header().unwrap().revision();
    // Enough history that the re-sealing takes several steps.
    for n in 0..1500 {
        c.put(format!("/secrets/bulk/{:03}", n % 300), format!("bulk {n}"), None).await.unwrap();
    }
    for i in 0..3 {
        cluster.terminate(i).await.unwrap();
        cluster.set_node_args(
            i,
            vec![
                "--encryption-key-file".into(),
                new.display().to_string(),
                "--previous-encryption-key-file".into(),
                old.display().to_string(),
            ],
        );
        cluster.restart(i).unwrap();
        cluster.wait_node_ready(i, CONVERGE).await.unwrap();
        // Mixed keys: a write reaches every member, and each reads every secret.
        let mut c = cluster.client_all().await.unwrap();
        let put =
            c.put(format!("/secrets/during-{i}"), format!("written with {} switched", i + 1), None).await;
        let revision = put.unwrap().header().unwrap().revision();
        for j in 0..3 {
            let mut cj = cluster.client(j).await.unwrap();
            let got = cairn_tests::eventually(CONVERGE, "the write on every member", || {
                let mut cj = cj.clone();
                async move {
                    let got = cj
                        .get("/secrets/", Some(GetOptions::new().with_prefix().with_serializable()))
                        .await?;
                    anyhow::ensure!(got.header().unwrap().revision() >= revision, "behind");
                    Ok(got)
                }
            })
            .await
            .unwrap();
            let values: Vec<_> = got.kvs().iter().map(|kv| kv.value_str().unwrap().to_string()).collect();
            assert!(values.contains(&"sealed with the old key".to_string()), "member {j}: {values:?}");
            assert_eq!(values.len(), 300 + i + 2, "member {j}: {values:?}");
            let _ = cj.status().await.unwrap();
        }
    }
    let mut c = cluster.client(0).await.unwrap();
    let members = c.member_list().await.unwrap();
    assert_eq!(members.members().len(), 3);

    // The old version now lives in history only.
    let mut c = cluster.client_all().await.unwrap();
    c.put("/secrets/before", "written after the rotation", None).await.unwrap();
    for i in 0..3 {
        let cluster = &cluster;
        cairn_tests::eventually(CONVERGE * 4, "the member re-sealed everything", || async move {
            let pending = metric(cluster, i, "cairn_reseal_pending")?;
            anyhow::ensure!(pending == 0.0, "member {i}: cairn_reseal_pending {pending}");
            Ok(())
        })
        .await
        .unwrap();
        assert!(metric(cluster, i, "cairn_values_resealed_total").unwrap() > 0.0, "member {i}");
    }
    for i in 0..3 {
        cluster.terminate(i).await.unwrap();
        cluster.set_node_args(i, vec!["--encryption-key-file".into(), new.display().to_string()]);
        cluster.restart(i).unwrap();
        cluster.wait_node_ready(i, CONVERGE).await.unwrap();
    }
    for j in 0..3 {
        let mut cj = cluster.client(j).await.unwrap();
        let serializable = GetOptions::new().with_serializable();
        let old = cj.get("/secrets/before", Some(serializable.clone().with_revision(first_revision))).await;
        let old = old.unwrap_or_else(|e| panic!("member {j}, the old version without the old key: {e}"));
        assert_eq!(old.kvs()[0].value_str().unwrap(), "sealed with the old key", "member {j}");
        let all = cj.get("/secrets/", Some(serializable.with_prefix())).await.unwrap();
        assert_eq!(all.kvs().len(), 300 + 4, "member {j}");
    }
    assert!(cluster.unexpected_exits().is_empty(), "crashed: {:?}", cluster.unexpected_exits());
}

/// A metric's value from a member's `/metrics` (an error when it is not there).
fn metric(cluster: &Cluster, i: usize, name: &str) -> anyhow::Result<f64> {
    metric_sample(cluster, i, name)?.ok_or_else(|| anyhow::anyhow!("no {name} in member {i}'s /metrics"))
}
