//! etcd's MVCC semantics over a small storage interface: revisions, ranges (current and
//! historical), puts, deletes, txns, leases and compaction, with etcd's exact results and
//! errors, on any [`Engine`] — RocksDB ([`RocksEngine`], feature `rocksdb`, on by default)
//! or memory ([`MemEngine`], for deterministic tests and simulation).
//!
//! **Architecture invariant:** this crate never depends on openraft or tonic (a test at the
//! workspace root checks it): it knows nothing of Raft, gRPC or SQL. It speaks the request
//! model of `cairn-core` and the etcd messages of `cairn-proto` (no services), and it is
//! deterministic: applying the same requests to the same state gives the same state and the
//! same responses — no clock, no randomness, no I/O but its engine's.
//!
//! Layout (the [`Family`] maps of the engine; RocksDB column families of the same names):
//! - `kv`: user key → latest version of each live key (fast current reads);
//! - `history`: memcomparable(user key) ++ revision → that version or a tombstone
//!   (historical reads, compaction);
//! - `events`: revision → the keys changed at it (watch catch-up);
//! - `sm_meta`: current and compacted revision, plus rows of the caller's own
//!   (e.g. the last applied Raft log id) written in the same atomic batch;
//! - `leases`: lease id → granted TTL; `lease_keys`: lease id ++ user key → () (what a
//!   revoke deletes). Expiry is not here: the replication layer proposes revokes.
//!
//! ```
//! # use cairn_mvcc::MvccStore;
//! # use cairn_core::WriteRequest;
//! # use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
//! let store = MvccStore::in_memory();
//! let mut batch = store.begin_apply()?;
//! batch.apply(&WriteRequest::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() }))?;
//! batch.commit_synced()?;
//! let resp = store.range(&RangeRequest { key: b"k".to_vec(), ..Default::default() })?;
//! assert_eq!(resp.kvs[0].value, b"v");
//! # Ok::<(), cairn_mvcc::MvccError>(())
//! ```

mod backup;
mod encoding;
mod engine;
mod error;
mod events;
mod hash;
mod lease;
mod memory;
mod prune;
mod range;
mod reseal;
#[cfg(feature = "rocksdb")]
mod rocks;
mod snapshot;
mod store;
mod txn;
mod view;

pub use backup::{verify_backup, DIGEST_LEN};
pub use engine::{Batch, BatchOp, Durability, Engine, EngineRead, Family, Row, Visit};
pub use error::MvccError;
pub use memory::MemEngine;
pub use prune::PruneCursor;
pub use reseal::{ResealCursor, ResealStep};
#[cfg(feature = "rocksdb")]
pub use rocks::RocksEngine;
pub use snapshot::read_snapshot_rows;
pub use store::{ApplyBatch, MetaRow, MvccStore, APPLY_META_KEYS};

/// The etcd-semantics tests, once per engine.
#[cfg(test)]
mod tests {
    #[cfg(feature = "rocksdb")]
    mod on_rocksdb {
        fn engine() -> (Option<tempfile::TempDir>, std::sync::Arc<dyn crate::Engine>) {
            let dir = tempfile::tempdir().unwrap();
            let engine = crate::RocksEngine::open(dir.path(), &[]).unwrap();
            (Some(dir), std::sync::Arc::new(engine))
        }
        include!("tests.rs");
    }

    mod in_memory {
        fn engine() -> (Option<tempfile::TempDir>, std::sync::Arc<dyn crate::Engine>) {
            (None, std::sync::Arc::new(crate::MemEngine::new()))
        }
        include!("tests.rs");
    }
}
