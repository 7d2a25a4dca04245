//! Txn through `KvBackend::write(WriteRequest::Txn(..))`: compares, branches, responses,
//! revisions, nesting, and refusals that write nothing.

use cairn_core::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_core::proto::etcdserverpb::response_op::Response;
use cairn_core::proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, ResponseOp, TxnRequest, TxnResponse,
};
use cairn_core::{Backend, RequestError, WriteRequest};

use crate::check::*;

/// The kinds of a txn's responses, for messages and comparisons.
fn kinds(responses: &[ResponseOp]) -> Vec<&'static str> {
    responses
        .iter()
        .map(|r| match &r.response {
            Some(Response::ResponseRange(_)) => "range",
            Some(Response::ResponsePut(_)) => "put",
            Some(Response::ResponseDeleteRange(_)) => "delete",
            Some(Response::ResponseTxn(_)) => "txn",
            None => "none",
        })
        .collect()
}

/// A read-only txn `if compares then get key`.
fn guarded_get(compares: Vec<Compare>, key: &[u8]) -> TxnRequest {
    TxnRequest { compare: compares, success: vec![op_get(key)], failure: vec![] }
}

/// VALUE, VERSION, CREATE, MOD (and LEASE) compares with EQUAL, GREATER, LESS and
/// NOT_EQUAL choose the branch; several compares must all hold; a compare over a range
/// must hold for every key in it.
pub(crate) async fn compares_choose_the_branch<B: Backend>(b: &B, base: &str) -> Outcome {
    use CompareResult::{Equal, Greater, Less, NotEqual};
    use CompareTarget::{Create, Lease, Mod, Value, Version};
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let k = sp.key("k");
    let c = put_value(b, &k, "b").await?; // k: create c
    let m = put_value(b, &k, "b").await?; // k: mod m, version 2, value "b"
    put_value(b, &sp.key("l"), "b").await?; // l: version 1
    let val = |v: &str| TargetUnion::Value(v.as_bytes().to_vec());
    let on_k = |target, result, union| compare(&k, target, result, union);
    let cases: Vec<(String, Vec<Compare>, bool)> = vec![
        ("value = b".into(), vec![on_k(Value, Equal, val("b"))], true),
        ("value = c".into(), vec![on_k(Value, Equal, val("c"))], false),
        ("value > a".into(), vec![on_k(Value, Greater, val("a"))], true),
        ("value > b".into(), vec![on_k(Value, Greater, val("b"))], false),
        ("value < c".into(), vec![on_k(Value, Less, val("c"))], true),
        ("value < b".into(), vec![on_k(Value, Less, val("b"))], false),
        ("value != c".into(), vec![on_k(Value, NotEqual, val("c"))], true),
        ("value != b".into(), vec![on_k(Value, NotEqual, val("b"))], false),
        ("value = bb (longer)".into(), vec![on_k(Value, Equal, val("bb"))], false),
        ("value < bb (prefix is less)".into(), vec![on_k(Value, Less, val("bb"))], true),
        ("version = 2".into(), vec![on_k(Version, Equal, TargetUnion::Version(2))], true),
        ("version = 1".into(), vec![on_k(Version, Equal, TargetUnion::Version(1))], false),
        ("version > 1".into(), vec![on_k(Version, Greater, TargetUnion::Version(1))], true),
        ("version > 2".into(), vec![on_k(Version, Greater, TargetUnion::Version(2))], false),
        ("version < 3".into(), vec![on_k(Version, Less, TargetUnion::Version(3))], true),
        ("version < 2".into(), vec![on_k(Version, Less, TargetUnion::Version(2))], false),
        ("version != 1".into(), vec![on_k(Version, NotEqual, TargetUnion::Version(1))], true),
        ("version != 2".into(), vec![on_k(Version, NotEqual, TargetUnion::Version(2))], false),
        (format!("create = {c}"), vec![on_k(Create, Equal, TargetUnion::CreateRevision(c))], true),
        (format!("create = {m}"), vec![on_k(Create, Equal, TargetUnion::CreateRevision(m))], false),
        (
            format!("create > {}", c - 1),
            vec![on_k(Create, Greater, TargetUnion::CreateRevision(c - 1))],
            true,
        ),
        (format!("create > {c}"), vec![on_k(Create, Greater, TargetUnion::CreateRevision(c))], false),
        (format!("create < {m}"), vec![on_k(Create, Less, TargetUnion::CreateRevision(m))], true),
        (format!("create < {c}"), vec![on_k(Create, Less, TargetUnion::CreateRevision(c))], false),
        (format!("create != {m}"), vec![on_k(Create, NotEqual, TargetUnion::CreateRevision(m))], true),
        (format!("create != {c}"), vec![on_k(Create, NotEqual, TargetUnion::CreateRevision(c))], false),
        (format!("mod = {m}"), vec![on_k(Mod, Equal, TargetUnion::ModRevision(m))], true),
        (format!("mod = {c}"), vec![on_k(Mod, Equal, TargetUnion::ModRevision(c))], false),
        (format!("mod > {c}"), vec![on_k(Mod, Greater, TargetUnion::ModRevision(c))], true),
        (format!("mod > {m}"), vec![on_k(Mod, Greater, TargetUnion::ModRevision(m))], false),
        (format!("mod < {}", m + 1), vec![on_k(Mod, Less, TargetUnion::ModRevision(m + 1))], true),
        (format!("mod < {m}"), vec![on_k(Mod, Less, TargetUnion::ModRevision(m))], false),
        (format!("mod != {c}"), vec![on_k(Mod, NotEqual, TargetUnion::ModRevision(c))], true),
        (format!("mod != {m}"), vec![on_k(Mod, NotEqual, TargetUnion::ModRevision(m))], false),
        ("lease = 0".into(), vec![on_k(Lease, Equal, TargetUnion::Lease(0))], true),
        (
            "value = b and version = 2".into(),
            vec![on_k(Value, Equal, val("b")), on_k(Version, Equal, TargetUnion::Version(2))],
            true,
        ),
        (
            "value = b and version = 1".into(),
            vec![on_k(Value, Equal, val("b")), on_k(Version, Equal, TargetUnion::Version(1))],
            false,
        ),
        (
            "over [k, end of space): version > 0 (k: 2, l: 1)".into(),
            vec![Compare { range_end: sp.end(), ..on_k(Version, Greater, TargetUnion::Version(0)) }],
            true,
        ),
        (
            "over [k, end of space): version = 2 (k: 2, l: 1)".into(),
            vec![Compare { range_end: sp.end(), ..on_k(Version, Equal, TargetUnion::Version(2)) }],
            false,
        ),
        (
            "over [k, end of space): value = b".into(),
            vec![Compare { range_end: sp.end(), ..on_k(Value, Equal, val("b")) }],
            true,
        ),
    ];
    let rev = current(b).await?;
    for (what, compares, want) in cases {
        let what = format!("txn if {what}");
        let r = txn(b, guarded_get(compares, &k), &what).await?;
        ensure_eq!(r.succeeded, want, "{what}: succeeded");
        let want_kinds = if want { vec!["range"] } else { vec![] };
        ensure_eq!(kinds(&r.responses), want_kinds, "{what}: responses");
        ensure_eq!(hrev(&r.header), rev, "{what}: header revision of a read-only txn");
    }
    ensure_eq!(current(b).await?, rev, "revisions().current after read-only txns");
    Ok(())
}

