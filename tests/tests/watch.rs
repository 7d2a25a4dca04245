//! Watch, as etcd defines it: ordered, gap-free, atomic per revision, resumable from a
//! revision on another node, and cancelled with the compacted revision when asked for history
//! that is gone. Runs against etcd too (`CAIRN_TEST_TARGET=etcd`).

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cairn_tests::etcd_client::{Client, EventType, WatchOptions};
use common::*;

/// Collect watch events until `n` have arrived (or the timeout passes), as (revision, key).
async fn collect(
    client: &mut Client,
    prefix: &str,
    start: i64,
    n: usize,
) -> Result<Vec<(i64, String, bool)>> {
    let opts = WatchOptions::new().with_prefix().with_start_revision(start);
    let mut stream = client.watch(prefix, Some(opts)).await?;
    let mut seen: Vec<(i64, String, bool)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < n {
        let msg = tokio::time::timeout_at(deadline, stream.message()).await.context("watch timed out")??;
        let Some(resp) = msg else { break };
        ensure!(!resp.canceled(), "watch canceled: {:?}", resp.cancel_reason());
        // One revision's events never straddle two responses.
        if let (Some(prev), Some(first)) = (seen.last(), resp.events().first()) {
            let first_rev = first.kv().map_or(0, |kv| kv.mod_revision());
            ensure!(first_rev > prev.0, "revision {first_rev} split across responses (after {})", prev.0);
        }
        for e in resp.events() {
            let kv = e.kv().context("event without kv")?;
            seen.push((kv.mod_revision(), kv.key_str()?.to_string(), e.event_type() == EventType::Delete));
        }
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_sees_every_write_in_order_and_resumes_on_another_node() {
    let cluster = start_nodes(3).await;
    let body = async {
        let prefix = "watch/order/";
        let mut c0 = cluster.client(0).await?;
        let start = header_rev(c0.put(format!("{prefix}first"), "0", None).await?.header())?;

        // Concurrent writers through every node, plus deletes.
        let mut tasks = Vec::new();
        for w in 0..cluster.len() {
            let mut c = cluster.client(w).await?;
            let prefix = prefix.to_string();
            tasks.push(tokio::spawn(async move {
                for i in 0..30 {
                    c.put(format!("{prefix}{w}/{i}"), "v", None).await?;
                    if i % 10 == 9 {
                        c.delete(format!("{prefix}{w}/{i}"), None).await?;
                    }
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let expected = 1 + 3 * 30 + 3 * 3;

        // Every node, from the start revision, sees the same complete ordered sequence.
        let mut reference = None;
        for i in 0..cluster.len() {
            let mut c = cluster.client(i).await?;
            let seen = collect(&mut c, prefix, start, expected).await?;
            ensure!(seen.len() == expected, "node {i}: {} events, expected {expected}", seen.len());
            ensure!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "node {i}: revisions out of order");
            ensure!(seen[0].0 == start, "node {i}: starts at the start revision");
            match &reference {
                None => reference = Some(seen),
                Some(r) => ensure!(r == &seen, "node {i} saw a different history"),
            }
        }

        // Resume half-way through from another node.
        let reference = reference.unwrap();
        let mid = reference[expected / 2].0;
        let mut c2 = cluster.client(2).await?;
        let rest = collect(&mut c2, prefix, mid, reference.iter().filter(|e| e.0 >= mid).count()).await?;
        let want: Vec<_> = reference.iter().filter(|e| e.0 >= mid).cloned().collect();
        ensure!(rest == want, "resumed watch differs");
        anyhow::Ok(())
    };
    body.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_from_a_compacted_revision_is_cancelled_with_the_compact_revision() {
    let cluster = start_nodes(1).await;
    let body = async {
        let mut c = cluster.client(0).await?;
        let first = header_rev(c.put("watch/compact/a", "1", None).await?.header())?;
        c.put("watch/compact/a", "2", None).await?;
        let last = header_rev(c.put("watch/compact/a", "3", None).await?.header())?;
        c.compact(last, None).await?;
        let opts = WatchOptions::new().with_start_revision(first);
        let mut stream = c.watch("watch/compact/a", Some(opts)).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let resp = tokio::time::timeout_at(deadline, stream.message()).await??.context("stream ended")?;
            if resp.canceled() {
                ensure!(
                    resp.compact_revision() == last,
                    "compact_revision {} != {last}",
                    resp.compact_revision()
                );
                break;
            }
            ensure!(resp.events().is_empty(), "no events from a compacted start");
        }
        // Starting exactly at the compacted revision still works.
        let opts = WatchOptions::new().with_start_revision(last);
        let mut stream = c.watch("watch/compact/a", Some(opts)).await?;
        loop {
            let resp = tokio::time::timeout_at(deadline, stream.message()).await??.context("stream ended")?;
            ensure!(!resp.canceled(), "watch at the compact revision was cancelled");
            if let Some(e) = resp.events().first() {
                ensure!(e.kv().unwrap().value() == b"3");
                break;
            }
        }
        anyhow::Ok(())
    };
    body.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_progress_request_reports_the_current_revision() {
    let cluster = start_nodes(1).await;
    let body = async {
        let mut c = cluster.client(0).await?;
        let mut stream = c.watch("watch/progress/", Some(WatchOptions::new().with_prefix())).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let created = tokio::time::timeout_at(deadline, stream.message()).await??.context("stream ended")?;
        ensure!(created.created(), "first response is the creation");
        // A write elsewhere moves the revision without an event for this watch.
        let rev = header_rev(c.put("watch/other", "x", None).await?.header())?;
        stream.request_progress().await?;
        loop {
            let resp = tokio::time::timeout_at(deadline, stream.message()).await??.context("stream ended")?;
            ensure!(resp.events().is_empty(), "no events for this prefix");
            let at = header_rev(resp.header())?;
            if at >= rev {
                break;
            }
        }
        anyhow::Ok(())
    };
    body.await.unwrap();
}

/// Collects a live watch's events (revision, key) until it has seen revision `until`.
async fn collect_until(
    stream: &mut cairn_tests::etcd_client::WatchStream,
    until: i64,
) -> Result<Vec<(i64, String)>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while seen.last().is_none_or(|(rev, _)| *rev < until) {
        let resp = tokio::time::timeout_at(deadline, stream.message())
            .await
            .with_context(|| format!("watch stalled at {:?} before revision {until}", seen.last()))??
            .context("watch ended")?;
        ensure!(!resp.canceled(), "watch canceled: {:?}", resp.cancel_reason());
        for e in resp.events() {
            let kv = e.kv().context("event without kv")?;
            seen.push((kv.mod_revision(), kv.key_str()?.to_string()));
        }
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn live_watches_on_the_survivors_miss_nothing_across_a_leader_kill() -> Result<()> {
    let cluster = start_nodes(3).await;
    let prefix = "watch/failover/";
    let leader = cluster.leader().await?;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut c = cluster.client(survivors[0]).await?;
    let start = header_rev(c.put(format!("{prefix}start"), "", None).await?.header())?;
    let mut watches = Vec::new();
    for &i in &survivors {
        let mut w = cluster.client(i).await?;
        let opts = WatchOptions::new().with_prefix().with_start_revision(start);
        watches.push(w.watch(prefix, Some(opts)).await?);
    }

    // Writers on the survivors; the leader dies half-way. A write that fails may or may not
    // have happened; every acknowledged one must show up.
    let mut writers = Vec::new();
    for (n, &i) in survivors.iter().enumerate() {
        let mut w = cluster.client(i).await?;
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for k in 0..60 {
                let key = format!("{prefix}{n}/{k}");
                if let Ok(resp) = w.put(key.clone(), "v", None).await {
                    acked.push((header_rev(resp.header())?, key));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(acked)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(leader)?;
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await??);
    }
    let last = header_rev(c.put(format!("{prefix}end"), "", None).await?.header())?;

    // The reference: a fresh watch of the whole range from the start.
    let mut fresh =
        c.watch(prefix, Some(WatchOptions::new().with_prefix().with_start_revision(start))).await?;
    let reference = collect_until(&mut fresh, last).await?;
    ensure!(reference.windows(2).all(|w| w[0].0 < w[1].0), "one put per revision, in order");
    for a in &acked {
        ensure!(reference.contains(a), "acknowledged write {a:?} missing from the history");
    }
    for (n, w) in watches.iter_mut().enumerate() {
        let seen = collect_until(w, last).await?;
        ensure!(
            seen == reference,
            "live watch {n} differs from the history ({} vs {} events)",
            seen.len(),
            reference.len()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fragment_watch_splits_responses_over_the_request_limit() -> Result<()> {
    use cairn_client::proto::etcdserverpb::{
        compare, request_op, Compare, PutRequest as RawPut, RequestOp, TxnRequest, WatchCreateRequest,
    };
    let cluster = start_nodes(1).await;
    let client = cairn_client::Client::connect([cluster.endpoint(0)]).await?;
    // Three 450 KB values, then one txn rewriting all three: with prev_kv its watch response
    // carries ~2.7 MB, over etcd's default 1.5 MiB --max-request-bytes.
    let value = vec![b'x'; 450 * 1024];
    for k in ["big/a", "big/b", "big/c"] {
        client.put(k, value.clone()).await?;
    }
    let put = |k: &str| RequestOp {
        request: Some(request_op::Request::RequestPut(RawPut {
            key: k.into(),
            value: value.clone(),
            ..Default::default()
        })),
    };
    let txn = client
        .txn(TxnRequest {
            compare: vec![Compare {
                key: b"big/a".to_vec(),
                result: compare::CompareResult::Greater as i32,
                target: compare::CompareTarget::Version as i32,
                target_union: Some(compare::TargetUnion::Version(0)),
                range_end: vec![],
            }],
            success: vec![put("big/a"), put("big/b"), put("big/c")],
            failure: vec![],
        })
        .await?;
    let rev = txn.header.context("no header")?.revision;

    let mut watch = client
        .watch(WatchCreateRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            start_revision: rev,
            prev_kv: true,
            fragment: true,
            ..Default::default()
        })
        .await?;
    let mut parts = Vec::new();
    loop {
        let r = tokio::time::timeout(CONVERGE, watch.next()).await??.context("watch ended")?;
        ensure!(!r.canceled, "canceled: {}", r.cancel_reason);
        parts.push((r.fragment, r.events.len()));
        if !r.fragment {
            break;
        }
    }
    ensure!(parts.len() > 1, "a 2.7 MB response was not fragmented: {parts:?}");
    ensure!(parts.iter().map(|p| p.1).sum::<usize>() == 3, "fragments lost events: {parts:?}");
    ensure!(parts[..parts.len() - 1].iter().all(|p| p.0), "only the last part ends the fragments");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_watcher_blocks_neither_writes_nor_other_watchers_and_catches_up() -> Result<()> {
    use cairn_client::proto::etcdserverpb::WatchCreateRequest;
    let cluster = start_nodes(1).await;
    let client = cairn_client::Client::connect([cluster.endpoint(0)]).await?;
    let create = || WatchCreateRequest {
        key: b"stuck/".to_vec(),
        range_end: b"stuck0".to_vec(),
        ..Default::default()
    };
    // This client never reads until the end: ~40 MB of events pile up behind it.
    let mut stuck = client.watch(create()).await?;
    let mut live = client.watch(create()).await?;
    let value = vec![b'v'; 20 * 1024];
    let writes = 2000;
    let mut last = 0;
    for i in 0..writes {
        let resp = tokio::time::timeout(CONVERGE, client.put(format!("stuck/{i}"), value.clone()))
            .await
            .context("a write waited for a stuck watcher")??;
        last = resp.header.context("no header")?.revision;
    }
    let live_revs = drain(&mut live, last).await?;
    ensure!(live_revs.len() == writes, "the live watcher saw {} of {writes}", live_revs.len());
    let stuck_revs = drain(&mut stuck, last).await?;
    ensure!(stuck_revs == live_revs, "the stuck watcher did not catch up with the same history");
    Ok(())
}

/// The mod revisions of a watch's events up to revision `last`.
async fn drain(w: &mut cairn_client::WatchStream, last: i64) -> Result<Vec<i64>> {
    let mut revs = Vec::new();
    while revs.last().is_none_or(|r| *r < last) {
        let r = tokio::time::timeout(CONVERGE, w.next()).await??.context("watch ended")?;
        ensure!(!r.canceled, "canceled: {}", r.cancel_reason);
        revs.extend(r.events.iter().filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision)));
    }
    Ok(revs)
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_watch_prints_every_event_from_a_revision() -> Result<()> {
    let cluster = start_nodes(3).await;
    let mut c = cluster.client(0).await?;
    let start = header_rev(c.put("ctl/a", "1", None).await?.header())?;
    c.put("ctl/b", "2", None).await?;
    c.delete("ctl/a", None).await?;
    let mut watch =
        spawn_etcdctl(&cluster.endpoint(1), &["watch", "--prefix", "ctl/", &format!("--rev={start}")])?;
    // A live event after the replayed ones, through another member.
    cluster.client(2).await?.put("ctl/c", "3", None).await?;
    let expected = "PUT\nctl/a\n1\nPUT\nctl/b\n2\nDELETE\nctl/a\n\nPUT\nctl/c\n3\n";
    let out = read_until(&mut watch, "PUT\nctl/c\n3\n").await.context("etcdctl watch stalled")?;
    ensure!(out == expected, "etcdctl watch printed {:?}", out);
    Ok(())
}
