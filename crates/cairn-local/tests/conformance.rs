//! The backend conformance suite (`cairn-conformance`) on the unreplicated backend, on both
//! engines: the same etcd semantics on RocksDB and in memory. And what the backend adds of
//! its own: durability of acknowledged writes across a crash, and lease expiry.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::sync::Arc;
use std::time::Duration;

use cairn_core::proto::etcdserverpb::{PutRequest, RangeRequest};
use cairn_core::{KvBackend, LeaseBackend, WatchSource, WriteRequest, WriteResponse};
use cairn_local::{LocalBackend, LocalConfig};
use cairn_mvcc::{MemEngine, MvccStore, RocksEngine};

fn report(where_: &str, failures: Vec<cairn_conformance::Failure>) {
    let text: Vec<String> = failures.iter().map(|f| format!("{}: {}", f.test, f.detail)).collect();
    assert!(text.is_empty(), "{where_}: {} conformance failures:\n{}", text.len(), text.join("\n"));
}

fn put(key: &str, value: &str) -> WriteRequest {
    WriteRequest::Put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_engine_conforms() {
    let backend = LocalBackend::start(MvccStore::in_memory(), LocalConfig::default()).unwrap();
    report("in memory", cairn_conformance::run_all(&backend, "conformance/memory/").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rocksdb_engine_conforms_without_raft() {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path(), &[]).unwrap();
    let backend = LocalBackend::start(MvccStore::new(Arc::new(engine)), LocalConfig::default()).unwrap();
    report("rocksdb, unreplicated", cairn_conformance::run_all(&backend, "conformance/rocksdb/").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_crash() {
    let engine = MemEngine::new();
    let backend =
        LocalBackend::start(MvccStore::new(Arc::new(engine.clone())), LocalConfig::default()).unwrap();
    let mut acked = Vec::new();
    for i in 0..20 {
        let key = format!("k{i:02}");
        let WriteResponse::Put(r) = backend.write(put(&key, "v")).await.unwrap() else { panic!("not a put") };
        acked.push((key, r.header.unwrap().revision));
    }
    let lease = backend.lease_grant(0, 30).await.unwrap();
    drop(backend);

    let after =
        LocalBackend::start(MvccStore::new(Arc::new(engine.crashed())), LocalConfig::default()).unwrap();
    for (key, revision) in &acked {
        let got = after.range(RangeRequest { key: key.clone().into(), ..Default::default() }).await.unwrap();
        assert_eq!(got.kvs.len(), 1, "{key} lost");
        assert_eq!(got.kvs[0].mod_revision, *revision);
    }
    assert_eq!(after.leases().await.unwrap(), vec![lease.id], "the lease survives");
    assert_eq!(
        *after.revision_updates().borrow(),
        acked.last().unwrap().1,
        "the next write takes the next revision"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_takes_its_keys() {
    let config = LocalConfig {
        heartbeat: Duration::from_millis(50),
        election_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let backend = LocalBackend::start(MvccStore::in_memory(), config).unwrap();
    let lease = backend.lease_grant(0, 1).await.unwrap();
    assert_eq!(lease.ttl, 1);
    let mut attached =
        PutRequest { key: "leased".into(), value: "v".into(), lease: lease.id, ..Default::default() };
    backend.write(WriteRequest::Put(attached.clone())).await.unwrap();
    attached.key = "kept-alive".into();
    let kept = backend.lease_grant(0, 1).await.unwrap();
    attached.lease = kept.id;
    backend.write(WriteRequest::Put(attached)).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(backend.lease_renew(kept.id).await.unwrap(), 1, "a renewed lease stays");
        let got = backend.range(RangeRequest { key: "leased".into(), ..Default::default() }).await.unwrap();
        if got.kvs.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(backend.lease_time(lease.id).await.unwrap(), None);
    assert_eq!(backend.lease_renew(lease.id).await.unwrap(), 0, "an expired lease cannot be renewed");
    let kept_key =
        backend.range(RangeRequest { key: "kept-alive".into(), ..Default::default() }).await.unwrap();
    assert_eq!(kept_key.kvs.len(), 1);
}
