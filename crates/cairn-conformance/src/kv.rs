//! Put, get and delete basics, and the revisions they take.

use cairn_core::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_core::proto::etcdserverpb::{PutRequest, TxnRequest};
use cairn_core::{Backend, RequestError, WriteRequest};

use crate::check::*;

/// Revision, create/mod revision and version of one key through put, overwrite, delete and
/// re-creation; `prev_kv` on put.
pub(crate) async fn put_revisions_and_versions<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let r0 = current(b).await?;
    let a = sp.key("a");

    let resp = put(b, PutRequest { prev_kv: true, ..put_req(&a, "1") }, "put a=1 (new key, prev_kv)").await?;
    ensure_eq!(hrev(&resp.header), r0 + 1, "header revision of the first put (current was {r0})");
    ensure!(
        resp.prev_kv.is_none(),
        "put with prev_kv of a new key: expected no prev_kv, got {:?}",
        resp.prev_kv
    );
    ensure_eq!(current(b).await?, r0 + 1, "revisions().current after the first put");
    let kv = get_some(b, &a, "after put a=1").await?;
    ensure_eq!(fields(&kv), (r0 + 1, r0 + 1, 1, "1".into(), 0), "a after its first put {FIELDS}");

    let resp = put(b, PutRequest { prev_kv: true, ..put_req(&a, "2") }, "put a=2 (prev_kv)").await?;
    ensure_eq!(hrev(&resp.header), r0 + 2, "header revision of the overwrite");
    let prev = resp.prev_kv.ok_or("put a=2 with prev_kv over an existing key returned no prev_kv")?;
    ensure_eq!(sp.name(&prev.key), "a", "prev_kv key of the overwrite");
    ensure_eq!(fields(&prev), (r0 + 1, r0 + 1, 1, "1".into(), 0), "prev_kv of the overwrite {FIELDS}");
    let kv = get_some(b, &a, "after put a=2").await?;
    ensure_eq!(fields(&kv), (r0 + 1, r0 + 2, 2, "2".into(), 0), "a after the overwrite {FIELDS}");

    let resp = put(b, put_req(&a, "3"), "put a=3 (no prev_kv)").await?;
    ensure_eq!(hrev(&resp.header), r0 + 3, "header revision of the second overwrite");
    ensure!(resp.prev_kv.is_none(), "put without prev_kv returned a prev_kv: {:?}", resp.prev_kv);
    let kv = get_some(b, &a, "after put a=3").await?;
    ensure_eq!(fields(&kv), (r0 + 1, r0 + 3, 3, "3".into(), 0), "a after two overwrites {FIELDS}");

    let d = delete(b, delete_req(&a, b"", false), "delete a").await?;
    ensure_eq!((d.deleted, hrev(&d.header)), (1, r0 + 4), "delete a: (deleted, header revision)");
    ensure!(get(b, &a).await?.is_none(), "a still exists after its delete");

    // Re-creation starts a new generation: create_revision and version start over.
    let resp = put(b, PutRequest { prev_kv: true, ..put_req(&a, "4") }, "put a=4 (re-create)").await?;
    ensure_eq!(hrev(&resp.header), r0 + 5, "header revision of the re-creation");
    ensure!(resp.prev_kv.is_none(), "re-creating a deleted key returned a prev_kv: {:?}", resp.prev_kv);
    let kv = get_some(b, &a, "after re-creating a").await?;
    ensure_eq!(fields(&kv), (r0 + 5, r0 + 5, 1, "4".into(), 0), "a after delete and re-creation {FIELDS}");

    // A second key created later has its own create revision.
    let rb = put_value(b, &sp.key("b"), "1").await?;
    ensure_eq!(rb, r0 + 6, "header revision of put b");
    let kv = get_some(b, &sp.key("b"), "after put b").await?;
    ensure_eq!(fields(&kv), (r0 + 6, r0 + 6, 1, "1".into(), 0), "b {FIELDS}");
    let kv = get_some(b, &a, "after put b").await?;
    ensure_eq!(kv.mod_revision, r0 + 5, "a's mod_revision after a write to another key");
    ensure_eq!(current(b).await?, rb, "revisions().current equals the last write's header revision");
    Ok(())
}

