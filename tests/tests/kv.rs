//! KV semantics of the etcd v3 API, exercised through every node of a 3-node cluster.

mod common;

use anyhow::{ensure, Context, Result};
use cairn_tests::etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};
use cairn_tests::{Cluster, Code};
use common::*;

type KvFilter = Box<dyn Fn(&Kv) -> bool>;

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// put/get, prev_kv, create/mod revision and version, one header revision per write, delete counts;
/// writes go through each node in turn and the revision sequence is shared by all of them.
#[tokio::test(flavor = "multi_thread")]
async fn put_get_delete_and_revisions() {
    let cluster = start_nodes(3).await;
    put_get_delete_and_revisions_body(&cluster).await.unwrap();
}

async fn put_get_delete_and_revisions_body(cluster: &Cluster) -> Result<()> {
    let mut model = Model { rev: current_rev(&mut cluster.client(0).await?).await?, ..Default::default() };
    for i in 0..cluster.len() {
        let mut c = cluster.client(i).await?;
        let p = format!("kv/basic/n{i}/");
        let a = format!("{p}a");

        let r1 = put_model(&mut c, &mut model, &a, "1").await?;
        let r2 = put_model(&mut c, &mut model, &a, "2").await?;
        let resp = c.get(a.as_str(), None).await?;
        ensure!(header_rev(resp.header())? == r2, "get header revision");
        ensure!(resp.count() == 1 && !resp.more(), "count/more of a single get");
        let kv = &kvs(&resp)[0];
        ensure!(
            kv.value == b"2" && kv.create_revision == r1 && kv.mod_revision == r2 && kv.version == 2,
            "node {i}: after two puts got {kv:?}"
        );
        ensure!(kv.lease == 0, "no lease: {kv:?}");

        // Same value again still makes a new revision and version.
        let r3 = put_model(&mut c, &mut model, &a, "2").await?;
        let kv = &kvs(&c.get(a.as_str(), None).await?)[0];
        ensure!(kv.mod_revision == r3 && kv.version == 3, "idempotent put: {kv:?}");

        // prev_kv of a put on a fresh key: none (checked by put_model).
        put_model(&mut c, &mut model, format!("{p}b"), "x").await?;

        // Delete with prev_kv; deleting a missing key does not make a revision.
        delete_model(&mut c, &mut model, &a).await?;
        delete_model(&mut c, &mut model, format!("{p}missing")).await?;
        let resp = c.get(a.as_str(), None).await?;
        ensure!(resp.kvs().is_empty() && resp.count() == 0, "deleted key still there");

        // Re-created: version restarts at 1 with a new create revision.
        let r = put_model(&mut c, &mut model, &a, "3").await?;
        let kv = &kvs(&c.get(a.as_str(), None).await?)[0];
        ensure!(kv.create_revision == r && kv.mod_revision == r && kv.version == 1, "re-created key: {kv:?}");

        // Range delete counts and prev_kvs.
        for k in ["r/1", "r/2", "r/3", "r/4"] {
            put_model(&mut c, &mut model, format!("{p}{k}"), k).await?;
        }
        let start = format!("{p}r/2");
        let end = format!("{p}r/4");
        let expected = model.range(start.as_bytes(), end.as_bytes());
        let resp = c
            .delete(start.as_str(), Some(DeleteOptions::new().with_range(end.as_str()).with_prev_key()))
            .await?;
        ensure!(resp.deleted() == 2, "range delete deleted {}", resp.deleted());
        let prev: Vec<Kv> = resp.prev_kvs().iter().map(Kv::from).collect();
        ensure!(prev == expected, "range delete prev_kvs {prev:?} != {expected:?}");
        ensure!(header_rev(resp.header())? == model.rev + 1, "a range delete is one revision");
        model.rev += 1;
        for kv in &expected {
            model.delete(&kv.key);
        }
        let resp = c.delete(format!("{p}r/").as_str(), Some(DeleteOptions::new().with_prefix())).await?;
        ensure!(resp.deleted() == 2, "prefix delete deleted {}", resp.deleted());
        ensure!(resp.prev_kvs().is_empty(), "no prev_kvs unless asked");
        model.rev += 1;
        for k in ["r/1", "r/4"] {
            model.delete(format!("{p}{k}").as_bytes());
        }
    }
    // Every node sees the same, complete state.
    for i in 0..cluster.len() {
        let mut c = cluster.client(i).await?;
        let resp = c.get("kv/basic/", Some(GetOptions::new().with_prefix())).await?;
        ensure!(kvs(&resp) == model.prefix(b"kv/basic/"), "node {i} state differs from the model");
        ensure!(header_rev(resp.header())? == model.rev, "node {i} revision");
    }
    Ok(())
}

