//! The backend traits: what the etcd API needs from a store, split by capability. The
//! Raft-replicated store implements them (`cairn::RaftBackend`), and so will the SQL
//! adapter; the API services and the conformance suite see only these traits.
//!
//! # The contract every backend keeps
//! - **Revisions** are dense: every write that changes something takes the next revision
//!   (current + 1); a write that changes nothing (a delete of no key, a txn whose branch
//!   only reads) takes none. Revisions never go back, not across restarts either.
//! - **Publication**: [`WatchSource::revision_updates`] announces revision `r` only once
//!   every revision ≤ `r` is readable through [`WatchSource::events`] and
//!   [`KvBackend::range`] on this member, so a watcher never sees a gap.
//! - **Linearizable reads** (a Range without `serializable`, a read-only txn likewise)
//!   reflect every write acknowledged, by any member, before the read began. Serializable
//!   reads reflect at least every write this member acknowledged.
//! - **Leases**: which leases exist and which keys they carry is replicated state, read
//!   like any other; *when* a lease expires is decided by one clock (the Raft leader's, or
//!   the SQL adapter's), which turns expiry into an ordinary revoke write.
//! - **Errors**: [`BackendError`] says whether an operation certainly did not happen
//!   (refused, or no leader: safe to retry), may have happened (timeout, leader change,
//!   stop), or hit broken storage.
//! - **Cost**: [`ClusterBackend::status`] and [`MaintenanceBackend::db_size`] are called
//!   for every response and must not touch storage; every other read is async and does its
//!   scans off the async worker threads (a single lookup may run inline).

use std::future::Future;

use cairn_proto::etcdserverpb::{LeaseGrantResponse, RangeRequest, RangeResponse};

use crate::auth::{AuthChange, AuthState};
use crate::error::BackendError;
use crate::request::{
    Alarm, BackupStream, KvHash, LeaseTime, Member, MemberStatus, RevisionEvents, Revisions, WriteRequest,
    WriteResponse,
};

/// Reads and writes of the keyspace.
pub trait KvBackend: Send + Sync + 'static {
    /// A Range (validated by [`crate::validate::check_range`]): linearizable unless
    /// `req.serializable`. The response header carries the revision the read saw.
    fn range(&self, req: RangeRequest) -> impl Future<Output = Result<RangeResponse, BackendError>> + Send;

    /// A Put, DeleteRange, Txn, Compaction, lease grant or revoke, applied once (replicated
    /// where the backend replicates). A txn that only reads ([`crate::is_read_only`]) is
    /// served like a Range, without a write.
    fn write(&self, req: WriteRequest) -> impl Future<Output = Result<WriteResponse, BackendError>> + Send;

    /// [`KvBackend::write`] for a request whose permissions were checked against auth
    /// revision `auth_revision` (0: not checked, auth was off). A backend that applies
    /// writes later than it checks them refuses it with
    /// [`RequestError::AuthOldRevision`](crate::RequestError::AuthOldRevision) when the auth
    /// state changed in between (etcd's re-check at apply); by default it is a plain write.
    fn write_checked(
        &self,
        req: WriteRequest,
        auth_revision: u64,
    ) -> impl Future<Output = Result<WriteResponse, BackendError>> + Send {
        let _ = auth_revision;
        self.write(req)
    }

    /// Current and compacted revision of this member's readable state.
    fn revisions(&self) -> impl Future<Output = Result<Revisions, BackendError>> + Send;
}

/// The history of changes, for watches.
pub trait WatchSource: Send + Sync + 'static {
    /// The newest revision readable on this member, as it changes (see the publication rule
    /// in the module docs).
    fn revision_updates(&self) -> tokio::sync::watch::Receiver<i64>;

    /// The events of revisions `from..=to` (at most `max_revisions` revisions that changed
    /// something), each with its previous key-value when `with_prev_kv`, from one
    /// consistent point in time. `from` below the compacted revision is
    /// [`crate::RequestError::Compacted`] (starting exactly at it is allowed).
    fn events(
        &self,
        from: i64,
        to: i64,
        max_revisions: usize,
        with_prev_kv: bool,
    ) -> impl Future<Output = Result<Vec<RevisionEvents>, BackendError>> + Send;
}

/// Leases: grants and revokes are writes; keepalives and time-to-live ask the one clock.
pub trait LeaseBackend: Send + Sync + 'static {
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

    /// Every lease id, in id order, as this member's state holds them.
    fn leases(&self) -> impl Future<Output = Result<Vec<i64>, BackendError>> + Send;

    /// The keys attached to a lease, in key order.
    fn lease_keys(&self, id: i64) -> impl Future<Output = Result<Vec<Vec<u8>>, BackendError>> + Send;
}

