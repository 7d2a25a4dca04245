//! The conformance suite on real PostgreSQL and MariaDB servers (started here, on loopback),
//! and what sharing one database takes: two members, a write through one seen by reads and
//! watches on the other, concurrent writers through both with dense revisions, one lease
//! expiry for both, and requests while the database is down.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cairn_core::proto::etcdserverpb::{PutRequest, RangeRequest};
use cairn_core::{BackendError, KvBackend, LeaseBackend, WatchSource, WriteRequest, WriteResponse};
use cairn_sql::{SqlBackend, SqlConfig};

fn report(where_: &str, failures: Vec<cairn_conformance::Failure>) {
    let text: Vec<String> = failures.iter().map(|f| format!("{}: {}", f.test, f.detail)).collect();
    assert!(text.is_empty(), "{where_}: {} conformance failures:\n{}", text.len(), text.join("\n"));
}

fn put(key: &str, value: &str) -> WriteRequest {
    WriteRequest::Put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })
}

async fn member(url: &str, name: &str) -> SqlBackend {
    SqlBackend::open(SqlConfig { url: url.into(), name: name.into(), ..Default::default() }).await.unwrap()
}

async fn put_revision(b: &SqlBackend, key: &str, value: &str) -> i64 {
    match b.write(put(key, value)).await.unwrap() {
        WriteResponse::Put(r) => r.header.unwrap().revision,
        other => panic!("a put answered {other:?}"),
    }
}