/// Ranges: range_end, prefix, "\0" range_end, limit/more/count, sorting, keys_only, count_only and
/// the min/max mod/create revision filters.
#[tokio::test(flavor = "multi_thread")]
async fn range_queries() {
    let cluster = start_nodes(3).await;
    range_queries_body(&cluster).await.unwrap();
}

async fn range_queries_body(cluster: &Cluster) -> Result<()> {
    let mut model = Model { rev: current_rev(&mut cluster.client(0).await?).await?, ..Default::default() };
    for i in 0..cluster.len() {
        let mut c = cluster.client(i).await?;
        let p = format!("kv/range/n{i}/");
        let k = |s: &str| format!("{p}{s}");

        // Every sort target must give a different order without ties (etcd's sort is not
        // stable): created in the order d, b, e, a, c; versions a=1 c=2 b=3 d=4 e=5; last
        // modified in the order a, c, b, d, e; values in reverse key order.
        for (key, value) in [
            ("d", "w"),
            ("b", "y"),
            ("e", "v"),
            ("a", "z"),
            ("c", "x"),
            ("b", "y"),
            ("c", "x"),
            ("b", "y"),
            ("d", "w"),
            ("d", "w"),
            ("d", "w"),
            ("e", "v"),
            ("e", "v"),
            ("e", "v"),
            ("e", "v"),
        ] {
            put_model(&mut c, &mut model, k(key), value).await?;
        }

        let all_p = model.prefix(p.as_bytes());
        ensure!(all_p.len() == 5, "model has 5 keys under {p}");

        // Single key, [start, end), prefix.
        let resp = c.get(k("b").as_str(), None).await?;
        ensure!(kvs(&resp) == model.range(k("b").as_bytes(), b""), "single get");
        let resp = c.get(k("b").as_str(), Some(GetOptions::new().with_range(k("d").as_str()))).await?;
        ensure!(keys(&resp) == [k("b"), k("c")], "range [b, d): {:?}", keys(&resp));
        ensure!(kvs(&resp) == model.range(k("b").as_bytes(), k("d").as_bytes()), "range kvs");
        ensure!(resp.count() == 2 && !resp.more(), "range count/more");
        let resp = c.get(p.as_str(), Some(GetOptions::new().with_prefix())).await?;
        ensure!(kvs(&resp) == all_p, "prefix");
        ensure!(resp.count() == 5, "prefix count");
        ensure!(header_rev(resp.header())? == model.rev, "range header revision");

        // range_end "\0": every key >= key (including other nodes' keys written earlier).
        let resp = c.get(k("c").as_str(), Some(GetOptions::new().with_from_key())).await?;
        let expected = model.range(k("c").as_bytes(), b"\0");
        ensure!(kvs(&resp) == expected, "from_key c: {:?}", keys(&resp));
        ensure!(resp.count() == expected.len() as i64, "from_key count");
        let resp = c.get("kv/range/", Some(GetOptions::new().with_range("\0"))).await?;
        ensure!(kvs(&resp) == model.range(b"kv/range/", b"\0"), "explicit \\0 range_end");
        // key "\0" + range_end "\0": all keys.
        let resp = c.get("", Some(GetOptions::new().with_all_keys())).await?;
        ensure!(kvs(&resp) == model.range(b"\0", b"\0"), "all keys");

        // A range that matches nothing.
        let resp = c.get(k("x").as_str(), Some(GetOptions::new().with_range(k("z").as_str()))).await?;
        ensure!(resp.kvs().is_empty() && resp.count() == 0 && !resp.more(), "empty range");

        // limit / more / count.
        let resp = c.get(p.as_str(), Some(GetOptions::new().with_prefix().with_limit(2))).await?;
        ensure!(kvs(&resp) == all_p[..2], "limit 2: {:?}", keys(&resp));
        ensure!(resp.more() && resp.count() == 5, "limit 2: more={} count={}", resp.more(), resp.count());
        let resp = c.get(p.as_str(), Some(GetOptions::new().with_prefix().with_limit(5))).await?;
        ensure!(kvs(&resp) == all_p && !resp.more() && resp.count() == 5, "limit 5 = all, more false");
        let resp = c.get(p.as_str(), Some(GetOptions::new().with_prefix().with_limit(6))).await?;
        ensure!(kvs(&resp) == all_p && !resp.more(), "limit 6");
        let resp = c.get(p.as_str(), Some(GetOptions::new().with_prefix().with_limit(0))).await?;
        ensure!(kvs(&resp) == all_p && !resp.more(), "limit 0 = no limit");

        // Sorting: every target, both orders (and with a limit: sort first, then truncate).
        let targets =
            [SortTarget::Key, SortTarget::Version, SortTarget::Create, SortTarget::Mod, SortTarget::Value];
        for target in targets {
            let key_of = |kv: &Kv| match target {
                SortTarget::Key => kv.key.clone(),
                SortTarget::Version => kv.version.to_be_bytes().to_vec(),
                SortTarget::Create => kv.create_revision.to_be_bytes().to_vec(),
                SortTarget::Mod => kv.mod_revision.to_be_bytes().to_vec(),
                SortTarget::Value => kv.value.clone(),
            };
            let mut expected = all_p.clone();
            expected.sort_by_key(key_of);
            ensure!(
                expected.windows(2).all(|w| key_of(&w[0]) != key_of(&w[1])),
                "test data has ties for {target:?}"
            );
            // Order NONE with a target other than KEY sorts ascending.
            let resp = c
                .get(p.as_str(), Some(GetOptions::new().with_prefix().with_sort(target, SortOrder::None)))
                .await?;
            ensure!(kvs(&resp) == expected, "sort {target:?} NONE: {:?}", keys(&resp));
            // ...but with a limit, etcd 3.4 only fetches everything first when the order is not
            // NONE: with NONE it takes limit+1 keys in key order, sorts those by the target, then
            // truncates to the limit.
            let resp = c
                .get(
                    p.as_str(),
                    Some(GetOptions::new().with_prefix().with_sort(target, SortOrder::None).with_limit(3)),
                )
                .await?;
            let mut exp = all_p[..4].to_vec();
            exp.sort_by_key(key_of);
            exp.truncate(3);
            ensure!(
                kvs(&resp) == exp && resp.more() && resp.count() == 5,
                "sort {target:?} NONE limit 3: {:?} more={} count={}",
                keys(&resp),
                resp.more(),
                resp.count()
            );
            for order in [SortOrder::Ascend, SortOrder::Descend] {
                let mut exp = expected.clone();
                if order == SortOrder::Descend {
                    exp.reverse();
                }
                let resp =
                    c.get(p.as_str(), Some(GetOptions::new().with_prefix().with_sort(target, order))).await?;
                ensure!(kvs(&resp) == exp, "sort {target:?} {order:?}: {:?}", keys(&resp));
                let resp = c
                    .get(
                        p.as_str(),
                        Some(GetOptions::new().with_prefix().with_sort(target, order).with_limit(3)),
                    )
                    .await?;
                ensure!(
                    kvs(&resp) == exp[..3] && resp.more() && resp.count() == 5,
                    "sort {target:?} {order:?} limit 3: {:?} more={} count={}",
                    keys(&resp),
                    resp.more(),
                    resp.count()
                );
            }
        }

        // keys_only / count_only.
        let resp = c.get(p.as_str(), Some(GetOptions::new().with_prefix().with_keys_only())).await?;
        let mut exp = all_p.clone();
        for kv in &mut exp {
            kv.value.clear();
        }
        ensure!(kvs(&resp) == exp, "keys_only keeps everything but the value");
        let resp = c.get(p.as_str(), Some(GetOptions::new().with_prefix().with_count_only())).await?;
        ensure!(resp.kvs().is_empty() && resp.count() == 5, "count_only");

        // Revision filters. Note: etcd filters after counting, so `count` is the number of keys
        // in the range before the filter (checked below), not the number returned.
        let mut by_mod = all_p.clone();
        by_mod.sort_by_key(|kv| kv.mod_revision);
        let mut by_create = all_p.clone();
        by_create.sort_by_key(|kv| kv.create_revision);
        let mid_mod = by_mod[2].mod_revision;
        let mid_create = by_create[2].create_revision;
        let filters: [(&str, GetOptions, KvFilter); 5] = [
            (
                "min_mod",
                GetOptions::new().with_prefix().with_min_mod_revision(mid_mod),
                Box::new(move |kv| kv.mod_revision >= mid_mod),
            ),
            (
                "max_mod",
                GetOptions::new().with_prefix().with_max_mod_revision(mid_mod),
                Box::new(move |kv| kv.mod_revision <= mid_mod),
            ),
            (
                "min_create",
                GetOptions::new().with_prefix().with_min_create_revision(mid_create),
                Box::new(move |kv| kv.create_revision >= mid_create),
            ),
            (
                "max_create",
                GetOptions::new().with_prefix().with_max_create_revision(mid_create),
                Box::new(move |kv| kv.create_revision <= mid_create),
            ),
            (
                "min_create+max_mod",
                GetOptions::new()
                    .with_prefix()
                    .with_min_create_revision(mid_create)
                    .with_max_mod_revision(mid_mod),
                Box::new(move |kv| kv.create_revision >= mid_create && kv.mod_revision <= mid_mod),
            ),
        ];
        // A limit with a filter applies after the filter; `more` says whether filtered keys were
        // cut off.
        let resp = c
            .get(
                p.as_str(),
                Some(GetOptions::new().with_prefix().with_min_mod_revision(mid_mod).with_limit(1)),
            )
            .await?;
        let exp: Vec<Kv> = all_p.iter().filter(|kv| kv.mod_revision >= mid_mod).take(1).cloned().collect();
        ensure!(
            kvs(&resp) == exp && resp.more() && resp.count() == 5,
            "min_mod + limit 1: {:?} more={} count={}",
            keys(&resp),
            resp.more(),
            resp.count()
        );
        for (name, opts, keep) in filters {
            let resp = c.get(p.as_str(), Some(opts)).await?;
            let exp: Vec<Kv> = all_p.iter().filter(|kv| keep(kv)).cloned().collect();
            ensure!(!exp.is_empty() && exp.len() < 5, "{name}: the filter must bite");
            ensure!(kvs(&resp) == exp, "{name}: {:?}", keys(&resp));
            ensure!(
                resp.count() == 5,
                "{name}: etcd counts before filtering: count {} (expected 5)",
                resp.count()
            );
        }
    }
    Ok(())
}