/// Compares against a key that does not exist: version, create and mod revision and lease
/// compare as 0; a VALUE compare always fails.
pub(crate) async fn compares_on_a_missing_key<B: Backend>(b: &B, base: &str) -> Outcome {
    use CompareResult::{Equal, Greater, Less, NotEqual};
    use CompareTarget::{Create, Lease, Mod, Value, Version};
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let nope = sp.key("nope");
    let on = |target, result, union| compare(&nope, target, result, union);
    let cases: Vec<(&str, Compare, bool)> = vec![
        ("version = 0", on(Version, Equal, TargetUnion::Version(0)), true),
        ("version > 0", on(Version, Greater, TargetUnion::Version(0)), false),
        ("version < 1", on(Version, Less, TargetUnion::Version(1)), true),
        ("create = 0", on(Create, Equal, TargetUnion::CreateRevision(0)), true),
        ("create != 0", on(Create, NotEqual, TargetUnion::CreateRevision(0)), false),
        ("mod = 0", on(Mod, Equal, TargetUnion::ModRevision(0)), true),
        ("lease = 0", on(Lease, Equal, TargetUnion::Lease(0)), true),
        ("value = \"\"", on(Value, Equal, TargetUnion::Value(Vec::new())), false),
        ("value != x", on(Value, NotEqual, TargetUnion::Value(b"x".to_vec())), false),
        ("value < x", on(Value, Less, TargetUnion::Value(b"x".to_vec())), false),
    ];
    let rev = current(b).await?;
    for (what, c, want) in cases {
        let what = format!("txn if missing key's {what}");
        let r = txn(b, guarded_get(vec![c], &nope), &what).await?;
        ensure_eq!(r.succeeded, want, "{what}: succeeded");
        ensure_eq!(hrev(&r.header), rev, "{what}: header revision of a read-only txn");
    }
    // The usual create-if-absent idiom writes.
    let t = TxnRequest {
        compare: vec![on(Create, Equal, TargetUnion::CreateRevision(0))],
        success: vec![op_put(&nope, "created")],
        failure: vec![op_get(&nope)],
    };
    let r = txn(b, t.clone(), "create-if-absent txn").await?;
    ensure_eq!(
        (r.succeeded, hrev(&r.header)),
        (true, rev + 1),
        "create-if-absent: (succeeded, header revision)"
    );
    let r = txn(b, t, "create-if-absent txn again").await?;
    ensure_eq!(
        (r.succeeded, hrev(&r.header)),
        (false, rev + 1),
        "create-if-absent again: (succeeded, header revision)"
    );
    match r.responses.first().and_then(|r| r.response.as_ref()) {
        Some(Response::ResponseRange(got)) => {
            let values: Vec<String> = got.kvs.iter().map(|kv| text(&kv.value)).collect();
            ensure_eq!(values, vec!["created"], "create-if-absent again: the failure branch's get");
        }
        other => return Err(format!("create-if-absent again: expected a range response, got {other:?}")),
    }
    Ok(())
}

