//! The glue between the etcd API and the replicated store: [`RaftBackend`] implements
//! `cairn_api::Backend` on a `cairn_raft::RaftNode`.

use cairn_api::{Backend, BackendError, LeaseTime, Member, MemberStatus};
use cairn_mvcc::{is_read_only, is_serializable, WriteRequest, WriteResponse};
use cairn_proto::etcdserverpb::{LeaseGrantResponse, RangeRequest, RangeResponse};
use cairn_raft::{RaftNode, ReplicationError};

pub struct RaftBackend {
    pub(crate) node: RaftNode,
    pub(crate) data_dir: std::path::PathBuf,
}

fn from_replication(e: ReplicationError) -> BackendError {
    match e {
        ReplicationError::Mvcc(m) => BackendError::Mvcc(m),
        ReplicationError::NoLeader => BackendError::NoLeader,
        ReplicationError::Timeout => BackendError::Timeout,
        ReplicationError::LeaderChanged => BackendError::LeaderChanged,
        ReplicationError::Stopped => BackendError::Stopped,
    }
}

impl Backend for RaftBackend {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, BackendError> {
        if !req.serializable {
            self.node.linearize().await.map_err(from_replication)?;
        }
        Ok(self.node.store().range(&req)?)
    }

    async fn write(&self, req: WriteRequest) -> Result<WriteResponse, BackendError> {
        if let WriteRequest::Txn(t) = &req {
            if is_read_only(t) {
                if !is_serializable(t) {
                    self.node.linearize().await.map_err(from_replication)?;
                }
                return Ok(WriteResponse::Txn(self.node.store().read_txn(t)?));
            }
        }
        self.node.write(req).await.map_err(from_replication)
    }

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

    fn revision_updates(&self) -> tokio::sync::watch::Receiver<i64> {
        self.node.revision_updates()
    }

    fn events(
        &self,
        from: i64,
        to: i64,
        max_revisions: usize,
        with_prev_kv: bool,
    ) -> Result<Vec<cairn_mvcc::RevisionEvents>, BackendError> {
        Ok(self.node.store().events(from, to, max_revisions, with_prev_kv)?)
    }

    fn revisions(&self) -> Result<(i64, i64), BackendError> {
        Ok(self.node.store().revisions()?)
    }

    fn db_size(&self) -> i64 {
        dir_size(&self.data_dir) as i64
    }

    async fn members(&self) -> Vec<Member> {
        let members = self.node.members();
        let urls = futures::future::join_all(members.iter().map(|(id, _)| self.node.member_client_urls(*id)));
        members
            .into_iter()
            .zip(urls.await)
            .map(|((id, node), client_urls)| Member {
                id,
                name: node.name,
                peer_urls: vec![format!("http://{}", node.peer_addr)],
                client_urls,
                is_learner: false,
            })
            .collect()
    }

    async fn lease_grant(&self, id: i64, ttl: i64) -> Result<LeaseGrantResponse, BackendError> {
        self.node.lease_grant(id, ttl).await.map_err(from_replication)
    }

    async fn lease_renew(&self, id: i64) -> Result<i64, BackendError> {
        self.node.lease_renew(id).await.map_err(from_replication)
    }

    async fn lease_time(&self, id: i64) -> Result<Option<LeaseTime>, BackendError> {
        let time = self.node.lease_remaining(id).await.map_err(from_replication)?;
        Ok(time.map(|t| LeaseTime { remaining: t.remaining, granted: t.granted }))
    }

    fn leases(&self) -> Result<Vec<i64>, BackendError> {
        Ok(self.node.store().leases()?.into_iter().map(|l| l.id).collect())
    }

    fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, BackendError> {
        Ok(self.node.store().lease_keys(id)?)
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
