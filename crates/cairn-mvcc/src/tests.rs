// Table-driven tests of the etcd semantics, included once per engine (see lib.rs), which
// provides `engine()`.

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::*;
use cairn_proto::mvccpb::KeyValue;

use cairn_core::{RequestError, WriteRequest, WriteResponse};

use crate::{MvccError, MvccStore};

struct Fixture {
    _dir: Option<tempfile::TempDir>,
    store: MvccStore,
}

impl Fixture {
    fn new() -> Self {
        let (dir, engine) = engine();
        Fixture { _dir: dir, store: MvccStore::new(engine) }
    }

    fn apply(&self, req: WriteRequest) -> Result<WriteResponse, MvccError> {
        let mut b = self.store.begin_apply()?;
        let r = b.apply(&req);
        b.commit()?;
        r
    }

    fn put(&self, k: &str, v: &str) -> i64 {
        match self.apply(WriteRequest::Put(put_req(k, v))).unwrap() {
            WriteResponse::Put(r) => r.header.unwrap().revision,
            other => panic!("{other:?}"),
        }
    }

    fn del(&self, k: &str, end: &str) -> DeleteRangeResponse {
        match self
            .apply(WriteRequest::DeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                prev_kv: true,
            }))
            .unwrap()
        {
            WriteResponse::DeleteRange(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn txn(&self, t: TxnRequest) -> Result<TxnResponse, MvccError> {
        match self.apply(WriteRequest::Txn(t))? {
            WriteResponse::Txn(r) => Ok(r),
            other => panic!("{other:?}"),
        }
    }

    fn compact(&self, rev: i64) -> Result<(), MvccError> {
        self.apply(WriteRequest::Compact(CompactionRequest { revision: rev, physical: true })).map(|_| ())
    }

    fn range(&self, r: RangeRequest) -> Result<RangeResponse, MvccError> {
        self.store.range(&r)
    }

    fn get(&self, k: &str) -> Option<KeyValue> {
        self.range(RangeRequest { key: k.into(), ..Default::default() }).unwrap().kvs.pop()
    }

    fn get_at(&self, k: &str, rev: i64) -> Option<KeyValue> {
        self.range(RangeRequest { key: k.into(), revision: rev, ..Default::default() }).unwrap().kvs.pop()
    }
}

fn put_req(k: &str, v: &str) -> PutRequest {
    PutRequest { key: k.into(), value: v.into(), ..Default::default() }
}

fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs.iter().map(|kv| String::from_utf8(kv.key.clone()).unwrap()).collect()
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp { request: Some(Request::RequestPut(put_req(k, v))) }
}

fn op_get(k: &str) -> RequestOp {
    RequestOp { request: Some(Request::RequestRange(RangeRequest { key: k.into(), ..Default::default() })) }
}

fn cmp(k: &str, target: CompareTarget, result: CompareResult, union: TargetUnion) -> Compare {
    Compare {
        key: k.into(),
        target: target as i32,
        result: result as i32,
        target_union: Some(union),
        range_end: vec![],
    }
}

