//! Offline operations on a stopped member's data directory: restoring a backup into a new
//! data directory (`cairn snapshot restore`), and making a survivor a cluster of one when
//! the others are gone for good (`cairn recover --force-new-cluster`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_mvcc::{Family, MvccError, MvccStore, RocksEngine};
use openraft::entry::RaftEntry;
use openraft::vote::RaftLeaderId;
use openraft::{EntryPayload, Membership};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions};

use crate::codec;
use crate::log_store::{CF_LOG, CF_META};
use crate::storage::{open_data_dir, OpenError};
use crate::types::{node_id_of, Entry, LogId, NodeId, PeerNode, StoredMembership, Vote};

/// Why an offline operation failed. Nothing was changed unless it says so.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("{0} is not empty: restore into a new data directory")]
    NotEmpty(PathBuf),
    #[error("cannot read the backup {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the backup {path} cannot be restored: {source}")]
    Backup { path: PathBuf, source: MvccError },
    #[error("the data directory holds no cluster configuration that names this member ({0:x})")]
    NotAMember(NodeId),
    #[error("the data directory's Raft state: {0}")]
    Storage(String),
}

fn storage<E: std::fmt::Display>(e: E) -> RecoverError {
    RecoverError::Storage(e.to_string())
}

/// What a restore produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub rows: u64,
    pub revision: i64,
    pub compacted: i64,
}

/// Create the new data directory `data_dir` holding the keyspace of `backup` (keys,
/// history, revisions, compaction point, leases), and no cluster: the member started on it
/// founds a new cluster with its `--initial-cluster`. The backup is checked whole (its
/// SHA-256) before anything is written.
pub fn restore_backup(backup: &Path, data_dir: &Path) -> Result<Restored, RecoverError> {
    if std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(RecoverError::NotEmpty(data_dir.to_path_buf()));
    }
    let read = |source| RecoverError::Read { path: backup.to_path_buf(), source };
    let mut file = std::fs::File::open(backup).map_err(read)?;
    let bad = |source| RecoverError::Backup { path: backup.to_path_buf(), source };
    cairn_mvcc::verify_backup(&mut file).map_err(bad)?;
    let dir = open_data_dir(data_dir)?;
    let store = MvccStore::new(Arc::new(RocksEngine::new(dir.db.clone())));
    // The old cluster's Raft position, membership and member attributes stay behind.
    let keep = |family: Family, key: &[u8]| {
        !(family == Family::Meta && (key.starts_with(b"raft/") || key.starts_with(b"member/")))
    };
    let rows = store.restore_backup(&mut file, &keep).map_err(bad)?;
    let (revision, compacted) = store.revisions().map_err(bad)?;
    Ok(Restored { rows, revision, compacted })
}

/// Run `read` on the keyspace of a stopped member's data directory (which must exist and
/// not be in use): for offline copies such as `cairn migrate`.
pub fn read_stopped_store<T>(
    data_dir: &Path,
    read: impl FnOnce(&MvccStore) -> Result<T, MvccError>,
) -> Result<T, RecoverError> {
    if std::fs::read_dir(data_dir).map_or(true, |mut entries| entries.next().is_none()) {
        return Err(RecoverError::Storage(format!("{} holds no data directory", data_dir.display())));
    }
    let dir = open_data_dir(data_dir)?;
    let store = MvccStore::new(Arc::new(RocksEngine::new(dir.db.clone())));
    read(&store).map_err(|source| RecoverError::Backup { path: data_dir.to_path_buf(), source })
}

/// What `force_new_cluster` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedCluster {
    pub member_id: NodeId,
    /// The members dropped from the configuration.
    pub dropped: Vec<(NodeId, PeerNode)>,
    /// The last log index this member held: everything up to it is kept, committed or not.
    pub last_index: u64,
}

