//! Range and its options: spans, limit, sorting, keys/count only, revision filters,
//! historical and serializable reads.

use cairn_core::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_core::proto::etcdserverpb::RangeRequest;
use cairn_core::{Backend, RequestError};

use crate::check::*;

/// Single keys, `[key, end)` spans, prefixes and from-key (`range_end = "\0"`) ranges.
pub(crate) async fn single_key_and_spans<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    for k in ["a", "b", "b/1", "b/2", "c"] {
        put_value(b, &sp.key(k), k).await?;
    }
    let rev = current(b).await?;
    let k = |name: &str| sp.key(name);
    let cases: Vec<(&str, RangeRequest, Vec<&str>)> = vec![
        ("single key b", range_req(&k("b"), b""), vec!["b"]),
        ("missing key bb", range_req(&k("bb"), b""), vec![]),
        ("span [b, c)", range_req(&k("b"), &k("c")), vec!["b", "b/1", "b/2"]),
        ("span [a, b/2) excludes its end", range_req(&k("a"), &k("b/2")), vec!["a", "b", "b/1"]),
        ("prefix b/", range_req(&k("b/"), &prefix_end(&k("b/"))), vec!["b/1", "b/2"]),
        ("span whose end is before its key", range_req(&k("c"), &k("a")), vec![]),
        ("the whole test space", range_req(&sp.start(), &sp.end()), vec!["a", "b", "b/1", "b/2", "c"]),
    ];
    for (what, req, want) in cases {
        let r = range(b, req, what).await?;
        ensure_eq!(sp.names(&r.kvs), want, "{what}: keys");
        ensure_eq!((r.count, r.more), (want.len() as i64, false), "{what}: (count, more)");
        ensure_eq!(hrev(&r.header), rev, "{what}: header revision");
        for kv in &r.kvs {
            ensure_eq!(text(&kv.value), sp.name(&kv.key), "{what}: value of {}", sp.name(&kv.key));
        }
    }

    // From-key reads every key >= b, other data's too; but the first four keys >= b are
    // b, b/1, b/2 and c, since every key between two keys of the space is in the space.
    let req = RangeRequest { limit: 4, ..range_req(&k("b"), b"\0") };
    let r = range(b, req, "from-key range from b (range_end \\0), limit 4").await?;
    ensure_eq!(sp.names(&r.kvs), vec!["b", "b/1", "b/2", "c"], "from-key range from b, limit 4: keys");
    ensure!(r.count >= 4, "from-key range from b: count {} < the 4 keys of the test at or after b", r.count);
    ensure_eq!(r.more, r.count > 4, "from-key range from b, limit 4, count {}: more", r.count);
    let req = RangeRequest { count_only: true, ..range_req(&k("b"), b"\0") };
    let counted = range(b, req, "from-key range from b, count_only").await?;
    ensure_eq!(
        counted.count,
        r.count,
        "from-key range from b: count_only count vs the limited range's count"
    );
    Ok(())
}

/// `limit` returns the first keys; `more` says whether some were left out; `count` is the
/// number of keys in the range.
pub(crate) async fn limit_more_and_count<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let names = ["k1", "k2", "k3", "k4", "k5"];
    for k in names {
        put_value(b, &sp.key(k), k).await?;
    }
    for (limit, more) in [(0, false), (1, true), (2, true), (4, true), (5, false), (6, false), (100, false)] {
        let req = RangeRequest { limit, ..range_req(&sp.start(), &sp.end()) };
        let r = range(b, req, &format!("range with limit {limit}")).await?;
        let n = if limit == 0 { names.len() } else { names.len().min(limit as usize) };
        ensure_eq!(sp.names(&r.kvs), names[..n].to_vec(), "limit {limit}: keys");
        ensure_eq!((r.count, r.more), (5, more), "limit {limit}: (count, more)");
    }
    Ok(())
}

