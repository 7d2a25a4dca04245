//! [`RaftNode`]: one member of a Cairn cluster — the Raft instance, its storage, the peer
//! server, and the two client-facing operations the API needs: a replicated write (forwarded
//! to the leader when this node is a follower) and a linearizable read barrier.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cairn_mvcc::{MvccError, MvccStore, WriteRequest, WriteResponse};
use cairn_proto::etcdserverpb::{LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, InitializeError, LinearizableReadError, RaftError};
use openraft::{Config, ReadPolicy, ServerState, SnapshotPolicy};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::forward::Forwarder;
use crate::lessor::{LeaseError, Lessor};
use crate::log_store::{LogStore, CF_META};
use crate::network::{PeerChannels, PeerNetwork};
use crate::pb;
use crate::server::{PeerService, NOT_LEADER};
use crate::state_machine::{SnapshotDir, StateMachine};
use crate::storage::{open_db, snapshot_path, OpenError};
use crate::types::{node_id_of, Command, NodeId, PeerNode, Raft};

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// Address the peer server listens on.
    pub peer_listen: SocketAddr,
    /// (name, peer address) of every founding member, this node included.
    pub initial_cluster: Vec<(String, String)>,
    pub heartbeat_interval: Duration,
    /// The minimum election timeout; the actual one is random in [t, 2t), as etcd's.
    pub election_timeout: Duration,
    /// Log entries between snapshots; the log is purged behind a snapshot.
    pub snapshot_count: u64,
    /// How long a client write or linearizable read may wait for the cluster.
    pub request_timeout: Duration,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on peer address {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
}

/// Why a replicated operation failed. The API maps these to etcd's codes and texts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplicationError {
    /// The request was applied and the state machine refused it (a client error).
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    #[error("no leader")]
    NoLeader,
    #[error("request timed out")]
    Timeout,
    /// A proposal was lost to a leader change; it may or may not have been applied.
    #[error("leader changed")]
    LeaderChanged,
    #[error("server stopped")]
    Stopped,
}

/// What the API reports about this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub member_id: NodeId,
    pub cluster_id: u64,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub is_leader: bool,
    pub is_learner: bool,
    pub last_log_index: u64,
    pub applied_index: u64,
}

/// One try of a cluster operation.
enum Attempt<T> {
    Done(T),
    /// Nothing was proposed; try again (with the reason to report if time runs out).
    Retry(ReplicationError),
}

/// Pause between tries while there is no leader to talk to.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

pub struct RaftNode {
    id: NodeId,
    cluster_id: u64,
    raft: Raft,
    store: MvccStore,
    channels: PeerChannels,
    forwarder: Forwarder,
    request_timeout: Duration,
    peer_server: std::sync::Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
    /// Ends the peer server's long-lived streams at shutdown.
    stopping: tokio::sync::watch::Sender<bool>,
    client_urls: Arc<OnceLock<Vec<String>>>,
    revision: tokio::sync::watch::Receiver<i64>,
    lessor: Arc<Lessor>,
    /// The lease timer tasks (leadership tracking, expiry), stopped at shutdown.
    lease_tasks: Vec<JoinHandle<()>>,
}

/// What the leader says of a lease's time (see [`RaftNode::lease_remaining`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTime {
    /// Whole seconds before the leader revokes it.
    pub remaining: i64,
    /// The TTL it was granted with.
    pub granted: i64,
}

/// How often the leader looks for expired leases, and how many revokes it proposes per
/// look (etcd: every 500 ms, at most 1000 revokes a second).
const EXPIRY_INTERVAL: Duration = Duration::from_millis(500);
const MAX_REVOKES_PER_INTERVAL: usize = 500;

const KEY_CLUSTER_ID: &[u8] = b"cluster_id";

