//! Lock and Election services (v3lockpb, v3electionpb) through the `etcd-client` crate and
//! etcdctl, on real 3-member clusters: mutual exclusion with many contenders, hand-over when
//! the holder's or the leader's member dies, and etcd's errors. Runs against etcd 3.4 too
//! (`CAIRN_TEST_TARGET=etcd`).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cairn_tests::etcd_client::{
    Client, EventType, LeaderKey, LockOptions, ProclaimOptions, ResignOptions, WatchOptions,
};
use cairn_tests::{eventually, grpc_code};
use common::{keep_alive_loop, read_until, spawn_etcdctl, start_nodes, CONVERGE};
use tokio::task::JoinHandle;

/// Keeps lease `id` alive through `client` until the task is aborted.
fn keep_alive(client: &Client, id: i64) -> JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        let _ = keep_alive_loop(client, id, Arc::default(), Arc::default()).await;
    })
}

/// The create revision of `key` (a lock key's fencing token), read through `client`.
async fn create_revision(client: &mut Client, key: &[u8]) -> Result<i64> {
    let resp = client.get(key, None).await?;
    Ok(resp.kvs().first().context("lock key missing")?.create_revision())
}

/// The value the current leader of `name` proclaimed.
async fn leader_value(client: &mut Client, name: &str) -> Result<String> {
    let resp = client.leader(name).await?;
    Ok(String::from_utf8(resp.kv().context("leader response without kv")?.value().to_vec())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_excludes_twelve_contenders_spread_over_three_members() -> Result<()> {
    let cluster = start_nodes(3).await;
    let holding = Arc::new(AtomicBool::new(false));
    // Fencing tokens in the order the holders got the lock.
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let mut client = cluster.client(i % 3).await?;
        let (holding, tokens) = (holding.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            let lease = client.lease_grant(10, None).await?.id();
            let keeper = keep_alive(&client, lease);
            let resp = client.lock("mutex", Some(LockOptions::new().with_lease(lease))).await?;
            let key = resp.key().to_vec();
            ensure!(
                key.starts_with(b"mutex/"),
                "lock key {:?} is not under the name",
                String::from_utf8_lossy(&key)
            );
            ensure!(
                !holding.swap(true, Ordering::SeqCst),
                "contender {i} got the lock while another held it"
            );
            let token = create_revision(&mut client, &key).await?;
            tokens.lock().unwrap().push(token);
            tokio::time::sleep(Duration::from_millis(30)).await;
            holding.store(false, Ordering::SeqCst);
            client.unlock(key).await?;
            keeper.abort();
            client.lease_revoke(lease).await?;
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(90), t).await.context("contenders did not finish")???;
    }
    let tokens = tokens.lock().unwrap().clone();
    ensure!(tokens.len() == 12, "{} of 12 contenders got the lock", tokens.len());
    ensure!(tokens.windows(2).all(|w| w[0] < w[1]), "fencing tokens do not grow: {tokens:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_passes_on_when_the_holders_member_dies() -> Result<()> {
    let cluster = start_nodes(3).await;
    // The holder talks only to the Raft leader's member: its death takes the leader and the
    // holder's keepalives at once.
    let h = cluster.leader().await?;
    let w = (h + 1) % 3;
    let mut holder = cluster.client(h).await?;
    let holder_lease = holder.lease_grant(3, None).await?.id();
    let holder_keeper = keep_alive(&holder, holder_lease);
    let held = holder.lock("failover-lock", Some(LockOptions::new().with_lease(holder_lease))).await?;
    let mut waiter = cluster.client(w).await?;
    let first_token = create_revision(&mut waiter, held.key()).await?;

    let waiter_lease = waiter.lease_grant(10, None).await?.id();
    let waiter_keeper = keep_alive(&waiter, waiter_lease);
    let mut w2 = waiter.clone();
    let waiting = tokio::spawn(async move {
        w2.lock("failover-lock", Some(LockOptions::new().with_lease(waiter_lease))).await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ensure!(!waiting.is_finished(), "the waiter got the lock while the holder still held it");

    cluster.kill(h)?;
    holder_keeper.abort();
    let won = tokio::time::timeout(CONVERGE, waiting).await.context("the waiter never got the lock")???;
    let second_token = create_revision(&mut waiter, won.key()).await?;
    ensure!(second_token > first_token, "fencing token went from {first_token} to {second_token}");
    let old = waiter.get(held.key(), None).await?;
    ensure!(old.kvs().is_empty(), "the dead holder's lock key is still there");
    waiter.unlock(won.key()).await?;
    waiter_keeper.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn election_hands_over_when_the_leaders_member_dies() -> Result<()> {
    let cluster = start_nodes(3).await;
    let a = cluster.leader().await?;
    let (b, c) = ((a + 1) % 3, (a + 2) % 3);

    let mut first = cluster.client(a).await?;
    let first_lease = first.lease_grant(3, None).await?.id();
    let first_keeper = keep_alive(&first, first_lease);
    let campaign = first.campaign("jobs", "node-a", first_lease).await?;
    let first_key = campaign.leader().context("campaign without leader key")?.clone();

    let mut observer = cluster.client(c).await?;
    let mut observed = observer.observe("jobs").await?;
    let o = observed.message().await?.context("observe ended")?;
    ensure!(o.kv().map(|kv| kv.value()) == Some(&b"node-a"[..]), "observer first saw {o:?}");
    ensure!(leader_value(&mut observer, "jobs").await? == "node-a");

    let mut second = cluster.client(b).await?;
    let second_lease = second.lease_grant(10, None).await?.id();
    let second_keeper = keep_alive(&second, second_lease);
    let mut s2 = second.clone();
    let campaigning = tokio::spawn(async move { s2.campaign("jobs", "node-b", second_lease).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ensure!(!campaigning.is_finished(), "a second candidate won while the first still led");

    cluster.kill(a)?;
    first_keeper.abort();
    let won = tokio::time::timeout(CONVERGE, campaigning).await.context("no hand-over")???;
    let second_key = won.leader().context("campaign without leader key")?.clone();
    ensure!(second_key.rev() > first_key.rev(), "leadership revision did not grow");

    // The observer (on a surviving member) sees the new leader's value.
    tokio::time::timeout(CONVERGE, async {
        loop {
            let o = observed.message().await?.context("observe ended")?;
            if o.kv().map(|kv| kv.value()) == Some(&b"node-b"[..]) {
                return Ok::<_, anyhow::Error>(());
            }
        }
    })
    .await
    .context("observer never saw the new leader")??;

    second.proclaim("node-b:2", Some(ProclaimOptions::new().with_leader(second_key.clone()))).await?;
    let o = tokio::time::timeout(CONVERGE, observed.message()).await??.context("observe ended")?;
    ensure!(o.kv().map(|kv| kv.value()) == Some(&b"node-b:2"[..]), "observer saw {o:?} after proclaim");
    ensure!(leader_value(&mut observer, "jobs").await? == "node-b:2");

    // The deposed leader's key can no longer proclaim.
    let err = observer
        .proclaim("stale", Some(ProclaimOptions::new().with_leader(first_key)))
        .await
        .err()
        .context("a deposed leader proclaimed")?;
    let (_, message) = grpc_code(&err).context("not a gRPC error")?;
    ensure!(message.contains("election: not leader"), "deposed proclaim: {err}");

    second.resign(Some(ResignOptions::new().with_leader(second_key))).await?;
    let err = observer.leader("jobs").await.err().context("a leader after the last one resigned")?;
    let (_, message) = grpc_code(&err).context("not a gRPC error")?;
    ensure!(message.contains("election: no leader"), "leader of an empty election: {err}");
    second_keeper.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn election_errors_follow_etcd() -> Result<()> {
    let cluster = start_nodes(1).await;
    let mut client = cluster.client(0).await?;
    let err = client.leader("nobody").await.err().context("leader of an empty election")?;
    ensure!(grpc_code(&err).is_some_and(|(_, m)| m.contains("election: no leader")), "{err}");

    // A made-up leader key: not the leader. (With revision 0 it would be "the key does not
    // exist", which holds: etcd then proclaims.)
    let fake = LeaderKey::new().with_name("nobody").with_key("nobody/1234").with_rev(999_999);
    let err = client.proclaim("v", Some(ProclaimOptions::new().with_leader(fake.clone()))).await.err();
    let err = err.context("proclaim with a made-up key succeeded")?;
    ensure!(grpc_code(&err).is_some_and(|(_, m)| m.contains("election: not leader")), "{err}");
    // Resigning what one does not hold is not an error (etcd).
    client.resign(Some(ResignOptions::new().with_leader(fake))).await?;
    // Proclaim and Resign without a leader key are refused with etcd's text.
    let err = client.proclaim("v", None).await.err().context("proclaim without a leader key")?;
    ensure!(grpc_code(&err).is_some_and(|(_, m)| m.contains("\"leader\" field must be provided")), "{err}");
    let err = client.resign(None).await.err().context("resign without a leader key")?;
    ensure!(grpc_code(&err).is_some_and(|(_, m)| m.contains("\"leader\" field must be provided")), "{err}");

    // A campaign or a lock on a lease that does not exist fails with etcd's lease error.
    let err = client.campaign("e", "v", 0x7777).await.err().context("campaign on an unknown lease")?;
    ensure!(grpc_code(&err).is_some_and(|(_, m)| m.contains("requested lease not found")), "{err}");
    let err = client.lock("l", Some(LockOptions::new().with_lease(0x7777))).await.err();
    let err = err.context("lock on an unknown lease")?;
    ensure!(grpc_code(&err).is_some_and(|(_, m)| m.contains("requested lease not found")), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcdctl_lock_and_elect_share_locks_and_elections_with_the_services() -> Result<()> {
    let cluster = start_nodes(3).await;
    let mut client = cluster.client(0).await?;
    let lease = client.lease_grant(10, None).await?.id();
    let keeper = keep_alive(&client, lease);
    let held = client.lock("shared", Some(LockOptions::new().with_lease(lease))).await?;
    let token = create_revision(&mut client, held.key()).await?;

    // etcdctl (etcd's client-side mutex) queues behind the Lock service's holder.
    let ctl =
        spawn_etcdctl(&cluster.endpoint(1), &["lock", "shared", "--", "sh", "-c", "echo $ETCD_LOCK_REV"])?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.unlock(held.key()).await?;
    let out = tokio::time::timeout(CONVERGE, ctl.wait_with_output()).await.context("etcdctl lock hung")??;
    ensure!(out.status.success(), "etcdctl lock failed: {}", String::from_utf8_lossy(&out.stderr));
    let rev: i64 =
        String::from_utf8(out.stdout)?.trim().parse().context("etcdctl lock printed no revision")?;
    ensure!(rev > token, "etcdctl's lock revision {rev} is not after the first holder's {token}");

    // etcdctl elect campaigns; the Election service sees it lead, then resign on SIGINT.
    let mut elect = spawn_etcdctl(&cluster.endpoint(2), &["elect", "ctl-election", "proposal"])?;
    // etcdctl prints the leader key once it leads; a signal before that is not a resignation.
    let printed = read_until(&mut elect, "proposal").await.context("etcdctl elect never led")?;
    ensure!(printed.contains("ctl-election/"), "etcdctl elect printed {printed:?}");
    let mut c1 = cluster.client(1).await?;
    ensure!(leader_value(&mut c1, "ctl-election").await? == "proposal");
    let pid = elect.id().context("etcdctl elect exited early")?;
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let _ = tokio::time::timeout(CONVERGE, elect.wait()).await;
    eventually(CONVERGE, "the election to be empty after etcdctl resigned", || {
        let mut c = c1.clone();
        async move {
            match c.leader("ctl-election").await {
                Err(e) if grpc_code(&e).is_some_and(|(_, m)| m.contains("no leader")) => Ok(()),
                other => bail!("leader: {other:?}"),
            }
        }
    })
    .await?;

    // `etcdctl elect -l` observes what the Election service campaigns for.
    let mut listen = spawn_etcdctl(&cluster.endpoint(0), &["elect", "-l", "ctl-election"])?;
    let campaign = c1.campaign("ctl-election", "from-the-service", lease).await?;
    let seen = read_until(&mut listen, "from-the-service").await.context("etcdctl elect -l saw nothing")?;
    ensure!(seen.contains("ctl-election/"), "etcdctl elect -l printed {seen:?}");
    let leader = campaign.leader().context("no leader key")?.clone();
    c1.resign(Some(ResignOptions::new().with_leader(leader))).await?;
    keeper.abort();
    drop(listen);

    // Lock keys are ordinary keys: a watch on the prefix sees the queue.
    let mut w = cluster.client(2).await?;
    let mut events =
        w.watch("shared/", Some(WatchOptions::new().with_prefix().with_start_revision(token))).await?;
    let first = loop {
        let r = events.message().await?.context("watch ended")?;
        if let Some(e) = r.events().first() {
            break e.clone();
        }
    };
    ensure!(first.event_type() == EventType::Put, "first event {first:?}");
    ensure!(first.kv().map(|kv| kv.mod_revision()) == Some(token), "first event {first:?}");
    Ok(())
}