/// `sort_order` × `sort_target`, with and without a limit.
pub(crate) async fn sort_orders_and_targets<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    // Chosen so that every target orders the keys differently:
    //   key     a b c d
    //   create  c a d b   (created in that order)
    //   mod     b a d c   (last written in that order)
    //   version b c a d   (1, 2, 3 and 4 puts)
    //   value   d b a c   ("v1".."v4")
    for (k, v) in [
        ("c", "x"),
        ("a", "x"),
        ("d", "x"),
        ("b", "v2"),
        ("a", "x"),
        ("a", "v3"),
        ("d", "x"),
        ("d", "x"),
        ("d", "v1"),
        ("c", "v4"),
    ] {
        put_value(b, &sp.key(k), v).await?;
    }
    use SortOrder::{Ascend, Descend, None as Unsorted};
    use SortTarget::{Create, Key, Mod, Value, Version};
    let cases: Vec<(SortOrder, SortTarget, i64, Vec<&str>, bool)> = vec![
        (Unsorted, Key, 0, vec!["a", "b", "c", "d"], false),
        (Ascend, Key, 0, vec!["a", "b", "c", "d"], false),
        (Descend, Key, 0, vec!["d", "c", "b", "a"], false),
        (Ascend, Create, 0, vec!["c", "a", "d", "b"], false),
        (Descend, Create, 0, vec!["b", "d", "a", "c"], false),
        (Ascend, Mod, 0, vec!["b", "a", "d", "c"], false),
        (Descend, Mod, 0, vec!["c", "d", "a", "b"], false),
        (Ascend, Version, 0, vec!["b", "c", "a", "d"], false),
        (Descend, Version, 0, vec!["d", "a", "c", "b"], false),
        (Ascend, Value, 0, vec!["d", "b", "a", "c"], false),
        (Descend, Value, 0, vec!["c", "a", "b", "d"], false),
        // A target other than KEY without an order sorts ascending (etcd).
        (Unsorted, Mod, 0, vec!["b", "a", "d", "c"], false),
        (Unsorted, Version, 0, vec!["b", "c", "a", "d"], false),
        // The limit applies after sorting the whole range.
        (Descend, Key, 2, vec!["d", "c"], true),
        (Descend, Value, 2, vec!["c", "a"], true),
        (Ascend, Mod, 1, vec!["b"], true),
        (Descend, Create, 3, vec!["b", "d", "a"], true),
        (Descend, Version, 4, vec!["d", "a", "c", "b"], false),
    ];
    for (order, target, limit, want, more) in cases {
        let what = format!("sort {} by {}, limit {limit}", order.as_str_name(), target.as_str_name());
        let req = RangeRequest {
            sort_order: order as i32,
            sort_target: target as i32,
            limit,
            ..range_req(&sp.start(), &sp.end())
        };
        let r = range(b, req, &what).await?;
        ensure_eq!(sp.names(&r.kvs), want, "{what}: keys");
        ensure_eq!((r.count, r.more), (4, more), "{what}: (count, more)");
    }
    Ok(())
}

/// `keys_only` clears values but keeps the rest; `count_only` returns the count alone.
pub(crate) async fn keys_only_and_count_only<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let mut revs = Vec::new();
    for k in ["a", "b", "c"] {
        revs.push(put_value(b, &sp.key(k), "value").await?);
    }
    let req = RangeRequest { keys_only: true, ..range_req(&sp.start(), &sp.end()) };
    let r = range(b, req, "keys_only range").await?;
    ensure_eq!(sp.names(&r.kvs), vec!["a", "b", "c"], "keys_only: keys");
    ensure_eq!(r.count, 3, "keys_only: count");
    for (kv, rev) in r.kvs.iter().zip(&revs) {
        let name = sp.name(&kv.key);
        ensure_eq!(fields(kv), (*rev, *rev, 1, String::new(), 0), "keys_only: {name} {FIELDS}");
    }

    let req = RangeRequest { count_only: true, ..range_req(&sp.start(), &sp.end()) };
    let r = range(b, req, "count_only range").await?;
    ensure!(r.kvs.is_empty(), "count_only returned key-values: {:?}", sp.names(&r.kvs));
    ensure_eq!(r.count, 3, "count_only: count");
    let req = RangeRequest { count_only: true, ..range_req(&sp.key("b"), b"") };
    ensure_eq!(range(b, req, "count_only of one key").await?.count, 1, "count_only of one key: count");
    let req = RangeRequest { count_only: true, ..range_req(&sp.key("zz"), b"") };
    ensure_eq!(
        range(b, req, "count_only of a missing key").await?.count,
        0,
        "count_only of a missing key: count"
    );
    Ok(())
}

/// `min/max_mod_revision` and `min/max_create_revision` filter the key-values (`count`
/// stays the number of keys in the range, as in etcd).
pub(crate) async fn revision_filters<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let r1 = put_value(b, &sp.key("a"), "1").await?; // a: create r1
    let r2 = put_value(b, &sp.key("b"), "1").await?; // b: create = mod = r2
    let r3 = put_value(b, &sp.key("c"), "1").await?; // c: create = mod = r3
    let r4 = put_value(b, &sp.key("a"), "2").await?; // a: mod r4
    ensure_eq!((r2, r3, r4), (r1 + 1, r1 + 2, r1 + 3), "revisions of the setup puts");
    let all = || range_req(&sp.start(), &sp.end());
    let cases: Vec<(String, RangeRequest, Vec<&str>)> = vec![
        (format!("min_mod_revision {r3}"), RangeRequest { min_mod_revision: r3, ..all() }, vec!["a", "c"]),
        (format!("max_mod_revision {r2}"), RangeRequest { max_mod_revision: r2, ..all() }, vec!["b"]),
        (
            format!("max_mod_revision {r4}"),
            RangeRequest { max_mod_revision: r4, ..all() },
            vec!["a", "b", "c"],
        ),
        (
            format!("min_create_revision {r2}"),
            RangeRequest { min_create_revision: r2, ..all() },
            vec!["b", "c"],
        ),
        (
            format!("max_create_revision {r2}"),
            RangeRequest { max_create_revision: r2, ..all() },
            vec!["a", "b"],
        ),
        (
            format!("min_mod_revision {r2} and max_mod_revision {r3}"),
            RangeRequest { min_mod_revision: r2, max_mod_revision: r3, ..all() },
            vec!["b", "c"],
        ),
        (
            format!("min_create_revision {r3} and max_mod_revision {r3}"),
            RangeRequest { min_create_revision: r3, max_mod_revision: r3, ..all() },
            vec!["c"],
        ),
        (format!("min_mod_revision {}", r4 + 1), RangeRequest { min_mod_revision: r4 + 1, ..all() }, vec![]),
    ];
    for (what, req, want) in cases {
        let r = range(b, req, &what).await?;
        ensure_eq!(sp.names(&r.kvs), want, "{what}: keys");
        ensure_eq!(r.count, 3, "{what}: count (the keys in the range, before filtering)");
    }
    Ok(())
}

