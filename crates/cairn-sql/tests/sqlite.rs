//! The conformance suite on SQLite (bundled: no server), one member and two members on
//! one database file.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use cairn_sql::{SqlBackend, SqlConfig};

fn report(where_: &str, failures: Vec<cairn_conformance::Failure>) {
    let text: Vec<String> = failures.iter().map(|f| format!("{}: {}", f.test, f.detail)).collect();
    assert!(text.is_empty(), "{where_}: {} conformance failures:\n{}", text.len(), text.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/cairn.db", dir.path().display());
    let backend = SqlBackend::open(SqlConfig { url, ..Default::default() }).await.unwrap();
    report("sqlite", cairn_conformance::run_all(&backend, "conformance/sqlite/").await);
}

/// A compaction answers at once; the history rows it made invisible are deleted afterwards in
/// bounded steps, and reads and HashKV are the same before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_history_is_pruned_in_the_background() {
    use cairn_core::proto::etcdserverpb::{CompactionRequest, PutRequest, RangeRequest};
    use cairn_core::{KvBackend, MaintenanceBackend, WriteRequest};
    use cairn_mvcc::Family;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/prune.db", dir.path().display());
    let backend = SqlBackend::open(SqlConfig { url, ..Default::default() }).await.unwrap();
    for i in 0..3000 {
        let put = PutRequest {
            key: format!("k{}", i % 100).into_bytes(),
            value: vec![1; 10],
            ..Default::default()
        };
        backend.write(WriteRequest::Put(put)).await.unwrap();
    }
    let history_rows = |b: &SqlBackend| {
        let store = b.store().clone();
        std::thread::spawn(move || {
            let mut n = 0;
            store
                .engine()
                .latest()
                .scan(Family::History, &[], None, &mut |_, _| {
                    n += 1;
                    Ok(true)
                })
                .unwrap();
            n
        })
        .join()
        .unwrap()
    };
    assert_eq!(history_rows(&backend), 3000);
    let read =
        RangeRequest { key: b"k".to_vec(), range_end: b"l".to_vec(), revision: 2900, ..Default::default() };
    let before = backend.range(read.clone()).await.unwrap();
    backend
        .write(WriteRequest::Compact(CompactionRequest { revision: 2901, physical: false }))
        .await
        .unwrap();
    let compacted_hash = backend.hash_kv(0).await.unwrap().hash;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // Every key's newest row ≤ 2901 stays, and the 100 rows above it.
    while history_rows(&backend) > 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "history never pruned: {} rows",
            history_rows(&backend)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(history_rows(&backend), 200);
    let after = RangeRequest { revision: 2950, ..read };
    assert_eq!(backend.range(after).await.unwrap().kvs.len(), 100);
    assert_eq!(before.kvs.len(), 100);
    assert_eq!(
        backend.hash_kv(0).await.unwrap().hash,
        compacted_hash,
        "the same hash before and after pruning"
    );
}

/// A lease granted through a member that then dies is kept alive through another, and does
/// not expire early: its deadline is in the database, not in the dead member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_outlives_the_member_that_granted_it() {
    use cairn_core::proto::etcdserverpb::{PutRequest, RangeRequest};
    use cairn_core::{KvBackend, LeaseBackend, WriteRequest};

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/lease.db", dir.path().display());
    let a = SqlBackend::open(SqlConfig { url: url.clone(), name: "a".into(), ..Default::default() })
        .await
        .unwrap();
    let b = SqlBackend::open(SqlConfig { url, name: "b".into(), ..Default::default() }).await.unwrap();
    let lease = a.lease_grant(0, 2).await.unwrap();
    let put =
        PutRequest { key: b"owned".to_vec(), value: b"v".to_vec(), lease: lease.id, ..Default::default() };
    a.write(WriteRequest::Put(put)).await.unwrap();
    drop(a);
    for _ in 0..8 {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert_eq!(b.lease_renew(lease.id).await.unwrap(), 2);
    }
    let got = b.range(RangeRequest { key: b"owned".to_vec(), ..Default::default() }).await.unwrap();
    assert_eq!(got.kvs.len(), 1, "kept alive through b for twice its TTL after a died");
    // Unrenewed, it expires through b.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !b
        .range(RangeRequest { key: b"owned".to_vec(), ..Default::default() })
        .await
        .unwrap()
        .kvs
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A database whose schema is newer than this build's is refused, naming both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/newer.db", dir.path().display());
    drop(SqlBackend::open(SqlConfig { url: url.clone(), ..Default::default() }).await.unwrap());
    let (_, db) = cairn_sql::migrate::open_store(&url, None).await.unwrap();
    sqlx::query("UPDATE cairn_schema SET version = 99").execute(&db.pool).await.unwrap();
    drop(db);
    match SqlBackend::open(SqlConfig { url, ..Default::default() }).await {
        Err(cairn_sql::OpenError::NewerSchema { found: 99, supported }) => {
            assert_eq!(supported, cairn_sql::SCHEMA_VERSION)
        }
        Err(e) => panic!("refused, but with {e}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
}
