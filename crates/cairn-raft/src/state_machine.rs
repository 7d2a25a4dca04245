//! The Raft state machine: committed entries applied to the MVCC engine in batches, and
//! snapshots as files built from a RocksDB snapshot of the state families.
//!
//! Each apply call writes all of its entries, and the last applied log id and membership,
//! in one atomic `WriteBatch`; responses go out only after that write. On restart openraft
//! reads the last applied log id back and re-applies only what follows it.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_core::{WriteRequest, WriteResponse, INITIAL_REVISION};
use cairn_mvcc::{MvccError, MvccStore};
use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tokio::sync::watch;

use crate::codec;
use crate::types::{Command, CommandResult, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use cairn_core::lessor::Lessor;

const META_LAST_APPLIED: &[u8] = b"raft/last_applied";
const META_MEMBERSHIP: &[u8] = b"raft/membership";

/// A snapshot file and an open handle on it (the handle keeps it readable even after a
/// newer snapshot replaces it on disk).
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub file: File,
}

/// Where snapshots live: `<dir>/<last index>.snap` with `<last index>.meta` beside it.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
    /// Held while old snapshots are removed and while the current one is found and opened:
    /// otherwise a reader can pick a snapshot that a newer build removes before the reader
    /// opens it (a "not found" that openraft treats as a fatal storage error).
    removing: Arc<std::sync::Mutex<()>>,
}

impl SnapshotDir {
    pub fn new(dir: PathBuf) -> io::Result<SnapshotDir> {
        std::fs::create_dir_all(&dir)?;
        Ok(SnapshotDir { dir, removing: Arc::default() })
    }

    fn lock_removal(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        self.removing.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh temporary file for an incoming or outgoing snapshot.
    pub fn temp_path(&self) -> PathBuf {
        self.dir.join(format!("incoming-{:016x}.tmp", cairn_core::sim::random_u64()))
    }

    fn stem(meta: &SnapshotMeta) -> String {
        format!("{:020}", meta.last_log_id.as_ref().map_or(0, |l| l.index))
    }

    /// Make `tmp` the current snapshot with `meta`, durably, drop older ones, and open it.
    fn publish(&self, tmp: &Path, meta: &SnapshotMeta) -> io::Result<SnapshotFile> {
        let _removing = self.lock_removal();
        let stem = Self::stem(meta);
        let snap = self.dir.join(format!("{stem}.snap"));
        std::fs::rename(tmp, &snap)?;
        let meta_tmp = self.dir.join(format!("{stem}.meta.tmp"));
        let mut f = File::create(&meta_tmp)?;
        f.write_all(&codec::encode(meta)?)?;
        f.sync_all()?;
        std::fs::rename(&meta_tmp, self.dir.join(format!("{stem}.meta")))?;
        File::open(&self.dir)?.sync_all()?;
        let file = File::open(&snap)?;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let is_old = (name.ends_with(".snap") || name.ends_with(".meta")) && !name.starts_with(&stem);
            if is_old {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(SnapshotFile { path: snap, file })
    }

    /// The newest complete snapshot, if any.
    fn current(&self) -> io::Result<Option<(SnapshotMeta, SnapshotFile)>> {
        let _removing = self.lock_removal();
        let mut best: Option<String> = None;
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().to_string();
            if let Some(stem) = name.strip_suffix(".meta") {
                if self.dir.join(format!("{stem}.snap")).exists() && best.as_deref().is_none_or(|b| stem > b)
                {
                    best = Some(stem.to_string());
                }
            }
        }
        let Some(stem) = best else { return Ok(None) };
        let meta: SnapshotMeta = codec::decode(&std::fs::read(self.dir.join(format!("{stem}.meta")))?)?;
        let path = self.dir.join(format!("{stem}.snap"));
        let file = File::open(&path)?;
        Ok(Some((meta, SnapshotFile { path, file })))
    }
}

/// The state machine over the MVCC engine.
pub struct StateMachine {
    store: MvccStore,
    snapshots: SnapshotDir,
    /// The revision the applied state is at, for watchers to wait on.
    revision: watch::Sender<i64>,
    /// Mirrors the applied leases for the lease timers.
    lessor: Arc<Lessor>,
    /// Mirrors the raised alarms for the per-request checks.
    alarms: crate::alarms::Raised,
    /// Mirrors the auth state (and holds the tokens).
    auth: crate::auth::Auth,
}

impl StateMachine {
    pub fn new(store: MvccStore, snapshots: SnapshotDir, lessor: Arc<Lessor>) -> io::Result<StateMachine> {
        let current = store.revisions().map_or(INITIAL_REVISION, |(rev, _)| rev);
        let (revision, _) = watch::channel(current);
        lessor.reload(&store.leases().map_err(mvcc_io)?);
        let alarms = crate::alarms::Raised::default();
        crate::alarms::reload(&store, &alarms).map_err(mvcc_io)?;
        let auth = crate::auth::AuthMirror::load(&store).map_err(mvcc_io)?;
        Ok(StateMachine { store, snapshots, revision, lessor, alarms, auth })
    }

