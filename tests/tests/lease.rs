//! Lease, as etcd defines it: grant (with and without an id, minimum and maximum TTL),
//! revoke, keepalive, time-to-live with keys, listing, and what a lease does to its keys:
//! expiry and revoke delete every attached key in one revision; keepalives sent to a
//! follower keep a lease alive across the leader's death; a leader's death never makes a
//! lease expire early. Every call goes through a different node than the previous one.
//! Runs against etcd too (`CAIRN_TEST_TARGET=etcd`).
//!
//! The harness starts every cluster with the default timings (heartbeat 100 ms, election
//! timeout 1000 ms), so the minimum TTL is etcd's ⌈1.5 × election timeout⌉ = 2 s.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use cairn_tests::etcd_client::{
    self, Client, EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions,
    WatchStream,
};
use cairn_tests::{eventually, Cluster, Code};
use common::*;

/// The minimum TTL with the harness's default election timeout (1000 ms).
const MIN_TTL: i64 = 2;
/// A lease id nobody grants.
const UNKNOWN_LEASE: i64 = 0x7a7a_0000_0001;
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

fn key_set<K: AsRef<[u8]>>(keys: &[K]) -> BTreeSet<String> {
    keys.iter().map(|k| String::from_utf8_lossy(k.as_ref()).into_owned()).collect()
}

fn names(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

/// The keys attached to `id`, as TimeToLive through `client` reports them (any order).
async fn attached(client: &mut Client, id: i64) -> Result<BTreeSet<String>> {
    let resp = client.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys())).await?;
    ensure!(resp.id() == id, "time-to-live of {id:x} answered for {:x}", resp.id());
    Ok(key_set(resp.keys()))
}

/// The lease ids node `i` lists, after a linearizable read on it (so it has applied every
/// write acknowledged before).
async fn listed(cluster: &Cluster, i: usize) -> Result<BTreeSet<i64>> {
    let mut c = cluster.client(i).await?;
    c.get("lease/barrier", None).await?;
    let resp = c.leases().await?;
    Ok(resp.leases().iter().map(|l| l.id()).collect())
}

async fn exists(client: &mut Client, key: &str, serializable: bool) -> Result<bool> {
    let opts = if serializable { GetOptions::new().with_serializable() } else { GetOptions::new() };
    Ok(client.get(key, Some(opts)).await?.count() > 0)
}

/// A watch on `prefix` from revision `from`, past its creation response.
async fn watch_from(client: &mut Client, prefix: &str, from: i64) -> Result<WatchStream> {
    let opts = WatchOptions::new().with_prefix().with_start_revision(from);
    let mut stream = client.watch(prefix, Some(opts)).await?;
    let created = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .context("watch creation timed out")??
        .context("watch stream ended")?;
    ensure!(created.created() && created.events().is_empty(), "first watch response: {created:?}");
    Ok(stream)
}

/// Waits (up to `timeout`) for the next response with events on `stream` and checks it holds
/// exactly one delete per key in `keys`, all at one revision; returns that revision.
async fn expect_deletes_in_one_response(
    stream: &mut WatchStream,
    keys: &BTreeSet<String>,
    timeout: Duration,
) -> Result<i64> {
    let deadline = tokio::time::Instant::now() + timeout;
    let resp = loop {
        let resp = tokio::time::timeout_at(deadline, stream.message())
            .await
            .with_context(|| format!("no delete events within {timeout:?}"))??
            .context("watch stream ended")?;
        ensure!(!resp.canceled(), "watch canceled: {:?}", resp.cancel_reason());
        if !resp.events().is_empty() {
            break resp;
        }
    };
    let mut revisions = BTreeSet::new();
    let mut deleted = Vec::new();
    for e in resp.events() {
        let kv = e.kv().context("event without kv")?;
        ensure!(e.event_type() == EventType::Delete, "expected only deletes, got {e:?}");
        revisions.insert(kv.mod_revision());
        deleted.push(String::from_utf8_lossy(kv.key()).into_owned());
    }
    ensure!(
        deleted.len() == keys.len() && key_set(&deleted) == *keys,
        "one response should delete exactly {keys:?}, it deleted {deleted:?}"
    );
    ensure!(revisions.len() == 1, "the deletes span revisions {revisions:?}");
    let rev = *revisions.iter().next().unwrap();
    ensure!(header_rev(resp.header())? >= rev, "response header is behind its events");
    Ok(rev)
}