/// Reads at a past revision after overwrites and deletes.
#[tokio::test(flavor = "multi_thread")]
async fn historical_reads() {
    let cluster = start_nodes(3).await;
    historical_reads_body(&cluster).await.unwrap();
}

async fn historical_reads_body(cluster: &Cluster) -> Result<()> {
    let mut model = Model { rev: current_rev(&mut cluster.client(0).await?).await?, ..Default::default() };
    for i in 0..cluster.len() {
        let mut c = cluster.client(i).await?;
        let p = format!("kv/hist/n{i}/");
        let k = format!("{p}k");
        let before = model.rev;
        let r1 = put_model(&mut c, &mut model, &k, "v1").await?;
        let snap1 = model.clone();
        let r2 = put_model(&mut c, &mut model, &k, "v2").await?;
        let r_other = put_model(&mut c, &mut model, format!("{p}other"), "o").await?;
        let snap2 = model.clone();
        let r3 = delete_model(&mut c, &mut model, &k).await?;
        let snap3 = model.clone();
        let r4 = put_model(&mut c, &mut model, &k, "v3").await?;
        ensure!(r2 == r1 + 1 && r_other == r2 + 1 && r3 == r_other + 1 && r4 == r3 + 1, "revisions");

        // Read the history through every node.
        for j in 0..cluster.len() {
            let mut cj = cluster.client(j).await?;
            let at = |rev: i64| GetOptions::new().with_prefix().with_revision(rev);
            for (rev, snap) in [(r1, &snap1), (r2, &snap1), (r_other, &snap2), (r3, &snap3)] {
                let resp = cj.get(p.as_str(), Some(at(rev))).await?;
                let mut exp = snap.prefix(p.as_bytes());
                if rev == r2 {
                    // snap1 + the second put
                    exp[0].value = b"v2".to_vec();
                    exp[0].mod_revision = r2;
                    exp[0].version = 2;
                }
                ensure!(kvs(&resp) == exp, "node {j} at rev {rev}: {:?}", kvs(&resp));
                ensure!(
                    header_rev(resp.header())? == model.rev,
                    "header revision of a historical read is the current revision"
                );
            }
            let resp = cj.get(k.as_str(), Some(GetOptions::new().with_revision(before))).await?;
            ensure!(resp.kvs().is_empty(), "before creation nothing is there");
            let resp = cj.get(k.as_str(), Some(GetOptions::new().with_revision(r4))).await?;
            let kv = &kvs(&resp)[0];
            ensure!(
                kv.value == b"v3" && kv.version == 1 && kv.create_revision == r4,
                "after re-creation: {kv:?}"
            );
            // revision <= 0 means the latest.
            let resp = cj.get(k.as_str(), Some(GetOptions::new().with_revision(0))).await?;
            ensure!(kvs(&resp)[0].value == b"v3", "revision 0 = latest");
        }
    }
    Ok(())
}

