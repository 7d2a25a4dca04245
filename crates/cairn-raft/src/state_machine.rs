//! The Raft state machine: committed entries applied to the MVCC engine in batches, and
//! snapshots that are the engine's own state.
//!
//! Each apply call writes all of its entries, and the last applied log id and membership,
//! in one atomic `WriteBatch`; responses go out only after that write. On restart openraft
//! reads the last applied log id back and re-applies only what follows it.
//!
//! Snapshots cost nothing until one is sent (etcd's model: the backend is the snapshot).
//! The applied state is already durable in RocksDB, so "building" a snapshot only reads the
//! last applied log id and membership, which lets openraft purge the log behind it. Its rows
//! are written to a file only when a lagging member needs them, by the task that sends them
//! ([`SnapshotData::into_file`]), from one RocksDB snapshot, with the log id that view is
//! at. (Until 0.2 every member wrote its whole keyspace, history included, to a file every
//! `--snapshot-count` entries, all members at about the same time: the worst put latencies
//! of a long run came from those builds.)

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use cairn_core::{WriteRequest, WriteResponse, INITIAL_REVISION};
use cairn_mvcc::{MvccError, MvccStore};
use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tokio::sync::watch;

use crate::applied::AppliedIndex;
use crate::codec;
use crate::types::{Command, CommandResult, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use cairn_core::lessor::Lessor;

const META_LAST_APPLIED: &[u8] = b"raft/last_applied";
const META_MEMBERSHIP: &[u8] = b"raft/membership";

/// A snapshot file (received from the leader, or written for sending) and an open handle
/// on it.
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub file: File,
}

/// What a snapshot's rows are.
pub enum SnapshotData {
    /// Written out already: a snapshot received from the leader.
    File(SnapshotFile),
    /// The state machine's own state, written out when sent ([`SnapshotData::into_file`]).
    Live { store: MvccStore, snapshots: SnapshotDir },
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotData::File(file) => f.debug_tuple("File").field(&file.path).finish(),
            SnapshotData::Live { .. } => f.write_str("Live"),
        }
    }
}

impl SnapshotData {
    /// The rows as a file, and the meta they are at when they had to be written out now
    /// (`None`: a file already, at the meta it came with). A live snapshot is written from
    /// one RocksDB snapshot of the current state — at or past the meta openraft was given,
    /// which is as good a snapshot (every applied entry is committed). Blocking.
    pub fn into_file(self) -> io::Result<(Option<SnapshotMeta>, File)> {
        match self {
            SnapshotData::File(SnapshotFile { mut file, .. }) => {
                file.seek(SeekFrom::Start(0))?;
                Ok((None, file))
            }
            SnapshotData::Live { store, snapshots } => {
                let path = snapshots.temp_path();
                let written = (|| {
                    let file = File::options().read(true).write(true).create_new(true).open(&path)?;
                    let mut out = BufWriter::new(file);
                    let (rows, meta_rows) = store
                        .write_snapshot(&mut out, &[META_LAST_APPLIED, META_MEMBERSHIP])
                        .map_err(mvcc_io)?;
                    let mut file = out.into_inner().map_err(|e| e.into_error())?;
                    file.seek(SeekFrom::Start(0))?;
                    let (last_log_id, last_membership) =
                        decode_applied(meta_rows[0].as_deref(), meta_rows[1].as_deref())?;
                    let meta = SnapshotMeta { last_log_id, last_membership };
                    tracing::info!(last_log_id = ?meta.last_log_id, rows, "wrote a snapshot to send");
                    Ok((Some(meta), file))
                })();
                // Read through the open handle; nothing on disk outlives the send.
                let _ = std::fs::remove_file(&path);
                written
            }
        }
    }
}

/// Where snapshot files live while they are received or sent.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    /// The directory, emptied: what is left there is an unfinished transfer, or a snapshot
    /// file of a release before 0.2 (the state machine holds the same state or newer: such
    /// files were written from it, or installed into it before they were kept).
    pub fn new(dir: PathBuf) -> io::Result<SnapshotDir> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_file() {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(SnapshotDir { dir })
    }

    /// A fresh temporary file for an incoming or outgoing snapshot.
    pub fn temp_path(&self) -> PathBuf {
        self.dir.join(format!("incoming-{:016x}.tmp", cairn_core::sim::random_u64()))
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
    /// The applied log index, for requests that wait for it.
    applied_index: AppliedIndex,
    applied: crate::applied::Publisher,
}

