//! The peer transport, server side: the `cairnpb.Peer` gRPC service on the peer port.

use std::fs::File;
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ReadPolicy;
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use crate::codec;
use crate::lessor::{LeaseError, Lessor};
use crate::pb::peer_server::Peer;
use crate::pb::{
    LeaseRemainingResponse, LeaseRenewRequest, LeaseRenewResponse, MemberInfoRequest, MemberInfoResponse,
    RaftPayload, ReadIndexRequest, ReadIndexResponse, SnapshotChunk, WriteRequest, WriteResponse,
};
use crate::state_machine::{SnapshotDir, SnapshotFile};
use crate::types::{Command, Raft, Snapshot, SnapshotMeta, Vote};

/// The status message a leader-only RPC fails with on a non-leader; a forwarding node
/// retries on it (nothing was proposed).
pub const NOT_LEADER: &str = "cairn: not leader";

pub struct PeerService {
    pub raft: Raft,
    pub snapshots: SnapshotDir,
    pub name: String,
    /// Set once the client listener is bound (see `RaftNode::set_client_urls`).
    pub client_urls: Arc<OnceLock<Vec<String>>>,
    pub lessor: Arc<Lessor>,
}

impl PeerService {
    /// A lessor answer on the leader; a lease granted in an earlier term may not be applied
    /// here yet, so "not found" is only said after catching up to the read index.
    async fn ask_lessor<T>(
        &self,
        ask: impl Fn(&Lessor) -> Result<T, LeaseError>,
    ) -> Result<Option<T>, Status> {
        match ask(&self.lessor) {
            Ok(v) => return Ok(Some(v)),
            Err(LeaseError::NotPrimary) => return Err(Status::failed_precondition(NOT_LEADER)),
            Err(LeaseError::NotFound) => {}
        }
        let linearizer = self.raft.get_read_linearizer(ReadPolicy::ReadIndex).await.map_err(|e| match e {
            RaftError::APIError(openraft::error::LinearizableReadError::ForwardToLeader(_)) => {
                Status::failed_precondition(NOT_LEADER)
            }
            e => Status::unavailable(e.to_string()),
        })?;
        linearizer.await_ready(&self.raft).await.map_err(|e| Status::unavailable(e.to_string()))?;
        match ask(&self.lessor) {
            Ok(v) => Ok(Some(v)),
            Err(LeaseError::NotPrimary) => Err(Status::failed_precondition(NOT_LEADER)),
            Err(LeaseError::NotFound) => Ok(None),
        }
    }
}

fn bad_payload(e: std::io::Error) -> Status {
    Status::invalid_argument(format!("undecodable peer message: {e}"))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    Ok(Response::new(RaftPayload { data: codec::encode(v).map_err(|e| Status::internal(e.to_string()))? }))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = codec::decode(&req.into_inner().data).map_err(bad_payload)?;
        let resp = self.raft.append_entries(rpc).await.map_err(|e| Status::unavailable(e.to_string()))?;
        encode(&resp)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = codec::decode(&req.into_inner().data).map_err(bad_payload)?;
        let resp = self.raft.vote(rpc).await.map_err(|e| Status::unavailable(e.to_string()))?;
        encode(&resp)
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftPayload>, Status> {
        let mut chunks = req.into_inner();
        let first =
            chunks.next().await.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let vote: Vote = codec::decode(&first.vote).map_err(bad_payload)?;
        let meta: SnapshotMeta = codec::decode(&first.meta).map_err(bad_payload)?;
        let path = self.snapshots.temp_path();
        let received = async {
            let mut file = tokio::fs::File::create(&path).await?;
            file.write_all(&first.data).await?;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(std::io::Error::other)?;
                file.write_all(&chunk.data).await?;
            }
            file.sync_all().await?;
            File::open(&path)
        }
        .await;
        let file = match received {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(Status::aborted(format!("receiving snapshot: {e}")));
            }
        };
        let snapshot = Snapshot { meta, snapshot: SnapshotFile { path: path.clone(), file } };
        let resp = self.raft.install_full_snapshot(vote, snapshot).await;
        // On success the file was renamed into place; on failure drop it.
        let _ = std::fs::remove_file(&path);
        encode(&resp.map_err(|e| Status::unavailable(e.to_string()))?)
    }

    async fn forward(&self, req: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        let write = cairn_mvcc::WriteRequest::try_from(req.into_inner()).map_err(Status::invalid_argument)?;
        match self.raft.client_write(Command(write)).await {
            Ok(resp) => match resp.data.0 {
                Some(result) => Ok(Response::new(WriteResponse::from(result))),
                None => Err(Status::internal("a write entry applied without a result")),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(Status::failed_precondition(NOT_LEADER))
            }
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                Err(Status::unavailable("etcdserver: leader changed"))
            }
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        match self.raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
            Ok(linearizer) => {
                Ok(Response::new(ReadIndexResponse { index: linearizer.read_log_id().index() }))
            }
            Err(RaftError::APIError(openraft::error::LinearizableReadError::ForwardToLeader(_))) => {
                Err(Status::failed_precondition(NOT_LEADER))
            }
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn lease_renew(
        &self,
        req: Request<LeaseRenewRequest>,
    ) -> Result<Response<LeaseRenewResponse>, Status> {
        let id = req.into_inner().id;
        let ttl = self.ask_lessor(|l| l.renew(id)).await?.unwrap_or(0);
        Ok(Response::new(LeaseRenewResponse { ttl }))
    }

    async fn lease_remaining(
        &self,
        req: Request<LeaseRenewRequest>,
    ) -> Result<Response<LeaseRemainingResponse>, Status> {
        let id = req.into_inner().id;
        Ok(Response::new(match self.ask_lessor(|l| l.remaining(id)).await? {
            Some((remaining, granted)) => LeaseRemainingResponse { found: true, remaining, granted },
            None => LeaseRemainingResponse::default(),
        }))
    }

    async fn member_info(
        &self,
        _req: Request<MemberInfoRequest>,
    ) -> Result<Response<MemberInfoResponse>, Status> {
        Ok(Response::new(MemberInfoResponse {
            name: self.name.clone(),
            client_urls: self.client_urls.get().cloned().unwrap_or_default(),
        }))
    }
}
