//! The request/response model of a backend: the etcd writes that change state, their
//! results, the events of a revision, and what leases and members look like.

use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, TxnRequest,
    TxnResponse,
};
use cairn_proto::mvccpb::Event;

/// The revision of an empty store, as in etcd: the first write gets revision 2.
pub const INITIAL_REVISION: i64 = 1;

/// The largest TTL a lease may be granted with, in seconds (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// A write: one of the etcd requests that change state.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteRequest {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    /// The proposer has chosen the id (never 0) and applied the minimum TTL.
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
}

/// The result of applying a [`WriteRequest`]. Headers carry only the revision; the API
/// fills in cluster, member and term.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
}

impl WriteResponse {
    /// The store's revision this response was made at (its header's).
    pub fn revision(&self) -> i64 {
        let header = match self {
            WriteResponse::Put(r) => &r.header,
            WriteResponse::DeleteRange(r) => &r.header,
            WriteResponse::Txn(r) => &r.header,
            WriteResponse::Compact(r) => &r.header,
            WriteResponse::LeaseGrant(r) => &r.header,
            WriteResponse::LeaseRevoke(r) => &r.header,
        };
        header.as_ref().map_or(0, |h| h.revision)
    }
}

/// All events of one revision, in the order they happened.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionEvents {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// A hash of the keyspace's history up to a revision (etcd's HashKV): equal on every
/// member that applied the same writes (and compactions), so members can be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    /// The compacted revision when the hash was taken.
    pub compact_revision: i64,
    /// The revision the hash covers (the requested one, or the current one for 0).
    pub revision: i64,
}

/// A raised alarm (etcd's AlarmMember): the member that raised it and etcd's AlarmType
/// number (1: NOSPACE, 2: CORRUPT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Alarm {
    pub member_id: u64,
    pub alarm: i32,
}

/// A backup on its way out (etcd's `Maintenance.Snapshot`): its size and its bytes, in
/// order, in chunks. The last bytes are a SHA-256 of all before them (see `cairn-mvcc`).
#[derive(Debug)]
pub struct BackupStream {
    pub size: u64,
    /// The revision the backup holds the keyspace at.
    pub revision: i64,
    pub chunks: tokio::sync::mpsc::Receiver<Result<Vec<u8>, crate::BackendError>>,
}

impl BackupStream {
    /// Stream `file` (`size` bytes, read from its start) in 1 MiB chunks from a thread of
    /// its own, so that neither the caller nor an async worker waits on the disk. A read
    /// error ends the stream with that error; a receiver that goes away stops the reading.
    pub fn from_file(file: std::fs::File, size: u64, revision: i64) -> BackupStream {
        use std::io::Read;
        let (tx, chunks) = tokio::sync::mpsc::channel(4);
        std::thread::spawn(move || {
            let mut file = std::io::BufReader::new(file);
            loop {
                let mut chunk = vec![0u8; 1 << 20];
                let n = match file.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(crate::BackendError::Storage(std::sync::Arc::new(e))));
                        return;
                    }
                };
                chunk.truncate(n);
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return;
                }
            }
        });
        BackupStream { size, revision, chunks }
    }
}

/// Where a store's history stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revisions {
    /// The revision of the newest write ([`INITIAL_REVISION`] when empty).
    pub current: i64,
    /// Reads and watches below this revision are refused (0: never compacted).
    pub compacted: i64,
}

/// Whether a txn (with every nested txn, in both branches) only reads.
pub fn is_read_only(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).all(|op| match &op.request {
        Some(Request::RequestRange(_)) => true,
        Some(Request::RequestTxn(inner)) => is_read_only(inner),
        _ => false,
    })
}

/// Whether every range of a read-only txn asks for a serializable read.
pub fn is_serializable(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).all(|op| match &op.request {
        Some(Request::RequestRange(r)) => r.serializable,
        Some(Request::RequestTxn(inner)) => is_serializable(inner),
        _ => false,
    })
}

/// A lease as stored: its id and the TTL it was granted with (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub ttl: i64,
}

/// A lease's time as the member that keeps its clock sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTime {
    /// Whole seconds left before the lease expires.
    pub remaining: i64,
    /// The TTL it was granted with.
    pub granted: i64,
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