/// Who the members are and how this one is doing.
pub trait ClusterBackend: Send + Sync + 'static {
    /// This member's view of the cluster. Cheap: called for every response header.
    fn status(&self) -> MemberStatus;

    /// The members and where they serve.
    fn members(&self) -> impl Future<Output = Result<Vec<Member>, BackendError>> + Send;

    /// Add a member that will serve peers at `peer_url` (`host:port`): a learner, or a voter
    /// only if the started voters are a quorum of the larger cluster. Returns the new member
    /// and the members after the change (the new one included).
    fn member_add(
        &self,
        peer_url: String,
        is_learner: bool,
    ) -> impl Future<Output = Result<(Member, Vec<Member>), BackendError>> + Send;

    /// Move member `id` to another peer address (`host:port`); returns the members after.
    fn member_update(
        &self,
        id: u64,
        peer_url: String,
    ) -> impl Future<Output = Result<Vec<Member>, BackendError>> + Send;

    /// Remove member `id` (a voter only if enough started voters remain for a quorum);
    /// returns the members after the change.
    fn member_remove(&self, id: u64) -> impl Future<Output = Result<Vec<Member>, BackendError>> + Send;

    /// Make learner `id` a voter (only once it is in sync with the leader); returns the
    /// members after the change.
    fn member_promote(&self, id: u64) -> impl Future<Output = Result<Vec<Member>, BackendError>> + Send;

    /// Hand leadership to voter `target` (served by the leader only, as in etcd) and wait
    /// until it leads.
    fn move_leader(&self, target: u64) -> impl Future<Output = Result<(), BackendError>> + Send;
}

/// Operator-facing figures.
pub trait MaintenanceBackend: Send + Sync + 'static {
    /// Bytes the store occupies (approximate, may lag by seconds). Cheap: never touches
    /// storage on the caller's thread.
    fn db_size(&self) -> i64;

    /// etcd's HashKV: a hash of the keyspace's history up to `revision` (0: the current
    /// one); `Compacted` below the compacted revision, `FutureRevision` above the current.
    fn hash_kv(&self, revision: i64) -> impl Future<Output = Result<KvHash, BackendError>> + Send;

    /// A backup of the whole state at one point in time (etcd's `Maintenance.Snapshot`),
    /// in the backend's own format, ending with a SHA-256 of what precedes it.
    fn backup(&self) -> impl Future<Output = Result<BackupStream, BackendError>> + Send;

    /// etcd's Defragment, of this member's storage only: give back the space dead rows
    /// take. Changes no data.
    fn defragment(&self) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The fingerprint of the secret the members share (the cluster key), so that operators
    /// can see whether every member runs with the same one; "none" without a key.
    fn key_fingerprint(&self) -> String;

    /// Bytes the keyspace's data takes (etcd's backend size, which the space quota
    /// limits). Cheap: never touches storage on the caller's thread.
    fn space_used(&self) -> u64;

    /// The alarms raised in the cluster. Cheap: called for every write.
    fn alarms(&self) -> Vec<Alarm>;

    /// Raise (`activate`) or clear an alarm, for every member; once this returns,
    /// [`MaintenanceBackend::alarms`] on this member shows the change.
    fn set_alarm(
        &self,
        alarm: Alarm,
        activate: bool,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}

/// etcd's auth: the users, roles and permissions every member applies alike, and the simple
/// tokens that stand for users.
pub trait AuthBackend: Send + Sync + 'static {
    /// The auth state as this member has applied it. Cheap: every request is checked
    /// against it.
    fn auth_state(&self) -> std::sync::Arc<AuthState>;

    /// Apply `change` on every member (refused with etcd's error, or applied whole); once
    /// this returns, [`AuthBackend::auth_state`] on this member shows it.
    fn auth_change(&self, change: AuthChange) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Make a new token stand for `user` on every member, and return it. The caller has
    /// checked the password.
    fn assign_token(&self, user: String) -> impl Future<Output = Result<String, BackendError>> + Send;

    /// The user `token` stands for on this member, if any (using it keeps it alive).
    fn token_user(&self, token: &str) -> Option<String>;

    /// Waits until this member has applied every change committed before the call (a
    /// linearizable read point), so that [`AuthBackend::auth_state`] is current after it:
    /// etcd's Authenticate does this first, so that a member behind the leader does not
    /// answer "authentication is not enabled" just after auth was enabled elsewhere. A
    /// backend that applies changes where it serves them has nothing to wait for.
    fn auth_read_point(&self) -> impl Future<Output = Result<(), BackendError>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Everything the etcd API needs: implemented for every type with all the capabilities.
pub trait Backend:
    KvBackend + WatchSource + LeaseBackend + ClusterBackend + MaintenanceBackend + AuthBackend
{
}

impl<T: KvBackend + WatchSource + LeaseBackend + ClusterBackend + MaintenanceBackend + AuthBackend> Backend
    for T
{
}

/// Run `work` on tokio's blocking pool (the contract above: scans stay off the async
/// workers); inline in a deterministic simulation ([`crate::sim`]). A task cancelled before
/// it ran means the runtime is stopping ([`BackendError::Stopped`]); a panic in `work` stays
/// a panic.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    if crate::sim::is_simulated() {
        return work();
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_cancelled() => Err(BackendError::Stopped),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
