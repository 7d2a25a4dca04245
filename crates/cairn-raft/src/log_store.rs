//! The Raft log on a [`LogDisk`] (RocksDB's `raft_log`, `raft_meta` column families; in a
//! simulation, a [`crate::disk::MemoryDisk`]), with group commit.
//!
//! Durability rules (openraft's contract, and the reason for this shape):
//! - `append` writes the entries (visible to readers at once, not yet synced), then hands
//!   the flush callback to the syncer thread. The syncer takes every callback waiting, syncs
//!   the WAL once, and completes them all: many concurrent proposals share one fsync. (On a
//!   simulated disk the syncer is a task, and a sync takes the disk's simulated time.)
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

use crate::codec;
use crate::disk::{LogDisk, LogWrite};
use crate::types::{Entry, LogId, TypeConfig, Vote};
use cairn_core::seal::Sealer;

pub const CF_LOG: &str = "raft_log";
pub const CF_META: &str = "raft_meta";

pub(crate) const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
pub(crate) const KEY_LAST_PURGED: &[u8] = b"last_purged";

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

/// The log store. Clones share the disk and the syncer.
#[derive(Clone)]
pub struct LogStore {
    disk: Arc<dyn LogDisk>,
    syncer: Syncer,
    /// Seals entries at rest (`None`: stored in the clear).
    sealer: Option<Arc<Sealer>>,
    /// The committed log id openraft last reported, encoded, not written yet: it is written
    /// with the next append (one write fewer per commit; it may lag anyway, see
    /// [`LogStore::save_committed`]).
    committed: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

/// A flush callback, and the last log index of its append (for [`crate::probe`]).
type Flush = (u64, IOFlushed<TypeConfig>);

/// Where flush callbacks go: the syncer thread (a real disk) or task (a simulated one).
#[derive(Clone)]
enum Syncer {
    Thread(mpsc::Sender<Flush>),
    Task(tokio::sync::mpsc::UnboundedSender<Flush>),
}

impl LogStore {
    /// The log on `disk`; entries are sealed with `sealer` when set.
    pub fn new(disk: Arc<dyn LogDisk>, sealer: Option<Arc<Sealer>>) -> LogStore {
        // Weak: the syncer must never be what keeps the disk open. A database still open in
        // a detached thread when the process exits races RocksDB's static destructors (abort).
        let sync_disk = Arc::downgrade(&disk);
        let syncer = if disk.sync_blocks() {
            let (tx, rx) = mpsc::channel::<Flush>();
            std::thread::Builder::new()
                .name("cairn-log-sync".into())
                .spawn(move || group_commit_loop(sync_disk, rx))
                .expect("spawn the log syncer thread");
            Syncer::Thread(tx)
        } else {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(simulated_group_commit(sync_disk, rx));
            Syncer::Task(tx)
        };
        LogStore { disk, syncer, sealer, committed: Arc::default() }
    }

    /// Rewrite the log's files so that purged entries are gone from disk too (after a key
    /// rotation: the entries sealed with the previous key). Blocking; errors are logged.
    pub fn compact(&self) {
        self.disk.compact()
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.disk.get_meta(key)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }
}

fn sync_once(disk: &Weak<dyn LogDisk>) -> Result<(), String> {
    match disk.upgrade() {
        Some(disk) => disk.sync().map_err(|e| e.to_string()),
        None => Err("the database is closed".to_string()),
    }
}

/// Complete every waiting flush callback with one WAL sync.
fn group_commit_loop(disk: Weak<dyn LogDisk>, rx: mpsc::Receiver<Flush>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let started = std::time::Instant::now();
        for (i, _) in &waiting {
            crate::probe::mark(*i, crate::probe::Stage::SyncStart);
        }
        let result = sync_once(&disk);
        crate::metrics::record_wal_sync(waiting.len(), started.elapsed());
        for (i, cb) in waiting {
            crate::probe::mark(i, crate::probe::Stage::SyncDone);
            cb.io_completed(result.clone().map_err(io::Error::other));
        }
    }
}

/// The same on a simulated disk: a task, and each sync takes the disk's simulated time
/// (what was appended meanwhile waits for the next one, as it would behind a real fsync).
async fn simulated_group_commit(
    disk: Weak<dyn LogDisk>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Flush>,
) {
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        while let Ok(cb) = rx.try_recv() {
            waiting.push(cb);
        }
        let delay = disk.upgrade().map(|d| d.sync_delay()).unwrap_or_default();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let result = sync_once(&disk);
        for (_, cb) in waiting {
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
        let sealer = self.sealer.clone();
        self.disk.entries_from(start, &mut |index, stored| {
            if !range.contains(&index) {
                return Ok(false);
            }
            let entry = decode_entry(index, stored, sealer.as_deref())?;
            debug_assert_eq!(entry.log_id.index, index);
            out.push(entry);
            Ok(true)
        })?;
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
        let last = match self.disk.last_entry()? {
            Some((index, stored)) => Some(decode_entry(index, &stored, self.sealer.as_deref())?.log_id),
            None => None,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last.or(last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        self.disk.write(vec![LogWrite::Meta(KEY_VOTE, codec::encode(vote)?)], true)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        // Written with the next append, and not synced: on a restart it may lag, which only
        // means fewer entries re-applied at start (the state machine's own applied point is
        // durable with its state; openraft takes the greater of the two, and the rest is
        // applied once a leader tells this member the commit point again).
        *self.committed.lock().unwrap_or_else(|e| e.into_inner()) = Some(codec::encode(&committed)?);
        Ok(())
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut writes = Vec::new();
        let t_in = crate::probe::stamp();
        for entry in entries {
            crate::probe::mark_at(entry.log_id.index, crate::probe::Stage::AppendIn, t_in);
            let stored = encode_entry(&entry, self.sealer.as_deref())?;
            writes.push(LogWrite::Entry(entry.log_id.index, stored));
        }
        let last_index = match writes.last() {
            Some(LogWrite::Entry(i, _)) => *i,
            _ => 0,
        };
        if let Some(committed) = self.committed.lock().unwrap_or_else(|e| e.into_inner()).take() {
            writes.push(LogWrite::Meta(KEY_COMMITTED, committed));
        }
        self.disk.write(writes, false)?;
        crate::probe::mark(last_index, crate::probe::Stage::AppendWritten);
        #[cfg(feature = "fault-injection")]
        if crate::fault::unsynced_append() {
            callback.io_completed(Ok(()));
            // The sync still happens, a little later: the bug is only the early report.
            if let Syncer::Task(_) = &self.syncer {
                let disk = self.disk.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(disk.sync_delay()).await;
                    let _ = disk.sync();
                });
            }
            return Ok(());
        }
        // Readable now; durable when the syncer calls back.
        let sent = match &self.syncer {
            Syncer::Thread(tx) => tx.send((last_index, callback)).is_ok(),
            Syncer::Task(tx) => tx.send((last_index, callback)).is_ok(),
        };
        if !sent {
            return Err(io::Error::other("log syncer stopped"));
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        // Ordered in the WAL before any later append, whose sync makes it durable.
        self.disk.write(vec![LogWrite::DeleteEntries { from, to: u64::MAX }], false)
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        // Record the purge point first: entries at or below it are ignored from then on.
        self.disk.write(vec![LogWrite::Meta(KEY_LAST_PURGED, codec::encode(&log_id)?)], false)?;
        self.disk.write(vec![LogWrite::DeleteEntries { from: 0, to: log_id.index + 1 }], false)
    }
}
