//! Compaction: what stays readable, what is refused, and what `events()` allows.
//!
//! Compaction is global: it drops the history of every key, not only the suite's. So the
//! suite compacts only at a revision it produced itself, and runs this test last.

use cairn_core::proto::etcdserverpb::{CompactionRequest, RangeRequest, TxnRequest};
use cairn_core::{Backend, RequestError, WriteRequest};

use crate::check::*;

fn compact(revision: i64) -> WriteRequest {
    WriteRequest::Compact(CompactionRequest { revision, physical: true })
}

/// After compacting at r: reads below r are refused, reads at r see what was live at r,
/// later reads are unaffected; compacting at or below r again, or above the current
/// revision, is refused; `events()` from below r is refused, from r allowed.
pub(crate) async fn compact_history<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let (a, bk, c) = (sp.key("a"), sp.key("b"), sp.key("c"));
    let r1 = put_value(b, &a, "1").await?;
    let r2 = put_value(b, &a, "2").await?;
    put_value(b, &bk, "1").await?;
    let r4 = hrev(&delete(b, delete_req(&bk, b"", false), "delete b").await?.header);
    let r = put_value(b, &c, "1").await?; // the compaction revision: a put, so its event stays
    let r6 = put_value(b, &a, "3").await?;
    ensure_eq!(vec![r2, r4, r, r6], vec![r1 + 1, r1 + 3, r1 + 4, r1 + 5], "revisions of the setup writes");
    let before = revisions(b).await?;
    ensure!(
        before.compacted < r,
        "cannot test: the store is already compacted at {} (the suite's writes are at {r1}..={r6})",
        before.compacted
    );

    write(b, compact(r), &format!("compact at {r}")).await?;
    let after = revisions(b).await?;
    ensure_eq!(after.compacted, r, "revisions().compacted after compacting at {r}");
    ensure_eq!(
        after.current,
        before.current,
        "revisions().current after a compaction (it takes no revision)"
    );

    // Below r: refused.
    let req = RangeRequest { revision: r - 1, ..range_req(&a, b"") };
    refused(
        b.range(req).await,
        RequestError::Compacted,
        &format!("get a at {} (below the compaction)", r - 1),
    )?;
    let req = RangeRequest { revision: r1, ..range_req(&sp.start(), &sp.end()) };
    refused(b.range(req).await, RequestError::Compacted, &format!("range at {r1} (below the compaction)"))?;
    let req = RangeRequest { revision: r - 1, serializable: true, ..range_req(&a, b"") };
    refused(b.range(req).await, RequestError::Compacted, "serializable get below the compaction")?;
    let t = TxnRequest {
        compare: vec![],
        success: vec![op_range(RangeRequest { revision: r - 1, ..range_req(&a, b"") })],
        failure: vec![],
    };
    refused(
        b.write(WriteRequest::Txn(t)).await,
        RequestError::Compacted,
        "read-only txn ranging below the compaction",
    )?;

    // At r: what was live at r, including a value written before r.
    let at_r = get_at(b, &a, r).await?;
    ensure_eq!(
        at_r.as_ref().map(fields),
        Some((r1, r2, 2, "2".to_string(), 0)),
        "a at {r} (the compaction) {FIELDS}"
    );
    ensure!(get_at(b, &bk, r).await?.is_none(), "b, deleted at {r4}, exists at {r}");
    let c_at = get_at(b, &c, r).await?;
    ensure_eq!(c_at.as_ref().map(fields), Some((r, r, 1, "1".to_string(), 0)), "c at {r} {FIELDS}");
    let req = RangeRequest { revision: r, ..range_req(&sp.start(), &sp.end()) };
    let got = range(b, req, &format!("range at {r}")).await?;
    ensure_eq!(sp.names(&got.kvs), vec!["a", "c"], "keys at the compaction revision {r}");
    // Above r, and now.
    ensure_eq!(
        get_at(b, &a, r6).await?.map(|kv| text(&kv.value)),
        Some("3".to_string()),
        "a's value at {r6}"
    );
    ensure_eq!(get(b, &a).await?.map(|kv| text(&kv.value)), Some("3".to_string()), "a's current value");

    // Compacting again at or below r, or in the future.
    refused(b.write(compact(r)).await, RequestError::Compacted, &format!("compacting at {r} again"))?;
    refused(
        b.write(compact(r - 1)).await,
        RequestError::Compacted,
        &format!("compacting at {} (below)", r - 1),
    )?;
    let now = current(b).await?;
    refused(
        b.write(compact(now + 1)).await,
        RequestError::FutureRevision,
        &format!("compacting at {} (current + 1)", now + 1),
    )?;
    ensure_eq!(revisions(b).await?.compacted, r, "revisions().compacted after refused compactions");

    // Events: from below r refused, from r allowed.
    refused(
        b.events(r - 1, r6, 1000, false).await,
        RequestError::Compacted,
        &format!("events({}, {r6})", r - 1),
    )?;
    refused(b.events(r1, r6, 1000, true).await, RequestError::Compacted, &format!("events({r1}, {r6})"))?;
    let evs = b.events(r, r6, 1000, false).await.map_err(|e| failed(&format!("events({r}, {r6})"), &e))?;
    let got: Vec<(i64, Vec<String>)> = evs
        .iter()
        .map(|rev| {
            let keys = rev.events.iter().map(|e| sp.name(&e.kv.clone().unwrap_or_default().key)).collect();
            (rev.revision, keys)
        })
        .collect();
    ensure_eq!(
        got,
        vec![(r, vec!["c".to_string()]), (r6, vec!["a".to_string()])],
        "events({r}, {r6}) after compacting at {r}: (revision, keys)"
    );
    Ok(())
}