#[test]
fn revisions_versions_and_create_revisions_follow_etcd() {
    let f = Fixture::new();
    assert_eq!(f.store.revisions().unwrap(), (1, 0), "an empty store is at revision 1");
    assert_eq!(f.put("a", "1"), 2);
    assert_eq!(f.put("a", "2"), 3);
    assert_eq!(f.put("b", "1"), 4);
    let a = f.get("a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version, a.value.as_slice()), (2, 3, 2, &b"2"[..]));
    let d = f.del("a", "");
    assert_eq!((d.deleted, d.header.unwrap().revision), (1, 5));
    assert_eq!(d.prev_kvs[0].value, b"2");
    assert!(f.get("a").is_none());
    // Deleting nothing does not use a revision.
    let d = f.del("zzz", "");
    assert_eq!((d.deleted, d.header.unwrap().revision), (0, 5));
    // Recreating starts a new generation.
    assert_eq!(f.put("a", "3"), 6);
    let a = f.get("a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (6, 6, 1));
}

#[test]
fn put_options_follow_etcd() {
    let f = Fixture::new();
    f.apply(WriteRequest::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 })).unwrap();
    f.apply(WriteRequest::Put(PutRequest {
        key: "k".into(),
        value: "v1".into(),
        lease: 7,
        ..Default::default()
    }))
    .unwrap();
    let WriteResponse::Put(r) = f
        .apply(WriteRequest::Put(PutRequest {
            key: "k".into(),
            value: "v2".into(),
            prev_kv: true,
            ignore_lease: true,
            ..Default::default()
        }))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(r.prev_kv.unwrap().value, b"v1");
    assert_eq!(f.get("k").unwrap().lease, 7, "ignore_lease keeps the lease");
    f.apply(WriteRequest::Put(PutRequest { key: "k".into(), ignore_value: true, ..Default::default() }))
        .unwrap();
    let k = f.get("k").unwrap();
    assert_eq!(
        (k.value.as_slice(), k.lease, k.version),
        (&b"v2"[..], 0, 3),
        "ignore_value keeps the value, not the lease"
    );
    let missing = f.apply(WriteRequest::Put(PutRequest {
        key: "nope".into(),
        ignore_value: true,
        ..Default::default()
    }));
    assert_eq!(missing, Err(RequestError::KeyNotFound.into()));
    assert_eq!(f.store.revisions().unwrap().0, 4, "a failed put uses no revision");
}

#[test]
fn ranges_follow_etcd() {
    let f = Fixture::new();
    for (k, v) in [("a", "3"), ("b", "1"), ("b/1", "9"), ("b/2", "2"), ("c", "5"), ("\u{7f}x", "0")] {
        f.put(k, v);
    }
    f.put("b/1", "8"); // b/1: version 2, mod 8
    struct Case {
        name: &'static str,
        req: RangeRequest,
        keys: &'static [&'static str],
        count: i64,
        more: bool,
    }
    let r =
        |key: &str, end: &str| RangeRequest { key: key.into(), range_end: end.into(), ..Default::default() };
    let cases = vec![
        Case { name: "single key", req: r("b", ""), keys: &["b"], count: 1, more: false },
        Case { name: "missing key", req: r("bb", ""), keys: &[], count: 0, more: false },
        Case { name: "span", req: r("b", "c"), keys: &["b", "b/1", "b/2"], count: 3, more: false },
        Case { name: "prefix b/", req: r("b/", "b0"), keys: &["b/1", "b/2"], count: 2, more: false },
        Case { name: "from key (\\0)", req: r("c", "\0"), keys: &["c", "\u{7f}x"], count: 2, more: false },
        Case {
            name: "all keys",
            req: r("\0", "\0"),
            keys: &["a", "b", "b/1", "b/2", "c", "\u{7f}x"],
            count: 6,
            more: false,
        },
        Case { name: "end before key", req: r("c", "a"), keys: &[], count: 0, more: false },
        Case {
            name: "limit",
            req: RangeRequest { limit: 2, ..r("a", "z") },
            keys: &["a", "b"],
            count: 5,
            more: true,
        },
        Case {
            name: "limit exact",
            req: RangeRequest { limit: 5, ..r("a", "z") },
            keys: &["a", "b", "b/1", "b/2", "c"],
            count: 5,
            more: false,
        },
        Case {
            name: "count only",
            req: RangeRequest { count_only: true, ..r("a", "z") },
            keys: &[],
            count: 5,
            more: false,
        },
        Case {
            name: "sort by value descend, limit",
            req: RangeRequest {
                sort_order: SortOrder::Descend as i32,
                sort_target: SortTarget::Value as i32,
                limit: 2,
                ..r("a", "z")
            },
            keys: &["b/1", "c"],
            count: 5,
            more: true,
        },
        Case {
            name: "sort target without order ascends",
            req: RangeRequest { sort_target: SortTarget::Mod as i32, ..r("a", "z") },
            keys: &["a", "b", "b/2", "c", "b/1"],
            count: 5,
            more: false,
        },
        Case {
            name: "sort by key descend",
            req: RangeRequest { sort_order: SortOrder::Descend as i32, ..r("a", "c") },
            keys: &["b/2", "b/1", "b", "a"],
            count: 4,
            more: false,
        },
        Case {
            name: "sort by version descend",
            req: RangeRequest {
                sort_order: SortOrder::Descend as i32,
                sort_target: SortTarget::Version as i32,
                limit: 1,
                ..r("a", "z")
            },
            keys: &["b/1"],
            count: 5,
            more: true,
        },
        Case {
            name: "sort by create ascend",
            req: RangeRequest {
                sort_order: SortOrder::Ascend as i32,
                sort_target: SortTarget::Create as i32,
                ..r("b", "c")
            },
            keys: &["b", "b/1", "b/2"],
            count: 3,
            more: false,
        },
        Case {
            name: "min mod revision",
            req: RangeRequest { min_mod_revision: 5, ..r("a", "z") },
            keys: &["b/1", "b/2", "c"],
            count: 5,
            more: false,
        },
        Case {
            name: "max mod revision",
            req: RangeRequest { max_mod_revision: 3, ..r("a", "z") },
            keys: &["a", "b"],
            count: 5,
            more: false,
        },
        Case {
            name: "min create revision",
            req: RangeRequest { min_create_revision: 4, ..r("a", "z") },
            keys: &["b/1", "b/2", "c"],
            count: 5,
            more: false,
        },
        Case {
            name: "max create revision",
            req: RangeRequest { max_create_revision: 4, limit: 2, ..r("a", "z") },
            keys: &["a", "b"],
            count: 5,
            more: true,
        },
    ];
    for c in cases {
        let resp = f.range(c.req.clone()).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(keys(&resp), c.keys, "{}", c.name);
        assert_eq!(resp.count, c.count, "{}: count", c.name);
        assert_eq!(resp.more, c.more, "{}: more", c.name);
        assert_eq!(resp.header.unwrap().revision, 8, "{}: header revision", c.name);
    }
    let ko = f.range(RangeRequest { keys_only: true, ..r("a", "c") }).unwrap();
    assert!(ko.kvs.iter().all(|kv| kv.value.is_empty() && kv.mod_revision > 0));
}

