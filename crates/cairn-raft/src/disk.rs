//! Where a member keeps its Raft log and metadata (`raft_log`, `raft_meta`): the
//! [`LogDisk`] interface, on RocksDB ([`RocksLogDisk`], every real member: the same
//! database, and so the same WAL, as the state machine) or in memory ([`MemoryDisk`], a
//! simulated disk for deterministic simulation: the log, the metadata and the state
//! machine's [`MemEngine`] share one notion of "synced", as they share RocksDB's WAL).
//!
//! The durability contract is RocksDB's: writes are ordered; an unsynced write is readable
//! at once and may be lost by a crash, together with every write after it; [`LogDisk::sync`]
//! makes every earlier write durable, the state machine's included.

use std::io;
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_mvcc::MemEngine;
use imbl::OrdMap;
use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::log_store::{CF_LOG, CF_META};

/// One write to the log or its metadata.
pub enum LogWrite<'a> {
    /// Store entry `index`'s bytes.
    Entry(u64, Vec<u8>),
    /// Store a metadata row.
    Meta(&'a [u8], Vec<u8>),
    /// Delete the entries with index in `[from, to)` (`to = u64::MAX`: to the end).
    DeleteEntries { from: u64, to: u64 },
}

/// A member's log and metadata storage (see the module docs for the durability contract).
pub trait LogDisk: Send + Sync + 'static {
    fn get_meta(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>>;
    /// Apply `writes` atomically, in order; durable before returning when `sync`.
    fn write(&self, writes: Vec<LogWrite<'_>>, sync: bool) -> io::Result<()>;
    /// Visit the entries from `start` on, in index order, until `visit` returns false.
    fn entries_from(
        &self,
        start: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> io::Result<bool>,
    ) -> io::Result<()>;
    /// The entry with the greatest index.
    fn last_entry(&self) -> io::Result<Option<(u64, Vec<u8>)>>;
    /// Make every earlier write durable.
    fn sync(&self) -> io::Result<()>;
    /// Whether [`LogDisk::sync`] blocks on a device (it then runs on a thread of its own);
    /// false for a simulated disk, synced from a task after [`LogDisk::sync_delay`].
    fn sync_blocks(&self) -> bool {
        true
    }
    /// How long a simulated sync takes (drawn anew for each).
    fn sync_delay(&self) -> Duration {
        Duration::ZERO
    }
    /// Rewrite the files so that deleted entries are gone from the device too.
    fn compact(&self) {}
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn io_err(e: rocksdb::Error) -> io::Error {
    io::Error::other(e.into_string())
}

fn index_of(key: &[u8]) -> io::Result<u64> {
    Ok(u64::from_be_bytes(key.try_into().map_err(|_| io::Error::other("bad log key"))?))
}

/// The log in the member's RocksDB.
pub struct RocksLogDisk {
    db: Arc<DB>,
}

impl RocksLogDisk {
    /// `db` must have the [`CF_LOG`] and [`CF_META`] families.
    pub fn new(db: Arc<DB>) -> RocksLogDisk {
        RocksLogDisk { db }
    }

    fn cf_log(&self) -> &ColumnFamily {
        self.db.cf_handle(CF_LOG).expect("raft_log family")
    }

    fn cf_meta(&self) -> &ColumnFamily {
        self.db.cf_handle(CF_META).expect("raft_meta family")
    }
}

impl LogDisk for RocksLogDisk {
    fn get_meta(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf_meta(), key).map_err(io_err)
    }

    fn write(&self, writes: Vec<LogWrite<'_>>, sync: bool) -> io::Result<()> {
        let mut batch = WriteBatch::default();
        for w in writes {
            match w {
                LogWrite::Entry(index, bytes) => batch.put_cf(self.cf_log(), index_key(index), bytes),
                LogWrite::Meta(key, value) => batch.put_cf(self.cf_meta(), key, value),
                LogWrite::DeleteEntries { from, to } => {
                    batch.delete_range_cf(self.cf_log(), index_key(from), index_key(to));
                    // The range's end is exclusive: u64::MAX itself is a key of its own.
                    if to == u64::MAX {
                        batch.delete_cf(self.cf_log(), index_key(u64::MAX));
                    }
                }
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(batch, &opts).map_err(io_err)
    }

    fn entries_from(
        &self,
        start: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> io::Result<bool>,
    ) -> io::Result<()> {
        for item in
            self.db.iterator_cf(self.cf_log(), IteratorMode::From(&index_key(start), Direction::Forward))
        {
            let (k, v) = item.map_err(io_err)?;
            if !visit(index_of(&k)?, &v)? {
                break;
            }
        }
        Ok(())
    }

    fn last_entry(&self) -> io::Result<Option<(u64, Vec<u8>)>> {
        match self.db.iterator_cf(self.cf_log(), IteratorMode::End).next() {
            Some(item) => {
                let (k, v) = item.map_err(io_err)?;
                Ok(Some((index_of(&k)?, v.to_vec())))
            }
            None => Ok(None),
        }
    }

    fn sync(&self) -> io::Result<()> {
        self.db.flush_wal(true).map_err(io_err)
    }

    fn compact(&self) {
        let mut opts = rocksdb::CompactOptions::default();
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        for cf in [self.cf_log(), self.cf_meta()] {
            if let Err(e) = self.db.flush_cf(cf) {
                tracing::warn!(error = %e, "flushing the raft log");
            }
            self.db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &opts);
        }
    }
}

#[derive(Clone, Default)]
struct LogTables {
    entries: OrdMap<u64, Vec<u8>>,
    meta: OrdMap<Vec<u8>, Vec<u8>>,
}

struct MemoryState {
    latest: LogTables,
    durable: LogTables,
}

/// A simulated disk: the log, its metadata and the state machine's engine in memory, with
/// what a crash would leave ([`MemoryDisk::crashed`]). Clones share the disk, as processes
/// share a device across restarts.
#[derive(Clone)]
pub struct MemoryDisk {
    state: Arc<Mutex<MemoryState>>,
    engine: MemEngine,
    /// Draws the duration of each sync (a slow disk: longer ones).
    sync_delay: Arc<dyn Fn() -> Duration + Send + Sync>,
    /// The next sync fails (an I/O error, as a failing device gives) and makes nothing
    /// durable.
    fail_next_sync: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for MemoryDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDisk").finish_non_exhaustive()
    }
}

impl Default for MemoryDisk {
    fn default() -> Self {
        MemoryDisk::new(Arc::new(|| Duration::ZERO))
    }
}

impl MemoryDisk {
    pub fn new(sync_delay: Arc<dyn Fn() -> Duration + Send + Sync>) -> MemoryDisk {
        MemoryDisk {
            state: Arc::new(Mutex::new(MemoryState {
                latest: LogTables::default(),
                durable: LogTables::default(),
            })),
            engine: MemEngine::new(),
            sync_delay,
            fail_next_sync: Arc::default(),
        }
    }

    /// Make the next sync of the log fail with an I/O error (once).
    pub fn fail_next_sync(&self) {
        self.fail_next_sync.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The state machine's engine on this disk.
    pub fn engine(&self) -> MemEngine {
        self.engine.clone()
    }

    /// A new disk holding what losing power now would leave: everything as of the last sync
    /// (of the log or of the engine; a synced engine batch is a sync of the shared WAL too).
    pub fn crashed(&self) -> MemoryDisk {
        let durable = self.lock().durable.clone();
        MemoryDisk {
            state: Arc::new(Mutex::new(MemoryState { latest: durable.clone(), durable })),
            engine: self.engine.crashed(),
            sync_delay: self.sync_delay.clone(),
            fail_next_sync: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LogDisk for MemoryDisk {
    fn get_meta(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        Ok(self.lock().latest.meta.get(key).cloned())
    }

    fn write(&self, writes: Vec<LogWrite<'_>>, sync: bool) -> io::Result<()> {
        {
            let mut state = self.lock();
            let latest = &mut state.latest;
            for w in writes {
                match w {
                    LogWrite::Entry(index, bytes) => {
                        latest.entries.insert(index, bytes);
                    }
                    LogWrite::Meta(key, value) => {
                        latest.meta.insert(key.to_vec(), value);
                    }
                    LogWrite::DeleteEntries { from, to } => {
                        // `to` is exclusive, except that u64::MAX stands for "to the end".
                        let end = if to == u64::MAX { Bound::Unbounded } else { Bound::Excluded(to) };
                        let doomed: Vec<u64> =
                            latest.entries.range((Bound::Included(from), end)).map(|(i, _)| *i).collect();
                        for i in doomed {
                            latest.entries.remove(&i);
                        }
                    }
                }
            }
        }
        if sync {
            self.sync()?;
        }
        Ok(())
    }

    fn entries_from(
        &self,
        start: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> io::Result<bool>,
    ) -> io::Result<()> {
        // A snapshot of the map (O(1)): visiting does not hold the lock.
        let entries = self.lock().latest.entries.clone();
        for (index, bytes) in entries.range(start..) {
            if !visit(*index, bytes)? {
                break;
            }
        }
        Ok(())
    }

    fn last_entry(&self) -> io::Result<Option<(u64, Vec<u8>)>> {
        Ok(self.lock().latest.entries.get_max().map(|(i, v)| (*i, v.clone())))
    }

    fn sync(&self) -> io::Result<()> {
        if self.fail_next_sync.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(io::Error::other("simulated I/O error on sync"));
        }
        let mut state = self.lock();
        state.durable = state.latest.clone();
        // One WAL: the state machine's earlier batches become durable too.
        self.engine.sync();
        Ok(())
    }

    fn sync_blocks(&self) -> bool {
        false
    }

    fn sync_delay(&self) -> Duration {
        (self.sync_delay)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_what_was_synced_and_nothing_after() {
        let disk = MemoryDisk::default();
        disk.write(vec![LogWrite::Entry(1, b"a".to_vec()), LogWrite::Meta(b"vote", b"v1".to_vec())], false)
            .unwrap();
        disk.sync().unwrap();
        disk.write(vec![LogWrite::Entry(2, b"b".to_vec())], false).unwrap();
        disk.write(vec![LogWrite::DeleteEntries { from: 0, to: 2 }], false).unwrap();
        assert_eq!(disk.last_entry().unwrap(), Some((2, b"b".to_vec())));
        let after = disk.crashed();
        assert_eq!(after.last_entry().unwrap(), Some((1, b"a".to_vec())));
        assert_eq!(after.get_meta(b"vote").unwrap(), Some(b"v1".to_vec()));
        disk.write(vec![LogWrite::DeleteEntries { from: 2, to: u64::MAX }], true).unwrap();
        assert_eq!(disk.crashed().last_entry().unwrap(), None);
    }

    #[test]
    fn a_failed_sync_makes_nothing_durable_and_fails_once() {
        let disk = MemoryDisk::default();
        disk.write(vec![LogWrite::Entry(1, b"a".to_vec())], false).unwrap();
        disk.fail_next_sync();
        assert!(disk.sync().is_err());
        assert_eq!(disk.crashed().last_entry().unwrap(), None);
        disk.sync().unwrap();
        assert_eq!(disk.crashed().last_entry().unwrap(), Some((1, b"a".to_vec())));
    }
}
