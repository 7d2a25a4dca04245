//! etcd's MVCC semantics over RocksDB: revisions, ranges (current and historical), puts,
//! deletes, txns and compaction, with etcd's exact results and errors.
//!
//! **Architecture invariant:** this crate never depends on openraft or tonic (a test at the
//! workspace root checks it): it knows nothing of Raft, gRPC or SQL. It speaks the request
//! model of `cairn-core` and the etcd messages of `cairn-proto` (no services), and it is
//! deterministic: applying the same requests to the same state gives the same state and the
//! same responses — no clock, no randomness, no I/O but its own `WriteBatch`.
//!
//! Storage layout (one RocksDB, the column families of [`MvccStore::column_families`]):
//! - `kv`: user key → latest version of each live key (fast current reads);
//! - `history`: memcomparable(user key) ++ revision → that version or a tombstone
//!   (historical reads, compaction);
//! - `events`: revision → the keys changed at it (watch catch-up);
//! - `sm_meta`: current and compacted revision, plus rows of the caller's own
//!   (e.g. the last applied Raft log id) written in the same atomic batch;
//! - `leases`: lease id → granted TTL; `lease_keys`: lease id ++ user key → () (what a
//!   revoke deletes). Expiry is not here: the replication layer proposes revokes.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use cairn_mvcc::MvccStore;
//! # use cairn_core::WriteRequest;
//! # use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
//! # fn db() -> Arc<rocksdb::DB> { unimplemented!() }
//! let store = MvccStore::new(db());
//! let mut batch = store.begin_apply()?;
//! batch.apply(&WriteRequest::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() }))?;
//! batch.commit()?;
//! let resp = store.range(&RangeRequest { key: b"k".to_vec(), ..Default::default() })?;
//! assert_eq!(resp.kvs[0].value, b"v");
//! # Ok::<(), cairn_mvcc::MvccError>(())
//! ```

mod encoding;
mod error;
mod events;
mod lease;
mod range;
mod snapshot;
mod store;
mod txn;
mod view;

pub use error::MvccError;
pub use store::{ApplyBatch, MetaRow, MvccStore};

/// Open (or create) a RocksDB at `path` with the MVCC column families plus `extra` ones.
/// A helper for tests and for callers that keep nothing else in the database.
pub fn open_db(path: &std::path::Path, extra: &[&str]) -> Result<std::sync::Arc<rocksdb::DB>, MvccError> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let mut names: Vec<&str> = MvccStore::column_families().collect();
    names.extend(extra.iter().copied());
    Ok(std::sync::Arc::new(rocksdb::DB::open_cf(&opts, path, names)?))
}

#[cfg(test)]
mod tests;