#[test]
fn historical_reads_see_overwrites_and_deletes() {
    let f = Fixture::new();
    f.put("k", "v2"); // 2
    f.put("k", "v3"); // 3
    f.put("other", "x"); // 4
    f.del("k", ""); // 5
    f.put("k", "v6"); // 6
    let at = |rev| {
        f.get_at("k", rev).map(|kv| (String::from_utf8(kv.value).unwrap(), kv.version, kv.create_revision))
    };
    assert_eq!(at(1), None);
    assert_eq!(at(2), Some(("v2".into(), 1, 2)));
    assert_eq!(at(3), Some(("v3".into(), 2, 2)));
    assert_eq!(at(4), Some(("v3".into(), 2, 2)));
    assert_eq!(at(5), None);
    assert_eq!(at(6), Some(("v6".into(), 1, 6)));
    let all_at = |rev| {
        let r = f
            .range(RangeRequest {
                key: "\0".into(),
                range_end: "\0".into(),
                revision: rev,
                ..Default::default()
            })
            .unwrap();
        (keys(&r), r.count, r.header.unwrap().revision)
    };
    assert_eq!(all_at(3), (vec!["k".to_string()], 1, 6));
    assert_eq!(all_at(4), (vec!["k".to_string(), "other".to_string()], 2, 6));
    assert_eq!(all_at(5), (vec!["other".to_string()], 1, 6));
    let limited = f
        .range(RangeRequest {
            key: "a".into(),
            range_end: "z".into(),
            revision: 4,
            limit: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((keys(&limited), limited.count, limited.more), (vec!["k".to_string()], 2, true));
    assert_eq!(
        f.range(RangeRequest { key: "k".into(), revision: 7, ..Default::default() }),
        Err(RequestError::FutureRevision.into())
    );
}

#[test]
fn compaction_keeps_what_later_reads_need() {
    let f = Fixture::new();
    f.put("a", "1"); // 2
    f.put("a", "2"); // 3
    f.put("b", "1"); // 4
    f.del("b", ""); // 5
    f.put("c", "1"); // 6
    f.put("a", "3"); // 7
    f.compact(5).unwrap();
    assert_eq!(f.store.revisions().unwrap(), (7, 5));
    assert_eq!(
        f.range(RangeRequest { key: "a".into(), revision: 4, ..Default::default() }),
        Err(RequestError::Compacted.into())
    );
    assert_eq!(f.get_at("a", 5).unwrap().value, b"2", "the compact revision itself stays readable");
    assert_eq!(f.get_at("a", 6).unwrap().value, b"2");
    assert!(f.get_at("b", 5).is_none());
    assert_eq!(f.get_at("c", 6).unwrap().value, b"1");
    assert_eq!(f.get("a").unwrap().value, b"3");
    assert_eq!(f.compact(5), Err(RequestError::Compacted.into()));
    assert_eq!(f.compact(4), Err(RequestError::Compacted.into()));
    assert_eq!(f.compact(8), Err(RequestError::FutureRevision.into()));
    // Physically: a@2 and both rows of b are gone; a@3, a@7, c@6 remain.
    let mut history = 0;
    f.store
        .engine()
        .snapshot()
        .scan(crate::Family::History, &[], None, &mut |_, _| {
            history += 1;
            Ok(true)
        })
        .unwrap();
    assert_eq!(history, 3);
    f.compact(7).unwrap();
    assert_eq!(f.get_at("a", 7).unwrap().value, b"3");
    assert_eq!(
        f.range(RangeRequest { key: "a".into(), revision: 6, ..Default::default() }),
        Err(RequestError::Compacted.into())
    );
}

#[test]
fn txn_compares_follow_etcd() {
    use CompareResult::*;
    use CompareTarget::*;
    let f = Fixture::new();
    f.put("k", "b"); // create 2, mod 2, version 1
    f.put("k", "b"); // mod 3, version 2
    let cases: Vec<(&str, Compare, bool)> = vec![
        ("version equal", cmp("k", Version, Equal, TargetUnion::Version(2)), true),
        ("version greater", cmp("k", Version, Greater, TargetUnion::Version(1)), true),
        ("version less", cmp("k", Version, Less, TargetUnion::Version(2)), false),
        ("version not equal", cmp("k", Version, NotEqual, TargetUnion::Version(2)), false),
        ("create equal", cmp("k", Create, Equal, TargetUnion::CreateRevision(2)), true),
        ("mod greater", cmp("k", Mod, Greater, TargetUnion::ModRevision(2)), true),
        ("mod less", cmp("k", Mod, Less, TargetUnion::ModRevision(3)), false),
        ("value equal", cmp("k", Value, Equal, TargetUnion::Value(b"b".to_vec())), true),
        ("value greater", cmp("k", Value, Greater, TargetUnion::Value(b"a".to_vec())), true),
        ("value less", cmp("k", Value, Less, TargetUnion::Value(b"a".to_vec())), false),
        ("value not equal", cmp("k", Value, NotEqual, TargetUnion::Value(b"c".to_vec())), true),
        ("lease equal zero", cmp("k", Lease, Equal, TargetUnion::Lease(0)), true),
        ("missing key: version 0", cmp("nope", Version, Equal, TargetUnion::Version(0)), true),
        ("missing key: create 0", cmp("nope", Create, Equal, TargetUnion::CreateRevision(0)), true),
        (
            "missing key: value compare fails",
            cmp("nope", Value, NotEqual, TargetUnion::Value(b"x".to_vec())),
            false,
        ),
        (
            "range: every key must match",
            Compare { range_end: b"l".to_vec(), ..cmp("a", Version, Greater, TargetUnion::Version(0)) },
            true,
        ),
    ];
    for (name, c, want) in cases {
        let r = f.txn(TxnRequest { compare: vec![c], success: vec![op_get("k")], failure: vec![] }).unwrap();
        assert_eq!(r.succeeded, want, "{name}");
        assert_eq!(r.header.unwrap().revision, 3, "{name}: a read-only txn uses no revision");
    }
}

#[test]
fn txn_writes_share_one_revision_and_see_each_other() {
    let f = Fixture::new();
    f.put("a", "0"); // 2
    let t = TxnRequest {
        compare: vec![cmp(
            "a",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(b"0".to_vec()),
        )],
        success: vec![
            op_put("a", "1"),
            op_put("b", "1"),
            op_get("a"),
            RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: "b".into(),
                    range_end: "c".into(),
                    prev_kv: true,
                })),
            },
            RequestOp {
                request: Some(Request::RequestTxn(TxnRequest {
                    // Decided before the txn wrote: a was "0" then.
                    compare: vec![cmp(
                        "a",
                        CompareTarget::Value,
                        CompareResult::Equal,
                        TargetUnion::Value(b"0".to_vec()),
                    )],
                    success: vec![op_put("c", "nested")],
                    failure: vec![],
                })),
            },
        ],
        failure: vec![op_put("failed", "1")],
    };
    let r = f.txn(t).unwrap();
    assert!(r.succeeded);
    assert_eq!(r.header.as_ref().unwrap().revision, 3);
    let Some(Response::ResponseRange(got)) = &r.responses[2].response else { panic!() };
    assert_eq!(got.kvs[0].value, b"1", "a read in a txn sees the txn's earlier put");
    assert_eq!(got.header.as_ref().unwrap().revision, 3);
    let Some(Response::ResponseDeleteRange(d)) = &r.responses[3].response else { panic!() };
    assert_eq!((d.deleted, d.prev_kvs[0].key.as_slice()), (1, &b"b"[..]));
    let Some(Response::ResponseTxn(n)) = &r.responses[4].response else { panic!() };
    assert!(n.succeeded);
    assert_eq!(f.get("a").unwrap().mod_revision, 3);
    assert_eq!(f.get("c").unwrap().mod_revision, 3);
    assert!(f.get("b").is_none());
    assert!(f.get("failed").is_none());
    assert_eq!(f.store.revisions().unwrap().0, 3);
    // Failure branch.
    let r = f
        .txn(TxnRequest {
            compare: vec![cmp("a", CompareTarget::Version, CompareResult::Equal, TargetUnion::Version(9))],
            success: vec![],
            failure: vec![op_put("failed", "1")],
        })
        .unwrap();
    assert!(!r.succeeded);
    assert_eq!(f.get("failed").unwrap().mod_revision, 4);
}

