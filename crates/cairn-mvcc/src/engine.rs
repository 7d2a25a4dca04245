//! The storage interface the MVCC semantics run on: ordered byte maps ("families") with
//! point reads, forward scans, a "last row before" lookup, consistent snapshots, and atomic
//! batches of writes. Nothing else: every etcd rule lives above it, in this crate, so a new
//! engine (RocksDB, memory, a SQL table of rows) gets all of them by implementing two small
//! traits.

use crate::error::MvccError;

/// The ordered maps the MVCC engine keeps. Each is an independent keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// user key → latest version of a live key.
    Kv = 0,
    /// memcomparable(user key) ++ revision → that version (or a tombstone).
    History = 1,
    /// revision → the keys changed at that revision.
    Events = 2,
    /// named metadata rows: current revision, compacted revision, and the replication
    /// layer's own rows (last applied log id, membership) written in the same batch.
    Meta = 3,
    /// lease id → the lease's granted TTL.
    Leases = 4,
    /// lease id ++ user key → (): the keys attached to each lease.
    LeaseKeys = 5,
}

impl Family {
    pub const COUNT: usize = 6;
    pub const ALL: [Family; Family::COUNT] =
        [Family::Kv, Family::History, Family::Events, Family::Meta, Family::Leases, Family::LeaseKeys];

    /// The family's name (RocksDB's column family; stable: it is on disk).
    pub fn name(self) -> &'static str {
        match self {
            Family::Kv => "kv",
            Family::History => "history",
            Family::Events => "events",
            Family::Meta => "sm_meta",
            Family::Leases => "leases",
            Family::LeaseKeys => "lease_keys",
        }
    }
}

/// A row (key, value).
pub type Row = (Vec<u8>, Vec<u8>);

/// A scan callback: return `Ok(false)` to stop.
pub type Visit<'v> = dyn FnMut(&[u8], &[u8]) -> Result<bool, MvccError> + 'v;

/// Reads of one engine state: a snapshot, or the latest committed state.
pub trait EngineRead: Send + Sync {
    /// The value of `key`, if present.
    fn get(&self, fam: Family, key: &[u8]) -> Result<Option<Vec<u8>>, MvccError>;

    /// Visit the rows of `[start, end)` (`end = None`: to the end of the family) in
    /// ascending key order until `visit` returns `false`.
    fn scan(
        &self,
        fam: Family,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), MvccError>;

    /// The row with the greatest key in `[lower, upper)`, if any.
    fn last_in(&self, fam: Family, lower: &[u8], upper: &[u8]) -> Result<Option<Row>, MvccError>;
}

/// One write of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Put(Family, Vec<u8>, Vec<u8>),
    Delete(Family, Vec<u8>),
    /// Delete every row of `[start, end)` (nothing when `end <= start`).
    DeleteRange(Family, Vec<u8>, Vec<u8>),
    /// Delete every row of the family.
    Clear(Family),
}

/// Writes applied atomically and in order by [`Engine::write`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub ops: Vec<BatchOp>,
}

impl Batch {
    pub fn put(&mut self, fam: Family, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(BatchOp::Put(fam, key, value));
    }

    pub fn delete(&mut self, fam: Family, key: Vec<u8>) {
        self.ops.push(BatchOp::Delete(fam, key));
    }

    pub fn delete_range(&mut self, fam: Family, start: Vec<u8>, end: Vec<u8>) {
        self.ops.push(BatchOp::DeleteRange(fam, start, end));
    }

    pub fn clear(&mut self, fam: Family) {
        self.ops.push(BatchOp::Clear(fam));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Whether [`Engine::write`] must make the batch durable before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The caller keeps its own durable record (a Raft log written to the same WAL, which
    /// orders this batch before any later synced write): written, not yet synced.
    Deferred,
    /// The batch is the durable record: synced before `write` returns.
    Synced,
}

/// A storage engine for the MVCC semantics.
///
/// The contract: `write` applies a batch atomically (after a crash, all of it or none of
/// it) and in order; a [`Durability::Synced`] batch, and every batch written before it,
/// survives a crash once `write` returns. `snapshot` sees one point in time (between two
/// batches) for as long as it lives; `latest` sees whatever is committed when each call is
/// made (the single applier's reads: cheaper, no snapshot). Errors are
/// [`MvccError::Storage`] (the engine failed, its source kept) or [`MvccError::Corrupt`].
pub trait Engine: Send + Sync + 'static {
    fn snapshot(&self) -> Box<dyn EngineRead + '_>;
    fn latest(&self) -> Box<dyn EngineRead + '_>;
    fn write(&self, batch: Batch, durability: Durability) -> Result<(), MvccError>;

    /// Bytes the families occupy, approximately (for `Status`). Cheap: no storage reads.
    fn approximate_size(&self) -> u64;

    /// Give back the space that deleted and overwritten rows still take (etcd's
    /// Defragment): may take long and read and write everything once. Changes no data.
    fn compact_storage(&self) -> Result<(), MvccError>;
}