/// Txn compares (VERSION/CREATE/MOD/VALUE/LEASE x EQUAL/GREATER/LESS/NOT_EQUAL), branches, nested
/// txn, and one revision per txn.
#[tokio::test(flavor = "multi_thread")]
async fn txn() {
    let cluster = start_nodes(3).await;
    txn_body(&cluster).await.unwrap();
}

async fn txn_body(cluster: &Cluster) -> Result<()> {
    use CompareOp::{Equal, Greater, Less, NotEqual};
    let mut model = Model { rev: current_rev(&mut cluster.client(0).await?).await?, ..Default::default() };
    for i in 0..cluster.len() {
        let mut c = cluster.client(i).await?;
        let p = format!("kv/txn/n{i}/");
        let k = format!("{p}k");
        let missing = format!("{p}missing");
        let rk = put_model(&mut c, &mut model, &k, "b").await?;
        put_model(&mut c, &mut model, &k, "c").await?; // version 2, create rk, mod rk+1, value "c"
        let k = k.as_str();
        let m = missing.as_str();

        let cases: Vec<(&str, Compare, bool)> = vec![
            ("version = 2", Compare::version(k, Equal, 2), true),
            ("version = 1", Compare::version(k, Equal, 1), false),
            ("version > 1", Compare::version(k, Greater, 1), true),
            ("version > 2", Compare::version(k, Greater, 2), false),
            ("version < 3", Compare::version(k, Less, 3), true),
            ("version < 2", Compare::version(k, Less, 2), false),
            ("version != 2", Compare::version(k, NotEqual, 2), false),
            ("version != 5", Compare::version(k, NotEqual, 5), true),
            ("create = rk", Compare::create_revision(k, Equal, rk), true),
            ("create > rk-1", Compare::create_revision(k, Greater, rk - 1), true),
            ("create > rk", Compare::create_revision(k, Greater, rk), false),
            ("create < rk+1", Compare::create_revision(k, Less, rk + 1), true),
            ("create < rk", Compare::create_revision(k, Less, rk), false),
            ("create != rk", Compare::create_revision(k, NotEqual, rk), false),
            ("mod = rk+1", Compare::mod_revision(k, Equal, rk + 1), true),
            ("mod = rk", Compare::mod_revision(k, Equal, rk), false),
            ("mod > rk", Compare::mod_revision(k, Greater, rk), true),
            ("mod < rk+1", Compare::mod_revision(k, Less, rk + 1), false),
            ("mod != rk", Compare::mod_revision(k, NotEqual, rk), true),
            ("value = c", Compare::value(k, Equal, "c"), true),
            ("value = b", Compare::value(k, Equal, "b"), false),
            ("value > b", Compare::value(k, Greater, "b"), true),
            ("value > c", Compare::value(k, Greater, "c"), false),
            ("value < d", Compare::value(k, Less, "d"), true),
            ("value < c", Compare::value(k, Less, "c"), false),
            ("value != c", Compare::value(k, NotEqual, "c"), false),
            ("value != x", Compare::value(k, NotEqual, "x"), true),
            ("lease = 0", Compare::lease(k, Equal, 0), true),
            ("lease != 0", Compare::lease(k, NotEqual, 0), false),
            ("lease > 0", Compare::lease(k, Greater, 0), false),
            // A missing key compares as version/create/mod/lease 0...
            ("missing version = 0", Compare::version(m, Equal, 0), true),
            ("missing create = 0", Compare::create_revision(m, Equal, 0), true),
            ("missing mod = 0", Compare::mod_revision(m, Equal, 0), true),
            ("missing mod > 0", Compare::mod_revision(m, Greater, 0), false),
            ("missing lease = 0", Compare::lease(m, Equal, 0), true),
            // ...but any VALUE compare on a missing key is false, even NOT_EQUAL.
            ("missing value = ''", Compare::value(m, Equal, ""), false),
            ("missing value != x", Compare::value(m, NotEqual, "x"), false),
            // A compare over a range holds only if it holds for every key in it.
            ("prefix version > 0", Compare::version(p.as_str(), Greater, 0).with_prefix(), true),
            ("prefix version > 1", Compare::version(p.as_str(), Greater, 1).with_prefix(), true),
            ("prefix version > 2", Compare::version(p.as_str(), Greater, 2).with_prefix(), false),
        ];
        for (name, cmp, expected) in cases {
            let resp = c
                .txn(
                    Txn::new()
                        .when([cmp])
                        .and_then([TxnOp::get(k, None)])
                        .or_else([TxnOp::get(m, None), TxnOp::get(k, None)]),
                )
                .await
                .with_context(|| format!("txn {name}"))?;
            ensure!(resp.succeeded() == expected, "node {i}: compare {name}: succeeded={}", resp.succeeded());
            ensure!(header_rev(resp.header())? == model.rev, "{name}: read-only txn made a revision");
            let ops = resp.op_responses();
            ensure!(ops.len() == if expected { 1 } else { 2 }, "{name}: branch op count");
            let TxnOpResponse::Get(last) = ops.last().unwrap() else {
                anyhow::bail!("{name}: expected a range response");
            };
            ensure!(kvs(last) == model.range(k.as_bytes(), b""), "{name}: get in txn");
        }
        // Compares are ANDed.
        let resp =
            c.txn(Txn::new().when([Compare::version(k, Equal, 2), Compare::value(k, Equal, "b")])).await?;
        ensure!(!resp.succeeded(), "AND of true and false");
        let resp =
            c.txn(Txn::new().when([Compare::version(k, Equal, 2), Compare::value(k, Equal, "c")])).await?;
        ensure!(resp.succeeded(), "AND of true and true");
        // An empty txn succeeds.
        ensure!(c.txn(Txn::new()).await?.succeeded(), "empty txn succeeds");

        // Writes in a branch: one revision for the whole txn, every key gets that mod revision,
        // reads in the txn see the txn's earlier writes.
        let (t1, t2) = (format!("{p}t1"), format!("{p}t2"));
        let resp = c
            .txn(
                Txn::new()
                    .when([Compare::value(k, Equal, "c")])
                    .and_then([
                        TxnOp::put(t1.as_str(), "1", Some(PutOptions::new().with_prev_key())),
                        TxnOp::put(t2.as_str(), "2", None),
                        TxnOp::put(t1.as_str(), "1b", Some(PutOptions::new().with_prev_key())),
                        TxnOp::get(p.as_str(), Some(GetOptions::new().with_prefix())),
                        TxnOp::delete(k, Some(DeleteOptions::new().with_prev_key())),
                    ])
                    .or_else([TxnOp::put(format!("{p}never").as_str(), "x", None)]),
            )
            .await;
        // etcd 3.4 rejects two puts of the same key in one branch (see errors.rs), so t1 twice
        // must fail; do the valid version instead.
        expect_grpc_err(
            resp,
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
            "two puts of one key in a branch",
        )?;
        let resp = c
            .txn(
                Txn::new()
                    .when([Compare::value(k, Equal, "c")])
                    .and_then([
                        TxnOp::put(t1.as_str(), "1", Some(PutOptions::new().with_prev_key())),
                        TxnOp::put(t2.as_str(), "2", None),
                        TxnOp::get(p.as_str(), Some(GetOptions::new().with_prefix())),
                        TxnOp::delete(k, Some(DeleteOptions::new().with_prev_key())),
                    ])
                    .or_else([TxnOp::put(format!("{p}never").as_str(), "x", None)]),
            )
            .await?;
        ensure!(resp.succeeded(), "txn with writes took the success branch");
        let rev = header_rev(resp.header())?;
        ensure!(rev == model.rev + 1, "one revision per txn: {rev} vs {}", model.rev + 1);
        let old_k = model.kvs.get(k.as_bytes()).cloned();
        model.put(t1.as_bytes(), b"1", rev);
        model.put(t2.as_bytes(), b"2", rev);
        let ops = resp.op_responses();
        ensure!(ops.len() == 4, "4 op responses");
        match &ops[0] {
            TxnOpResponse::Put(r) => ensure!(r.prev_key().is_none(), "fresh key: no prev_kv"),
            other => anyhow::bail!("op 0: {other:?}"),
        }
        match &ops[2] {
            TxnOpResponse::Get(r) => {
                ensure!(
                    kvs(r) == model.prefix(p.as_bytes()),
                    "a get in a txn sees the txn's own earlier puts: {:?}",
                    kvs(r)
                );
            }
            other => anyhow::bail!("op 2: {other:?}"),
        }
        match &ops[3] {
            TxnOpResponse::Delete(r) => {
                ensure!(r.deleted() == 1, "deleted in txn");
                ensure!(
                    r.prev_kvs().iter().map(Kv::from).collect::<Vec<_>>()
                        == old_k.clone().into_iter().collect::<Vec<_>>(),
                    "delete prev_kvs in txn"
                );
            }
            other => anyhow::bail!("op 3: {other:?}"),
        }
        model.delete(k.as_bytes());
        let resp = c.get(p.as_str(), Some(GetOptions::new().with_prefix())).await?;
        ensure!(kvs(&resp) == model.prefix(p.as_bytes()), "state after the txn");
        ensure!(
            kvs(&resp).iter().all(|kv| kv.key.ends_with(b"missing") || kv.mod_revision == rev),
            "every key written by the txn has its revision"
        );

        // Failure branch with writes.
        let resp = c
            .txn(
                Txn::new()
                    .when([Compare::version(k, Greater, 0)])
                    .and_then([TxnOp::put(format!("{p}never").as_str(), "x", None)])
                    .or_else([TxnOp::put(k, "again", Some(PutOptions::new().with_prev_key()))]),
            )
            .await?;
        ensure!(!resp.succeeded(), "k was deleted, so version > 0 fails");
        let rev = header_rev(resp.header())?;
        ensure!(rev == model.rev + 1, "failure branch with a write: one revision");
        model.put(k.as_bytes(), b"again", rev);
        // The same key put in both branches is fine (only one branch runs).
        let resp = c
            .txn(
                Txn::new()
                    .when([Compare::value(k, Equal, "again")])
                    .and_then([TxnOp::put(k, "then", None)])
                    .or_else([TxnOp::put(k, "else", None)]),
            )
            .await?;
        ensure!(resp.succeeded(), "same key in both branches");
        model.put(k.as_bytes(), b"then", header_rev(resp.header())?);

        // Nested txn (etcd >= 3.3): the inner txn's compares see the state at its point in the
        // outer txn; still one revision for everything.
        let n = format!("{p}nested");
        let resp = c
            .txn(
                Txn::new().when([Compare::value(k, Equal, "then")]).and_then([
                    TxnOp::put(format!("{p}outer").as_str(), "o", None),
                    TxnOp::txn(
                        Txn::new()
                            .when([Compare::version(n.as_str(), Equal, 0)])
                            .and_then([
                                TxnOp::put(n.as_str(), "inner-then", None),
                                TxnOp::get(format!("{p}outer").as_str(), None),
                            ])
                            .or_else([TxnOp::put(n.as_str(), "inner-else", None)]),
                    ),
                    TxnOp::txn(
                        Txn::new()
                            .when([Compare::value(k, Equal, "nope")])
                            .and_then([TxnOp::put(format!("{p}never").as_str(), "x", None)])
                            .or_else([TxnOp::get(k, None)]),
                    ),
                ]),
            )
            .await?;
        ensure!(resp.succeeded(), "outer txn succeeded");
        let rev = header_rev(resp.header())?;
        ensure!(rev == model.rev + 1, "nested txn: still one revision");
        model.put(format!("{p}outer").as_bytes(), b"o", rev);
        model.put(n.as_bytes(), b"inner-then", rev);
        let ops = resp.op_responses();
        ensure!(ops.len() == 3, "outer ops");
        match &ops[1] {
            TxnOpResponse::Txn(inner) => {
                ensure!(inner.succeeded(), "inner txn 1 took its success branch");
                let inner_ops = inner.op_responses();
                ensure!(inner_ops.len() == 2, "inner ops");
                match &inner_ops[1] {
                    TxnOpResponse::Get(g) => ensure!(
                        kvs(g) == model.range(format!("{p}outer").as_bytes(), b""),
                        "inner get sees the outer put"
                    ),
                    other => anyhow::bail!("inner op 1: {other:?}"),
                }
            }
            other => anyhow::bail!("op 1: {other:?}"),
        }
        match &ops[2] {
            TxnOpResponse::Txn(inner) => ensure!(!inner.succeeded(), "inner txn 2 failed"),
            other => anyhow::bail!("op 2: {other:?}"),
        }
        let resp = c.get(p.as_str(), Some(GetOptions::new().with_prefix())).await?;
        ensure!(kvs(&resp) == model.prefix(p.as_bytes()), "state after the nested txn");
    }
    Ok(())
}

