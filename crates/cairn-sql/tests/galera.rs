//! A MariaDB Galera cluster of three nodes (started here, on loopback) under the adapter:
//! the conformance suite through one node; one member per node writing at once, with dense,
//! unique revisions and every write read through every member; and a node killed while
//! members on the other two keep writing, with no revision lost or skipped.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_core::proto::etcdserverpb::{PutRequest, RangeRequest};
use cairn_core::{BackendError, ClusterBackend, KvBackend, WatchSource, WriteRequest, WriteResponse};
use cairn_sql::{SqlBackend, SqlConfig};

fn report(where_: &str, failures: Vec<cairn_conformance::Failure>) {
    let text: Vec<String> = failures.iter().map(|f| format!("{}: {}", f.test, f.detail)).collect();
    assert!(text.is_empty(), "{where_}: {} conformance failures:\n{}", text.len(), text.join("\n"));
}

async fn member(url: &str, name: &str) -> SqlBackend {
    SqlBackend::open(SqlConfig { url: url.into(), name: name.into(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("opening member {name} on {url}: {e}"))
}

/// One put; its revision.
async fn put(b: &SqlBackend, key: &str) -> Result<i64, BackendError> {
    let req = WriteRequest::Put(PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() });
    match b.write(req).await? {
        WriteResponse::Put(r) => Ok(r.header.unwrap().revision),
        other => panic!("a put answered {other:?}"),
    }
}

/// Every key under `prefix` through `b`, with its mod revision.
async fn keys_under(b: &SqlBackend, prefix: &str) -> BTreeMap<String, i64> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    let got =
        b.range(RangeRequest { key: prefix.into(), range_end: end, ..Default::default() }).await.unwrap();
    got.kvs.iter().map(|kv| (String::from_utf8(kv.key.clone()).unwrap(), kv.mod_revision)).collect()
}

/// The revisions `from..=to` hold, each with the keys it wrote, read through `b`.
async fn revisions_in(b: &SqlBackend, from: i64, to: i64) -> BTreeMap<i64, Vec<String>> {
    let events = b.events(from, to, 1_000_000, false).await.unwrap();
    events
        .iter()
        .map(|r| {
            let keys = r
                .events
                .iter()
                .map(|e| String::from_utf8(e.kv.as_ref().unwrap().key.clone()).unwrap())
                .collect();
            (r.revision, keys)
        })
        .collect()
}

/// Acknowledged (revision, key) pairs by revision; panics listing every revision that was
/// acknowledged for more than one write.
fn unique(acked: &[(i64, String)]) -> BTreeMap<i64, String> {
    let mut by_revision: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for (rev, key) in acked {
        by_revision.entry(*rev).or_default().push(key);
    }
    let twice: Vec<String> = by_revision
        .iter()
        .filter(|(_, keys)| keys.len() > 1)
        .map(|(rev, keys)| format!("revision {rev}: {}", keys.join(", ")))
        .collect();
    assert!(
        twice.is_empty(),
        "{} of {} acknowledged writes share a revision with another; revisions acknowledged more than once:\n{}",
        acked.len() - by_revision.len(),
        acked.len(),
        twice.join("\n")
    );
    by_revision.into_iter().map(|(rev, keys)| (rev, keys[0].to_string())).collect()
}

/// The adapter's warnings (an unknown commit outcome, a failed heartbeat) on stderr, shown
/// with a failing test's output: the test has no other view of what the adapter saw.
struct Warnings;

