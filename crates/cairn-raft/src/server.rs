//! The peer transport, server side: the `cairnpb.Peer` gRPC service on the peer port.

use std::fs::File;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use crate::codec;
use crate::leader::{self, LeaseQuestion};
use crate::pb::peer_server::Peer;
use crate::pb::{
    forwarded_result, ForwardFailure, ForwardedResult, ForwardedWrite, JoinRequest, JoinResponse,
    LeaseRemainingResponse, LeaseRenewRequest, LeaseRenewResponse, MemberAttributes, MemberChangeRequest,
    MemberChangeResponse, MemberInfoRequest, MemberInfoResponse, PublishResponse, RaftPayload,
    ReadIndexRequest, ReadIndexResponse, SnapshotChunk, WriteRequest, WriteResponse,
};
use crate::peer_error::PeerError;
use crate::state_machine::{SnapshotData, SnapshotDir, SnapshotFile};
use crate::types::{Raft, Snapshot, SnapshotMeta, TypeConfig, Vote};
use cairn_core::lessor::Lessor;

pub struct PeerService {
    pub raft: Raft,
    pub snapshots: SnapshotDir,
    pub name: String,
    /// Set once the client listener is bound (see `RaftNode::set_client_urls`).
    pub client_urls: Arc<OnceLock<Vec<String>>>,
    pub lessor: Arc<Lessor>,
    /// Turns true when the member shuts down: the long-lived streams (replication,
    /// forwarding) end then, or a graceful shutdown would wait for them forever.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// To pass a join on to the leader.
    pub channels: crate::network::PeerChannels,
    /// Known once this member founded or joined a cluster.
    pub cluster_id: Arc<OnceLock<u64>>,
    /// For membership changes decided here: the promotion policy's lag, and how recently a
    /// member must have answered to count as started (the election timeout).
    pub promotion: crate::autopilot::Promotion,
    pub contact: std::time::Duration,
    /// The state machine's store (which members ever started; HashKV for the leader's
    /// corruption check).
    pub store: cairn_mvcc::MvccStore,
    /// The applied revision, as it changes.
    pub revision: tokio::sync::watch::Receiver<i64>,
}

impl PeerService {
    /// `stream`, ended when the member starts shutting down.
    fn until_stopping<S: Stream + Send + 'static>(
        &self,
        stream: S,
    ) -> impl Stream<Item = S::Item> + Send + 'static {
        let mut stopping = self.stopping.clone();
        stream.take_until(async move {
            let _ = stopping.wait_for(|s| *s).await;
        })
    }
}

/// A forwarded write proposed on this member (which should lead), as the peer protocol
/// answers it.
async fn propose(raft: &Raft, write: WriteRequest) -> Result<WriteResponse, Status> {
    let auth_revision = write.auth_revision;
    let write =
        cairn_core::WriteRequest::try_from(write).map_err(|e| PeerError::Refused(e.into()).into_status())?;
    match leader::propose(raft, write, auth_revision).await {
        Ok(proposed) => {
            Ok(WriteResponse { log_index: proposed.log_index, ..WriteResponse::from(proposed.result) })
        }
        Err(failure) => Err(failure.into_status()),
    }
}

fn bad_payload(e: std::io::Error) -> Status {
    Status::invalid_argument(format!("undecodable peer message: {e}"))
}

fn payload<T: serde::Serialize>(v: &T) -> Result<RaftPayload, Status> {
    Ok(RaftPayload { data: codec::encode(v).map_err(|e| Status::internal(e.to_string()))? })
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    payload(v).map(Response::new)
}