impl StateMachine {
    pub fn new(store: MvccStore, snapshots: SnapshotDir, lessor: Arc<Lessor>) -> io::Result<StateMachine> {
        let current = store.revisions().map_or(INITIAL_REVISION, |(rev, _)| rev);
        let (revision, _) = watch::channel(current);
        lessor.reload(&store.leases().map_err(mvcc_io)?);
        let alarms = crate::alarms::Raised::default();
        crate::alarms::reload(&store, &alarms).map_err(mvcc_io)?;
        let auth = crate::auth::AuthMirror::load(&store).map_err(mvcc_io)?;
        let (last_applied, _) = read_applied(&store)?;
        let applied_index = AppliedIndex::new(last_applied.map_or(0, |l| l.index));
        let applied = applied_index.publisher();
        Ok(StateMachine { store, snapshots, revision, lessor, alarms, auth, applied_index, applied })
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

    /// The applied log index, updated after every applied batch and installed snapshot.
    pub fn applied_index(&self) -> AppliedIndex {
        self.applied_index.clone()
    }

    /// The applied revision, updated after every applied batch and installed snapshot.
    pub fn revision_updates(&self) -> watch::Receiver<i64> {
        self.revision.subscribe()
    }
}

fn mvcc_io(e: MvccError) -> io::Error {
    io::Error::other(e)
}

pub(crate) fn read_applied(store: &MvccStore) -> io::Result<(Option<LogId>, StoredMembership)> {
    let last = store.get_meta(META_LAST_APPLIED).map_err(mvcc_io)?;
    let membership = store.get_meta(META_MEMBERSHIP).map_err(mvcc_io)?;
    decode_applied(last.as_deref(), membership.as_deref())
}

/// The applied point from its two rows (absent: nothing applied, the default membership).
fn decode_applied(
    last: Option<&[u8]>,
    membership: Option<&[u8]>,
) -> io::Result<(Option<LogId>, StoredMembership)> {
    let last: Option<LogId> = match last {
        Some(b) => codec::decode(b)?,
        None => None,
    };
    let membership = match membership {
        Some(b) => codec::decode(b)?,
        None => StoredMembership::default(),
    };
    Ok((last, membership))
}

/// The live snapshot at the applied point `applied`.
fn live_snapshot(
    store: &MvccStore,
    snapshots: &SnapshotDir,
    (last_log_id, last_membership): (Option<LogId>, StoredMembership),
) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta { last_log_id, last_membership },
        snapshot: SnapshotData::Live { store: store.clone(), snapshots: snapshots.clone() },
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
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
            crate::probe::mark(entry.log_id.index, crate::probe::Stage::ApplyIn);
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
        if let Some(l) = last {
            crate::probe::mark(l.index, crate::probe::Stage::ApplyCommitted);
        }
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
        if let Some(l) = last {
            self.applied.applied(l.index);
        }
        crate::metrics::record_apply(replies.len(), apply_started.elapsed(), commit_took);
        for (responder, result) in replies {
            if let Some(r) = responder {
                r.send(result);
            }
        }
        if let Some(l) = last {
            crate::probe::mark(l.index, crate::probe::Stage::Responded);
        }
        Ok(())
    }

    /// Runs between applies, so the point read here is exactly the applied state.
    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            applied: Some(read_applied(&self.store)),
            store: self.store.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> io::Result<()> {
        let store = self.store.clone();
        let meta = meta.clone();
        let installed = cairn_core::sim::run_blocking(move || {
            // A live snapshot is another state machine's (openraft's storage tests hand one
            // over directly): its rows are written out first, like any sent snapshot.
            let (_, file) = snapshot.into_file()?;
            store.install_snapshot(&mut BufReader::new(file)).map_err(mvcc_io)?;
            let (installed, _) = read_applied(&store)?;
            if installed != meta.last_log_id {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("snapshot data is at {installed:?} but its meta says {:?}", meta.last_log_id),
                ));
            }
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
        self.applied.applied(meta.last_log_id.map_or(0, |l| l.index));
        Ok(())
    }

    /// The applied state is the current snapshot: its log id and membership now (this runs
    /// between applies), its rows when sent.
    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let applied = read_applied(&self.store)?;
        if applied.0.is_none() {
            return Ok(None);
        }
        Ok(Some(live_snapshot(&self.store, &self.snapshots, applied)))
    }
}

/// "Builds" a snapshot: the log id and membership the applied state was at when openraft
/// asked for the builder (the rows are already durable where they are; see the module docs).
pub struct SnapshotBuilder {
    applied: Option<io::Result<(Option<LogId>, StoredMembership)>>,
    store: MvccStore,
    snapshots: SnapshotDir,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let applied = self.applied.take().unwrap_or_else(|| read_applied(&self.store));
        let applied = applied?;
        tracing::info!(last_log_id = ?applied.0, "snapshot point");
        Ok(live_snapshot(&self.store, &self.snapshots, applied))
    }
}