/// Compaction: reads below the compacted revision fail with OutOfRange, at and above it work.
#[tokio::test(flavor = "multi_thread")]
async fn compaction() {
    let cluster = start_nodes(3).await;
    compaction_body(&cluster).await.unwrap();
}

async fn compaction_body(cluster: &Cluster) -> Result<()> {
    let mut model = Model { rev: current_rev(&mut cluster.client(0).await?).await?, ..Default::default() };
    for i in 0..cluster.len() {
        let mut c = cluster.client(i).await?;
        let k = format!("kv/compact/n{i}");
        let r1 = put_model(&mut c, &mut model, &k, "v1").await?;
        let r2 = put_model(&mut c, &mut model, &k, "v2").await?;
        let r3 = put_model(&mut c, &mut model, &k, "v3").await?;
        let resp = c.compact(r2, None).await?;
        ensure!(header_rev(resp.header())? == model.rev, "compaction does not make a revision");
        for j in 0..cluster.len() {
            let mut cj = cluster.client(j).await?;
            let res = cj.get(k.as_str(), Some(GetOptions::new().with_revision(r1))).await;
            expect_grpc_err(res, Code::OutOfRange, COMPACTED, &format!("node {j}: read at r1 < compacted"))?;
            let resp = cj.get(k.as_str(), Some(GetOptions::new().with_revision(r2))).await?;
            ensure!(kvs(&resp)[0].value == b"v2", "node {j}: read at the compacted revision works");
            let resp = cj.get(k.as_str(), Some(GetOptions::new().with_revision(r3))).await?;
            ensure!(kvs(&resp)[0].value == b"v3", "node {j}: read above it works");
            let resp = cj.get(k.as_str(), None).await?;
            ensure!(
                kvs(&resp) == model.range(k.as_bytes(), b""),
                "node {j}: compaction keeps the latest version"
            );
        }
        // Compacting below the last compaction is a compacted error too.
        let res = c.compact(r1, None).await;
        expect_grpc_err(res, Code::OutOfRange, COMPACTED, "compacting below the compacted revision")?;
    }
    Ok(())
}