/// Puts `keys` (through nodes in turn) attached to `lease`; returns the revision after.
async fn put_attached(cluster: &Cluster, keys: &BTreeSet<String>, lease: i64) -> Result<i64> {
    let mut rev = 0;
    for (n, key) in keys.iter().enumerate() {
        let mut c = cluster.client(n % cluster.len()).await?;
        let resp = c.put(key.as_str(), "v", Some(PutOptions::new().with_lease(lease))).await?;
        rev = header_rev(resp.header())?;
    }
    Ok(rev)
}

#[tokio::test(flavor = "multi_thread")]
async fn grant_revoke_time_to_live_and_list_through_every_node() {
    let cluster = start_nodes(3).await;
    grant_revoke_body(&cluster).await.unwrap();
}

async fn grant_revoke_body(cluster: &Cluster) -> Result<()> {
    let mut c = Vec::new();
    for i in 0..cluster.len() {
        c.push(cluster.client(i).await?);
    }

    // Grant without an id: the server picks one. The member that took the grant lists it
    // at once (etcd answers after applying it there), leader or follower.
    let a = c[0].lease_grant(60, None).await?;
    let here = c[0].leases().await?;
    ensure!(here.leases().iter().any(|l| l.id() == a.id()), "node 0 does not list its own grant: {here:?}");
    ensure!(a.id() > 0, "granted id {}", a.id());
    ensure!(a.ttl() == 60, "granted ttl {}", a.ttl());
    ensure!(a.error().is_empty(), "grant error {:?}", a.error());
    // With an id.
    let b_id = 0x1234_5678;
    let b = c[1].lease_grant(60, Some(LeaseGrantOptions::new().with_id(b_id))).await?;
    ensure!(b.id() == b_id && b.ttl() == 60, "grant with id: {b:?}");
    let here = c[1].leases().await?;
    ensure!(here.leases().iter().any(|l| l.id() == b_id), "node 1 does not list its own grant: {here:?}");
    // An id that exists, whether chosen by the client or by the server.
    for (i, id) in [(2, b_id), (0, a.id())] {
        let res = c[i].lease_grant(30, Some(LeaseGrantOptions::new().with_id(id))).await;
        expect_grpc_err(
            res,
            Code::FailedPrecondition,
            "etcdserver: lease already exists",
            &format!("grant of existing lease {id:x} through node {i}"),
        )?;
    }
    // A TTL above etcd's maximum (9,000,000,000 s).
    let res = c[1].lease_grant(9_000_000_001, None).await;
    expect_grpc_err(res, Code::OutOfRange, "etcdserver: too large lease TTL", "grant of a too large TTL")?;
    // A TTL below the minimum is raised to it.
    let short = c[2].lease_grant(1, None).await?;
    ensure!(short.ttl() == MIN_TTL, "grant of TTL 1 got TTL {}, expected the minimum {MIN_TTL}", short.ttl());
    c[0].lease_revoke(short.id()).await?;

    // Keys attached through every node; an unknown lease is refused.
    let opts = |id| Some(PutOptions::new().with_lease(id));
    c[1].put("lease/a", "1", opts(a.id())).await?;
    c[2].put("lease/b", "2", opts(a.id())).await?;
    c[0].put("lease/c", "3", opts(a.id())).await?;
    c[1].put("lease/d", "4", opts(b_id)).await?;
    let res = c[2].put("lease/x", "never", opts(UNKNOWN_LEASE)).await;
    expect_grpc_err(res, Code::NotFound, LEASE_NOT_FOUND, "put with an unknown lease")?;
    ensure!(!exists(&mut c[0], "lease/x", false).await?, "a refused put left its key");

    // TimeToLive, asked of a node other than the one that wrote last.
    let ttl = c[2].lease_time_to_live(a.id(), Some(LeaseTimeToLiveOptions::new().with_keys())).await?;
    ensure!(ttl.id() == a.id() && ttl.granted_ttl() == 60, "time-to-live: {ttl:?}");
    ensure!(ttl.ttl() > 30 && ttl.ttl() <= 60, "remaining TTL {} of a fresh 60 s lease", ttl.ttl());
    ensure!(key_set(ttl.keys()) == names(&["lease/a", "lease/b", "lease/c"]), "keys of a: {ttl:?}");
    let ttl = c[1].lease_time_to_live(a.id(), None).await?;
    ensure!(ttl.keys().is_empty(), "keys are listed only when asked for: {ttl:?}");
    ensure!(attached(&mut c[0], b_id).await? == names(&["lease/d"]), "keys of b");
    // An unknown lease has TTL -1 (not an error).
    let ttl = c[1].lease_time_to_live(UNKNOWN_LEASE, Some(LeaseTimeToLiveOptions::new().with_keys())).await?;
    ensure!(ttl.ttl() == -1 && ttl.keys().is_empty(), "time-to-live of an unknown lease: {ttl:?}");

    // A put moves a key to another lease or detaches it; a delete detaches it.
    c[0].put("lease/c", "3'", opts(b_id)).await?;
    c[1].put("lease/b", "2'", None).await?;
    c[2].put("lease/e", "5", opts(a.id())).await?;
    c[0].delete("lease/e", None).await?;
    ensure!(attached(&mut c[2], a.id()).await? == names(&["lease/a"]), "keys of a after moves");
    ensure!(attached(&mut c[1], b_id).await? == names(&["lease/c", "lease/d"]), "keys of b after moves");

    // Every node lists both leases, and only them.
    for i in 0..cluster.len() {
        let ids = listed(cluster, i).await?;
        ensure!(ids == BTreeSet::from([a.id(), b_id]), "node {i} lists {ids:x?}");
    }

    // Keepalive through a follower and the leader alike: the answer carries the granted TTL.
    for (i, id) in [(1, b_id), (2, a.id())] {
        let (mut keeper, mut stream) = c[i].lease_keep_alive(id).await?;
        ensure!(keeper.id() == id, "keeper for {:x}", keeper.id());
        keeper.keep_alive().await?;
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .context("keepalive answer timed out")??
            .context("keepalive stream ended")?;
        ensure!(resp.id() == id && resp.ttl() == 60, "keepalive answer {resp:?}");
    }

    // Revoke deletes the attached key only, in one new revision.
    let before = current_rev(&mut c[0]).await?;
    let revoked = c[2].lease_revoke(a.id()).await?;
    ensure!(header_rev(revoked.header())? == before + 1, "revoke with one key makes one revision");
    ensure!(!exists(&mut c[0], "lease/a", false).await?, "the attached key survived its revoke");
    ensure!(exists(&mut c[1], "lease/b", false).await?, "a detached key went with its old lease");
    let ttl = c[0].lease_time_to_live(a.id(), None).await?;
    ensure!(ttl.ttl() == -1, "time-to-live of a revoked lease: {ttl:?}");
    for i in 0..cluster.len() {
        let ids = listed(cluster, i).await?;
        ensure!(ids == BTreeSet::from([b_id]), "node {i} lists {ids:x?} after the revoke");
    }
    // Revoking it again, or a lease never granted: NotFound.
    expect_grpc_err(c[1].lease_revoke(a.id()).await, Code::NotFound, LEASE_NOT_FOUND, "second revoke")?;
    expect_grpc_err(
        c[0].lease_revoke(UNKNOWN_LEASE).await,
        Code::NotFound,
        LEASE_NOT_FOUND,
        "unknown revoke",
    )?;
    // A keepalive for a revoked lease answers TTL 0 (the client turns that into an error).
    match c[1].lease_keep_alive(a.id()).await {
        Err(etcd_client::Error::LeaseKeepAliveError(_)) => {}
        other => bail!("keepalive of a revoked lease: expected a TTL 0 answer, got {other:?}"),
    }
    // Putting with the revoked lease is refused like any unknown lease.
    let res = c[2].put("lease/a", "again", opts(a.id())).await;
    expect_grpc_err(res, Code::NotFound, LEASE_NOT_FOUND, "put with a revoked lease")?;

    // Revoking a lease without keys changes nothing else: no new revision.
    let empty = c[0].lease_grant(60, None).await?;
    let before = current_rev(&mut c[1]).await?;
    let revoked = c[1].lease_revoke(empty.id()).await?;
    ensure!(header_rev(revoked.header())? == before, "revoke of a lease without keys made a revision");
    ensure!(current_rev(&mut c[2]).await? == before, "revoke of a lease without keys made a revision");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn expiry_deletes_every_attached_key_in_one_revision() {
    let cluster = start_nodes(3).await;
    let body = async {
        let prefix = "lease/expire/";
        let expected: BTreeSet<String> = (0..6).map(|i| format!("{prefix}k{i}")).collect();
        let mut c1 = cluster.client(1).await?;
        let sent = Instant::now();
        let lease = c1.lease_grant(MIN_TTL, None).await?;
        ensure!(lease.ttl() == MIN_TTL, "granted TTL {}", lease.ttl());
        put_attached(&cluster, &expected, lease.id()).await?;
        let mut c0 = cluster.client(0).await?;
        let kept = format!("{prefix}unattached");
        let rev = header_rev(c0.put(kept.as_str(), "stays", None).await?.header())?;

        let mut c2 = cluster.client(2).await?;
        let mut stream = watch_from(&mut c2, prefix, rev + 1).await?;
        let deleted_at =
            expect_deletes_in_one_response(&mut stream, &expected, Duration::from_secs(30)).await?;
        let elapsed = sent.elapsed();
        ensure!(deleted_at == rev + 1, "expiry deleted at revision {deleted_at}, expected {}", rev + 1);
        // The leader's timer starts when it applies the grant, after the request was sent.
        ensure!(
            elapsed >= Duration::from_millis(MIN_TTL as u64 * 1000 - 200),
            "a {MIN_TTL} s lease expired {elapsed:?} after its grant was sent"
        );

        for i in 0..cluster.len() {
            let mut c = cluster.client(i).await?;
            let resp = c.get(prefix, Some(GetOptions::new().with_prefix())).await?;
            ensure!(keys(&resp) == vec![kept.clone()], "node {i} after expiry: {:?}", keys(&resp));
            let ttl = c.lease_time_to_live(lease.id(), None).await?;
            ensure!(ttl.ttl() == -1, "node {i}: time-to-live of an expired lease {ttl:?}");
            ensure!(!listed(&cluster, i).await?.contains(&lease.id()), "node {i} still lists it");
        }
        let res = c0.put(format!("{prefix}late"), "v", Some(PutOptions::new().with_lease(lease.id()))).await;
        expect_grpc_err(res, Code::NotFound, LEASE_NOT_FOUND, "put with an expired lease")?;
        anyhow::Ok(())
    };
    body.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_deletes_every_attached_key_in_one_revision() {
    let cluster = start_nodes(3).await;
    let body = async {
        let prefix = "lease/revoke/";
        let expected: BTreeSet<String> = (0..6).map(|i| format!("{prefix}k{i}")).collect();
        let mut c0 = cluster.client(0).await?;
        let lease = c0.lease_grant(60, None).await?;
        let rev = put_attached(&cluster, &expected, lease.id()).await?;
        ensure!(attached(&mut c0, lease.id()).await? == expected, "attached keys before the revoke");

        let mut c1 = cluster.client(1).await?;
        let mut stream = watch_from(&mut c1, prefix, rev + 1).await?;
        let mut c2 = cluster.client(2).await?;
        let revoked = c2.lease_revoke(lease.id()).await?;
        let revoke_rev = header_rev(revoked.header())?;
        ensure!(revoke_rev == rev + 1, "revoke at revision {revoke_rev}, expected {}", rev + 1);
        let deleted_at =
            expect_deletes_in_one_response(&mut stream, &expected, Duration::from_secs(10)).await?;
        ensure!(deleted_at == revoke_rev, "deletes at {deleted_at}, the revoke answered {revoke_rev}");
        let resp = c0.get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await?;
        ensure!(resp.count() == 0, "{} keys left after the revoke", resp.count());
        anyhow::Ok(())
    };
    body.await.unwrap();
}

/// What a keepalive loop saw.
#[tokio::test(flavor = "multi_thread")]
async fn keepalives_through_a_follower_keep_keys_alive_across_a_leader_kill() {
    let cluster = start_nodes(3).await;
    let body = async {
        let leader = cluster.leader().await?;
        let others: Vec<usize> = (0..cluster.len()).filter(|&i| i != leader).collect();
        let (follower, other) = (others[0], others[1]);
        let ttl = 3;
        let mut cf = cluster.client(follower).await?;
        let lease = cf.lease_grant(ttl, None).await?;
        let key = "lease/alive/k";
        cf.put(key, "v", Some(PutOptions::new().with_lease(lease.id()))).await?;

        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(KeepAliveLog::default()));
        let keeper = tokio::spawn(keep_alive_loop(
            cluster.client(follower).await?,
            lease.id(),
            stop.clone(),
            log.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        ensure!(!log.lock().unwrap().renewed.is_empty(), "no keepalive answered before the kill");

        cluster.kill(leader)?;
        let killed = Instant::now();
        // For five TTLs the key stays, as both survivors see it.
        let mut reads = 0;
        while killed.elapsed() < Duration::from_secs(5 * ttl as u64) {
            for i in [follower, other] {
                let mut c = cluster.client(i).await?;
                if let Ok(found) = exists(&mut c, key, true).await {
                    reads += 1;
                    ensure!(
                        found,
                        "the key vanished {:?} after the leader's kill (node {i})",
                        killed.elapsed()
                    );
                }
            }
            ensure!(!log.lock().unwrap().lost, "the lease was lost");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        ensure!(reads > 0, "no read succeeded after the leader's kill");
        let renewed_after = log.lock().unwrap().renewed.iter().filter(|t| **t > killed).count();
        ensure!(renewed_after > 0, "no keepalive was answered after the leader's kill");
        ensure!(!keeper.is_finished(), "the keepalive loop stopped: {:?}", keeper.await);
        let mut cf = cluster.client(follower).await?;
        ensure!(exists(&mut cf, key, false).await?, "the key is gone (linearizable read)");

        // Without keepalives it expires.
        stop.store(true, Ordering::SeqCst);
        keeper.await??;
        eventually(CONVERGE, "the key to expire without keepalives", || async {
            let mut c = cluster.client(other).await?;
            ensure!(!exists(&mut c, key, false).await?, "still there");
            Ok(())
        })
        .await?;
        anyhow::Ok(())
    };
    body.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn no_lease_expires_early_when_the_leader_is_killed() {
    let cluster = start_nodes(3).await;
    let body = async {
        let leader = cluster.leader().await?;
        let survivors: Vec<usize> = (0..cluster.len()).filter(|&i| i != leader).collect();
        let ttl = 6;
        let expected: BTreeSet<String> = (0..3).map(|i| format!("lease/early/k{i}")).collect();
        let sent = Instant::now();
        let mut cl = cluster.client(leader).await?;
        let lease = cl.lease_grant(ttl, None).await?;
        let mut last_put = 0;
        for key in &expected {
            let resp = cl.put(key.as_str(), "v", Some(PutOptions::new().with_lease(lease.id()))).await?;
            last_put = header_rev(resp.header())?;
        }
        cluster.kill(leader)?;

        // Until shortly before the TTL has passed since the grant, a survivor that has applied
        // the last put (a serializable read may lag behind it) still has every key, and
        // nothing after it: the expiry's revoke would be the next revision.
        let until = Duration::from_secs(ttl as u64) - Duration::from_millis(1000);
        let mut reads = 0;
        while sent.elapsed() < until {
            for &i in &survivors {
                let Ok(mut c) = cluster.client(i).await else { continue };
                let Ok(resp) =
                    c.get("lease/early/", Some(GetOptions::new().with_prefix().with_serializable())).await
                else {
                    continue;
                };
                if sent.elapsed() >= until {
                    break;
                }
                let at = header_rev(resp.header())?;
                if at < last_put {
                    continue;
                }
                reads += 1;
                ensure!(
                    at == last_put && key_set(&keys(&resp)) == expected,
                    "node {i} {:?} after the grant (TTL {ttl} s) is at revision {at} (last put {last_put}) \
                     with {:?}",
                    sent.elapsed(),
                    keys(&resp)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ensure!(reads > 0, "no survivor had applied the last put before the TTL");

        // The new leader expires it eventually.
        eventually(CONVERGE, "the lease to expire under the new leader", || async {
            let mut c = cluster.client(survivors[0]).await?;
            let resp = c.get("lease/early/", Some(GetOptions::new().with_prefix())).await?;
            ensure!(resp.kvs().is_empty(), "keys left: {:?}", keys(&resp));
            Ok(())
        })
        .await?;
        let mut c = cluster.client(survivors[1]).await?;
        let ttl_resp = c.lease_time_to_live(lease.id(), None).await?;
        ensure!(ttl_resp.ttl() == -1, "time-to-live after expiry: {ttl_resp:?}");
        anyhow::Ok(())
    };
    body.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_and_their_keys_survive_a_restart_of_every_member() {
    let cluster = start_nodes(3).await;
    let body = async {
        let mut c0 = cluster.client(0).await?;
        let lease = c0.lease_grant(30, None).await?;
        let mut c1 = cluster.client(1).await?;
        c1.put("lease/restart/k", "v", Some(PutOptions::new().with_lease(lease.id()))).await?;
        cluster.kill_all()?;
        cluster.restart_stopped()?;
        cluster.wait_ready(CONVERGE).await?;

        let mut c2 = cluster.client(2).await?;
        let ttl = c2.lease_time_to_live(lease.id(), Some(LeaseTimeToLiveOptions::new().with_keys())).await?;
        // A new leader restarts every lease's timer, with the election timeout on top.
        ensure!(ttl.granted_ttl() == 30 && ttl.ttl() > 0 && ttl.ttl() <= 32, "after the restart: {ttl:?}");
        ensure!(key_set(ttl.keys()) == names(&["lease/restart/k"]), "keys after the restart: {ttl:?}");
        for i in 0..cluster.len() {
            ensure!(listed(&cluster, i).await? == BTreeSet::from([lease.id()]), "node {i} lists it");
        }
        let mut c1 = cluster.client(1).await?;
        let (mut keeper, mut stream) = c1.lease_keep_alive(lease.id()).await?;
        keeper.keep_alive().await?;
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .context("keepalive answer timed out")??
            .context("keepalive stream ended")?;
        ensure!(resp.ttl() == 30, "keepalive after the restart: {resp:?}");
        let mut c0 = cluster.client(0).await?;
        c0.lease_revoke(lease.id()).await?;
        ensure!(!exists(&mut c2, "lease/restart/k", false).await?, "the key survived the revoke");
        anyhow::Ok(())
    };
    body.await.unwrap();
}

/// `etcdctl lease ...` (3.4) through every node: grant, put --lease, timetolive --keys,
/// keep-alive --once, list, revoke.
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_lease_commands() {
    let cluster = start_nodes(3).await;
    etcdctl_lease_body(&cluster).await.unwrap();
}

async fn etcdctl_lease_body(cluster: &Cluster) -> Result<()> {
    let out = ctl(cluster, 0, &["lease", "grant", "60"]).await?;
    let hex = out
        .strip_prefix("lease ")
        .and_then(|s| s.strip_suffix(" granted with TTL(60s)\n"))
        .ok_or_else(|| anyhow!("lease grant printed {out:?}"))?
        .to_string();
    ensure!(hex.len() == 16 && hex.chars().all(|c| c.is_ascii_hexdigit()), "lease id {hex:?}");
    let id = i64::from_str_radix(&hex, 16)?;
    let out = ctl(cluster, 0, &["lease", "list"]).await?;
    ensure!(out == format!("found 1 leases\n{hex}\n"), "lease list right after the grant: {out:?}");

    let key = "ctl/lease/k";
    ensure!(ctl(cluster, 1, &["put", &format!("--lease={hex}"), key, "v"]).await? == "OK\n", "put --lease");
    let mut c = cluster.client(0).await?;
    let got = c.get(key, None).await?;
    ensure!(got.kvs().first().map(|kv| kv.lease()) == Some(id), "the key's lease: {:?}", got.kvs());

    let out = ctl(cluster, 2, &["lease", "timetolive", &hex, "--keys"]).await?;
    let remaining = out
        .strip_prefix(&format!("lease {hex} granted with TTL(60s), remaining("))
        .and_then(|s| s.strip_suffix(&format!("s), attached keys([{key}])\n")))
        .ok_or_else(|| anyhow!("lease timetolive --keys printed {out:?}"))?;
    let remaining: i64 = remaining.parse().with_context(|| format!("remaining in {out:?}"))?;
    ensure!(remaining > 30 && remaining <= 60, "remaining {remaining} of a fresh 60 s lease");

    let out = ctl(cluster, 1, &["lease", "keep-alive", "--once", &hex]).await?;
    ensure!(out == format!("lease {hex} keepalived with TTL(60)\n"), "lease keep-alive --once: {out:?}");

    // The list is each member's own: the member that took the grant has it at once, the
    // others after a linearizable read.
    for i in 0..cluster.len() {
        if i != 0 {
            ctl(cluster, i, &["get", key]).await?;
        }
        let out = ctl(cluster, i, &["lease", "list"]).await?;
        ensure!(out == format!("found 1 leases\n{hex}\n"), "lease list on node {i}: {out:?}");
    }

    let out = ctl(cluster, 2, &["lease", "revoke", &hex]).await?;
    ensure!(out == format!("lease {hex} revoked\n"), "lease revoke: {out:?}");
    ensure!(ctl(cluster, 0, &["get", key]).await?.is_empty(), "the key survived its lease's revoke");
    let out = ctl(cluster, 1, &["lease", "timetolive", &hex]).await?;
    ensure!(out == format!("lease {hex} already expired\n"), "timetolive of a revoked lease: {out:?}");
    let out = cluster.etcdctl(0, &["lease", "keep-alive", "--once", &hex]).await?;
    ensure!(!out.status.success(), "keep-alive --once of a revoked lease succeeded: {out:?}");
    let out = ctl(cluster, 2, &["lease", "list"]).await?;
    ensure!(out == "found 0 leases\n", "lease list after the revoke: {out:?}");
    Ok(())
}
