//! The recipes against real members (cairn, or etcd 3.4 with `CAIRN_TEST_TARGET=etcd`):
//! leases with keepalive and loss, locks with fencing tokens, elections, typed keys.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cairn_client::proto::etcdserverpb::{DeleteRangeRequest, LeaseRevokeRequest, PutRequest, RangeRequest};
use cairn_client::{prefix_end, CasOutcome, Client, Election, Error, Lease, Lock, TypedKey, Versioned};
use cairn_tests::{eventually, Cluster, ClusterOptions, Target};
use futures::StreamExt;

const CONVERGE: Duration = Duration::from_secs(30);

async fn start(nodes: usize) -> Result<(Cluster, Client)> {
    let cluster = Cluster::start(Target::from_env(), ClusterOptions::nodes(nodes)).await?;
    let client = Client::connect(cluster.endpoints()).await?;
    Ok((cluster, client))
}

async fn exists(client: &Client, key: &str) -> Result<bool> {
    Ok(!client.get(key).await?.kvs.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_keeps_its_keys_past_the_ttl_and_signals_its_loss() -> Result<()> {
    let (_cluster, client) = start(3).await?;
    let lease = Lease::grant(&client, 2).await?;
    client
        .put_request(PutRequest { key: b"presence".to_vec(), lease: lease.id(), ..Default::default() })
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(exists(&client, "presence").await?, "a kept-alive lease lost its key");
    ensure!(!lease.is_lost());

    // Someone else revokes it: the holder hears of it.
    client.lease().lease_revoke(LeaseRevokeRequest { id: lease.id() }).await?;
    tokio::time::timeout(CONVERGE, lease.lost()).await.context("no loss signal after a revoke")?;
    ensure!(!exists(&client, "presence").await?);

    // Dropping a lease stops the keepalives: it expires.
    let lease = Lease::grant(&client, 2).await?;
    client.put_request(PutRequest { key: b"gone".to_vec(), lease: lease.id(), ..Default::default() }).await?;
    drop(lease);
    eventually(CONVERGE, "a dropped lease to expire", || async {
        ensure!(!exists(&client, "gone").await?, "still there");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_guards_exclude_each_other_and_tokens_grow() -> Result<()> {
    let (cluster, _) = start(3).await?;
    let holding = Arc::new(AtomicBool::new(false));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..6 {
        // Each contender on its own member.
        let client = Client::connect([cluster.endpoint(i % 3)]).await?;
        let (holding, tokens) = (holding.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            let lease = Lease::grant(&client, 5).await?;
            let guard = Lock::new(&client, "recipes-lock").lock(&lease).await?;
            ensure!(!holding.swap(true, Ordering::SeqCst), "two holders at once");
            ensure!(guard.key().starts_with(b"recipes-lock/"));
            tokens.lock().unwrap().push(guard.fencing_token());
            tokio::time::sleep(Duration::from_millis(20)).await;
            holding.store(false, Ordering::SeqCst);
            if i % 2 == 0 {
                guard.unlock().await?;
            } else {
                // Dropping the guard releases it too.
                drop(guard);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t).await.context("contenders hung")???;
    }
    let tokens = tokens.lock().unwrap().clone();
    ensure!(tokens.len() == 6 && tokens.windows(2).all(|w| w[0] < w[1]), "tokens {tokens:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_leaves_the_queue_when_its_lease_ends_or_it_gives_up() -> Result<()> {
    let (_cluster, client) = start(1).await?;
    let holder = Lease::grant(&client, 10).await?;
    let lock = Lock::new(&client, "queue");
    let held = lock.lock(&holder).await?;

    // Giving up (the future dropped) takes the waiter's key away.
    let impatient = Lease::grant(&client, 10).await?;
    let gave_up = tokio::time::timeout(Duration::from_millis(500), lock.lock(&impatient)).await;
    ensure!(gave_up.is_err(), "got a held lock");
    eventually(CONVERGE, "the impatient waiter's key to go", || async {
        let queue = client
            .range(RangeRequest {
                key: b"queue/".to_vec(),
                range_end: prefix_end(b"queue/"),
                ..Default::default()
            })
            .await?;
        ensure!(queue.kvs.len() == 1, "queue holds {} keys", queue.kvs.len());
        Ok(())
    })
    .await?;

    // A waiter whose lease is revoked fails with "session expired".
    let doomed = Lease::grant(&client, 10).await?;
    let revoke = {
        let client = client.clone();
        let id = doomed.id();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            client.lease().lease_revoke(LeaseRevokeRequest { id }).await
        })
    };
    match tokio::time::timeout(CONVERGE, lock.lock(&doomed)).await.context("waiter hung")? {
        Err(Error::SessionExpired) => {}
        Err(e) => bail!("expected session expired, got {e}"),
        Ok(_) => bail!("a waiter with a revoked lease got the lock"),
    }
    revoke.await??;
    held.unlock().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_campaign_observe_proclaim_and_resign_on_drop() -> Result<()> {
    let (cluster, _) = start(3).await?;
    let a = Client::connect([cluster.endpoint(0)]).await?;
    let b = Client::connect([cluster.endpoint(1)]).await?;
    let watcher = Client::connect([cluster.endpoint(2)]).await?;
    let election = Election::new(&watcher, "scheduler");
    ensure!(election.leader().await?.is_none());
    let mut observed = Box::pin(election.observe());

    let lease_a = Lease::grant(&a, 5).await?;
    let leading = Election::new(&a, "scheduler").campaign(&lease_a, "a").await?;
    let (_, kv) = observed.next().await.context("observe ended")??;
    ensure!(kv.value == b"a", "observed {kv:?}");

    let lease_b = Lease::grant(&b, 5).await?;
    let b_election = Election::new(&b, "scheduler");
    let campaigning = tokio::spawn(async move {
        let won = b_election.campaign(&lease_b, "b").await;
        (won, lease_b)
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    ensure!(!campaigning.is_finished(), "b won while a led");
    let first_token = leading.fencing_token();
    leading.proclaim("a:2").await?;
    drop(leading); // resigns

    let (won, _lease_b) = tokio::time::timeout(CONVERGE, campaigning).await.context("no hand-over")??;
    let won = won?;
    ensure!(won.fencing_token() > first_token);
    let mut values = Vec::new();
    while values.last().map(Vec::as_slice) != Some(&b"b"[..]) {
        let (_, kv) = tokio::time::timeout(CONVERGE, observed.next()).await?.context("observe ended")??;
        values.push(kv.value);
    }
    ensure!(values == [b"a:2".to_vec(), b"b".to_vec()], "observed {values:?}");
    won.proclaim("b:2").await?;
    ensure!(election.leader().await?.map(|kv| kv.value) == Some(b"b:2".to_vec()));
    won.resign().await?;
    ensure!(election.leader().await?.is_none());
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
struct Settings {
    replicas: u32,
    region: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_key_get_put_compare_and_swap_and_watch() -> Result<()> {
    let (_cluster, client) = start(1).await?;
    let settings: TypedKey<Settings> = TypedKey::new(&client, "config/settings");
    ensure!(settings.get().await?.is_none());
    let mut changes = Box::pin(settings.watch());
    ensure!(changes.next().await.context("watch ended")??.is_none(), "absent key watched as present");

    let v1 = Settings { replicas: 3, region: "eu".into() };
    let v2 = Settings { replicas: 5, region: "eu".into() };
    let CasOutcome::Swapped { revision } = settings.compare_and_swap(None, &v1).await? else {
        bail!("create-if-absent failed on an absent key");
    };
    match settings.compare_and_swap(None, &v2).await? {
        CasOutcome::Conflict { current: Some(Versioned { value, mod_revision, version: 1, schema: 1 }) } => {
            ensure!(value == v1 && mod_revision == revision);
        }
        other => bail!("create-if-absent on a present key: {other:?}"),
    }
    ensure!(matches!(settings.compare_and_swap(Some(revision), &v2).await?, CasOutcome::Swapped { .. }));
    ensure!(matches!(settings.compare_and_swap(Some(revision), &v1).await?, CasOutcome::Conflict { .. }));
    ensure!(settings.get().await?.map(|v| v.value) == Some(v2.clone()));

    // The watch saw both versions, then sees a delete.
    for expected in [&v1, &v2] {
        let change = tokio::time::timeout(CONVERGE, changes.next()).await?.context("watch ended")??;
        ensure!(change.as_ref().map(|v| &v.value) == Some(expected), "watched {change:?}");
    }
    client.delete(DeleteRangeRequest { key: b"config/settings".to_vec(), ..Default::default() }).await?;
    let change = tokio::time::timeout(CONVERGE, changes.next()).await?.context("watch ended")??;
    ensure!(change.is_none(), "a delete watched as {change:?}");

    // A value that is not JSON of the type is an error, not a panic.
    client.put("config/settings", "not json").await?;
    match settings.get().await {
        Err(Error::Decode { .. }) => Ok(()),
        other => bail!("decoding garbage gave {other:?}"),
    }
}

/// The next shape of `Settings`: a field added (older values read with its default).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
struct SettingsV2 {
    replicas: u32,
    region: String,
    #[serde(default)]
    zones: Vec<String>,
}

/// Newer code writes schema 2; code that reads schema 1 refuses it clearly (a rolling
/// upgrade of the product's replicas), while schema-2 code reads both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_values_carry_their_schema_and_older_readers_refuse_newer_ones() -> Result<()> {
    let (_cluster, client) = start(1).await?;
    let old: TypedKey<Settings> = TypedKey::new(&client, "config/schema");
    let new: TypedKey<SettingsV2> = TypedKey::with_schema(&client, "config/schema", 2);

    old.put(&Settings { replicas: 3, region: "eu".into() }).await?;
    let raw = client.get("config/schema").await?.kvs[0].value.clone();
    ensure!(raw == br#"{"replicas":3,"region":"eu"}"#, "schema 1 is plain JSON: {raw:?}");
    let read = new.get().await?.context("absent")?;
    ensure!(read.schema == 1 && read.value.zones.is_empty() && read.value.replicas == 3, "{read:?}");

    let v2 = SettingsV2 { replicas: 5, region: "us".into(), zones: vec!["a".into(), "b".into()] };
    let CasOutcome::Swapped { .. } = new.compare_and_swap(Some(read.mod_revision), &v2).await? else {
        bail!("the schema-2 write lost its compare");
    };
    ensure!(new.get().await?.map(|v| (v.value, v.schema)) == Some((v2.clone(), 2)));
    match old.get().await {
        Err(e @ Error::NewerSchema { found: 2, supported: 1, .. }) => {
            ensure!(e.to_string().contains("upgrade this replica"), "{e}");
        }
        other => bail!("a schema-1 reader of a schema-2 value got {other:?}"),
    }
    // Its watch says so too, instead of passing on a misread value.
    let mut changes = Box::pin(old.watch());
    match tokio::time::timeout(CONVERGE, changes.next()).await?.context("watch ended")? {
        Err(Error::NewerSchema { .. }) => {}
        other => bail!("the schema-1 watch gave {other:?}"),
    }
    // A value of a user type that happens to have the field name is still plain JSON.
    let odd: TypedKey<serde_json::Value> = TypedKey::new(&client, "config/odd");
    odd.put(&serde_json::json!({"cairn_schema": 9, "value": 1, "other": 2})).await?;
    ensure!(odd.get().await?.context("absent")?.schema == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_fenced_by_the_lock_revision_fails_once_the_lock_passed_on() -> Result<()> {
    use cairn_client::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
    use cairn_client::proto::etcdserverpb::request_op::Request as Op;
    use cairn_client::proto::etcdserverpb::{Compare, RequestOp, TxnRequest};

    let (_cluster, client) = start(1).await?;
    let fenced_put = |key: &[u8], token: i64, value: &str| TxnRequest {
        compare: vec![Compare {
            key: key.to_vec(),
            target: CompareTarget::Create as i32,
            result: CompareResult::Equal as i32,
            target_union: Some(TargetUnion::CreateRevision(token)),
            range_end: vec![],
        }],
        success: vec![RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: b"protected".to_vec(),
                value: value.into(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    let old_lease = Lease::grant(&client, 10).await?;
    let old = Lock::new(&client, "fenced").lock(&old_lease).await?;
    ensure!(client.txn(fenced_put(old.key(), old.fencing_token(), "old")).await?.succeeded);
    // The old holder's lease ends behind its back (a pause longer than the TTL, say).
    let (old_key, old_token) = (old.key().to_vec(), old.fencing_token());
    std::mem::forget(old); // the paused holder does not release anything
    client.lease().lease_revoke(LeaseRevokeRequest { id: old_lease.orphan() }).await?;
    let new_lease = Lease::grant(&client, 10).await?;
    let new = Lock::new(&client, "fenced").lock(&new_lease).await?;
    ensure!(new.fencing_token() > old_token);
    // The old holder wakes up and writes: refused. The new holder's write goes through.
    ensure!(!client.txn(fenced_put(&old_key, old_token, "stale")).await?.succeeded);
    ensure!(client.txn(fenced_put(new.key(), new.fencing_token(), "new")).await?.succeeded);
    ensure!(client.get("protected").await?.kvs[0].value == b"new");
    Ok(())
}

/// The component registry: every server's components with version and heartbeat; a
/// version that differs, a hung server (stale heartbeat) and a dead one (lease expiry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_lists_components_with_versions_and_heartbeats() -> Result<()> {
    use cairn_client::Registry;
    use std::collections::BTreeMap;
    let (_cluster, client) = start(3).await?;
    let registry = Registry::new(&client, "product/components/");
    let meta = BTreeMap::from([("port".to_string(), "8080".to_string())]);
    let fast = Duration::from_millis(200);
    let a = registry.register("web", "server-1", "1.4.0", meta.clone(), 2, fast).await?;
    let _b = registry.register("web", "server-2", "1.4.0", meta.clone(), 2, fast).await?;
    let c = registry.register("web", "server-3", "1.5.0", meta.clone(), 2, fast).await?;
    // server-4's heartbeat stops (it hangs) while its lease is still kept alive.
    let _hung = registry
        .register("service", "server-4", "1.4.0", BTreeMap::new(), 5, Duration::from_secs(3600))
        .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let list = registry.list(Duration::from_secs(1)).await?;
    let seen: Vec<(String, String, bool, bool)> = list
        .iter()
        .map(|s| {
            (s.registration.component.clone(), s.registration.server.clone(), s.version_in_sync, s.stale)
        })
        .collect();
    ensure!(
        seen == vec![
            ("service".into(), "server-4".into(), true, true),
            ("web".into(), "server-1".into(), true, false),
            ("web".into(), "server-2".into(), true, false),
            ("web".into(), "server-3".into(), false, false),
        ],
        "{seen:?}"
    );
    ensure!(list[1].registration.meta == meta && list[1].heartbeat_age < Duration::from_secs(1), "{list:?}");
    // Deregistered: gone at once. Dropped (the server died): gone once its lease expires.
    a.deregister().await?;
    drop(c);
    eventually(CONVERGE, "a dead server's registration expires", || async {
        let servers: Vec<String> = registry
            .list(Duration::from_secs(60))
            .await?
            .into_iter()
            .map(|s| s.registration.server)
            .collect();
        ensure!(servers == vec!["server-4".to_string(), "server-2".to_string()], "{servers:?}");
        Ok(())
    })
    .await?;
    Ok(())
}

/// Single-runner jobs: one turn at a time, the next server's turn starts when the first
/// one's lease ends, and the old runner's late write is refused by the fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_runner_job_moves_and_fences_the_old_runner() -> Result<()> {
    use cairn_client::SingleRunner;
    let (cluster, client) = start(3).await?;
    let other = Client::connect(cluster.endpoints()).await?;
    let first = SingleRunner::new(&client, "jobs/indexer", 2).acquire("server-1").await?;
    first.fenced_put("index/state", "by server-1").await?;
    let second =
        tokio::spawn(async move { SingleRunner::new(&other, "jobs/indexer", 2).acquire("server-2").await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    ensure!(!second.is_finished(), "two turns at once");
    // server-1 stalls and its lease ends (revoked here, as its expiry would).
    client.lease().lease_revoke(LeaseRevokeRequest { id: first.lease_id() }).await?;
    let second = tokio::time::timeout(CONVERGE, second).await.context("the job did not move")???;
    ensure!(second.fencing_token() > first.fencing_token());
    tokio::time::timeout(CONVERGE, first.lost()).await.context("the old turn did not learn it ended")?;
    match first.fenced_put("index/state", "late write by server-1").await {
        Err(Error::NotLeader) => {}
        other => bail!("the old runner's late write was not fenced: {other:?}"),
    }
    second.fenced_put("index/state", "by server-2").await?;
    let value = client.get("index/state").await?.kvs.pop().context("no state")?.value;
    ensure!(value == b"by server-2", "{:?}", String::from_utf8_lossy(&value));
    // Released: the next turn starts at once.
    second.release().await?;
    let third = tokio::time::timeout(
        Duration::from_secs(5),
        SingleRunner::new(&client, "jobs/indexer", 2).acquire("server-3"),
    )
    .await
    .context("a released turn still blocked the next")??;
    ensure!(third.fencing_token() > first.fencing_token());
    Ok(())
}

/// The next message of an inbox's stream, within [`CONVERGE`].
async fn next_message<S>(stream: &mut S) -> Result<cairn_client::Message>
where
    S: futures::Stream<Item = Result<cairn_client::Message, Error>> + Unpin,
{
    let next = tokio::time::timeout(CONVERGE, stream.next()).await.context("no message")?;
    Ok(next.context("stream ended")??)
}

/// The service messenger: a message to one server reaches it (once acknowledged, never
/// again), a broadcast reaches every open inbox, an unacknowledged message is delivered
/// again to the server's next inbox, and a server without an inbox is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_one_server_or_all_at_least_once() -> Result<()> {
    use cairn_client::Messenger;
    let (_cluster, client) = start(1).await?;
    let prefix = "product/messages/";
    let a = Messenger::new(&client, prefix, "a");
    let b = Messenger::new(&client, prefix, "b");
    let c = Messenger::new(&client, prefix, "c");
    let inbox_a = a.open_inbox(10).await?;
    // b's first inbox has a short lease: its unacknowledged message must outlive it.
    let inbox_b = b.open_inbox(2).await?;
    let mut to_a = Box::pin(inbox_a.messages());
    let mut to_b = Box::pin(inbox_b.messages());

    // One to one.
    let id = c.send("a", "reload config").await?;
    let got = next_message(&mut to_a).await?;
    ensure!(got.id == id && got.from == "c" && got.to == "a" && got.body == "reload config", "{got:?}");
    inbox_a.ack(&got.id).await?;

    // To a server without an inbox.
    match c.send("nobody", "hello").await {
        Err(Error::NoInbox(server)) => ensure!(server == "nobody"),
        other => bail!("a message to a server without an inbox gave {other:?}"),
    }

    // To all: a and b (c has no inbox).
    let mut reached = c.broadcast("drop caches").await?;
    reached.sort();
    ensure!(reached == ["a", "b"], "broadcast reached {reached:?}");
    let got_a = next_message(&mut to_a).await?;
    ensure!(got_a.body == "drop caches", "{got_a:?}");
    inbox_a.ack(&got_a.id).await?;
    let got_b = next_message(&mut to_b).await?;
    ensure!(got_b.body == "drop caches" && got_b.id != got_a.id, "{got_b:?}");

    // b does not acknowledge it, and restarts: its next inbox gets it again, even after
    // the first inbox's lease has expired.
    drop(to_b);
    let lease_b = inbox_b.lease().id();
    drop(inbox_b);
    let inbox_b = b.open_inbox(10).await?;
    ensure!(inbox_b.lease().id() != lease_b);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut again = Box::pin(inbox_b.messages());
    let redelivered = next_message(&mut again).await?;
    ensure!(redelivered == got_b, "redelivered {redelivered:?}, first {got_b:?}");
    inbox_b.ack(&redelivered.id).await?;

    // a's acknowledged messages are gone; closing its inbox refuses new ones at once.
    let left = client
        .range(RangeRequest {
            key: format!("{prefix}msg/a/").into_bytes(),
            range_end: prefix_end(format!("{prefix}msg/a/").as_bytes()),
            count_only: true,
            ..Default::default()
        })
        .await?;
    ensure!(left.count == 0, "{} acknowledged messages left", left.count);
    drop(to_a);
    inbox_a.close().await?;
    ensure!(matches!(c.send("a", "late").await, Err(Error::NoInbox(_))));
    ensure!(c.servers().await? == ["b"]);
    Ok(())
}