/// Every write that changes something takes exactly current + 1; writes that change nothing
/// (a delete of no key, a read-only txn, a txn whose chosen branch is empty) take none.
pub(crate) async fn revisions_are_dense<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let (x, y, z) = (sp.key("x"), sp.key("y"), sp.key("z"));
    let steps: Vec<(&str, WriteRequest, i64)> = vec![
        ("put x (new)", WriteRequest::Put(put_req(&x, "1")), 1),
        ("put y (new)", WriteRequest::Put(put_req(&y, "1")), 1),
        ("put x again with the same value", WriteRequest::Put(put_req(&x, "1")), 1),
        ("delete x", WriteRequest::DeleteRange(delete_req(&x, b"", true)), 1),
        ("delete x again (no key)", WriteRequest::DeleteRange(delete_req(&x, b"", true)), 0),
        (
            "delete an empty span",
            WriteRequest::DeleteRange(delete_req(&sp.key("none/"), &prefix_end(&sp.key("none/")), false)),
            0,
        ),
        (
            "txn putting three keys",
            WriteRequest::Txn(TxnRequest {
                compare: vec![],
                success: vec![op_put(&x, "2"), op_put(&y, "2"), op_put(&z, "2")],
                failure: vec![],
            }),
            1,
        ),
        (
            "txn putting one key and deleting another",
            WriteRequest::Txn(TxnRequest {
                compare: vec![],
                success: vec![op_put(&x, "3"), op_delete(delete_req(&z, b"", false))],
                failure: vec![],
            }),
            1,
        ),
        (
            "read-only txn",
            WriteRequest::Txn(TxnRequest {
                compare: vec![],
                success: vec![op_get(&x), op_range(range_req(&sp.start(), &sp.end()))],
                failure: vec![],
            }),
            0,
        ),
        (
            "txn whose compare fails and whose failure branch is empty",
            WriteRequest::Txn(TxnRequest {
                compare: vec![compare(
                    &x,
                    CompareTarget::Version,
                    CompareResult::Equal,
                    TargetUnion::Version(99),
                )],
                success: vec![op_put(&z, "never")],
                failure: vec![],
            }),
            0,
        ),
        (
            "txn deleting no key",
            WriteRequest::Txn(TxnRequest {
                compare: vec![],
                success: vec![op_delete(delete_req(&z, b"", false))],
                failure: vec![],
            }),
            0,
        ),
        ("put y with prev_kv", WriteRequest::Put(PutRequest { prev_kv: true, ..put_req(&y, "3") }), 1),
    ];
    for (what, req, bump) in steps {
        let before = current(b).await?;
        let resp = write(b, req, what).await?;
        ensure_eq!(resp.revision(), before + bump, "{what}: header revision (current was {before})");
        ensure_eq!(current(b).await?, before + bump, "{what}: revisions().current afterwards");
    }
    ensure!(
        get(b, &z).await?.is_none(),
        "z exists though it was deleted and the last put of it was not chosen"
    );
    Ok(())
}

/// DeleteRange: deleted count, `prev_kv`, spans, and deleting nothing.
pub(crate) async fn delete_range<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    for k in ["a", "b", "c", "d"] {
        put_value(b, &sp.key(k), &format!("v{k}")).await?;
    }
    let r0 = current(b).await?;

    let d = delete(b, delete_req(&sp.key("a"), b"", true), "delete a (prev_kv)").await?;
    ensure_eq!((d.deleted, hrev(&d.header)), (1, r0 + 1), "delete a: (deleted, header revision)");
    ensure_eq!(sp.names(&d.prev_kvs), vec!["a"], "delete a: prev_kvs keys");
    ensure_eq!(
        d.prev_kvs.first().map(|kv| text(&kv.value)),
        Some("va".to_string()),
        "delete a: prev_kv value"
    );

    let d = delete(b, delete_req(&sp.key("b"), &sp.key("d"), true), "delete span [b, d) (prev_kv)").await?;
    ensure_eq!(
        (d.deleted, hrev(&d.header)),
        (2, r0 + 2),
        "delete [b, d): (deleted, header revision: one for both)"
    );
    ensure_eq!(sp.names(&d.prev_kvs), vec!["b", "c"], "delete [b, d): prev_kvs keys, in key order");
    let values: Vec<String> = d.prev_kvs.iter().map(|kv| text(&kv.value)).collect();
    ensure_eq!(values, vec!["vb", "vc"], "delete [b, d): prev_kvs values");
    let left = range(b, range_req(&sp.start(), &sp.end()), "range over the test's keys").await?;
    ensure_eq!(sp.names(&left.kvs), vec!["d"], "keys left after deleting a and [b, d)");

    let d = delete(b, delete_req(&sp.key("d"), b"", false), "delete d (no prev_kv)").await?;
    ensure_eq!((d.deleted, hrev(&d.header)), (1, r0 + 3), "delete d: (deleted, header revision)");
    ensure!(d.prev_kvs.is_empty(), "delete without prev_kv returned prev_kvs: {:?}", sp.names(&d.prev_kvs));

    let d = delete(b, delete_req(&sp.key("missing"), b"", true), "delete a missing key").await?;
    ensure_eq!(
        (d.deleted, hrev(&d.header)),
        (0, r0 + 3),
        "delete of a missing key: (deleted, header revision)"
    );
    ensure!(d.prev_kvs.is_empty(), "delete of a missing key returned prev_kvs");
    let d = delete(b, delete_req(&sp.start(), &sp.end(), true), "delete the (now empty) space").await?;
    ensure_eq!(
        (d.deleted, hrev(&d.header)),
        (0, r0 + 3),
        "delete of an empty span: (deleted, header revision)"
    );
    ensure_eq!(current(b).await?, r0 + 3, "revisions().current after deletes of nothing");
    Ok(())
}

