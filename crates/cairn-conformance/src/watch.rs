//! The `WatchSource` half: the events of a run of revisions, and revision publication.

use std::time::Duration;

use cairn_core::proto::etcdserverpb::TxnRequest;
use cairn_core::proto::mvccpb::event::EventType;
use cairn_core::proto::mvccpb::{Event, KeyValue};
use cairn_core::{Backend, RevisionEvents, WatchSource};

use crate::check::*;

/// How long `revision_updates()` may take to announce a written revision.
const PUBLICATION_TIMEOUT: Duration = Duration::from_secs(5);

/// One event as text: `PUT x create=.. mod=.. version=.. value=..`, `DELETE x mod=..`, and
/// ` prev=(create=.. mod=.. version=.. value=..)` when it has a previous key-value.
fn describe(sp: &Space<'_>, e: &Event) -> String {
    let kv = e.kv.clone().unwrap_or_default();
    let mut s = if e.r#type == EventType::Put as i32 {
        format!("PUT {} {}", sp.name(&kv.key), kv_text(&kv))
    } else if e.r#type == EventType::Delete as i32 {
        // A delete event carries the key and the revision of the delete.
        format!("DELETE {} mod={}", sp.name(&kv.key), kv.mod_revision)
    } else {
        format!("<event type {}> {}", e.r#type, sp.name(&kv.key))
    };
    if e.kv.is_none() {
        s.push_str(" <no kv>");
    }
    if let Some(prev) = &e.prev_kv {
        s.push_str(&format!(" prev=({}{})", prev_key_note(sp, &prev.key, &kv.key), kv_text(prev)));
    }
    s
}

fn kv_text(kv: &KeyValue) -> String {
    format!(
        "create={} mod={} version={} value={} lease={}",
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        text(&kv.value),
        kv.lease
    )
}

/// Names the previous key-value's key only when it is not the event's key.
fn prev_key_note(sp: &Space<'_>, prev: &[u8], key: &[u8]) -> String {
    if prev == key {
        String::new()
    } else {
        format!("key={} ", sp.name(prev))
    }
}

fn summary(sp: &Space<'_>, revs: &[RevisionEvents]) -> Vec<(i64, Vec<String>)> {
    revs.iter().map(|r| (r.revision, r.events.iter().map(|e| describe(sp, e)).collect())).collect()
}

async fn events<B: WatchSource>(
    b: &B,
    from: i64,
    to: i64,
    max: usize,
    prev: bool,
) -> Result<Vec<RevisionEvents>, String> {
    let what = format!("events({from}, {to}, {max}, with_prev_kv {prev})");
    b.events(from, to, max, prev).await.map_err(|e| failed(&what, &e))
}

/// `events(a, b, ..)` after put, overwrite, delete and a two-put txn: one entry per
/// revision, in order, with the right types, key-values and previous key-values;
/// `max_revisions` limits the entries; `revision_updates()` reaches the last revision.
pub(crate) async fn events_of_a_run_of_writes<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let (x, y, z) = (sp.key("x"), sp.key("y"), sp.key("z"));
    let a = put_value(b, &x, "1").await?;
    put_value(b, &y, "1").await?;
    put_value(b, &x, "2").await?;
    delete(b, delete_req(&x, b"", false), "delete x").await?;
    delete(b, delete_req(&x, b"", false), "delete x again (nothing)").await?;
    // Ops in other than key order: a revision's events come in the order they happened.
    let t = TxnRequest { compare: vec![], success: vec![op_put(&z, "1"), op_put(&y, "2")], failure: vec![] };
    let last = hrev(&txn(b, t, "txn put z, put y").await?.header);
    ensure_eq!(last, a + 4, "revision of the last write (first was {a}; four writes changed something)");

    let put = |key: &str, create: i64, m: i64, version: i64, value: &str| {
        format!("PUT {key} create={create} mod={m} version={version} value={value} lease=0")
    };
    let prev = |create: i64, m: i64, version: i64, value: &str| {
        format!(" prev=(create={create} mod={m} version={version} value={value} lease=0)")
    };
    let with_prev: Vec<(i64, Vec<String>)> = vec![
        (a, vec![put("x", a, a, 1, "1")]),
        (a + 1, vec![put("y", a + 1, a + 1, 1, "1")]),
        (a + 2, vec![put("x", a, a + 2, 2, "2") + &prev(a, a, 1, "1")]),
        (a + 3, vec![format!("DELETE x mod={}", a + 3) + &prev(a, a + 2, 2, "2")]),
        (
            a + 4,
            vec![
                put("z", a + 4, a + 4, 1, "1"),
                put("y", a + 1, a + 4, 2, "2") + &prev(a + 1, a + 1, 1, "1"),
            ],
        ),
    ];
    let without_prev: Vec<(i64, Vec<String>)> = vec![
        (a, vec![put("x", a, a, 1, "1")]),
        (a + 1, vec![put("y", a + 1, a + 1, 1, "1")]),
        (a + 2, vec![put("x", a, a + 2, 2, "2")]),
        (a + 3, vec![format!("DELETE x mod={}", a + 3)]),
        (a + 4, vec![put("z", a + 4, a + 4, 1, "1"), put("y", a + 1, a + 4, 2, "2")]),
    ];

    let got = events(b, a, last, 1000, true).await?;
    ensure_eq!(summary(&sp, &got), with_prev, "events({a}, {last}) with prev_kv");
    let got = events(b, a, last, 1000, false).await?;
    ensure_eq!(summary(&sp, &got), without_prev, "events({a}, {last}) without prev_kv");
    let got = events(b, a, last, 2, false).await?;
    ensure_eq!(summary(&sp, &got), without_prev[..2].to_vec(), "events({a}, {last}) with max_revisions 2");
    let got = events(b, a + 2, last, 1000, false).await?;
    ensure_eq!(summary(&sp, &got), without_prev[2..].to_vec(), "events({}, {last})", a + 2);
    let got = events(b, a + 3, a + 3, 1000, true).await?;
    ensure_eq!(summary(&sp, &got), with_prev[3..4].to_vec(), "events({0}, {0}) of the delete", a + 3);
    let got = events(b, a + 1, a + 3, 1, true).await?;
    ensure_eq!(
        summary(&sp, &got),
        with_prev[1..2].to_vec(),
        "events({}, {}) with max_revisions 1",
        a + 1,
        a + 3
    );

    let mut updates = b.revision_updates();
    let published = tokio::time::timeout(PUBLICATION_TIMEOUT, async {
        loop {
            let seen = *updates.borrow_and_update();
            if seen >= last {
                return Ok(seen);
            }
            if updates.changed().await.is_err() {
                return Err(seen);
            }
        }
    })
    .await;
    match published {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(seen)) => Err(format!("revision_updates() closed at {seen}, before reaching revision {last}")),
        Err(_) => {
            let seen = *b.revision_updates().borrow();
            Err(format!(
                "revision_updates() did not reach revision {last} within {PUBLICATION_TIMEOUT:?} (it is at {seen})"
            ))
        }
    }
}