/// Make the member whose stopped data directory this is the only voter of its cluster: a
/// configuration naming only it is appended to its log, under a term above any it has seen.
/// Started, it elects itself and commits its whole log — so what it holds survives, entries
/// it had not yet seen committed included, and writes the lost members acknowledged that
/// never reached it are gone. `name`: this member's name (for data directories of 0.1,
/// which do not store the member id).
/// `sealer`: the cluster key's, when the log is sealed (secrets at rest).
pub fn force_new_cluster(
    data_dir: &Path,
    name: &str,
    sealer: Option<&cairn_core::seal::Sealer>,
) -> Result<ForcedCluster, RecoverError> {
    let dir = open_data_dir(data_dir)?;
    let db = &dir.db;
    let meta = db.cf_handle(CF_META).expect("raft_meta family");
    let log = db.cf_handle(CF_LOG).expect("raft_log family");
    let id = match db.get_cf(meta, crate::node::KEY_MEMBER_ID).map_err(storage)? {
        Some(b) => {
            u64::from_be_bytes(b.as_slice().try_into().map_err(|_| storage("member id: not 8 bytes"))?)
        }
        None => node_id_of(name),
    };

    // The configuration in force: the newest in the log, else the state machine's.
    let mut last_log: Option<LogId> = None;
    let mut membership: Option<Membership<NodeId, PeerNode>> = None;
    for item in db.iterator_cf(log, IteratorMode::End) {
        let (k, v) = item.map_err(storage)?;
        let index = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| storage("log key: not 8 bytes"))?);
        let entry: Entry = crate::log_store::decode_entry(index, &v, sealer).map_err(storage)?;
        last_log.get_or_insert(entry.log_id);
        if let Some(m) = entry.get_membership() {
            membership = Some(m);
            break;
        }
    }
    let store = MvccStore::new(Arc::new(RocksEngine::new(db.clone())));
    let applied = crate::state_machine::read_applied(&store).map_err(storage)?;
    if last_log.is_none() {
        let purged: Option<LogId> =
            match db.get_cf(meta, crate::log_store::KEY_LAST_PURGED).map_err(storage)? {
                Some(b) => Some(codec::decode(&b).map_err(storage)?),
                None => None,
            };
        last_log = purged.or(applied.0);
    }
    let membership: Membership<NodeId, PeerNode> =
        membership.unwrap_or_else(|| StoredMembership::membership(&applied.1).clone());
    let nodes: BTreeMap<NodeId, PeerNode> = membership.nodes().map(|(n, node)| (*n, node.clone())).collect();
    let me = nodes.get(&id).cloned().ok_or(RecoverError::NotAMember(id))?;
    let dropped: Vec<(NodeId, PeerNode)> = nodes.into_iter().filter(|(n, _)| *n != id).collect();

    let vote: Option<Vote> = match db.get_cf(meta, crate::log_store::KEY_VOTE).map_err(storage)? {
        Some(b) => Some(codec::decode(&b).map_err(storage)?),
        None => None,
    };
    let seen_term = vote.as_ref().map_or(0, |v| v.leader_id().term());
    let log_term = last_log.as_ref().map_or(0, |l| l.committed_leader_id().term());
    let term = seen_term.max(log_term) + 1;
    let new_vote = Vote::new(term, id);
    let last_index = last_log.as_ref().map_or(0, |l| l.index);
    let index = last_log.as_ref().map_or(0, |l| l.index + 1);
    let alone = Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, me)])).map_err(storage)?;
    let entry = Entry::new_membership(LogId::new(new_vote.leader_id().to_committed(), index), alone);
    debug_assert!(matches!(entry.payload, EntryPayload::Membership(_)));

    let mut batch = WriteBatch::default();
    batch.put_cf(meta, crate::log_store::KEY_VOTE, codec::encode(&new_vote).map_err(storage)?);
    let stored = crate::log_store::encode_entry(&entry, sealer).map_err(storage)?;
    batch.put_cf(log, index.to_be_bytes(), stored);
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts).map_err(storage)?;
    Ok(ForcedCluster { member_id: id, dropped, last_index })
}