/// A range at an older `revision` sees the values of then, keys deleted since, and not
/// keys created since; a future revision is refused.
pub(crate) async fn historical_reads<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let (k, other) = (sp.key("k"), sp.key("other"));
    let r1 = put_value(b, &k, "v1").await?;
    let r2 = put_value(b, &k, "v2").await?;
    let r3 = put_value(b, &other, "o").await?;
    let d = delete(b, delete_req(&k, b"", false), "delete k").await?;
    let r4 = hrev(&d.header);
    let r5 = put_value(b, &k, "v3").await?;
    ensure_eq!(vec![r2, r3, r4, r5], vec![r1 + 1, r1 + 2, r1 + 3, r1 + 4], "revisions of the setup writes");

    let want: Vec<(i64, Option<Fields>)> = vec![
        (r1 - 1, None),
        (r1, Some((r1, r1, 1, "v1".into(), 0))),
        (r2, Some((r1, r2, 2, "v2".into(), 0))),
        (r3, Some((r1, r2, 2, "v2".into(), 0))),
        (r4, None),
        (r5, Some((r5, r5, 1, "v3".into(), 0))),
    ];
    for (rev, kv) in want {
        let got = get_at(b, &k, rev).await?;
        ensure_eq!(
            got.as_ref().map(fields),
            kv,
            "k at revision {rev} {FIELDS} (k: put {r1}, {r2}, deleted {r4}, put {r5})"
        );
    }
    for (rev, want) in
        [(r2, vec!["k"]), (r3, vec!["k", "other"]), (r4, vec!["other"]), (r5, vec!["k", "other"])]
    {
        let req = RangeRequest { revision: rev, ..range_req(&sp.start(), &sp.end()) };
        let r = range(b, req, &format!("range over the test's keys at revision {rev}")).await?;
        ensure_eq!(sp.names(&r.kvs), want, "keys at revision {rev}");
        ensure_eq!(r.count, want.len() as i64, "count at revision {rev}");
        ensure_eq!(hrev(&r.header), r5, "header revision of a read at revision {rev} (the current revision)");
    }
    let req = RangeRequest { revision: r3, limit: 1, ..range_req(&sp.start(), &sp.end()) };
    let r = range(b, req, &format!("range at revision {r3}, limit 1")).await?;
    ensure_eq!(
        (sp.names(&r.kvs), r.count, r.more),
        (vec!["k".to_string()], 2, true),
        "at revision {r3}, limit 1: (keys, count, more)"
    );

    let now = current(b).await?;
    ensure!(get_at(b, &k, now).await?.is_some(), "a read at the current revision {now} does not see k");
    let req = RangeRequest { revision: now + 1, ..range_req(&k, b"") };
    refused(
        b.range(req).await,
        RequestError::FutureRevision,
        &format!("range at revision {} (current + 1)", now + 1),
    )?;
    let req = RangeRequest { revision: now + 1000, serializable: true, ..range_req(&sp.start(), &sp.end()) };
    refused(b.range(req).await, RequestError::FutureRevision, "serializable span range at current + 1000")?;
    Ok(())
}

/// `serializable: true` reads see this member's acknowledged writes, at any revision.
pub(crate) async fn serializable_reads<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let k = sp.key("k");
    let r1 = put_value(b, &k, "v1").await?;
    let r2 = put_value(b, &k, "v2").await?;
    let req = RangeRequest { serializable: true, ..range_req(&k, b"") };
    let r = range(b, req, "serializable get k").await?;
    let got: Vec<_> = r.kvs.iter().map(fields).collect();
    ensure_eq!(got, vec![(r1, r2, 2, "v2".to_string(), 0)], "serializable get k {FIELDS}");
    ensure!(
        hrev(&r.header) >= r2,
        "serializable read: header revision {} below the write's {r2}",
        hrev(&r.header)
    );
    let req = RangeRequest { serializable: true, revision: r1, ..range_req(&k, b"") };
    let r = range(b, req, "serializable get k at its first revision").await?;
    let got: Vec<_> = r.kvs.iter().map(fields).collect();
    ensure_eq!(got, vec![(r1, r1, 1, "v1".to_string(), 0)], "serializable get k at revision {r1} {FIELDS}");
    let req = RangeRequest { serializable: true, count_only: true, ..range_req(&sp.start(), &sp.end()) };
    ensure_eq!(range(b, req, "serializable count_only").await?.count, 1, "serializable count_only: count");
    Ok(())
}