#[test]
fn txn_errors_apply_nothing() {
    let f = Fixture::new();
    f.put("a", "1"); // 2
    let future = TxnRequest {
        compare: vec![],
        success: vec![
            op_put("x", "1"),
            RequestOp {
                request: Some(Request::RequestRange(RangeRequest {
                    key: "a".into(),
                    revision: 99,
                    ..Default::default()
                })),
            },
        ],
        failure: vec![],
    };
    assert_eq!(f.txn(future), Err(RequestError::FutureRevision.into()));
    let ignore = TxnRequest {
        compare: vec![],
        success: vec![
            op_put("x", "1"),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: "missing".into(),
                    ignore_value: true,
                    ..Default::default()
                })),
            },
        ],
        failure: vec![],
    };
    assert_eq!(f.txn(ignore), Err(RequestError::KeyNotFound.into()));
    assert!(f.get("x").is_none());
    assert_eq!(f.store.revisions().unwrap().0, 2);
}

#[test]
fn one_batch_of_many_requests_reads_its_own_writes() {
    let f = Fixture::new();
    let mut b = f.store.begin_apply().unwrap();
    b.apply(&WriteRequest::Put(put_req("a", "1"))).unwrap();
    b.apply(&WriteRequest::Put(put_req("a", "2"))).unwrap();
    b.apply(&WriteRequest::DeleteRange(DeleteRangeRequest { key: "a".into(), ..Default::default() }))
        .unwrap();
    b.apply(&WriteRequest::Put(put_req("a", "4"))).unwrap();
    b.put_meta(b"raft/applied", b"42");
    assert!(f.get("a").is_none(), "nothing is visible before commit");
    let events = b.commit().unwrap();
    assert_eq!(events.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
    let a = f.get("a").unwrap();
    assert_eq!((a.create_revision, a.version, a.mod_revision), (5, 1, 5));
    assert_eq!(f.get_at("a", 3).unwrap().value, b"2");
    assert!(f.get_at("a", 4).is_none());
    assert_eq!(f.store.get_meta(b"raft/applied").unwrap().unwrap(), b"42");
}

#[test]
fn snapshots_round_trip_the_whole_state() {
    let src = Fixture::new();
    for i in 0..100 {
        src.put(&format!("k{i:03}"), &format!("v{i}"));
    }
    src.del("k050", "");
    src.compact(10).unwrap();
    let mut bytes = Vec::new();
    src.apply(WriteRequest::Put(put_req("last", "x"))).unwrap();
    let mut b = src.store.begin_apply().unwrap();
    b.put_meta(b"raft/applied", b"7");
    b.commit().unwrap();
    let (rows, meta) = src.store.write_snapshot(&mut bytes, &[b"raft/applied", b"absent"]).unwrap();
    assert_eq!(meta, vec![Some(b"7".to_vec()), None]);
    assert!(rows > 100);

    let dst = Fixture::new();
    dst.put("stale", "x");
    assert_eq!(dst.store.install_snapshot(&mut bytes.as_slice()).unwrap(), rows);
    assert!(dst.get("stale").is_none());
    assert_eq!(dst.store.revisions().unwrap(), src.store.revisions().unwrap());
    let all = |f: &Fixture, rev| {
        f.range(RangeRequest {
            key: "\0".into(),
            range_end: "\0".into(),
            revision: rev,
            ..Default::default()
        })
        .unwrap()
        .kvs
    };
    assert_eq!(all(&dst, 0), all(&src, 0));
    assert_eq!(all(&dst, 50), all(&src, 50));
    // A truncated snapshot is refused and changes nothing.
    let before = all(&dst, 0);
    assert!(dst.store.install_snapshot(&mut &bytes[..bytes.len() - 3]).is_err());
    assert_eq!(all(&dst, 0), before);
}

#[test]
fn backups_restore_what_they_hold_and_refuse_damage() {
    let src = Fixture::new();
    for i in 0..50 {
        src.put(&format!("k{i:02}"), &format!("v{i}"));
    }
    let mut b = src.store.begin_apply().unwrap();
    b.put_meta(b"raft/applied", b"7");
    b.commit().unwrap();
    let mut bytes = Vec::new();
    let (written, revision) = src.store.write_backup(&mut bytes).unwrap();
    assert_eq!(revision, src.store.revisions().unwrap().0);
    assert_eq!(written, bytes.len() as u64);
    assert_eq!(written % 512, 32, "etcdctl's shape: 512-byte multiple plus a SHA-256");

    // Restored without the replication rows, as `cairn snapshot restore` does.
    let dst = Fixture::new();
    dst.put("stale", "x");
    let keep = |fam: crate::Family, key: &[u8]| !(fam == crate::Family::Meta && key.starts_with(b"raft/"));
    dst.store.restore_backup(&mut std::io::Cursor::new(bytes.clone()), &keep).unwrap();
    assert!(dst.get("stale").is_none());
    assert_eq!(dst.get("k07").unwrap().value, b"v7");
    assert_eq!(dst.store.revisions().unwrap(), src.store.revisions().unwrap());
    assert_eq!(dst.store.get_meta(b"raft/applied").unwrap(), None);

    // One flipped byte anywhere, or a missing tail, is refused before anything changes.
    for damage in [10, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[damage] ^= 0x40;
        let err = dst.store.restore_backup(&mut std::io::Cursor::new(bad), &keep).unwrap_err();
        assert!(matches!(err, MvccError::Corrupt(_)), "byte {damage}: {err:?}");
    }
    let short = bytes[..bytes.len() - 100].to_vec();
    assert!(dst.store.restore_backup(&mut std::io::Cursor::new(short), &keep).is_err());
    assert!(dst.store.restore_backup(&mut std::io::Cursor::new(vec![1, 2, 3]), &keep).is_err());
    assert_eq!(dst.get("k07").unwrap().value, b"v7");
}

#[test]
fn a_txn_with_a_bad_range_writes_nothing() {
    let f = Fixture::new();
    f.put("a", "1"); // 2
    f.compact(2).unwrap();
    let bad_sort = RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key: "a".into(),
            sort_order: 9,
            ..Default::default()
        })),
    };
    let t = TxnRequest { compare: vec![], success: vec![op_put("x", "1"), bad_sort], failure: vec![] };
    assert_eq!(f.txn(t), Err(RequestError::InvalidSortOption.into()));
    assert!(f.get("x").is_none());
    // Revision 0 in a txn range means "current", even after a compaction.
    let t = TxnRequest { compare: vec![], success: vec![op_put("x", "1"), op_get("a")], failure: vec![] };
    assert!(f.txn(t).unwrap().succeeded);
    // Unknown compare enums behave as etcd's: unknown target compares equal, unknown result holds.
    let odd = Compare { key: "a".into(), target: 42, result: 0, target_union: None, range_end: vec![] };
    assert!(f.txn(TxnRequest { compare: vec![odd], success: vec![], failure: vec![] }).unwrap().succeeded);
}