    /// One step of re-sealing the stored values with the current key (run between applies:
    /// see [`cairn_mvcc::MvccStore::reseal_step`]).
    pub(crate) fn reseal_step(
        &self,
        cursor: &mut cairn_mvcc::ResealCursor,
        limit: usize,
    ) -> Result<cairn_mvcc::ResealStep, MvccError> {
        self.store.reseal_step(cursor, limit)
    }

    /// The auth state and tokens, kept current as entries and snapshots are applied.
    pub fn auth(&self) -> crate::auth::Auth {
        self.auth.clone()
    }

    /// The raised alarms, kept current as entries and snapshots are applied.
    pub fn alarms(&self) -> crate::alarms::Raised {
        self.alarms.clone()
    }

    /// Subscribe to the events of applied batches.
    /// The applied revision, updated after every applied batch and installed snapshot.
    pub fn revision_updates(&self) -> watch::Receiver<i64> {
        self.revision.subscribe()
    }
}

fn mvcc_io(e: MvccError) -> io::Error {
    io::Error::other(e)
}

pub(crate) fn read_applied(store: &MvccStore) -> io::Result<(Option<LogId>, StoredMembership)> {
    let last: Option<LogId> = match store.get_meta(META_LAST_APPLIED).map_err(mvcc_io)? {
        Some(b) => codec::decode(&b)?,
        None => None,
    };
    let membership = match store.get_meta(META_MEMBERSHIP).map_err(mvcc_io)? {
        Some(b) => codec::decode(&b)?,
        None => StoredMembership::default(),
    };
    Ok((last, membership))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        read_applied(&self.store)
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let apply_started = std::time::Instant::now();
        let mut batch = self.store.begin_apply().map_err(mvcc_io)?;
        let mut replies = Vec::new();
        let mut lease_changes = Vec::new();
        let mut last = None;
        let mut membership = None;
        let mut alarms_changed = false;
        let mut auth = crate::auth::Pending::default();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult(None),
                EntryPayload::Normal(Command::SetMember(attributes)) => {
                    crate::members::apply(&mut batch, &attributes);
                    CommandResult(None)
                }
                EntryPayload::Normal(Command::SetAlarm(change)) => {
                    crate::alarms::apply(&mut batch, &change);
                    alarms_changed = true;
                    CommandResult(None)
                }
                EntryPayload::Normal(Command::Auth(command)) => {
                    match auth.apply(&self.auth, &mut batch, &command) {
                        Ok(()) => CommandResult(None),
                        Err(refused) => CommandResult(Some(Err(refused))),
                    }
                }
                EntryPayload::Normal(Command::CheckedWrite { auth_revision, .. })
                    if auth.changed_since(&self.auth, auth_revision) =>
                {
                    CommandResult(Some(Err(cairn_core::RequestError::AuthOldRevision)))
                }
                EntryPayload::Normal(Command::Write(write) | Command::CheckedWrite { write, .. }) => {
                    // A refusal is the entry's deterministic result; any other failure means
                    // this replica cannot apply the log and must stop.
                    let result = match batch.apply(&write) {
                        Ok(response) => Ok(response),
                        Err(MvccError::Request(refused)) => Err(refused),
                        Err(e) => return Err(mvcc_io(e)),
                    };
                    match (&write, &result) {
                        (WriteRequest::LeaseGrant(g), Ok(WriteResponse::LeaseGrant(_))) => {
                            lease_changes.push((g.id, Some(g.ttl)))
                        }
                        (WriteRequest::LeaseRevoke(r), Ok(_)) => lease_changes.push((r.id, None)),
                        _ => {}
                    }
                    CommandResult(Some(result))
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    CommandResult(None)
                }
            };
            last = Some(entry.log_id);
            replies.push((responder, result));
        }
        if last.is_none() {
            return Ok(());
        }
        batch.put_meta(META_LAST_APPLIED, &codec::encode(&last)?);
        if let Some(m) = &membership {
            batch.put_meta(META_MEMBERSHIP, &codec::encode(m)?);
        }
        let revision = batch.current_revision();
        let commit_started = std::time::Instant::now();
        batch.commit().map_err(mvcc_io)?;
        let commit_took = commit_started.elapsed();
        if alarms_changed {
            crate::alarms::reload(&self.store, &self.alarms).map_err(mvcc_io)?;
        }
        auth.publish(&self.auth);
        for (id, granted) in lease_changes {
            match granted {
                Some(ttl) => self.lessor.granted(id, ttl),
                None => self.lessor.revoked(id),
            }
        }
        self.revision.send_if_modified(|r| std::mem::replace(r, revision) != revision);
        crate::metrics::record_apply(replies.len(), apply_started.elapsed(), commit_took);
        for (responder, result) in replies {
            if let Some(r) = responder {
                r.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { store: self.store.clone(), snapshots: self.snapshots.clone() }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotFile) -> io::Result<()> {
        let store = self.store.clone();
        let snapshots = self.snapshots.clone();
        let meta = meta.clone();
        let installed = cairn_core::sim::run_blocking(move || {
            let SnapshotFile { path, mut file } = snapshot;
            file.seek(SeekFrom::Start(0))?;
            store.install_snapshot(&mut BufReader::new(&mut file)).map_err(mvcc_io)?;
            let (installed, _) = read_applied(&store)?;
            if installed != meta.last_log_id {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("snapshot data is at {installed:?} but its meta says {:?}", meta.last_log_id),
                ));
            }
            snapshots.publish(&path, &meta)?;
            tracing::info!(last_log_id = ?meta.last_log_id, "installed snapshot");
            Ok(())
        })
        .await?;
        installed?;
        self.lessor.reload(&self.store.leases().map_err(mvcc_io)?);
        crate::alarms::reload(&self.store, &self.alarms).map_err(mvcc_io)?;
        self.auth.reload(&self.store).map_err(mvcc_io)?;
        let (revision, _) = self.store.revisions().map_err(mvcc_io)?;
        self.revision.send_replace(revision);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        Ok(self.snapshots.current()?.map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

/// Builds a snapshot file from a RocksDB snapshot while the state machine keeps applying.
pub struct SnapshotBuilder {
    store: MvccStore,
    snapshots: SnapshotDir,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let store = self.store.clone();
        let snapshots = self.snapshots.clone();
        cairn_core::sim::run_blocking(move || {
            let tmp = snapshots.temp_path();
            let mut out = BufWriter::new(File::create(&tmp)?);
            let (rows, meta_rows) =
                store.write_snapshot(&mut out, &[META_LAST_APPLIED, META_MEMBERSHIP]).map_err(mvcc_io)?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            let last_log_id: Option<LogId> = match &meta_rows[0] {
                Some(b) => codec::decode(b)?,
                None => None,
            };
            let last_membership: StoredMembership = match &meta_rows[1] {
                Some(b) => codec::decode(b)?,
                None => StoredMembership::default(),
            };
            let meta = SnapshotMeta { last_log_id, last_membership };
            let snapshot = snapshots.publish(&tmp, &meta)?;
            tracing::info!(last_log_id = ?meta.last_log_id, rows, "built snapshot");
            Ok(Snapshot { meta, snapshot })
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(index: u64) -> SnapshotMeta {
        let leader =
            <openraft::alias::LeaderIdOf<TypeConfig> as openraft::vote::RaftLeaderIdExt>::new_committed(1, 1);
        SnapshotMeta { last_log_id: Some(LogId::new(leader, index)), last_membership: Default::default() }
    }

    /// A reader looking for the current snapshot while newer ones are published (each
    /// removing the older) always gets one it can open: a "not found" here used to stop a
    /// member's Raft with a fatal storage error.
    #[test]
    fn current_snapshot_is_openable_while_newer_ones_are_published() {
        const PUBLISHED: u64 = 1000;
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotDir::new(dir.path().to_path_buf()).unwrap();
        let publisher_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let publisher = {
            let snapshots = snapshots.clone();
            let publisher_done = publisher_done.clone();
            std::thread::spawn(move || {
                for index in 1..=PUBLISHED {
                    let tmp = snapshots.temp_path();
                    std::fs::write(&tmp, index.to_le_bytes()).unwrap();
                    snapshots.publish(&tmp, &meta(index)).unwrap();
                }
                publisher_done.store(true, std::sync::atomic::Ordering::Relaxed);
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let snapshots = snapshots.clone();
                let publisher_done = publisher_done.clone();
                std::thread::spawn(move || {
                    let mut seen = 0;
                    while !publisher_done.load(std::sync::atomic::Ordering::Relaxed) {
                        if let Some((meta, SnapshotFile { mut file, .. })) = snapshots.current().unwrap() {
                            let mut bytes = [0u8; 8];
                            std::io::Read::read_exact(&mut file, &mut bytes).unwrap();
                            assert_eq!(u64::from_le_bytes(bytes), meta.last_log_id.unwrap().index);
                            seen += 1;
                        }
                    }
                    seen
                })
            })
            .collect();
        publisher.join().unwrap();
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
        let (last, _) = snapshots.current().unwrap().unwrap();
        assert_eq!(last.last_log_id.unwrap().index, PUBLISHED);
    }
}