/// The success branch runs when the compares hold, the failure branch otherwise, and only
/// that branch's writes happen.
pub(crate) async fn success_and_failure_branches<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let (k, s, f) = (sp.key("k"), sp.key("s"), sp.key("f"));
    let r0 = put_value(b, &k, "1").await?;
    let branches = |v: &str| TxnRequest {
        compare: vec![compare(&k, CompareTarget::Value, CompareResult::Equal, TargetUnion::Value(v.into()))],
        success: vec![op_put(&s, v)],
        failure: vec![op_put(&f, v)],
    };
    let r = txn(b, branches("1"), "txn if k = 1 then put s else put f").await?;
    ensure_eq!(
        (r.succeeded, hrev(&r.header)),
        (true, r0 + 1),
        "holding compare: (succeeded, header revision)"
    );
    ensure_eq!(kinds(&r.responses), vec!["put"], "holding compare: responses");
    ensure!(get(b, &s).await?.is_some(), "holding compare: the success branch's put did not happen");
    ensure!(get(b, &f).await?.is_none(), "holding compare: the failure branch's put happened");

    let r = txn(b, branches("2"), "txn if k = 2 then put s else put f").await?;
    ensure_eq!(
        (r.succeeded, hrev(&r.header)),
        (false, r0 + 2),
        "failing compare: (succeeded, header revision)"
    );
    ensure_eq!(kinds(&r.responses), vec!["put"], "failing compare: responses");
    let sv = get_some(b, &s, "after the failing compare").await?;
    ensure_eq!(
        (text(&sv.value), sv.mod_revision),
        ("1".to_string(), r0 + 1),
        "s after the failing compare: (value, mod_revision)"
    );
    let fv = get_some(b, &f, "after the failing compare").await?;
    ensure_eq!(fields(&fv), (r0 + 2, r0 + 2, 1, "2".into(), 0), "f written by the failure branch {FIELDS}");

    // An empty compare list holds.
    let t = TxnRequest { compare: vec![], success: vec![op_get(&k)], failure: vec![op_put(&f, "3")] };
    let r = txn(b, t, "txn without compares").await?;
    ensure_eq!(
        (r.succeeded, hrev(&r.header)),
        (true, r0 + 2),
        "txn without compares: (succeeded, header revision)"
    );
    Ok(())
}