/// Two members on `url`: reads, watches, concurrent writers and leases across them.
async fn two_members_share(url: &str) {
    let a = Arc::new(member(url, "a").await);
    let b = Arc::new(member(url, "b").await);

    // A write through one is read through the other at once, and reaches its watchers.
    let mut updates = b.revision_updates();
    let rev = put_revision(&a, "shared/x", "1").await;
    let got = b.range(RangeRequest { key: b"shared/x".to_vec(), ..Default::default() }).await.unwrap();
    assert_eq!(got.kvs[0].value, b"1");
    tokio::time::timeout(Duration::from_secs(5), updates.wait_for(|r| *r >= rev)).await.unwrap().unwrap();
    let events = b.events(rev, rev, 10, false).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].events[0].kv.as_ref().unwrap().key, b"shared/x");

    // Writers through both members at once: every revision used exactly once, no gaps.
    let start = a.revisions().await.unwrap().current;
    let mut writers = Vec::new();
    for w in 0..8 {
        let m = if w % 2 == 0 { a.clone() } else { b.clone() };
        writers.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..25 {
                revs.push(put_revision(&m, &format!("dense/{w}/{i}"), "v").await);
            }
            revs
        }));
    }
    let mut all = BTreeSet::new();
    for w in writers {
        for r in w.await.unwrap() {
            assert!(all.insert(r), "revision {r} acknowledged twice");
        }
    }
    let expected: BTreeSet<i64> = (start + 1..=start + 200).collect();
    assert_eq!(all, expected, "revisions are dense and unique");
    // Each member's watch saw all of them in order.
    for m in [&a, &b] {
        tokio::time::timeout(Duration::from_secs(5), m.revision_updates().wait_for(|r| *r >= start + 200))
            .await
            .unwrap()
            .unwrap();
        let events = m.events(start + 1, start + 200, 1000, false).await.unwrap();
        let seen: Vec<i64> = events.iter().map(|e| e.revision).collect();
        assert_eq!(seen, (start + 1..=start + 200).collect::<Vec<_>>());
    }

    // A lease granted through one, kept alive through the other, expires once, for both.
    let lease = a.lease_grant(0, 2).await.unwrap();
    a.write(WriteRequest::Put(PutRequest {
        key: b"leased".to_vec(),
        value: b"v".to_vec(),
        lease: lease.id,
        ..Default::default()
    }))
    .await
    .unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(b.lease_renew(lease.id).await.unwrap(), 2, "kept alive through the other member");
    }
    let left = a.lease_time(lease.id).await.unwrap().unwrap();
    assert!(left.remaining >= 1 && left.granted == 2, "{left:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = a.range(RangeRequest { key: b"leased".to_vec(), ..Default::default() }).await.unwrap();
        if got.kvs.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(b.lease_time(lease.id).await.unwrap(), None);
    assert!(b.leases().await.unwrap().is_empty());
    // The expiry was one revoke: one delete event for the key, one revision.
    let now = a.revisions().await.unwrap().current;
    let deletes: usize = a
        .events(start + 201, now, 1000, false)
        .await
        .unwrap()
        .iter()
        .flat_map(|r| &r.events)
        .filter(|e| e.kv.as_ref().unwrap().key == b"leased" && e.r#type == 1)
        .count();
    assert_eq!(deletes, 1);

    // Both are listed as members.
    let names: Vec<String> =
        cairn_core::ClusterBackend::members(&*a).await.unwrap().into_iter().map(|m| m.name).collect();
    assert!(names.contains(&"a".to_string()) && names.contains(&"b".to_string()), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_conforms_and_is_shared() {
    let pg = common::Postgres::start();
    let backend = member(&pg.database("conformance"), "default").await;
    report("postgres", cairn_conformance::run_all(&backend, "conformance/postgres/").await);
    two_members_share(&pg.database("shared")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_conforms_and_is_shared() {
    let db = common::MariaDb::start();
    let backend = member(&db.database("conformance"), "default").await;
    report("mariadb", cairn_conformance::run_all(&backend, "conformance/mariadb/").await);
    two_members_share(&db.database("shared")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_is_shared_by_two_members() {
    let dir = tempfile::tempdir().unwrap();
    two_members_share(&format!("sqlite://{}/shared.db", dir.path().display())).await;
}

/// Requests fail as unavailable while the database is down, and succeed once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_is_unavailable_then_heals() {
    let pg = common::Postgres::start();
    let url = pg.database("outage");
    let backend = SqlBackend::open(SqlConfig {
        url: url.clone(),
        connect_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .unwrap();
    put_revision(&backend, "before", "1").await;
    pg.kill();
    match backend.write(put("during", "1")).await {
        Err(BackendError::Unavailable(_)) | Err(BackendError::Timeout) => {}
        other => panic!("a write with the database down answered {other:?}"),
    }
    match backend.range(RangeRequest { key: b"before".to_vec(), ..Default::default() }).await {
        Err(BackendError::Unavailable(_)) => {}
        other => panic!("a read with the database down answered {other:?}"),
    }
    pg.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match backend.write(put("after", "1")).await {
            Ok(_) => break,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "still failing after the restart: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = backend.range(RangeRequest { key: b"before".to_vec(), ..Default::default() }).await.unwrap();
    assert_eq!(got.kvs[0].value, b"1");
    // Unreachable at start: a clear error.
    pg.kill();
    let err =
        SqlBackend::open(SqlConfig { url, connect_timeout: Duration::from_secs(1), ..Default::default() })
            .await
            .err()
            .expect("no database, no backend");
    assert!(matches!(err, cairn_sql::OpenError::Unreachable(_)), "{err}");
}

/// A write the database refuses (a key longer than PostgreSQL's index allows) fails alone:
/// writes committed in the same group succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_write_fails_alone_in_its_group() {
    let pg = common::Postgres::start();
    let backend = Arc::new(member(&pg.database("refused"), "a").await);
    let mut writes = Vec::new();
    for i in 0..32 {
        let b = backend.clone();
        writes.push(tokio::spawn(async move {
            // Incompressible (PostgreSQL compresses index entries): letters from an LCG.
            let mut x = 12345u64;
            let long: String = (0..4000)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (b'a' + (x >> 59) as u8 % 26) as char
                })
                .collect();
            let key = if i == 7 { long } else { format!("ok/{i}") };
            (i, b.write(put(&key, "v")).await)
        }));
    }
    for w in writes {
        let (i, result) = w.await.unwrap();
        match (i, result) {
            (7, Err(BackendError::Storage(_))) => {}
            (7, other) => panic!("the long key answered {other:?}"),
            (_, Err(e)) => panic!("write {i} failed with the long key's group: {e}"),
            (_, Ok(_)) => {}
        }
    }
    let got = backend
        .range(RangeRequest { key: b"ok/".to_vec(), range_end: b"ok0".to_vec(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(got.count, 31);
}
