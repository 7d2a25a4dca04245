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
