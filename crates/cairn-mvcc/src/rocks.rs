//! [`RocksEngine`]: the MVCC families as column families of one RocksDB (which the caller may
//! share with its own column families, e.g. a Raft log, so that one WAL orders both).

use std::sync::Arc;

use rocksdb::{ColumnFamily, IteratorMode, ReadOptions, Snapshot, WriteBatch, WriteOptions, DB};

use crate::engine::{Batch, BatchOp, Durability, Engine, EngineRead, Family, Row, Visit};
use crate::error::MvccError;

impl From<rocksdb::Error> for MvccError {
    fn from(e: rocksdb::Error) -> MvccError {
        MvccError::storage(e)
    }
}

/// The MVCC engine on RocksDB: one column family per [`Family`], named [`Family::name`].
#[derive(Clone)]
pub struct RocksEngine {
    db: Arc<DB>,
}

impl RocksEngine {
    /// The column families the MVCC families need; open the database with all of them.
    pub fn column_families() -> impl Iterator<Item = &'static str> {
        Family::ALL.into_iter().map(Family::name)
    }

    /// Wrap a database opened with [`RocksEngine::column_families`] (and any others).
    ///
    /// # Panics
    /// If one of the MVCC column families was not opened: a programming error.
    pub fn new(db: Arc<DB>) -> RocksEngine {
        for fam in Family::ALL {
            handle(&db, fam);
        }
        RocksEngine { db }
    }

    /// Open (or create) a RocksDB at `path` with the MVCC column families plus `extra`
    /// ones. A helper for tests and for callers that keep nothing else in the database.
    pub fn open(path: &std::path::Path, extra: &[&str]) -> Result<RocksEngine, MvccError> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let mut names: Vec<&str> = Self::column_families().collect();
        names.extend(extra.iter().copied());
        Ok(RocksEngine::new(Arc::new(DB::open_cf(&opts, path, names)?)))
    }

    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }
}

fn handle(db: &DB, fam: Family) -> &ColumnFamily {
    db.cf_handle(fam.name()).unwrap_or_else(|| panic!("column family {} was not opened", fam.name()))
}

struct RocksRead<'a> {
    db: &'a DB,
    snapshot: Option<Snapshot<'a>>,
}

impl RocksRead<'_> {
    fn read_options(&self) -> ReadOptions {
        let mut ro = ReadOptions::default();
        if let Some(s) = &self.snapshot {
            ro.set_snapshot(s);
        }
        ro
    }
}

impl EngineRead for RocksRead<'_> {
    fn get(&self, fam: Family, key: &[u8]) -> Result<Option<Vec<u8>>, MvccError> {
        Ok(self.db.get_cf_opt(handle(self.db, fam), key, &self.read_options())?)
    }

    fn scan(
        &self,
        fam: Family,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), MvccError> {
        let mut ro = self.read_options();
        if let Some(end) = end {
            if end <= start {
                return Ok(());
            }
            ro.set_iterate_upper_bound(end.to_vec());
        }
        let mut it = self.db.raw_iterator_cf_opt(handle(self.db, fam), ro);
        it.seek(start);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !visit(k, v)? {
                return Ok(());
            }
            it.next();
        }
        Ok(it.status()?)
    }

    fn last_in(&self, fam: Family, lower: &[u8], upper: &[u8]) -> Result<Option<Row>, MvccError> {
        if lower >= upper {
            return Ok(None);
        }
        let mut ro = self.read_options();
        ro.set_iterate_lower_bound(lower.to_vec());
        ro.set_iterate_upper_bound(upper.to_vec());
        let mut it = self.db.raw_iterator_cf_opt(handle(self.db, fam), ro);
        it.seek_to_last();
        if let (Some(k), Some(v)) = (it.key(), it.value()) {
            return Ok(Some((k.to_vec(), v.to_vec())));
        }
        it.status()?;
        Ok(None)
    }
}

impl Engine for RocksEngine {
    fn snapshot(&self) -> Box<dyn EngineRead + '_> {
        Box::new(RocksRead { db: &self.db, snapshot: Some(self.db.snapshot()) })
    }

    fn latest(&self) -> Box<dyn EngineRead + '_> {
        Box::new(RocksRead { db: &self.db, snapshot: None })
    }

    fn write(&self, batch: Batch, durability: Durability) -> Result<(), MvccError> {
        let db = &*self.db;
        let mut wb = WriteBatch::default();
        for op in batch.ops {
            match op {
                BatchOp::Put(fam, k, v) => wb.put_cf(handle(db, fam), k, v),
                BatchOp::Delete(fam, k) => wb.delete_cf(handle(db, fam), k),
                BatchOp::DeleteRange(fam, start, end) if start < end => {
                    wb.delete_range_cf(handle(db, fam), start, end)
                }
                // RocksDB refuses an inverted range; it deletes nothing.
                BatchOp::DeleteRange(..) => {}
                BatchOp::Clear(fam) => {
                    // Everything up to one past the family's last key (the single writer
                    // is the caller, so the last key cannot move before the batch lands).
                    let last = db.iterator_cf(handle(db, fam), IteratorMode::End).next().transpose()?;
                    if let Some((last, _)) = last {
                        let mut end = last.to_vec();
                        end.push(0);
                        wb.delete_range_cf(handle(db, fam), Vec::<u8>::new(), end);
                    }
                }
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(durability == Durability::Synced);
        Ok(db.write_opt(wb, &opts)?)
    }

    fn approximate_size(&self) -> u64 {
        // RocksDB's own counters (kept in memory): table files plus memtables.
        let property = |fam, name| self.db.property_int_value_cf(handle(&self.db, fam), name).ok().flatten();
        Family::ALL
            .into_iter()
            .map(|fam| {
                property(fam, "rocksdb.total-sst-files-size").unwrap_or(0)
                    + property(fam, "rocksdb.size-all-mem-tables").unwrap_or(0)
            })
            .sum()
    }

    /// A full manual compaction of every family down to the last level, where tombstones
    /// and overwritten versions are dropped.
    fn compact_storage(&self) -> Result<(), MvccError> {
        let mut opts = rocksdb::CompactOptions::default();
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        for fam in Family::ALL {
            self.db.flush_cf(handle(&self.db, fam))?;
            self.db.compact_range_cf_opt(handle(&self.db, fam), None::<&[u8]>, None::<&[u8]>, &opts);
        }
        Ok(())
    }
}