type PayloadStream = Pin<Box<dyn Stream<Item = Result<RaftPayload, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = codec::decode(&req.into_inner().data).map_err(bad_payload)?;
        let resp = self.raft.append_entries(rpc).await.map_err(|e| Status::unavailable(e.to_string()))?;
        encode(&resp)
    }

    type StreamAppendStream = PayloadStream;

    /// The follower's end of pipelined replication: openraft's `stream_append` appends the
    /// requests in order and answers each once it is flushed (or with the first conflict).
    async fn stream_append(
        &self,
        req: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        // An undecodable request ends the input; the leader is told why after the answers
        // to the requests before it.
        let failure: Arc<Mutex<Option<Status>>> = Arc::default();
        let input = {
            let failure = failure.clone();
            req.into_inner().scan((), move |_, message| {
                let request = message.and_then(|p| {
                    codec::decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(&p.data)
                        .map_err(bad_payload)
                });
                futures::future::ready(match request {
                    Ok(r) => {
                        if let (Some(f), Some(l)) = (r.entries.first(), r.entries.last()) {
                            crate::probe::mark_range(
                                f.log_id.index,
                                l.log_id.index,
                                crate::probe::Stage::FollowerReceived,
                            );
                        }
                        Some(r)
                    }
                    Err(status) => {
                        *failure.lock().expect("stream failure slot poisoned") = Some(status);
                        None
                    }
                })
            })
        };
        let results = self.raft.stream_append(input).map(|result| match result {
            Ok(answer) => {
                if let Ok(Some(l)) = &answer {
                    crate::probe::mark(l.index, crate::probe::Stage::FollowerAnswered);
                }
                payload(&answer)
            }
            Err(fatal) => Err(Status::unavailable(fatal.to_string())),
        });
        let failure =
            futures::stream::once(
                async move { failure.lock().expect("stream failure slot poisoned").take() },
            )
            .filter_map(|f| futures::future::ready(f.map(Err)));
        Ok(Response::new(Box::pin(self.until_stopping(results.chain(failure)))))
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: crate::types::VoteRequest = codec::decode(&req.into_inner().data).map_err(bad_payload)?;
        if crate::reconfigure::was_removed(&self.raft, &rpc) {
            return Err(PeerError::Removed.into_status());
        }
        let resp = self.raft.vote(rpc).await.map_err(|e| Status::unavailable(e.to_string()))?;
        encode(&resp)
    }

    async fn transfer_leader(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: openraft::raft::TransferLeaderRequest<TypeConfig> =
            codec::decode(&req.into_inner().data).map_err(bad_payload)?;
        let resp =
            self.raft.handle_transfer_leader(rpc).await.map_err(|e| Status::unavailable(e.to_string()))?;
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
        let snapshot =
            Snapshot { meta, snapshot: SnapshotData::File(SnapshotFile { path: path.clone(), file }) };
        let resp = self.raft.install_full_snapshot(vote, snapshot).await;
        // Installed into the state machine (or refused): the file is done with.
        let _ = std::fs::remove_file(&path);
        encode(&resp.map_err(|e| Status::unavailable(e.to_string()))?)
    }

    async fn forward(&self, req: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        propose(&self.raft, req.into_inner()).await.map(Response::new)
    }

    type ForwardStreamStream = Pin<Box<dyn Stream<Item = Result<ForwardedResult, Status>> + Send + 'static>>;

    /// A follower's forwarded writes: each is proposed as it arrives (concurrently, so that
    /// openraft batches them) and answered with its id when applied.
    async fn forward_stream(
        &self,
        req: Request<Streaming<ForwardedWrite>>,
    ) -> Result<Response<Self::ForwardStreamStream>, Status> {
        let mut writes = req.into_inner();
        let (answers, results) = tokio::sync::mpsc::unbounded_channel();
        let raft = self.raft.clone();
        tokio::spawn(async move {
            // Ends when the follower closes the stream or it breaks; proposals in flight
            // still complete (their answers have nowhere to go).
            while let Some(Ok(ForwardedWrite { id, write })) = writes.next().await {
                let raft = raft.clone();
                let answers = answers.clone();
                tokio::spawn(async move {
                    let outcome = match propose(&raft, write.unwrap_or_default()).await {
                        Ok(response) => forwarded_result::Outcome::Response(response),
                        Err(s) => forwarded_result::Outcome::Failure(ForwardFailure {
                            code: s.code() as i32,
                            message: s.message().to_string(),
                            details: s.details().to_vec(),
                        }),
                    };
                    let _ = answers.send(Ok(ForwardedResult { id, outcome: Some(outcome) }));
                });
            }
        });
        let results = tokio_stream::wrappers::UnboundedReceiverStream::new(results);
        Ok(Response::new(Box::pin(self.until_stopping(results))))
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        match leader::read_index(&self.raft).await {
            Ok(index) => Ok(Response::new(ReadIndexResponse { index })),
            Err(failure) => Err(failure.into_status()),
        }
    }

    async fn lease_renew(
        &self,
        req: Request<LeaseRenewRequest>,
    ) -> Result<Response<LeaseRenewResponse>, Status> {
        let id = req.into_inner().id;
        let time = leader::ask_lessor(&self.raft, &self.lessor, id, LeaseQuestion::Renew)
            .await
            .map_err(PeerError::into_status)?;
        Ok(Response::new(LeaseRenewResponse { ttl: time.map_or(0, |t| t.granted) }))
    }

    async fn lease_remaining(
        &self,
        req: Request<LeaseRenewRequest>,
    ) -> Result<Response<LeaseRemainingResponse>, Status> {
        let id = req.into_inner().id;
        let time = leader::ask_lessor(&self.raft, &self.lessor, id, LeaseQuestion::Remaining)
            .await
            .map_err(PeerError::into_status)?;
        Ok(Response::new(match time {
            Some(t) => LeaseRemainingResponse { found: true, remaining: t.remaining, granted: t.granted },
            None => LeaseRemainingResponse::default(),
        }))
    }

    async fn publish(&self, req: Request<MemberAttributes>) -> Result<Response<PublishResponse>, Status> {
        leader::publish(&self.raft, req.into_inner()).await.map_err(PeerError::into_status)?;
        Ok(Response::new(PublishResponse {}))
    }

    async fn set_alarm(
        &self,
        req: Request<crate::pb::AlarmChange>,
    ) -> Result<Response<PublishResponse>, Status> {
        leader::set_alarm(&self.raft, req.into_inner()).await.map_err(PeerError::into_status)?;
        Ok(Response::new(PublishResponse {}))
    }

    async fn auth(
        &self,
        req: Request<crate::pb::AuthCommand>,
    ) -> Result<Response<crate::pb::AuthResult>, Status> {
        let command = crate::types::AuthCommand::try_from(req.into_inner())
            .map_err(|e| PeerError::Refused(e).into_status())?;
        let (result, log_index) = leader::auth(&self.raft, command).await.map_err(PeerError::into_status)?;
        let error = result.err().map(|e| crate::pb::WriteError { code: e.code(), message: e.to_string() });
        Ok(Response::new(crate::pb::AuthResult { error, log_index }))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let Some(&cluster_id) = self.cluster_id.get() else {
            return Err(
                PeerError::Unavailable("this member has not joined a cluster yet".into()).into_status()
            );
        };
        let answer = crate::join::admit_or_pass(&self.raft, &self.channels, req.into_inner(), cluster_id)
            .await
            .map_err(PeerError::into_status)?;
        Ok(Response::new(answer))
    }

    async fn change_member(
        &self,
        req: Request<MemberChangeRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        let Some(change) = crate::reconfigure::MemberChange::from_pb(&req.into_inner()) else {
            return Err(PeerError::Refused("unknown membership change".into()).into_status());
        };
        let published = crate::members::published_ids(&self.store)
            .await
            .map_err(|e| PeerError::Unavailable(e.to_string()).into_status())?;
        let outcome =
            crate::reconfigure::change(&self.raft, &published, &change, self.promotion.max_lag, self.contact)
                .await
                .map_err(PeerError::into_status)?;
        Ok(Response::new(match outcome {
            Ok(member_id) => MemberChangeResponse { refused: 0, member_id },
            Err(e) => MemberChangeResponse { refused: e.code(), member_id: 0 },
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<crate::pb::PeerHashKvRequest>,
    ) -> Result<Response<crate::pb::PeerHashKvResponse>, Status> {
        let revision = req.into_inner().revision;
        crate::corruption::hash_at(&self.store, self.revision.clone(), revision).await.map(Response::new)
    }

    async fn member_info(
        &self,
        _req: Request<MemberInfoRequest>,
    ) -> Result<Response<MemberInfoResponse>, Status> {
        Ok(Response::new(MemberInfoResponse {
            name: self.name.clone(),
            client_urls: self.client_urls.get().cloned().unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}