/// Responses come in the order of the ops, each of its kind; later ops see earlier ops'
/// writes; all writes of a txn share one revision.
pub(crate) async fn responses_in_order_and_one_revision<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let (a, c, d) = (sp.key("a"), sp.key("c"), sp.key("d"));
    let r0 = put_value(b, &d, "old").await?;
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            op_put_req(PutRequest { prev_kv: true, ..put_req(&a, "1") }),
            op_get(&a),
            op_delete(delete_req(&d, b"", true)),
            op_put(&c, "1"),
            op_range(range_req(&sp.start(), &sp.end())),
        ],
        failure: vec![],
    };
    let r = txn(b, t, "txn put a, get a, delete d, put c, range").await?;
    let rev = r0 + 1;
    ensure_eq!(
        (r.succeeded, hrev(&r.header)),
        (true, rev),
        "(succeeded, header revision: one for the whole txn)"
    );
    ensure_eq!(kinds(&r.responses), vec!["put", "range", "delete", "put", "range"], "responses");
    let mut responses = r.responses.iter().filter_map(|r| r.response.as_ref());
    if let Some(Response::ResponsePut(p)) = responses.next() {
        ensure!(p.prev_kv.is_none(), "put of a new key in a txn returned a prev_kv: {:?}", p.prev_kv);
    }
    if let Some(Response::ResponseRange(got)) = responses.next() {
        let got: Vec<_> = got.kvs.iter().map(fields).collect();
        ensure_eq!(got, vec![(rev, rev, 1, "1".to_string(), 0)], "get a after the txn's put of a {FIELDS}");
    }
    if let Some(Response::ResponseDeleteRange(del)) = responses.next() {
        ensure_eq!(del.deleted, 1, "delete d in the txn: deleted");
        let prev: Vec<_> = del.prev_kvs.iter().map(|kv| (sp.name(&kv.key), fields(kv))).collect();
        ensure_eq!(
            prev,
            vec![("d".to_string(), (r0, r0, 1, "old".to_string(), 0))],
            "delete d in the txn: prev_kvs"
        );
    }
    responses.next();
    if let Some(Response::ResponseRange(got)) = responses.next() {
        ensure_eq!(
            sp.names(&got.kvs),
            vec!["a", "c"],
            "range at the txn's end: keys (d deleted, a and c put)"
        );
    }
    ensure_eq!(current(b).await?, rev, "revisions().current after the txn");
    for (name, key) in [("a", &a), ("c", &c)] {
        let kv = get_some(b, key, "after the txn").await?;
        ensure_eq!(fields(&kv), (rev, rev, 1, "1".into(), 0), "{name} after the txn {FIELDS}");
    }
    ensure!(get(b, &d).await?.is_none(), "d exists after the txn deleted it");
    Ok(())
}

