//! The glue between the etcd API and the replicated store: [`RaftBackend`] implements the
//! backend traits of `cairn-core` on a `cairn_raft::RaftNode`. RocksDB scans run on tokio's
//! blocking pool, not on the async workers that openraft and the services share; a
//! single-key read (one lookup) runs inline.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_core::{
    is_read_only, is_serializable, Alarm, BackendError, BackupStream, ClusterBackend, KvBackend, KvHash,
    LeaseBackend, LeaseTime, MaintenanceBackend, Member, MemberStatus, RevisionEvents, Revisions,
    WatchSource, WriteRequest, WriteResponse,
};
use cairn_proto::etcdserverpb::{LeaseGrantResponse, RangeRequest, RangeResponse};
use cairn_raft::RaftNode;

/// How often the data directory's size is measured for `Status` (it walks the directory).
const DB_SIZE_REFRESH: Duration = Duration::from_secs(5);

/// How long the store's size, as the space quota sees it, is reused: reading it takes a
/// dozen RocksDB property reads under the database's mutex, and every put asks.
const SPACE_USED_REUSE: Duration = Duration::from_millis(10);

/// How often a member that has not published its attributes tries again (no leader yet,
/// or a member of an older version in the cluster).
const PUBLISH_RETRY: Duration = Duration::from_millis(200);

/// The etcd API's backend traits ([`cairn_core::KvBackend`] and the others) on the embedded
/// Raft member: what the gRPC services, the gateway and the in-process client run on.
pub struct RaftBackend {
    pub(crate) node: RaftNode,
    /// The data directory's size in bytes, as last measured (see [`DB_SIZE_REFRESH`]).
    db_size: Arc<AtomicI64>,
    db_size_task: tokio::task::JoinHandle<()>,
    data_dir: PathBuf,
    /// The store's size for the quota and when it was read (see [`SPACE_USED_REUSE`]).
    space_used: std::sync::Mutex<Option<(tokio::time::Instant, u64)>>,
}

/// Publish this member's attributes (name, URLs, version) into the replicated state once it
/// can, as etcd's members publish theirs after start; ends with the backend.
pub(crate) async fn publish_attributes(backend: std::sync::Weak<RaftBackend>) {
    loop {
        let Some(backend) = backend.upgrade() else { return };
        match backend.node.publish_self().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "publishing this member's attributes failed; retrying"),
        }
        drop(backend);
        tokio::time::sleep(PUBLISH_RETRY).await;
    }
}

impl RaftBackend {
    /// Resolves with the reason when the node's Raft stops on a fatal error (see
    /// [`RaftNode::failed`]): for callers of [`RaftBackend::serve_node`], which must then
    /// stop the node ([`RaftBackend::shutdown`]) as the binary does before it exits.
    pub async fn failed(&self) -> String {
        self.node.failed().await
    }

    /// Stop serving peers and shut the node's Raft down.
    pub async fn shutdown(&self) {
        self.node.shutdown().await
    }

    /// The backend of a started node (data directory `data_dir`) that serves clients at
    /// `client_urls`, publishing its attributes in the background: for callers that serve
    /// the API themselves (a deterministic simulation); [`crate::Node`] does all of this.
    pub fn serve_node(node: RaftNode, data_dir: PathBuf, client_urls: Vec<String>) -> Arc<RaftBackend> {
        node.set_client_urls(client_urls);
        let backend = Arc::new(RaftBackend::new(node, data_dir));
        tokio::spawn(publish_attributes(Arc::downgrade(&backend)));
        backend
    }

    pub(crate) fn new(node: RaftNode, data_dir: PathBuf) -> RaftBackend {
        let db_size = Arc::new(AtomicI64::new(0));
        let db_size_task = tokio::spawn(measure_db_size(data_dir.clone(), db_size.clone()));
        RaftBackend { node, db_size, db_size_task, data_dir, space_used: std::sync::Mutex::new(None) }
    }
}

impl Drop for RaftBackend {
    fn drop(&mut self) {
        self.db_size_task.abort();
    }
}

