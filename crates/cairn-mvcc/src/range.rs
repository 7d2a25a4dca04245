//! Range: etcd's read semantics over a [`View`] — key/range_end interpretation, historical
//! reads, count, limit + more, filters, sort, keys_only, count_only.

use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use cairn_proto::mvccpb::KeyValue;

use crate::encoding::{
    decode_history_key, decode_kv, decode_version, history_key, history_prefix, is_tombstone, Version,
};
use cairn_core::{KeyRange, RequestError};

use crate::engine::Family;
use crate::error::MvccError;
use crate::view::View;

/// The revision a read at `requested` (≤ 0: current) sees, or etcd's error.
/// `compacted` is 0 when nothing was ever compacted.
pub(crate) fn read_revision(requested: i64, current: i64, compacted: i64) -> Result<i64, MvccError> {
    if requested > current {
        return Err(RequestError::FutureRevision.into());
    }
    let rev = if requested <= 0 { current } else { requested };
    if rev < compacted {
        return Err(RequestError::Compacted.into());
    }
    Ok(rev)
}

/// The raw result of the MVCC range: the first `limit` (0: all) live keys of the range at a
/// revision, and how many keys the range holds in total.
struct RawRange {
    kvs: Vec<KeyValue>,
    count: i64,
}

/// Collect keys of `range` as of `rev`. Rows past `limit` are only counted, not decoded.
fn raw_range(
    view: &View<'_>,
    range: KeyRange<'_>,
    rev: i64,
    current: i64,
    limit: usize,
    count_only: bool,
) -> Result<RawRange, MvccError> {
    let want = |n: usize| !count_only && (limit == 0 || n < limit);
    let mut out = RawRange { kvs: Vec::new(), count: 0 };
    if rev == current {
        match range {
            KeyRange::Single(key) => {
                if let Some(v) = view.get(Family::Kv, key)? {
                    out.count = 1;
                    if want(0) {
                        out.kvs.push(decode_kv(key, &v, view.sealer)?);
                    }
                }
            }
            KeyRange::Span(start, end) => {
                view.scan(Family::Kv, start, end, &mut |k, v| {
                    if want(out.kvs.len()) {
                        out.kvs.push(decode_kv(k, v, view.sealer)?);
                    }
                    out.count += 1;
                    Ok(true)
                })?;
            }
        }
        return Ok(out);
    }
    // A historical read: the latest version ≤ rev of each key, from `history`.
    match range {
        KeyRange::Single(key) => {
            if let Some(kv) = version_at(view, key, rev)? {
                out.count = 1;
                if want(0) {
                    out.kvs.push(kv);
                }
            }
        }
        KeyRange::Span(start, end) => {
            let lower = history_prefix(start);
            let upper = end.map(history_prefix);
            // Rows come grouped by key, revisions ascending: remember the last one ≤ rev, and
            // decode (and, sealed, open) only that one.
            let mut current_key: Option<Vec<u8>> = None;
            let mut latest: Option<Vec<u8>> = None;
            let flush = |key: Option<Vec<u8>>, latest: Option<Vec<u8>>, out: &mut RawRange| {
                let (Some(key), Some(row)) = (key, latest) else { return Ok(()) };
                if is_tombstone(&row)? {
                    return Ok(());
                }
                if want(out.kvs.len()) {
                    if let Version::Put(mut kv) = decode_version(&key, &row, view.sealer)? {
                        kv.key = key;
                        out.kvs.push(kv);
                    }
                }
                out.count += 1;
                Ok::<(), MvccError>(())
            };
            view.scan(Family::History, &lower, upper.as_deref(), &mut |k, v| {
                let (key, row_rev) = decode_history_key(k)?;
                if current_key.as_deref() != Some(key.as_slice()) {
                    flush(current_key.take(), latest.take(), &mut out)?;
                    current_key = Some(key);
                }
                if row_rev <= rev {
                    is_tombstone(v)?; // every row's format is still checked
                    latest = Some(v.to_vec());
                }
                Ok(true)
            })?;
            flush(current_key, latest, &mut out)?;
        }
    }
    Ok(out)
}

/// The version of `key` as of `rev`, if it was live then.
pub(crate) fn version_at(view: &View<'_>, key: &[u8], rev: i64) -> Result<Option<KeyValue>, MvccError> {
    let lower = history_prefix(key);
    // Rows ≤ (key, rev): below the key's row at `rev` with a 0 byte appended, its successor.
    let mut upper = history_key(key, rev);
    upper.push(0);
    let Some((_, v)) = view.last_in(Family::History, &lower, &upper)? else {
        return Ok(None);
    };
    Ok(match decode_version(key, &v, view.sealer)? {
        Version::Put(mut kv) => {
            kv.key = key.to_vec();
            Some(kv)
        }
        Version::Tombstone => None,
    })
}

/// The live keys of a range at the current revision (used by compares and deletes).
pub(crate) fn current_kvs(
    view: &View<'_>,
    range: KeyRange<'_>,
    current: i64,
) -> Result<Vec<KeyValue>, MvccError> {
    Ok(raw_range(view, range, current, current, 0, false)?.kvs)
}

/// Execute a Range request as etcd's applier does. `current` is the revision the view is at,
/// `compacted` the compacted revision (0: never compacted).
pub(crate) fn execute(
    view: &View<'_>,
    req: &RangeRequest,
    current: i64,
    compacted: i64,
) -> Result<RangeResponse, MvccError> {
    let sort_order = SortOrder::try_from(req.sort_order)
        .map_err(|_| MvccError::Request(RequestError::InvalidSortOption))?;
    let sort_target = SortTarget::try_from(req.sort_target)
        .map_err(|_| MvccError::Request(RequestError::InvalidSortOption))?;
    let rev = read_revision(req.revision, current, compacted)?;

    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // Like etcd: fetch everything when sorting or filtering, else one extra row for `more`.
    let fetch =
        if sort_order != SortOrder::None || filtered || req.limit <= 0 { 0 } else { req.limit as usize + 1 };
    let range = KeyRange::new(&req.key, &req.range_end);
    let raw = raw_range(view, range, rev, current, fetch, req.count_only)?;
    let mut kvs = raw.kvs;
    if filtered {
        kvs.retain(|kv| {
            (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        });
    }
    // Rows come sorted by key ascending; sort only when asked for something else.
    let order = match (sort_target, sort_order) {
        (SortTarget::Key, SortOrder::Ascend) => SortOrder::None,
        (t, SortOrder::None) if t != SortTarget::Key => SortOrder::Ascend,
        (_, o) => o,
    };
    if order != SortOrder::None {
        kvs.sort_by(|a, b| sort_key(a, sort_target).cmp(&sort_key(b, sort_target)));
        if order == SortOrder::Descend {
            kvs.reverse();
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header: Some(ResponseHeader { revision: current, ..Default::default() }),
        kvs,
        more,
        count: raw.count,
    })
}

fn sort_key(kv: &KeyValue, target: SortTarget) -> SortKey<'_> {
    match target {
        SortTarget::Key => SortKey::Bytes(&kv.key),
        SortTarget::Version => SortKey::Int(kv.version),
        SortTarget::Create => SortKey::Int(kv.create_revision),
        SortTarget::Mod => SortKey::Int(kv.mod_revision),
        SortTarget::Value => SortKey::Bytes(&kv.value),
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum SortKey<'a> {
    Int(i64),
    Bytes(&'a [u8]),
}