/// `ignore_value` keeps the value (and needs an existing key); `ignore_lease` likewise.
pub(crate) async fn put_ignore_value<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let k = sp.key("k");
    let r1 = put_value(b, &k, "kept").await?;
    let req = PutRequest { key: k.clone(), ignore_value: true, prev_kv: true, ..Default::default() };
    let resp = put(b, req, "put k with ignore_value").await?;
    ensure_eq!(hrev(&resp.header), r1 + 1, "put with ignore_value: header revision");
    ensure_eq!(
        resp.prev_kv.map(|kv| text(&kv.value)),
        Some("kept".to_string()),
        "put with ignore_value: prev_kv value"
    );
    let kv = get_some(b, &k, "after put with ignore_value").await?;
    ensure_eq!(fields(&kv), (r1, r1 + 1, 2, "kept".into(), 0), "k after put with ignore_value {FIELDS}");

    let req = PutRequest { key: k.clone(), value: b"new".to_vec(), ignore_lease: true, ..Default::default() };
    put(b, req, "put k with ignore_lease").await?;
    let kv = get_some(b, &k, "after put with ignore_lease").await?;
    ensure_eq!(fields(&kv), (r1, r1 + 2, 3, "new".into(), 0), "k after put with ignore_lease {FIELDS}");

    let before = current(b).await?;
    let missing = sp.key("missing");
    let req = PutRequest { key: missing.clone(), ignore_value: true, ..Default::default() };
    refused(
        b.write(WriteRequest::Put(req)).await,
        RequestError::KeyNotFound,
        "put with ignore_value of a missing key",
    )?;
    let req =
        PutRequest { key: missing.clone(), value: b"v".to_vec(), ignore_lease: true, ..Default::default() };
    refused(
        b.write(WriteRequest::Put(req)).await,
        RequestError::KeyNotFound,
        "put with ignore_lease of a missing key",
    )?;
    ensure_eq!(current(b).await?, before, "revisions().current after refused puts");
    ensure!(get(b, &missing).await?.is_none(), "a refused put created its key");
    Ok(())
}

/// Keys and values of every byte value, and a value of 1 MiB, come back byte for byte (a
/// SQL store writes small batches as text literals and large ones as parameters).
pub(crate) async fn binary_and_large_values<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let mut key = sp.key("bin/");
    key.extend(&every_byte);
    let value: Vec<u8> = every_byte.iter().rev().copied().cycle().take(1000).collect();
    put(b, PutRequest { key: key.clone(), value: value.clone(), ..Default::default() }, "put every byte")
        .await?;
    let kv = get_some(b, &key, "after putting every byte").await?;
    ensure!(kv.key == key && kv.value == value, "a key and value of every byte came back changed");

    let large_key = sp.key("large");
    let large: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    put(b, PutRequest { key: large_key.clone(), value: large.clone(), ..Default::default() }, "put 1 MiB")
        .await?;
    let kv = get_some(b, &large_key, "after putting 1 MiB").await?;
    ensure!(kv.value == large, "a 1 MiB value came back changed ({} bytes)", kv.value.len());
    let d = delete(b, delete_req(&large_key, b"", false), "delete the 1 MiB value").await?;
    ensure_eq!(d.deleted, 1, "keys deleted with the 1 MiB value");
    ensure!(get(b, &key).await?.is_some(), "the key of every byte went with the 1 MiB value");
    Ok(())
}