impl tracing::Subscriber for Warnings {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() <= tracing::Level::WARN && m.target().starts_with("cairn_sql")
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0 += &format!(" {}={v:?}", f.name());
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        eprintln!("{} {}:{}", event.metadata().level(), event.metadata().target(), fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// What the writers of the node-kill phase saw.
#[derive(Default)]
struct Outcome {
    /// (revision, key) of each acknowledged put.
    acked: Vec<(i64, String)>,
    /// Failed attempts, retried, through the surviving nodes' members.
    transient: Vec<String>,
    /// Puts that still failed after their retries, through the surviving nodes' members.
    permanent: Vec<String>,
    /// Failures through the killed node's member (its writers stop at the first).
    on_killed: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn galera_conforms_keeps_revisions_dense_and_survives_a_node() {
    let _ = tracing::subscriber::set_global_default(Warnings);
    let began = Instant::now();
    let galera = common::Galera::start();
    eprintln!("galera: three nodes synced in {:?}", began.elapsed());

    // (a) The conformance suite through node 1.
    let phase = Instant::now();
    galera.database("conformance");
    let backend = member(&galera.url(1, "conformance"), "default").await;
    report("galera", cairn_conformance::run_all(&backend, "conformance/galera/").await);
    drop(backend);
    eprintln!("galera: conformance in {:?}", phase.elapsed());

    // (b) One member per node, writers through all three at once: every revision used once.
    let phase = Instant::now();
    galera.database("dense");
    // Started together on the empty database: each creates the schema on its own node.
    let urls: Vec<String> = (1..=common::Galera::NODES).map(|n| galera.url(n, "dense")).collect();
    let members: Vec<Arc<SqlBackend>> = futures::future::join_all(
        urls.iter()
            .enumerate()
            .map(|(i, url)| async move { Arc::new(member(url, &format!("node{}", i + 1)).await) }),
    )
    .await;
    let clusters: Vec<u64> = members.iter().map(|m| m.status().cluster_id).collect();
    assert!(
        clusters.iter().all(|c| *c == clusters[0]),
        "members started together disagree on the cluster: {clusters:x?}"
    );
    let start = members[0].revisions().await.unwrap().current;
    const WRITERS: usize = 9;
    const PUTS: usize = 20;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let m = members[w % members.len()].clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..PUTS {
                let key = format!("dense/{w}/{i}");
                let rev = put(&m, &key)
                    .await
                    .unwrap_or_else(|e| panic!("put {key} through node {}: {e}", w % 3 + 1));
                acked.push((rev, key));
            }
            acked
        }));
    }
    let mut all = Vec::new();
    for w in writers {
        all.extend(w.await.unwrap());
    }
    let acked = unique(&all);
    let n = (WRITERS * PUTS) as i64;
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        (start + 1..=start + n).collect::<Vec<_>>(),
        "revisions are dense and unique"
    );
    for (i, m) in members.iter().enumerate() {
        let seen = keys_under(m, "dense/").await;
        assert_eq!(seen.len(), acked.len(), "node {}: every key read", i + 1);
        for (rev, key) in &acked {
            assert_eq!(seen.get(key), Some(rev), "node {}: {key} at revision {rev}", i + 1);
        }
        tokio::time::timeout(Duration::from_secs(5), m.revision_updates().wait_for(|r| *r >= start + n))
            .await
            .unwrap()
            .unwrap();
        let revisions = revisions_in(m, start + 1, start + n).await;
        for (rev, key) in &acked {
            assert_eq!(revisions.get(rev), Some(&vec![key.clone()]), "node {}: the events of {rev}", i + 1);
        }
    }
    eprintln!("galera: {n} concurrent puts through three nodes checked in {:?}", phase.elapsed());

    // (c) Node 1 killed while writers go through all three: the two others keep serving.
    let phase = Instant::now();
    let start = members[1].revisions().await.unwrap().current;
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let acks_after_kill = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    // Two writers through node 1's member, three through each of the others'.
    for (w, node) in [1, 1, 2, 2, 2, 3, 3, 3].into_iter().enumerate() {
        let m = members[node - 1].clone();
        let (outcome, stop, killed) = (outcome.clone(), stop.clone(), killed.clone());
        let (acks, acks_after_kill) = (acks.clone(), acks_after_kill.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("crash/{w}/{i}");
                i += 1;
                let mut tries = 0;
                let rev = loop {
                    let was_killed = killed.load(Ordering::SeqCst);
                    match put(&m, &key).await {
                        Ok(rev) => break Some(rev),
                        Err(e) if node == 1 => {
                            let when = if was_killed { "after" } else { "before" };
                            let text = format!("{key}, sent {when} the kill: {e}");
                            outcome.lock().unwrap().on_killed.push(text);
                            break None;
                        }
                        Err(e) => {
                            tries += 1;
                            let text = format!("{key} via node {node}, try {tries}: {e:?}");
                            if tries == 5 {
                                outcome.lock().unwrap().permanent.push(text);
                                break None;
                            }
                            outcome.lock().unwrap().transient.push(text);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                };
                match rev {
                    Some(rev) => {
                        outcome.lock().unwrap().acked.push((rev, key));
                        acks.fetch_add(1, Ordering::SeqCst);
                        if killed.load(Ordering::SeqCst) {
                            acks_after_kill.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    None if node == 1 => return,
                    None => {}
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while acks.load(Ordering::SeqCst) < 40 {
        assert!(Instant::now() < deadline, "writers made no progress before the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    galera.kill(1);
    killed.store(true, Ordering::SeqCst);
    let kill_at = Instant::now();
    let mut first_ack_after_kill = None;
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let after = acks_after_kill.load(Ordering::SeqCst);
        if after > 0 && first_ack_after_kill.is_none() {
            first_ack_after_kill = Some(kill_at.elapsed());
        }
        if after >= 60 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {after} writes through nodes 2 and 3 in 45 s after the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let outcome = std::mem::take(&mut *outcome.lock().unwrap());
    eprintln!(
        "galera: node 1 killed; first write through the others after {:?}; {} acknowledged in all, \
         {} after the kill",
        first_ack_after_kill.unwrap(),
        outcome.acked.len(),
        acks_after_kill.load(Ordering::SeqCst)
    );
    for f in &outcome.on_killed {
        eprintln!("galera: through the killed node: {f}");
    }
    for f in &outcome.transient {
        eprintln!("galera: retried through a surviving node: {f}");
    }
    assert!(
        outcome.permanent.is_empty(),
        "writes through surviving nodes failed:\n{}",
        outcome.permanent.join("\n")
    );
    assert!(outcome.on_killed.len() <= 2, "node 1's writers stop at their first failure");

    // Acknowledged revisions are unique, and the revisions since `start` have no gap: each
    // one up to the current holds its events (a write acknowledged by none, e.g. one in
    // flight on node 1, may hold one too), the same through both surviving nodes.
    let acked = unique(&outcome.acked);
    let current = members[1].revisions().await.unwrap().current;
    assert_eq!(members[2].revisions().await.unwrap().current, current, "nodes 2 and 3 agree");
    let used = revisions_in(&members[1], start + 1, current).await;
    assert_eq!(
        used.keys().copied().collect::<Vec<_>>(),
        (start + 1..=current).collect::<Vec<_>>(),
        "every revision after {start} up to {current} holds a write"
    );
    assert_eq!(current, start + used.len() as i64);
    for (rev, key) in &acked {
        assert_eq!(used.get(rev), Some(&vec![key.clone()]), "acknowledged revision {rev} holds {key}");
    }
    assert_eq!(revisions_in(&members[2], start + 1, current).await, used, "node 3 reads the same revisions");
    let unacknowledged: BTreeSet<i64> = used.keys().filter(|r| !acked.contains_key(r)).copied().collect();
    eprintln!(
        "galera: revisions {}..={current} dense; {} acknowledged, unacknowledged but committed: {unacknowledged:?}; \
         phase {:?}, test {:?}",
        start + 1,
        acked.len(),
        phase.elapsed(),
        began.elapsed()
    );
    drop(members);
}