#[test]
fn the_event_log_replays_every_revision_in_order() {
    use cairn_proto::mvccpb::event::EventType;
    let f = Fixture::new();
    f.put("a", "1"); // 2
    f.put("b", "1"); // 3
    f.put("a", "2"); // 4
    f.del("a", ""); // 5
    let t =
        TxnRequest { compare: vec![], success: vec![op_put("c", "1"), op_put("d", "1")], failure: vec![] };
    f.txn(t).unwrap(); // 6
    let evs = f.store.events(2, 6, 100, true).unwrap();
    type Summary = Vec<(i64, Vec<(i32, String, Option<String>)>)>;
    let summary: Summary = evs
        .iter()
        .map(|r| {
            let es = r
                .events
                .iter()
                .map(|e| {
                    let kv = e.kv.as_ref().unwrap();
                    (
                        e.r#type,
                        String::from_utf8(kv.key.clone()).unwrap(),
                        e.prev_kv.as_ref().map(|p| String::from_utf8(p.value.clone()).unwrap()),
                    )
                })
                .collect();
            (r.revision, es)
        })
        .collect();
    let put = EventType::Put as i32;
    let del = EventType::Delete as i32;
    assert_eq!(
        summary,
        vec![
            (2, vec![(put, "a".into(), None)]),
            (3, vec![(put, "b".into(), None)]),
            (4, vec![(put, "a".into(), Some("1".into()))]),
            (5, vec![(del, "a".into(), Some("2".into()))]),
            (6, vec![(put, "c".into(), None), (put, "d".into(), None)]),
        ]
    );
    assert_eq!(evs[2].events[0].kv.as_ref().unwrap().version, 2);
    assert_eq!(f.store.events(3, 6, 2, false).unwrap().len(), 2, "at most max_revisions");
    f.compact(4).unwrap();
    assert_eq!(f.store.events(3, 6, 10, false), Err(RequestError::Compacted.into()));
    assert_eq!(f.store.events(4, 6, 10, false).unwrap().len(), 3);
}