/// Several puts in one txn take one revision, which every key gets.
pub(crate) async fn many_puts_one_revision<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let names = ["x", "y", "z", "w"];
    put_value(b, &sp.key("y"), "old").await?;
    let r0 = current(b).await?;
    let t = TxnRequest {
        compare: vec![],
        success: names.iter().map(|n| op_put(&sp.key(n), "new")).collect(),
        failure: vec![],
    };
    let r = txn(b, t, "txn of four puts").await?;
    ensure_eq!(hrev(&r.header), r0 + 1, "txn of four puts: header revision");
    ensure_eq!(current(b).await?, r0 + 1, "revisions().current after a txn of four puts");
    for n in names {
        let kv = get_some(b, &sp.key(n), "after the txn of four puts").await?;
        ensure_eq!(
            (kv.mod_revision, text(&kv.value)),
            (r0 + 1, "new".to_string()),
            "{n}: (mod_revision, value)"
        );
        let (create, version) = if n == "y" { (r0, 2) } else { (r0 + 1, 1) };
        ensure_eq!((kv.create_revision, kv.version), (create, version), "{n}: (create_revision, version)");
    }
    Ok(())
}

/// A txn inside a txn: its compares choose its own branch, its response is a txn response,
/// its writes share the outer txn's revision.
pub(crate) async fn nested_txn<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let k = |n: &str| sp.key(n);
    let r0 = put_value(b, &k("a"), "0").await?;
    let is = |key: &[u8], v: &str| {
        compare(key, CompareTarget::Value, CompareResult::Equal, TargetUnion::Value(v.into()))
    };
    let t = TxnRequest {
        compare: vec![is(&k("a"), "0")],
        success: vec![
            op_put(&k("b"), "1"),
            op_txn(TxnRequest {
                compare: vec![compare(
                    &k("a"),
                    CompareTarget::Version,
                    CompareResult::Equal,
                    TargetUnion::Version(1),
                )],
                success: vec![op_put(&k("c"), "nested")],
                failure: vec![op_put(&k("d"), "nested")],
            }),
            op_txn(TxnRequest {
                compare: vec![is(&k("a"), "9")],
                success: vec![op_put(&k("e"), "nested")],
                failure: vec![op_put(&k("f"), "nested"), op_get(&k("a"))],
            }),
        ],
        failure: vec![op_put(&k("g"), "1")],
    };
    let r = txn(b, t, "nested txns").await?;
    ensure_eq!((r.succeeded, hrev(&r.header)), (true, r0 + 1), "nested txns: (succeeded, header revision)");
    ensure_eq!(kinds(&r.responses), vec!["put", "txn", "txn"], "nested txns: outer responses");
    let nested: Vec<&TxnResponse> = r
        .responses
        .iter()
        .filter_map(|r| match &r.response {
            Some(Response::ResponseTxn(t)) => Some(t),
            _ => None,
        })
        .collect();
    if let [first, second] = nested[..] {
        ensure_eq!(
            (first.succeeded, kinds(&first.responses)),
            (true, vec!["put"]),
            "first nested txn: (succeeded, responses)"
        );
        ensure_eq!(
            (second.succeeded, kinds(&second.responses)),
            (false, vec!["put", "range"]),
            "second nested txn: (succeeded, responses)"
        );
    }
    for n in ["b", "c", "f"] {
        let kv = get_some(b, &k(n), "after the nested txns").await?;
        ensure_eq!(kv.mod_revision, r0 + 1, "{n}: mod_revision (the outer txn's revision)");
    }
    for n in ["d", "e", "g"] {
        ensure!(get(b, &k(n)).await?.is_none(), "{n} was written by a branch that was not chosen");
    }
    ensure_eq!(current(b).await?, r0 + 1, "revisions().current after the nested txns");

    // etcd decides every compare, nested ones too, before the txn writes anything.
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            op_put(&k("a"), "1"),
            op_txn(TxnRequest {
                compare: vec![is(&k("a"), "0")],
                success: vec![op_put(&k("h"), "decided before the write")],
                failure: vec![op_put(&k("i"), "decided after the write")],
            }),
        ],
        failure: vec![],
    };
    let r = txn(b, t, "txn putting a=1, then a nested txn comparing a = 0").await?;
    let nested = r.responses.get(1).and_then(|r| r.response.as_ref());
    ensure!(
        matches!(nested, Some(Response::ResponseTxn(t)) if t.succeeded),
        "a nested compare must see the state before the txn (a = 0): the nested txn's response was {nested:?}"
    );
    ensure!(
        get(b, &k("h")).await?.is_some() && get(b, &k("i")).await?.is_none(),
        "nested compare: h should be written, i not"
    );
    Ok(())
}