impl RaftNode {
    pub async fn start(cfg: NodeConfig) -> Result<RaftNode, StartError> {
        if cfg.name.is_empty() {
            return Err(StartError::Config("the member name is empty".into()));
        }
        let mut names = BTreeSet::new();
        for (name, _) in &cfg.initial_cluster {
            if !names.insert(name) {
                return Err(StartError::Config(format!(
                    "member {name} appears twice in the initial cluster"
                )));
            }
        }
        if !names.contains(&cfg.name) {
            return Err(StartError::Config(format!(
                "this member ({}) is not in the initial cluster",
                cfg.name
            )));
        }
        let db = open_db(&cfg.data_dir)?;
        let store = MvccStore::new(db.clone());
        let id = node_id_of(&cfg.name);

        // The cluster id is fixed at first start; later flags cannot change it.
        let meta = db.cf_handle(CF_META).expect("raft_meta family");
        let cluster_id =
            match db.get_cf(meta, KEY_CLUSTER_ID).map_err(|e| StartError::Storage(e.to_string()))? {
                Some(b) => u64::from_be_bytes(
                    b.as_slice().try_into().map_err(|_| StartError::Storage("bad cluster id".into()))?,
                ),
                None => {
                    let mut members: Vec<String> =
                        cfg.initial_cluster.iter().map(|(n, a)| format!("{n}={a}")).collect();
                    members.sort();
                    let cid = node_id_of(&members.join(","));
                    let mut opts = rocksdb::WriteOptions::default();
                    opts.set_sync(true);
                    db.put_cf_opt(meta, KEY_CLUSTER_ID, cid.to_be_bytes(), &opts)
                        .map_err(|e| StartError::Storage(e.to_string()))?;
                    cid
                }
            };

        let election_ms = cfg.election_timeout.as_millis().max(2) as u64;
        let config = Config {
            cluster_name: "cairn".into(),
            heartbeat_interval: cfg.heartbeat_interval.as_millis().max(1) as u64,
            election_timeout_min: election_ms,
            election_timeout_max: election_ms * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_count.max(1)),
            max_in_snapshot_log_to_keep: cfg.snapshot_count.clamp(1, 5000),
            install_snapshot_timeout: 60_000,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(|e| StartError::Config(e.to_string()))?);

        let snapshots =
            SnapshotDir::new(snapshot_path(&cfg.data_dir)).map_err(|e| StartError::Storage(e.to_string()))?;
        let lessor = Arc::new(Lessor::new(cfg.heartbeat_interval, cfg.election_timeout));
        let sm = StateMachine::new(store.clone(), snapshots.clone(), lessor.clone())
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let revision = sm.revision_updates();
        let channels = PeerChannels::new(Some(cfg.peer_listen.ip()));
        let network = PeerNetwork { channels: channels.clone(), min_rpc_deadline: cfg.election_timeout };
        let log = LogStore::new(db.clone());
        let raft =
            Raft::new(id, config, network, log, sm).await.map_err(|e| StartError::Raft(e.to_string()))?;