mod leases {
    use super::*;
    use cairn_proto::mvccpb::event::EventType;

    fn grant(f: &Fixture, id: i64, ttl: i64) -> Result<LeaseGrantResponse, MvccError> {
        match f.apply(WriteRequest::LeaseGrant(LeaseGrantRequest { ttl, id }))? {
            WriteResponse::LeaseGrant(r) => Ok(r),
            other => panic!("{other:?}"),
        }
    }

    fn revoke(f: &Fixture, id: i64) -> Result<LeaseRevokeResponse, MvccError> {
        match f.apply(WriteRequest::LeaseRevoke(LeaseRevokeRequest { id }))? {
            WriteResponse::LeaseRevoke(r) => Ok(r),
            other => panic!("{other:?}"),
        }
    }

    fn put_with_lease(f: &Fixture, k: &str, lease: i64) -> Result<WriteResponse, MvccError> {
        f.apply(WriteRequest::Put(PutRequest { lease, ..put_req(k, "v") }))
    }

    #[test]
    fn grant_is_stored_and_does_not_use_a_revision() {
        let f = Fixture::new();
        f.put("a", "1");
        let r = grant(&f, 7, 30).unwrap();
        assert_eq!((r.id, r.ttl, r.header.unwrap().revision), (7, 30, 2));
        assert_eq!(f.store.lease(7).unwrap(), Some(cairn_core::Lease { id: 7, ttl: 30 }));
        assert_eq!(grant(&f, 7, 30), Err(RequestError::LeaseExists.into()));
        assert_eq!(grant(&f, 0, 30), Err(RequestError::LeaseNotFound.into()));
        assert_eq!(grant(&f, 8, cairn_core::MAX_LEASE_TTL + 1), Err(RequestError::LeaseTtlTooLarge.into()));
        grant(&f, -3, 5).unwrap();
        let ids: Vec<i64> = f.store.leases().unwrap().iter().map(|l| l.id).collect();
        assert_eq!(ids, vec![-3, 7]);
        assert_eq!(f.store.revisions().unwrap().0, 2);
    }

