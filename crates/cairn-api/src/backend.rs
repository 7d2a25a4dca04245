//! The one seam under the etcd API: [`Backend`]. The Raft-replicated store implements it
//! (and later the SQL adapter); the gRPC services do not know which one they serve.

use std::future::Future;

use cairn_mvcc::{MvccError, RevisionEvents, WriteRequest, WriteResponse};
use cairn_proto::etcdserverpb::{LeaseGrantResponse, RangeRequest, RangeResponse};

/// Why a backend operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The request itself was refused by etcd's semantics (compacted, future revision, …).
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    /// No leader is known: the cluster has no quorum right now.
    #[error("no leader")]
    NoLeader,
    /// The cluster did not answer in time; the write may or may not have happened.
    #[error("request timed out")]
    Timeout,
    /// A proposal was lost to a leader change; it may or may not have happened.
    #[error("leader changed")]
    LeaderChanged,
    /// This member is shutting down.
    #[error("server stopped")]
    Stopped,
}

/// A member of the cluster, as the Cluster API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// What every response header and the Maintenance status report about this member.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberStatus {
    pub cluster_id: u64,
    pub member_id: u64,
    pub raft_term: u64,
    pub leader: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub is_learner: bool,
}

/// A lease's time as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTime {
    /// Whole seconds left before the lease expires.
    pub remaining: i64,
    /// The TTL it was granted with.
    pub granted: i64,
}

/// etcd semantics behind the API: ranges, replicated writes, and member status.
///
/// Requests arrive validated (see `cairn_mvcc::validate`); responses carry the revision in
/// their header and the service fills in the rest of the header from [`Backend::status`].
pub trait Backend: Send + Sync + 'static {
    /// A Range: linearizable unless `req.serializable`.
    fn range(&self, req: RangeRequest) -> impl Future<Output = Result<RangeResponse, BackendError>> + Send;

    /// A Put, DeleteRange, Txn or Compaction, replicated and applied. A Txn that only reads
    /// may be served without replication (linearizably).
    fn write(&self, req: WriteRequest) -> impl Future<Output = Result<WriteResponse, BackendError>> + Send;

    /// The revision this member's applied state is at, as it changes (watchers wait on it).
    fn revision_updates(&self) -> tokio::sync::watch::Receiver<i64>;

    /// The events of revisions `from..=to` (at most `max_revisions` of them) from this
    /// member's applied state; `Compacted` if `from` is below the compacted revision.
    fn events(
        &self,
        from: i64,
        to: i64,
        max_revisions: usize,
        with_prev_kv: bool,
    ) -> Result<Vec<RevisionEvents>, BackendError>;

    /// (current, compacted) revision of this member's applied state.
    fn revisions(&self) -> Result<(i64, i64), BackendError>;

    /// Cheap: called for every response header.
    fn status(&self) -> MemberStatus;

    /// Bytes the store occupies on disk (approximate; may be slow).
    fn db_size(&self) -> i64;

    /// The members and where they serve (asks the others; may take a round trip).
    fn members(&self) -> impl Future<Output = Vec<Member>> + Send;

    /// Grant a lease; `id` 0 lets the backend choose one. A TTL below the backend's
    /// minimum is raised to it. (Revoke is a [`WriteRequest::LeaseRevoke`] write.)
    fn lease_grant(
        &self,
        id: i64,
        ttl: i64,
    ) -> impl Future<Output = Result<LeaseGrantResponse, BackendError>> + Send;

    /// A keepalive: restart the lease's timer and return its TTL, or 0 if it does not exist.
    fn lease_renew(&self, id: i64) -> impl Future<Output = Result<i64, BackendError>> + Send;

    /// The lease's time, or `None` if it does not exist.
    fn lease_time(&self, id: i64) -> impl Future<Output = Result<Option<LeaseTime>, BackendError>> + Send;

    /// Every lease id.
    fn leases(&self) -> Result<Vec<i64>, BackendError>;

    /// The keys attached to a lease.
    fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, BackendError>;
}