impl KvBackend for RaftBackend {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, BackendError> {
        if !req.serializable {
            self.node.linearize().await?;
        }
        // A single key is one lookup (memtable or a cached block, microseconds): cheaper than
        // the hop to the blocking pool, which cost a quarter to a third of single-key range
        // throughput at 256 clients (docs/benchmarks.md). Spans scan: off the async workers.
        if req.range_end.is_empty() {
            return Ok(self.node.store().range(&req)?);
        }
        self.node.read(move |store| store.range(&req)).await
    }

    async fn write(&self, req: WriteRequest) -> Result<WriteResponse, BackendError> {
        self.write_checked(req, 0).await
    }

    async fn write_checked(
        &self,
        req: WriteRequest,
        auth_revision: u64,
    ) -> Result<WriteResponse, BackendError> {
        if let WriteRequest::Txn(t) = req {
            if is_read_only(&t) {
                if !is_serializable(&t) {
                    self.node.linearize().await?;
                }
                return self.node.read(move |store| store.read_txn(&t)).await.map(WriteResponse::Txn);
            }
            return self.node.write_checked(WriteRequest::Txn(t), auth_revision).await;
        }
        self.node.write_checked(req, auth_revision).await
    }

    async fn revisions(&self) -> Result<Revisions, BackendError> {
        let (current, compacted) = self.node.read(|store| store.revisions()).await?;
        Ok(Revisions { current, compacted })
    }
}

impl WatchSource for RaftBackend {
    fn revision_updates(&self) -> tokio::sync::watch::Receiver<i64> {
        self.node.revision_updates()
    }

    async fn events(
        &self,
        from: i64,
        to: i64,
        max_revisions: usize,
        with_prev_kv: bool,
    ) -> Result<Vec<RevisionEvents>, BackendError> {
        self.node.read(move |store| store.events(from, to, max_revisions, with_prev_kv)).await
    }
}

impl LeaseBackend for RaftBackend {
    async fn lease_grant(&self, id: i64, ttl: i64) -> Result<LeaseGrantResponse, BackendError> {
        self.node.lease_grant(id, ttl).await
    }

    async fn lease_renew(&self, id: i64) -> Result<i64, BackendError> {
        self.node.lease_renew(id).await
    }

    async fn lease_time(&self, id: i64) -> Result<Option<LeaseTime>, BackendError> {
        self.node.lease_remaining(id).await
    }

    async fn leases(&self) -> Result<Vec<i64>, BackendError> {
        self.node.read(|store| Ok(store.leases()?.into_iter().map(|l| l.id).collect())).await
    }

    async fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, BackendError> {
        self.node.read(move |store| store.lease_keys(id)).await
    }
}

impl ClusterBackend for RaftBackend {
    fn status(&self) -> MemberStatus {
        let s = self.node.status();
        MemberStatus {
            cluster_id: s.cluster_id,
            member_id: s.member_id,
            raft_term: s.term,
            leader: s.leader.unwrap_or(0),
            raft_index: s.last_log_index,
            raft_applied_index: s.applied_index,
            is_learner: s.is_learner,
        }
    }

    async fn members(&self) -> Result<Vec<Member>, BackendError> {
        self.node.member_list().await
    }

    async fn member_add(
        &self,
        peer_url: String,
        is_learner: bool,
    ) -> Result<(Member, Vec<Member>), BackendError> {
        let change = cairn_raft::MemberChange::Add { peer_addr: peer_url, is_learner };
        let id = self.node.change_member(change).await?;
        let members = self.node.member_list().await?;
        let member = members.iter().find(|m| m.id == id).cloned().unwrap_or(Member {
            id,
            name: String::new(),
            peer_urls: Vec::new(),
            client_urls: Vec::new(),
            is_learner,
        });
        Ok((member, members))
    }

    async fn member_update(&self, id: u64, peer_url: String) -> Result<Vec<Member>, BackendError> {
        self.node.change_member(cairn_raft::MemberChange::Update { id, peer_addr: peer_url }).await?;
        self.node.member_list().await
    }

