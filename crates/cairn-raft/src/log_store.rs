//! The Raft log on RocksDB (`raft_log`, `raft_meta` column families), with group commit.
//!
//! Durability rules (openraft's contract, and the reason for this shape):
//! - `append` writes the entries (visible to readers at once, not yet synced), then hands
//!   the flush callback to the syncer thread. The syncer takes every callback waiting, syncs
//!   the WAL once, and completes them all: many concurrent proposals share one fsync.
//! - RocksDB has one WAL for all column families, written in order; one sync makes every
//!   earlier write durable. So vote, log and state machine writes are never reordered, and
//!   a synced append also covers the state machine batches written before it.
//! - `save_vote` writes with `sync = true` before returning.
//!
//! With secrets at rest configured, every entry is stored sealed ([`encode_entry`]): an
//! entry may carry any key's value, so none is written in the clear.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::{Arc, Weak};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::codec;
use crate::types::{Entry, LogId, TypeConfig, Vote};
use cairn_core::seal::Sealer;

pub const CF_LOG: &str = "raft_log";
pub const CF_META: &str = "raft_meta";

pub(crate) const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
pub(crate) const KEY_LAST_PURGED: &[u8] = b"last_purged";

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn io_err(e: rocksdb::Error) -> io::Error {
    io::Error::other(e.into_string())
}

/// The first byte of a sealed entry (the codec's own formats start at 1).
const SEALED_ENTRY: u8 = 0x80;

/// An entry as stored: the codec's bytes, sealed (with its index as associated data, so a
/// sealed entry moved to another index does not open) when `sealer` is set.
pub fn encode_entry(entry: &Entry, sealer: Option<&Sealer>) -> io::Result<Vec<u8>> {
    let plain = codec::encode(entry)?;
    Ok(match sealer {
        Some(s) => {
            let sealed = s.seal_blob(&entry.log_id.index.to_be_bytes(), &plain);
            let mut out = Vec::with_capacity(1 + sealed.len());
            out.push(SEALED_ENTRY);
            out.extend_from_slice(&sealed);
            out
        }
        None => plain,
    })
}

/// The entry stored at `index`, sealed or not.
pub fn decode_entry(index: u64, stored: &[u8], sealer: Option<&Sealer>) -> io::Result<Entry> {
    match stored.split_first() {
        Some((&SEALED_ENTRY, sealed)) => {
            let opened = match sealer {
                Some(s) => s.open_blob(&index.to_be_bytes(), sealed),
                None => Err(cairn_core::seal::SealError::no_key(sealed)),
            }
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("log entry {index}: {e}")))?;
            codec::decode(&opened)
        }
        _ => codec::decode(stored),
    }
}

/// The log store. Clones share the database and the syncer.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    syncer: mpsc::Sender<IOFlushed<TypeConfig>>,
    /// Seals entries at rest (`None`: stored in the clear).
    sealer: Option<Arc<Sealer>>,
}

impl LogStore {
    /// Wrap a database opened with the [`CF_LOG`] and [`CF_META`] families; entries are
    /// sealed with `sealer` when set.
    pub fn new(db: Arc<DB>, sealer: Option<Arc<Sealer>>) -> LogStore {
        let (tx, rx) = mpsc::channel::<IOFlushed<TypeConfig>>();
        // Weak: the syncer must never be what keeps the database open. A DB still open in a
        // detached thread when the process exits races RocksDB's static destructors (abort).
        let sync_db = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("cairn-log-sync".into())
            .spawn(move || group_commit_loop(sync_db, rx))
            .expect("spawn the log syncer thread");
        LogStore { db, syncer: tx, sealer }
    }

    /// Rewrite the log's files so that purged entries are gone from disk too (after a key
    /// rotation: the entries sealed with the previous key). Blocking; errors are logged.
    pub fn compact(&self) {
        let mut opts = rocksdb::CompactOptions::default();
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        for cf in [self.cf_log(), self.cf_meta()] {
            if let Err(e) = self.db.flush_cf(cf) {
                tracing::warn!(error = %e, "flushing the raft log");
            }
            self.db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &opts);
        }
    }

    fn cf_log(&self) -> &ColumnFamily {
        self.db.cf_handle(CF_LOG).expect("raft_log family")
    }

    fn cf_meta(&self) -> &ColumnFamily {
        self.db.cf_handle(CF_META).expect("raft_meta family")
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.db.get_cf(self.cf_meta(), key).map_err(io_err)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }
}

/// Complete every waiting flush callback with one WAL sync.
fn group_commit_loop(db: Weak<DB>, rx: mpsc::Receiver<IOFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let started = std::time::Instant::now();
        let result = match db.upgrade() {
            Some(db) => db.flush_wal(true).map_err(|e| e.into_string()),
            None => Err("the database is closed".to_string()),
        };
        crate::metrics::record_wal_sync(waiting.len(), started.elapsed());
        for cb in waiting {
            cb.io_completed(result.clone().map_err(io::Error::other));
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for item in
            self.db.iterator_cf(self.cf_log(), IteratorMode::From(&index_key(start), Direction::Forward))
        {
            let (k, v) = item.map_err(io_err)?;
            let index =
                u64::from_be_bytes(k.as_ref().try_into().map_err(|_| io::Error::other("bad log key"))?);
            if !range.contains(&index) {
                break;
            }
            let entry = decode_entry(index, &v, self.sealer.as_deref())?;
            debug_assert_eq!(entry.log_id.index, index);
            out.push(entry);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last = match self.db.iterator_cf(self.cf_log(), IteratorMode::End).next() {
            Some(item) => {
                let (k, v) = item.map_err(io_err)?;
                let index =
                    u64::from_be_bytes(k.as_ref().try_into().map_err(|_| io::Error::other("bad log key"))?);
                Some(decode_entry(index, &v, self.sealer.as_deref())?.log_id)
            }
            None => None,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last.or(last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.put_cf_opt(self.cf_meta(), KEY_VOTE, codec::encode(vote)?, &opts).map_err(io_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        // Not synced: on a crash it may lag, which only delays re-apply (openraft re-derives it).
        self.db.put_cf(self.cf_meta(), KEY_COMMITTED, codec::encode(&committed)?).map_err(io_err)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            let stored = encode_entry(&entry, self.sealer.as_deref())?;
            batch.put_cf(self.cf_log(), index_key(entry.log_id.index), stored);
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(false);
        self.db.write_opt(batch, &opts).map_err(io_err)?;
        // Readable now; durable when the syncer calls back.
        self.syncer.send(callback).map_err(|_| io::Error::other("log syncer stopped"))?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        // Ordered in the WAL before any later append, whose sync makes it durable.
        self.db.delete_range_cf(self.cf_log(), index_key(from), index_key(u64::MAX)).map_err(io_err)?;
        self.db.delete_cf(self.cf_log(), index_key(u64::MAX)).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        // Record the purge point first: entries at or below it are ignored from then on.
        self.db.put_cf(self.cf_meta(), KEY_LAST_PURGED, codec::encode(&log_id)?).map_err(io_err)?;
        self.db.delete_range_cf(self.cf_log(), index_key(0), index_key(log_id.index + 1)).map_err(io_err)
    }
}