    #[test]
    fn put_needs_an_existing_lease_also_inside_txns() {
        let f = Fixture::new();
        assert_eq!(put_with_lease(&f, "a", 5), Err(RequestError::LeaseNotFound.into()));
        let txn = TxnRequest {
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest { lease: 5, ..put_req("a", "v") })),
            }],
            ..Default::default()
        };
        assert_eq!(f.txn(txn), Err(RequestError::LeaseNotFound.into()));
        assert_eq!(f.store.revisions().unwrap().0, 1, "nothing was written");
        grant(&f, 5, 10).unwrap();
        put_with_lease(&f, "a", 5).unwrap();
        assert_eq!(f.get("a").unwrap().lease, 5);
    }

    #[test]
    fn revoke_deletes_attached_keys_in_one_revision() {
        let f = Fixture::new();
        grant(&f, 1, 10).unwrap();
        grant(&f, 2, 10).unwrap();
        put_with_lease(&f, "b", 1).unwrap();
        put_with_lease(&f, "a", 1).unwrap();
        put_with_lease(&f, "c", 2).unwrap();
        f.put("d", "plain");
        // Moving a key to another lease detaches it from the first; deleting detaches too.
        put_with_lease(&f, "x", 1).unwrap();
        put_with_lease(&f, "x", 2).unwrap();
        put_with_lease(&f, "y", 1).unwrap();
        f.del("y", "");
        // ignore_lease keeps the attachment.
        f.apply(WriteRequest::Put(PutRequest { ignore_lease: true, ..put_req("a", "v2") })).unwrap();
        assert_eq!(f.store.lease_keys(1).unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(f.store.lease_keys(2).unwrap(), vec![b"c".to_vec(), b"x".to_vec()]);

        let before = f.store.revisions().unwrap().0;
        let r = revoke(&f, 1).unwrap();
        assert_eq!(r.header.unwrap().revision, before + 1);
        assert!(f.get("a").is_none() && f.get("b").is_none());
        assert!(f.get("c").is_some() && f.get("d").is_some() && f.get("x").is_some());
        assert_eq!(f.store.lease(1).unwrap(), None);
        assert!(f.store.lease_keys(1).unwrap().is_empty());
        let evs = f.store.events(before + 1, before + 1, 10, true).unwrap();
        assert_eq!(evs.len(), 1);
        let kinds: Vec<(i32, Vec<u8>)> =
            evs[0].events.iter().map(|e| (e.r#type, e.kv.as_ref().unwrap().key.clone())).collect();
        let del = EventType::Delete as i32;
        assert_eq!(kinds, vec![(del, b"a".to_vec()), (del, b"b".to_vec())]);

        assert_eq!(revoke(&f, 1), Err(RequestError::LeaseNotFound.into()));
        // A lease without keys revokes without a new revision.
        grant(&f, 3, 10).unwrap();
        let now = f.store.revisions().unwrap().0;
        assert_eq!(revoke(&f, 3).unwrap().header.unwrap().revision, now);
        assert_eq!(f.store.revisions().unwrap().0, now);
    }

    #[test]
    fn leases_survive_a_snapshot() {
        let f = Fixture::new();
        grant(&f, 9, 60).unwrap();
        put_with_lease(&f, "k", 9).unwrap();
        let mut buf = Vec::new();
        f.store.write_snapshot(&mut buf, &[]).unwrap();
        let g = Fixture::new();
        g.store.install_snapshot(&mut buf.as_slice()).unwrap();
        assert_eq!(g.store.lease(9).unwrap(), Some(cairn_core::Lease { id: 9, ttl: 60 }));
        assert_eq!(g.store.lease_keys(9).unwrap(), vec![b"k".to_vec()]);
    }
}