        // Serve peers before initializing, so that the others can reach us.
        let client_urls: Arc<OnceLock<Vec<String>>> = Arc::default();
        let listener = match tokio::net::TcpListener::bind(cfg.peer_listen).await {
            Ok(l) => l,
            Err(source) => {
                let _ = raft.shutdown().await;
                return Err(StartError::Listen { addr: cfg.peer_listen, source });
            }
        };
        let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
        let service = pb::peer_server::PeerServer::new(PeerService {
            raft: raft.clone(),
            snapshots,
            name: cfg.name.clone(),
            client_urls: client_urls.clone(),
            lessor: lessor.clone(),
            stopping: stopping_rx,
        })
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            // TCP_NODELAY on the accepted sockets (the builder's setting does not reach a
            // given incoming stream): Raft messages are small and latency-bound.
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let result = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "peer server failed");
            }
        });

        let initialized = raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized {
            let members: BTreeMap<NodeId, PeerNode> = cfg
                .initial_cluster
                .iter()
                .map(|(name, addr)| {
                    (node_id_of(name), PeerNode { name: name.clone(), peer_addr: addr.clone() })
                })
                .collect();
            // Every founding member initializes with the same membership: safe and idempotent.
            match raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(StartError::Raft(e.to_string())),
            }
        }
        let lease_tasks = vec![
            tokio::spawn(track_leadership(raft.clone(), id, lessor.clone())),
            tokio::spawn(expire_leases(raft.clone(), lessor.clone())),
        ];
        tracing::info!(name = %cfg.name, member_id = format!("{id:x}"), cluster_id = format!("{cluster_id:x}"), peer = %cfg.peer_listen, "raft node started");
        Ok(RaftNode {
            id,
            cluster_id,
            raft,
            store,
            forwarder: Forwarder::new(channels.clone()),
            channels,
            request_timeout: cfg.request_timeout,
            peer_server: std::sync::Mutex::new(Some((stop_tx, server))),
            stopping,
            client_urls,
            revision,
            lessor,
            lease_tasks,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn store(&self) -> &MvccStore {
        &self.store
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Events of every applied revision, in order (for the watch hub).
    /// The applied revision of this member's state machine, as it changes.
    pub fn revision_updates(&self) -> tokio::sync::watch::Receiver<i64> {
        self.revision.clone()
    }

    /// This member's view of the cluster. Cheap: called for every response header.
    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        NodeStatus {
            member_id: self.id,
            cluster_id: self.cluster_id,
            leader: m.current_leader,
            term: m.current_term,
            is_leader: m.state == ServerState::Leader,
            is_learner: m.state == ServerState::Learner,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.as_ref().map_or(0, |l| l.index),
        }
    }

    /// Tell the other members where clients reach this one (once; later calls are ignored).
    pub fn set_client_urls(&self, urls: Vec<String>) {
        let _ = self.client_urls.set(urls);
    }

    /// Ask a member where its clients connect (empty if it does not answer in time).
    pub async fn member_client_urls(&self, id: NodeId) -> Vec<String> {
        if id == self.id {
            return self.client_urls.get().cloned().unwrap_or_default();
        }
        let Some(addr) = self.peer_addr(id) else { return Vec::new() };
        let Ok(mut client) = self.channels.client(&addr) else { return Vec::new() };
        let mut req = tonic::Request::new(pb::MemberInfoRequest {});
        req.set_timeout(Duration::from_millis(500));
        match client.member_info(req).await {
            Ok(r) => r.into_inner().client_urls,
            Err(_) => Vec::new(),
        }
    }

    /// The members of the current membership config.
    pub fn members(&self) -> Vec<(NodeId, PeerNode)> {
        let m = self.raft.metrics().borrow_watched().membership_config.clone();
        m.nodes().map(|(id, n)| (*id, n.clone())).collect()
    }

    fn peer_addr(&self, id: NodeId) -> Option<String> {
        let m = self.raft.metrics().borrow_watched().membership_config.clone();
        let addr = m.nodes().find(|(n, _)| **n == id).map(|(_, node)| node.peer_addr.clone());
        addr
    }

    /// Replicate one write through the leader, wherever it is, and return its result.
    pub async fn write(&self, req: WriteRequest) -> Result<WriteResponse, ReplicationError> {
        #[cfg(feature = "fault-injection")]
        if let Some(acked) = crate::fault::ack_before_commit(&self.raft, &self.store, &req) {
            return acked;
        }
        let req = &req;
        let started = Instant::now();
        let result = self.until_deadline(|deadline| self.write_once(req, deadline)).await?;
        let response = result.map_err(ReplicationError::from)?;
        // A write forwarded to the leader is answered once the leader applied it; like etcd,
        // answer only once this member applied it too, so that the client reads its own
        // write here, even serializably. (On the leader this returns at once.)
        let deadline = started + self.request_timeout;
        self.wait_applied(response.revision(), deadline).await;
        Ok(response)
    }

    /// Wait until this member's state machine is at `revision` or the deadline passes (the
    /// write is committed either way; a member cut off from the leader answers it anyway).
    async fn wait_applied(&self, revision: i64, deadline: Instant) {
        let mut applied = self.revision.clone();
        let caught_up = applied.wait_for(|r| *r >= revision);
        if tokio::time::timeout_at(deadline.into(), caught_up).await.is_err() {
            tracing::debug!(revision, "answering a forwarded write before applying it here (timed out)");
        }
    }

    /// Run `once` until it is done or the request timeout passes (then fail with the
    /// reason of the last retry).
    async fn until_deadline<T, F>(&self, mut once: impl FnMut(Instant) -> F) -> Result<T, ReplicationError>
    where
        F: std::future::Future<Output = Result<Attempt<T>, ReplicationError>>,
    {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let reason = match once(deadline).await? {
                Attempt::Done(value) => return Ok(value),
                Attempt::Retry(reason) => reason,
            };
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(reason);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn write_once(
        &self,
        req: &WriteRequest,
        deadline: Instant,
    ) -> Result<Attempt<Result<WriteResponse, MvccError>>, ReplicationError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Some(leader) = self.raft.current_leader().await else {
            return Ok(Attempt::Retry(ReplicationError::NoLeader));
        };
        if leader == self.id {
            let proposal = self.raft.client_write(Command(req.clone()));
            return match tokio::time::timeout(remaining, proposal).await {
                Err(_) => Err(ReplicationError::Timeout),
                Ok(Ok(resp)) => resp.data.0.map(Attempt::Done).ok_or(ReplicationError::Stopped),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                    Ok(Attempt::Retry(ReplicationError::NoLeader))
                }
                Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
                    Err(ReplicationError::LeaderChanged)
                }
                Ok(Err(RaftError::APIError(e))) => {
                    Err(ReplicationError::Mvcc(MvccError::Storage(e.to_string())))
                }
                Ok(Err(RaftError::Fatal(_))) => Err(ReplicationError::Stopped),
            };
        }
        let Some(addr) = self.peer_addr(leader) else {
            return Ok(Attempt::Retry(ReplicationError::NoLeader));
        };
        let answer = match self.forwarder.forward(&addr, pb::WriteRequest::from(req.clone()), remaining).await
        {
            // A leader without ForwardStream (an older member): one request per write.
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                let mut client = self.channels.client(&addr).map_err(|_| ReplicationError::NoLeader)?;
                let mut request = tonic::Request::new(pb::WriteRequest::from(req.clone()));
                request.set_timeout(remaining);
                client.forward(request).await.map(tonic::Response::into_inner)
            }
            answer => answer,
        };
        match answer {
            Ok(resp) => {
                let result = Result::<WriteResponse, MvccError>::try_from(resp)
                    .map_err(|_| ReplicationError::Stopped)?;
                Ok(Attempt::Done(result))
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition && s.message() == NOT_LEADER => {
                Ok(Attempt::Retry(ReplicationError::NoLeader))
            }
            // Could not connect: the request never left this node.
            Err(s) if s.code() == tonic::Code::Unavailable && is_connect_error(&s) => {
                Ok(Attempt::Retry(ReplicationError::NoLeader))
            }
            Err(s) if s.code() == tonic::Code::DeadlineExceeded => Err(ReplicationError::Timeout),
            Err(s) if s.message().contains("leader changed") => Err(ReplicationError::LeaderChanged),
            Err(_) => Err(ReplicationError::Timeout),
        }
    }

    /// Wait until this node's state machine reflects every write acknowledged before the
    /// call (a linearizable read point, from the leader's read index).
    pub async fn linearize(&self) -> Result<(), ReplicationError> {
        #[cfg(feature = "fault-injection")]
        if crate::fault::skip_read_index() {
            return Ok(());
        }
        self.until_deadline(|deadline| self.linearize_once(deadline)).await
    }

    async fn linearize_once(&self, deadline: Instant) -> Result<Attempt<()>, ReplicationError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Some(leader) = self.raft.current_leader().await else {
            return Ok(Attempt::Retry(ReplicationError::NoLeader));
        };
        let index = if leader == self.id {
            match tokio::time::timeout(remaining, self.raft.get_read_linearizer(ReadPolicy::ReadIndex)).await
            {
                Err(_) => return Err(ReplicationError::Timeout),
                Ok(Ok(l)) => l.read_log_id().index(),
                Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_)))) => {
                    return Ok(Attempt::Retry(ReplicationError::NoLeader))
                }
                Ok(Err(RaftError::APIError(_))) => return Ok(Attempt::Retry(ReplicationError::Timeout)),
                Ok(Err(RaftError::Fatal(_))) => return Err(ReplicationError::Stopped),
            }
        } else {
            let Some(addr) = self.peer_addr(leader) else {
                return Ok(Attempt::Retry(ReplicationError::NoLeader));
            };
            let mut client = self.channels.client(&addr).map_err(|_| ReplicationError::NoLeader)?;
            let mut request = tonic::Request::new(pb::ReadIndexRequest {});
            request.set_timeout(remaining);
            match client.read_index(request).await {
                Ok(r) => r.into_inner().index,
                Err(s) if s.code() == tonic::Code::DeadlineExceeded => return Err(ReplicationError::Timeout),
                Err(_) => return Ok(Attempt::Retry(ReplicationError::NoLeader)),
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        match self.raft.wait(Some(remaining)).applied_index_at_least(Some(index), "linearizable read").await {
            Ok(_) => Ok(Attempt::Done(())),
            Err(openraft::metrics::WaitError::Timeout(..)) => Err(ReplicationError::Timeout),
            Err(openraft::metrics::WaitError::ShuttingDown) => Err(ReplicationError::Stopped),
        }
    }

    /// Grant a lease. `id` 0 lets this member choose one; the TTL is raised to the minimum.
    pub async fn lease_grant(&self, id: i64, ttl: i64) -> Result<LeaseGrantResponse, ReplicationError> {
        let ttl = ttl.max(self.lessor.min_ttl());
        // A chosen id is random in [1, 2^63): a collision is retried with another.
        let chosen_here = id == 0;
        for _ in 0..5 {
            let id = if chosen_here { (rand::random::<u64>() >> 1).max(1) as i64 } else { id };
            match self.write(WriteRequest::LeaseGrant(LeaseGrantRequest { ttl, id })).await {
                Ok(WriteResponse::LeaseGrant(r)) => return Ok(r),
                Ok(other) => {
                    return Err(ReplicationError::Mvcc(MvccError::Corrupt(format!(
                        "a lease grant answered {other:?}"
                    ))))
                }
                Err(ReplicationError::Mvcc(MvccError::LeaseExists)) if chosen_here => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ReplicationError::Mvcc(MvccError::LeaseExists))
    }

    /// Revoke a lease: it and its keys are deleted in one revision.
    pub async fn lease_revoke(&self, id: i64) -> Result<WriteResponse, ReplicationError> {
        self.write(WriteRequest::LeaseRevoke(LeaseRevokeRequest { id })).await
    }

    /// A keepalive, handled by the leader wherever it is sent. Returns the lease's TTL, or
    /// 0 if it does not exist (any more), as etcd does.
    pub async fn lease_renew(&self, id: i64) -> Result<i64, ReplicationError> {
        let time =
            self.until_deadline(|deadline| self.ask_leader(deadline, id, LeaseQuestion::Renew)).await?;
        Ok(time.map_or(0, |t| t.granted))
    }

    /// The leader's view of a lease's time; `None` if it does not exist.
    pub async fn lease_remaining(&self, id: i64) -> Result<Option<LeaseTime>, ReplicationError> {
        self.until_deadline(|deadline| self.ask_leader(deadline, id, LeaseQuestion::Remaining)).await
    }

    /// Ask the leader's lessor about lease `id`: locally if this member leads, else over the
    /// peer RPC. `None`: the lease does not exist.
    async fn ask_leader(
        &self,
        deadline: Instant,
        id: i64,
        question: LeaseQuestion,
    ) -> Result<Attempt<Option<LeaseTime>>, ReplicationError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Some(leader) = self.raft.current_leader().await else {
            return Ok(Attempt::Retry(ReplicationError::NoLeader));
        };
        if leader == self.id {
            let local = |l: &Lessor| match question {
                LeaseQuestion::Renew => l.renew(id).map(|ttl| LeaseTime { remaining: ttl, granted: ttl }),
                LeaseQuestion::Remaining => {
                    l.remaining(id).map(|(remaining, granted)| LeaseTime { remaining, granted })
                }
            };
            return match local(&self.lessor) {
                Err(LeaseError::NotPrimary) => Ok(Attempt::Retry(ReplicationError::NoLeader)),
                // A lease granted in an earlier term may not be applied here yet: catch up
                // to the commit index once before answering "not found", as etcd does.
                Err(LeaseError::NotFound) => {
                    self.linearize().await?;
                    Ok(Attempt::Done(local(&self.lessor).ok()))
                }
                Ok(time) => Ok(Attempt::Done(Some(time))),
            };
        }
        let Some(addr) = self.peer_addr(leader) else {
            return Ok(Attempt::Retry(ReplicationError::NoLeader));
        };
        let mut client = self.channels.client(&addr).map_err(|_| ReplicationError::NoLeader)?;
        let mut request = tonic::Request::new(pb::LeaseRenewRequest { id });
        request.set_timeout(remaining);
        let answer = match question {
            LeaseQuestion::Renew => client.lease_renew(request).await.map(|r| {
                let ttl = r.into_inner().ttl;
                (ttl > 0).then_some(LeaseTime { remaining: ttl, granted: ttl })
            }),
            LeaseQuestion::Remaining => client.lease_remaining(request).await.map(|r| {
                let r = r.into_inner();
                r.found.then_some(LeaseTime { remaining: r.remaining, granted: r.granted })
            }),
        };
        match answer {
            Ok(time) => Ok(Attempt::Done(time)),
            Err(s) if s.code() == tonic::Code::DeadlineExceeded => Err(ReplicationError::Timeout),
            // Not the leader any more, or unreachable: keepalives are idempotent, try again.
            Err(_) => Ok(Attempt::Retry(ReplicationError::NoLeader)),
        }
    }

    /// Stop serving peers and shut Raft down; the database closes when the last handle drops.
    pub async fn shutdown(&self) {
        for task in &self.lease_tasks {
            task.abort();
        }
        self.stopping.send_replace(true);
        let peer_server = self.peer_server.lock().expect("peer server slot poisoned").take();
        if let Some((stop, server)) = peer_server {
            let _ = stop.send(());
            let _ = server.await;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// What a member asks the leader's lessor.
#[derive(Clone, Copy)]
enum LeaseQuestion {
    /// A keepalive.
    Renew,
    /// Time to live.
    Remaining,
}

/// Keep the lessor's idea of leadership in step with Raft's.
async fn track_leadership(raft: Raft, id: NodeId, lessor: Arc<Lessor>) {
    let mut metrics = raft.metrics();
    let mut leading = false;
    loop {
        let now_leading = {
            let m = metrics.borrow_watched();
            m.state == ServerState::Leader && m.current_leader == Some(id)
        };
        if now_leading != leading {
            leading = now_leading;
            if leading {
                lessor.promote();
                tracing::info!("leader: lease timers restarted");
            } else {
                lessor.demote();
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// On the leader, turn expired leases into replicated revokes.
async fn expire_leases(raft: Raft, lessor: Arc<Lessor>) {
    let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for id in lessor.take_expired(MAX_REVOKES_PER_INTERVAL) {
            let raft = raft.clone();
            tokio::spawn(async move {
                tracing::debug!(lease = format!("{id:x}"), "lease expired: revoking");
                let revoke = Command(WriteRequest::LeaseRevoke(LeaseRevokeRequest { id }));
                if let Err(e) = raft.client_write(revoke).await {
                    tracing::debug!(lease = format!("{id:x}"), error = %e, "revoke of an expired lease failed");
                }
            });
        }
    }
}

/// Whether the transport failed to connect (the request was certainly not delivered). A
/// connection that broke later (reset, timeout) may have delivered it: not retried.
fn is_connect_error(s: &tonic::Status) -> bool {
    let text = format!("{s:?}");
    text.contains("ConnectError") || text.contains("Connection refused")
}