/// Binary keys and values survive the round trip, and a value near 1 MiB is accepted.
#[tokio::test(flavor = "multi_thread")]
async fn binary_and_large_values() {
    let cluster = start_nodes(3).await;
    binary_and_large_values_body(&cluster).await.unwrap();
}

async fn binary_and_large_values_body(cluster: &Cluster) -> Result<()> {
    let mut model = Model { rev: current_rev(&mut cluster.client(0).await?).await?, ..Default::default() };
    for i in 0..cluster.len() {
        let mut c = cluster.client(i).await?;
        let key = [b"kv/bin/".as_slice(), &[i as u8, 0, 0xff, b'\n', 0x80]].concat();
        let value: Vec<u8> = (0..=255u8).chain([0u8, 0, 0]).collect();
        put_model(&mut c, &mut model, &key, &value).await?;
        let big: Vec<u8> = (0..1_000_000u32).map(|x| (x % 251) as u8).collect();
        let big_key = format!("kv/big/n{i}");
        put_model(&mut c, &mut model, &big_key, &big).await?;
        for j in 0..cluster.len() {
            let mut cj = cluster.client(j).await?;
            let resp = cj.get(key.clone(), None).await?;
            ensure!(kvs(&resp) == model.range(&key, b""), "node {j}: binary key/value");
            let resp = cj.get(big_key.as_str(), None).await?;
            ensure!(kvs(&resp) == model.range(big_key.as_bytes(), b""), "node {j}: 1 MB value");
        }
    }
    Ok(())
}