/// A txn that only reads (ranges, nested read-only txns) answers at the current revision
/// and takes none, serializable or not.
pub(crate) async fn read_only_txn<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let k = sp.key("k");
    let rev = put_value(b, &k, "v").await?;
    for serializable in [false, true] {
        let get = RangeRequest { serializable, ..range_req(&k, b"") };
        let t = TxnRequest {
            compare: vec![compare(&k, CompareTarget::Version, CompareResult::Equal, TargetUnion::Version(1))],
            success: vec![
                op_range(get.clone()),
                op_txn(TxnRequest { compare: vec![], success: vec![op_range(get.clone())], failure: vec![] }),
            ],
            failure: vec![op_range(get)],
        };
        let what = format!("read-only txn (serializable {serializable})");
        let r = txn(b, t, &what).await?;
        ensure_eq!((r.succeeded, hrev(&r.header)), (true, rev), "{what}: (succeeded, header revision)");
        ensure_eq!(kinds(&r.responses), vec!["range", "txn"], "{what}: responses");
        if let Some(Response::ResponseRange(got)) = r.responses.first().and_then(|r| r.response.as_ref()) {
            let got: Vec<_> = got.kvs.iter().map(fields).collect();
            ensure_eq!(got, vec![(rev, rev, 1, "v".to_string(), 0)], "{what}: get k {FIELDS}");
        }
        ensure_eq!(current(b).await?, rev, "{what}: revisions().current afterwards");
    }
    Ok(())
}

/// Txns refused by the state (ignore_value of a missing key, an unknown lease, a future
/// revision) write nothing, not even their valid ops; a bad op in the branch not taken is
/// not looked at.
pub(crate) async fn refused_txns_write_nothing<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let (x, missing) = (sp.key("x"), sp.key("missing"));
    let unknown = unknown_lease(b, &sp).await?;
    let before = put_value(b, &sp.key("existing"), "1").await?;
    let ignore_missing =
        op_put_req(PutRequest { key: missing.clone(), ignore_value: true, ..Default::default() });
    let bad_lease = op_put_req(PutRequest { lease: unknown, ..put_req(&sp.key("leased"), "v") });
    let future_get = op_range(RangeRequest { revision: before + 100, ..range_req(&x, b"") });
    let cases = vec![
        (
            "put x, then put with ignore_value of a missing key",
            ignore_missing.clone(),
            RequestError::KeyNotFound,
        ),
        ("put x, then put with an unknown lease", bad_lease, RequestError::LeaseNotFound),
        ("put x, then range at a future revision", future_get, RequestError::FutureRevision),
    ];
    for (what, bad, want) in cases {
        let t = TxnRequest { compare: vec![], success: vec![op_put(&x, "1"), bad], failure: vec![] };
        refused(b.write(WriteRequest::Txn(t)).await, want, &format!("txn {what}"))?;
        ensure_eq!(current(b).await?, before, "txn {what}: revisions().current afterwards");
        ensure!(get(b, &x).await?.is_none(), "txn {what}: its put of x happened");
    }
    let req = PutRequest { lease: unknown, ..put_req(&sp.key("leased"), "v") };
    refused(b.write(WriteRequest::Put(req)).await, RequestError::LeaseNotFound, "put with an unknown lease")?;
    ensure!(get(b, &sp.key("leased")).await?.is_none(), "a put with an unknown lease wrote its key");

    // The branch not taken may hold anything.
    let t = TxnRequest {
        compare: vec![compare(&x, CompareTarget::Version, CompareResult::Greater, TargetUnion::Version(0))],
        success: vec![ignore_missing],
        failure: vec![op_put(&x, "2")],
    };
    let r = txn(b, t, "txn whose untaken branch holds a put with ignore_value of a missing key").await?;
    ensure_eq!(
        (r.succeeded, hrev(&r.header)),
        (false, before + 1),
        "bad op in the untaken branch: (succeeded, header revision)"
    );
    Ok(())
}