    async fn member_remove(&self, id: u64) -> Result<Vec<Member>, BackendError> {
        self.node.change_member(cairn_raft::MemberChange::Remove(id)).await?;
        self.node.member_list().await
    }

    async fn move_leader(&self, target: u64) -> Result<(), BackendError> {
        self.node.move_leader(target).await
    }

    async fn member_promote(&self, id: u64) -> Result<Vec<Member>, BackendError> {
        self.node.change_member(cairn_raft::MemberChange::Promote(id)).await?;
        self.node.member_list().await
    }
}

impl MaintenanceBackend for RaftBackend {
    fn db_size(&self) -> i64 {
        self.db_size.load(Ordering::Relaxed)
    }

    async fn hash_kv(&self, revision: i64) -> Result<KvHash, BackendError> {
        self.node.read(move |store| store.hash_kv(revision)).await
    }

    fn key_fingerprint(&self) -> String {
        self.node.key_fingerprint().to_string()
    }

    fn space_used(&self) -> u64 {
        let now = tokio::time::Instant::now();
        let mut cached = self.space_used.lock().unwrap_or_else(|e| e.into_inner());
        match *cached {
            Some((read_at, size)) if now.duration_since(read_at) < SPACE_USED_REUSE => size,
            _ => {
                let size = self.node.store().engine().approximate_size();
                *cached = Some((now, size));
                size
            }
        }
    }

    fn alarms(&self) -> Vec<Alarm> {
        self.node.alarms().into_iter().map(|(member_id, alarm)| Alarm { member_id, alarm }).collect()
    }

    async fn set_alarm(&self, alarm: Alarm, activate: bool) -> Result<(), BackendError> {
        self.node.set_alarm(alarm.member_id, alarm.alarm, activate).await?;
        // Committed through the leader; this member lists it once it has applied that far
        // (a NOSPACE raised here must show in this member's Alarm GET at once, as in etcd).
        self.node.linearize().await
    }

    async fn defragment(&self) -> Result<(), BackendError> {
        let defragmented = self.node.read(|store| store.engine().compact_storage()).await;
        // The space it gave back counts at once (etcd: defragment, then disarm NOSPACE).
        *self.space_used.lock().unwrap_or_else(|e| e.into_inner()) = None;
        defragmented
    }

    /// Staged in the data directory (the same file system as the data it copies).
    async fn backup(&self) -> Result<BackupStream, BackendError> {
        let dir = self.data_dir.clone();
        let (file, size, revision) = self.node.read(move |store| store.backup_file(&dir)).await?;
        Ok(BackupStream::from_file(file, size, revision))
    }
}

impl cairn_core::AuthBackend for RaftBackend {
    fn auth_state(&self) -> Arc<cairn_core::auth::AuthState> {
        self.node.auth_state()
    }

    async fn auth_change(&self, change: cairn_core::auth::AuthChange) -> Result<(), BackendError> {
        self.node.auth(cairn_raft::types::AuthCommand::Change(change)).await
    }

    async fn assign_token(&self, user: String) -> Result<String, BackendError> {
        let token = cairn_core::auth::Tokens::mint(self.node.status().applied_index + 1);
        self.node.auth(cairn_raft::types::AuthCommand::AssignToken { user, token: token.clone() }).await?;
        Ok(token)
    }

    fn token_user(&self, token: &str) -> Option<String> {
        self.node.token_user(token)
    }

    async fn auth_read_point(&self) -> Result<(), BackendError> {
        self.node.linearize().await
    }
}

/// Measure the data directory every [`DB_SIZE_REFRESH`], off the async workers.
async fn measure_db_size(data_dir: PathBuf, size: Arc<AtomicI64>) {
    let mut tick = tokio::time::interval(DB_SIZE_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let dir = data_dir.clone();
        if let Ok(bytes) = cairn_core::sim::run_blocking(move || dir_size(&dir)).await {
            size.store(i64::try_from(bytes).unwrap_or(i64::MAX), Ordering::Relaxed);
        }
    }
}

fn dir_size(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}
