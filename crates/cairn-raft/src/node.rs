//! [`RaftNode`]: one member of a Cairn cluster — the Raft instance, its storage and the peer
//! server: start-up, status and shutdown. What it does for clients lives beside it:
//! `route.rs` (writes and read barriers, run on the leader wherever it is) and `leases.rs`
//! (lease calls and the leader's lease timers).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cairn_mvcc::MvccStore;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{InitializeError, RaftError};
use openraft::{Config, ServerState, SnapshotPolicy};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::disk::{LogDisk, LogWrite, RocksLogDisk};
use crate::forward::Forwarder;
use crate::log_store::LogStore;
use crate::network::{PeerChannels, PeerNetwork};
use crate::pb;
use crate::server::PeerService;
use crate::state_machine::{SnapshotDir, StateMachine};
use crate::storage::{open_data_dir, snapshot_path, DataDir, OpenError};
use crate::types::{node_id_of, NodeId, PeerNode, Raft};
use cairn_core::lessor::Lessor;

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
    /// The election timeout `t`: a follower that has not heard from the leader for a random
    /// time in [0.7t, 0.9t) calls an election, and refuses to vote for another member until
    /// 0.45t after it last heard from the leader (see [`openraft_election_window`]).
    pub election_timeout: Duration,
    /// Log entries between snapshots; the log is purged behind a snapshot.
    pub snapshot_count: u64,
    /// How long a client write or linearizable read may wait for the cluster.
    pub request_timeout: Duration,
    /// Peer addresses of members to ask to join a running cluster (`--join`); empty: found
    /// or restart one from `initial_cluster`. Ignored once the data directory has joined.
    pub join: Vec<String>,
    /// `--initial-cluster-state existing` (etcd's flow): this node was added already with
    /// MemberAdd; it asks the other members of `initial_cluster` for its member id (found by
    /// its peer address) and never founds a cluster. Ignored once the data directory has
    /// joined.
    pub existing: bool,
    /// Whether this member, when a learner, wants the leader to promote it. A member added
    /// with MemberAdd waits for MemberPromote, as in etcd, whatever this says.
    pub auto_promote: bool,
    /// When this member, as leader, promotes learners.
    pub promotion: crate::autopilot::Promotion,
    /// The cluster key every member shares (its fingerprint is checked on every peer request).
    pub cluster_key: crate::ClusterKey,
    /// As leader: remove members out of contact this long (`None`: never).
    pub dead_members: Option<crate::autopilot::DeadMembers>,
    /// TLS on the peer port and towards the other members (`None`: plain TCP).
    pub peer_tls: Option<PeerTls>,
    /// The largest client request (`--max-request-bytes`): bounds peer messages
    /// ([`crate::network::peer_message_limit`]). The same on every member.
    pub max_request_bytes: usize,
    /// As leader: compare every member's HashKV this often and raise the CORRUPT alarm for
    /// a member that diverged (`None`: never; see [`crate::corruption`]).
    pub corrupt_check_interval: Option<Duration>,
    /// Secrets at rest: seals the values of covered keys and every Raft log entry (`None`:
    /// everything is stored in the clear). Built from the cluster key by the caller.
    pub sealer: Option<Arc<cairn_core::seal::Sealer>>,
    /// A simulated disk to keep the log and the state machine on instead of RocksDB in
    /// `data_dir` (deterministic simulation; snapshots stay files in `data_dir`).
    pub memory: Option<crate::disk::MemoryDisk>,
    /// The network to the other members when not TCP (deterministic simulation).
    pub transport: Option<Arc<dyn crate::transport::PeerTransport>>,
}

/// Peer TLS: how this member serves its peer port, and how it calls the others'.
#[derive(Debug, Clone)]
pub struct PeerTls {
    pub server: Arc<cairn_tls::rustls::ServerConfig>,
    pub client: Arc<cairn_tls::rustls::ClientConfig>,
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
    /// Reading or writing the node's own state failed at start.
    #[error("storage ({what}): {source}")]
    Storage { what: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("raft: {0}")]
    Raft(Box<dyn std::error::Error + Send + Sync>),
    /// The cluster refused this node's join (its reason); asking again will not help.
    #[error("the cluster refused to add this member: {0}")]
    JoinRefused(String),
    /// No member admitted this node in time.
    #[error("could not join the cluster: {0}")]
    JoinUnreachable(String),
}

impl From<crate::join::JoinFailure> for StartError {
    fn from(failure: crate::join::JoinFailure) -> Self {
        match failure {
            crate::join::JoinFailure::Refused(why) => StartError::JoinRefused(why),
            crate::join::JoinFailure::Unreachable(why) => StartError::JoinUnreachable(why),
        }
    }
}

fn storage<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    what: &'static str,
) -> impl FnOnce(E) -> StartError {
    move |e| StartError::Storage { what, source: e.into() }
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
    pub committed_index: u64,
    pub applied_index: u64,
    /// A leader that no quorum of voters has acknowledged for an election timeout: it is
    /// cut off, cannot commit, and the others are electing (or have elected) another.
    pub quorum_lost: bool,
}

pub struct RaftNode {
    pub(crate) id: NodeId,
    pub(crate) name: String,
    cluster_id: u64,
    pub(crate) raft: Raft,
    store: MvccStore,
    pub(crate) channels: PeerChannels,
    pub(crate) forwarder: Forwarder,
    pub(crate) request_timeout: Duration,
    peer_server: std::sync::Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
    /// Ends the peer server's long-lived streams at shutdown.
    stopping: tokio::sync::watch::Sender<bool>,
    pub(crate) client_urls: Arc<OnceLock<Vec<String>>>,
    pub(crate) revision: tokio::sync::watch::Receiver<i64>,
    /// The applied log index, for forwarded writes and linearizable reads to wait on.
    pub(crate) applied: crate::applied::AppliedIndex,
    pub(crate) lessor: Arc<Lessor>,
    /// The background tasks (lease leadership tracking and expiry, the autopilot), stopped
    /// at shutdown.
    lease_tasks: Vec<JoinHandle<()>>,
    /// This member, as a learner, asks not to be promoted (`--auto-promote=false`).
    pub(crate) stay_learner: bool,
    /// As leader: the promotion policy, and how recently a member must have answered to
    /// count as started (the election timeout).
    pub(crate) promotion: crate::autopilot::Promotion,
    pub(crate) contact: Duration,
    /// Turns true when this member finds itself removed from the cluster.
    removed: Arc<tokio::sync::watch::Sender<bool>>,
    /// The raised alarms (the state machine keeps them current).
    pub(crate) alarms: crate::alarms::Raised,
    /// The auth state and tokens (likewise).
    pub(crate) auth: crate::auth::Auth,
    key_fingerprint: String,
    /// Holds the data directory's lock while the node lives (none on a simulated disk).
    _data_dir: Option<DataDir>,
}

const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
/// This member's id (from 0.2: earlier data directories derive it from the name).
pub(crate) const KEY_MEMBER_ID: &[u8] = b"member_id";
/// How this member entered its cluster: absent for a founder, [`ADDED`] or [`JOINED`]. A
/// member that did not found its cluster never initializes a membership of its own, even if
/// it restarts before it hears from the cluster.
const KEY_ORIGIN: &[u8] = b"origin";
const JOINED: &[u8] = b"joined";
const ADDED: &[u8] = b"added";

/// Where member `id` of the current membership serves peers.
pub(crate) fn peer_addr_of(raft: &Raft, id: NodeId) -> Option<String> {
    let m = raft.metrics();
    let m = m.borrow_watched();
    let addr = m.membership_config.membership().get_node(&id).map(|n| n.peer_addr.clone());
    addr
}

/// A founding member's configuration: unique names, this member among them.
fn check_initial_cluster(cfg: &NodeConfig) -> Result<(), StartError> {
    let mut names = BTreeSet::new();
    // (A member added but not started yet has no name: etcdctl lists it as `=url`.)
    for (name, _) in cfg.initial_cluster.iter().filter(|(name, _)| !name.is_empty()) {
        if !names.insert(name) {
            return Err(StartError::Config(format!("member {name} appears twice in the initial cluster")));
        }
    }
    if !names.contains(&cfg.name) {
        return Err(StartError::Config(format!("this member ({}) is not in the initial cluster", cfg.name)));
    }
    Ok(())
}

/// Where the other members reach this one: its address in the initial cluster if listed
/// there, else the peer listener's.
fn advertised_peer_addr(cfg: &NodeConfig) -> String {
    cfg.initial_cluster
        .iter()
        .find(|(name, _)| *name == cfg.name)
        .map_or_else(|| cfg.peer_listen.to_string(), |(_, addr)| addr.clone())
}

impl RaftNode {
    pub async fn start(cfg: NodeConfig) -> Result<RaftNode, StartError> {
        if cfg.name.is_empty() {
            return Err(StartError::Config("the member name is empty".into()));
        }
        if cfg.join.is_empty() {
            check_initial_cluster(&cfg)?;
        }
        let (data_dir, disk, engine): (Option<DataDir>, Arc<dyn LogDisk>, Arc<dyn cairn_mvcc::Engine>) =
            match &cfg.memory {
                Some(memory) => (None, Arc::new(memory.clone()), Arc::new(memory.engine())),
                None => {
                    let data_dir = open_data_dir(&cfg.data_dir)?;
                    let db = data_dir.db.clone();
                    (
                        Some(data_dir),
                        Arc::new(RocksLogDisk::new(db.clone())),
                        Arc::new(cairn_mvcc::RocksEngine::new(db)),
                    )
                }
            };
        let store = MvccStore::new(engine).with_sealer(cfg.sealer.clone());

        // The cluster id and this member's id are fixed when the member first starts (a
        // founder), joins or is added; later flags cannot change them.
        let read_u64 = |key: &[u8], what: &'static str| -> Result<Option<u64>, StartError> {
            match disk.get_meta(key).map_err(storage(what))? {
                None => Ok(None),
                Some(b) => Ok(Some(u64::from_be_bytes(
                    b.as_slice().try_into().map_err(|_| storage(what)("not 8 bytes"))?,
                ))),
            }
        };
        let store_ids = |cluster_id: u64, member_id: u64, origin: Option<&[u8]>| {
            let mut writes = vec![
                LogWrite::Meta(KEY_CLUSTER_ID, cluster_id.to_be_bytes().to_vec()),
                LogWrite::Meta(KEY_MEMBER_ID, member_id.to_be_bytes().to_vec()),
            ];
            if let Some(origin) = origin {
                writes.push(LogWrite::Meta(KEY_ORIGIN, origin.to_vec()));
            }
            disk.write(writes, true).map_err(storage("cluster id"))
        };
        let origin = disk.get_meta(KEY_ORIGIN).map_err(storage("origin"))?;
        let max_message = crate::network::peer_message_limit(cfg.max_request_bytes);
        let channels = PeerChannels::new(Some(cfg.peer_listen.ip()), &cfg.cluster_key)
            .with_max_message(max_message)
            .with_tls(cfg.peer_tls.as_ref().map(|t| t.client.clone()))
            .with_transport(cfg.transport.clone());
        let cluster_id: Arc<OnceLock<u64>> = Arc::default();
        let id = match read_u64(KEY_CLUSTER_ID, "cluster id")? {
            Some(cid) => {
                let _ = cluster_id.set(cid);
                match read_u64(KEY_MEMBER_ID, "member id")? {
                    Some(id) => id,
                    None => {
                        let id = node_id_of(&cfg.name);
                        store_ids(cid, id, None)?;
                        id
                    }
                }
            }
            None if cfg.existing => {
                // Added with MemberAdd: the cluster knows this node by its peer address.
                let me = advertised_peer_addr(&cfg);
                let others: Vec<String> =
                    cfg.initial_cluster.iter().map(|(_, a)| a.clone()).filter(|a| *a != me).collect();
                if others.is_empty() {
                    return Err(StartError::Config(
                        "--initial-cluster-state existing needs the cluster's other members in --initial-cluster"
                            .into(),
                    ));
                }
                let request = pb::JoinRequest {
                    name: cfg.name.clone(),
                    peer_addr: me,
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    forwarded: false,
                    existing: true,
                };
                let answer = crate::join::join(&channels, &others, request, crate::join::JOIN_PATIENCE)
                    .await
                    .map_err(StartError::from)?;
                store_ids(answer.cluster_id, answer.member_id, Some(ADDED))?;
                let _ = cluster_id.set(answer.cluster_id);
                answer.member_id
            }
            None if cfg.join.is_empty() => {
                let mut members: Vec<String> =
                    cfg.initial_cluster.iter().map(|(n, a)| format!("{n}={a}")).collect();
                members.sort();
                let cid = node_id_of(&members.join(","));
                let id = node_id_of(&cfg.name);
                store_ids(cid, id, None)?;
                let _ = cluster_id.set(cid);
                id
            }
            // Joining: the cluster tells us its id once it has added us.
            None => node_id_of(&cfg.name),
        };
        let added = origin.as_deref() == Some(ADDED) || (origin.is_none() && cfg.existing);
        let founder = origin.is_none() && cfg.join.is_empty() && !cfg.existing;

        let (election_min, election_max) = openraft_election_window(cfg.election_timeout);
        let config = Config {
            cluster_name: "cairn".into(),
            heartbeat_interval: cfg.heartbeat_interval.as_millis().max(1) as u64,
            election_timeout_min: election_min,
            election_timeout_max: election_max,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_count.max(1)),
            max_in_snapshot_log_to_keep: cfg.snapshot_count.clamp(1, 5000),
            install_snapshot_timeout: 60_000,
            max_payload_entries: crate::network::MAX_PAYLOAD_ENTRIES,
            // A leader that restarts holds an election like any member. Restoring leadership at
            // once (openraft's default) trusts a log and state machine that a power loss can
            // have rolled back — the tail it had not synced yet, committed by the others —
            // and the restored leader then overwrote committed entries in the same term
            // (found by cairn-sim: seeds 17, 560, 650, 713 with power loss).
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(|e| StartError::Config(e.to_string()))?);

        let snapshots =
            SnapshotDir::new(snapshot_path(&cfg.data_dir)).map_err(storage("snapshot directory"))?;
        let lessor = Arc::new(Lessor::new(cfg.heartbeat_interval, cfg.election_timeout));
        let sm = StateMachine::new(store.clone(), snapshots.clone(), lessor.clone())
            .map_err(storage("state machine"))?;
        let revision = sm.revision_updates();
        let applied = sm.applied_index();
        let alarms = sm.alarms();
        let auth = sm.auth();
        let removed = Arc::new(tokio::sync::watch::Sender::new(false));
        let addresses = crate::network::Addresses::default();
        let network = PeerNetwork {
            channels: channels.clone(),
            min_rpc_deadline: cfg.election_timeout,
            removed: removed.clone(),
            addresses: addresses.clone(),
        };
        let log = LogStore::new(disk.clone(), cfg.sealer.clone());
        let log_files = log.clone();
        let raft = Raft::new(id, config, network, log, sm).await.map_err(|e| StartError::Raft(e.into()))?;

        // Serve peers before initializing, so that the others can reach us.
        let client_urls: Arc<OnceLock<Vec<String>>> = Arc::default();
        let listening = match &cfg.transport {
            Some(transport) => {
                transport.listen(cfg.peer_listen).await.map(crate::peer_auth::PeerListener::Other)
            }
            None => {
                tokio::net::TcpListener::bind(cfg.peer_listen).await.map(crate::peer_auth::PeerListener::Tcp)
            }
        };
        let listener = match listening {
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
            channels: channels.clone(),
            cluster_id: cluster_id.clone(),
            promotion: cfg.promotion,
            contact: cfg.election_timeout,
            store: store.clone(),
            revision: revision.clone(),
        })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
        // Every peer request must come on a connection that proved the cluster key.
        let service = tonic::service::interceptor::InterceptedService::new(
            service,
            crate::cluster_key::KeyCheck(cfg.cluster_key.clone()),
        );
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        // Each connection authenticates before it reaches the service (TCP_NODELAY set on
        // accept: Raft messages are small and latency-bound).
        let incoming = crate::peer_auth::incoming(
            listener,
            cfg.cluster_key.clone(),
            cfg.peer_tls.as_ref().map(|t| t.server.clone()),
        );
        let server = tokio::spawn(async move {
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

        let initialized = raft.is_initialized().await.map_err(|e| StartError::Raft(e.into()))?;
        if cluster_id.get().is_none() {
            // A new member joining a running cluster: the leader adds it as a learner and
            // replicates to it; it never initializes a membership of its own.
            let request = pb::JoinRequest {
                name: cfg.name.clone(),
                peer_addr: advertised_peer_addr(&cfg),
                version: env!("CARGO_PKG_VERSION").to_string(),
                forwarded: false,
                existing: false,
            };
            let joined = crate::join::join(&channels, &cfg.join, request, crate::join::JOIN_PATIENCE).await;
            let answer = match joined {
                Ok(answer) => answer,
                Err(failure) => {
                    let _ = raft.shutdown().await;
                    return Err(failure.into());
                }
            };
            store_ids(answer.cluster_id, id, Some(JOINED))?;
            let _ = cluster_id.set(answer.cluster_id);
            tracing::info!(
                cluster_id = format!("{:x}", answer.cluster_id),
                "joined the cluster as a learner"
            );
        } else if !initialized && founder {
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
                Err(e) => return Err(StartError::Raft(e.into())),
            }
        }
        let cluster_id = *cluster_id.get().expect("the cluster id is known once founded or joined");
        let lease_tasks = vec![
            tokio::spawn(crate::network::follow_addresses(raft.clone(), addresses)),
            tokio::spawn(count_leader_changes(raft.clone())),
            tokio::spawn(probe_peers(raft.clone(), channels.clone(), id)),
            tokio::spawn(crate::leases::track_leadership(raft.clone(), id, lessor.clone())),
            tokio::spawn(crate::leases::expire_leases(raft.clone(), lessor.clone())),
            tokio::spawn(crate::reconfigure::watch_removal(
                raft.clone(),
                id,
                cfg.election_timeout * 2,
                removed.clone(),
            )),
            tokio::spawn(crate::autopilot::promote_learners(
                raft.clone(),
                store.clone(),
                cfg.promotion,
                cfg.election_timeout,
            )),
        ];
        let mut lease_tasks = lease_tasks;
        if let Some(policy) = cfg.dead_members {
            lease_tasks.push(tokio::spawn(crate::autopilot::remove_dead_members(
                raft.clone(),
                policy,
                cfg.election_timeout,
            )));
        }
        if let Some(interval) = cfg.corrupt_check_interval {
            lease_tasks.push(tokio::spawn(crate::corruption::check_periodically(
                raft.clone(),
                store.clone(),
                channels.clone(),
                alarms.clone(),
                interval,
            )));
        }
        if store.sealer().is_some() {
            let compact_log = Arc::new(move || log_files.compact());
            lease_tasks.push(tokio::spawn(crate::reseal::reseal(raft.clone(), store.clone(), compact_log)));
        }
        if cfg.cluster_key.is_none() {
            tracing::warn!("no cluster key (--encryption-key-file / CAIRN_ENCRYPTION_KEY): any node that reaches the peer port can take part");
        }
        tracing::info!(key_fingerprint = %cfg.cluster_key.fingerprint(), name = %cfg.name, member_id = format!("{id:x}"), cluster_id = format!("{cluster_id:x}"), peer = %cfg.peer_listen, "raft node started");
        Ok(RaftNode {
            id,
            name: cfg.name.clone(),
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
            applied,
            lessor,
            lease_tasks,
            stay_learner: !cfg.auto_promote || added,
            promotion: cfg.promotion,
            contact: cfg.election_timeout,
            removed,
            alarms,
            auth,
            key_fingerprint: cfg.cluster_key.fingerprint().to_string(),
            _data_dir: data_dir,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The fingerprint of the cluster key this member runs with ("none": no key).
    pub fn key_fingerprint(&self) -> &str {
        &self.key_fingerprint
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
        let is_leader = m.state == ServerState::Leader;
        let alone = m.membership_config.membership().voter_ids().count() <= 1;
        let quorum_lost = is_leader
            && !alone
            && m.last_quorum_acked.as_ref().is_some_and(|acked| {
                openraft::async_runtime::instant::Instant::elapsed(&**acked) > self.contact
            });
        NodeStatus {
            quorum_lost,
            member_id: self.id,
            cluster_id: self.cluster_id,
            leader: m.current_leader,
            term: m.current_term,
            is_leader,
            is_learner: m.state == ServerState::Learner,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: m.local_committed.as_ref().map_or(0, |l| l.index),
            applied_index: m.last_applied.as_ref().map_or(0, |l| l.index),
        }
    }

    /// Changes of this member's Raft server state (role, leader, vote, membership), from
    /// now on. Not log appends, commits or applies: openraft's full metrics change at each
    /// of those.
    pub fn status_changes(&self) -> StatusChanges {
        let mut server = self.raft.server_metrics();
        // A receiver cloned from openraft's starts at the version *it* last saw (never, for
        // the one `Raft` keeps): mark what is there now as seen, or the first `changed()`
        // returns at once. A loop that subscribed afresh each turn spun without pause.
        server.borrow_and_update();
        StatusChanges(server)
    }

    /// How many leases are live on this member's mirror of the applied state.
    pub fn lease_count(&self) -> usize {
        self.lessor.count()
    }

    /// Whether this member found itself removed from the cluster.
    pub fn is_removed(&self) -> bool {
        *self.removed.borrow()
    }

    /// Resolves when this member finds itself removed from the cluster (it should then stop
    /// serving: "the member has been permanently removed from the cluster").
    pub async fn removed(&self) {
        let mut rx = self.removed.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Resolves with the error when this member's Raft stops by itself (a fatal storage
    /// error, a panic in its core) rather than by [`RaftNode::shutdown`]: the member can
    /// then no longer vote, replicate or apply, and should stop serving.
    pub async fn failed(&self) -> String {
        // Waits on the server metrics, which change only with role, vote or membership: the
        // full metrics change several times per write, and a waiter on them was woken (a
        // thread switch) for each. The core sets its fatal error in the full metrics, then
        // ends, which drops every metrics sender.
        let mut server = self.raft.server_metrics();
        let fatal = || match &self.raft.metrics().borrow_watched().running_state {
            Err(fatal) => Some(fatal.to_string()),
            Ok(()) => None,
        };
        loop {
            let why = match fatal() {
                Some(why) => why,
                None if server.changed().await.is_ok() => continue,
                None => fatal().unwrap_or_else(|| "the Raft core ended".to_string()),
            };
            if *self.stopping.borrow() {
                std::future::pending::<()>().await;
            }
            return why;
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
        self.member_info(id).await.map(|info| info.client_urls).unwrap_or_default()
    }

    /// A member's software version, if it answers and says (members before 0.2 do not).
    pub async fn member_version(&self, id: NodeId) -> Option<String> {
        let version = self.member_info(id).await?.version;
        (!version.is_empty()).then_some(version)
    }

    async fn member_info(&self, id: NodeId) -> Option<pb::MemberInfoResponse> {
        let addr = self.peer_addr(id)?;
        let mut client = self.channels.client(&addr).ok()?;
        let mut req = tonic::Request::new(pb::MemberInfoRequest {});
        let within = Duration::from_millis(500);
        req.set_timeout(within);
        // The header bounds only the member's own work: a member that is down (a machine
        // added with MemberAdd but not booted yet) must not hold MemberList up for the
        // connect timeout, found by cairn-sim's member fault (MemberAdd answered after 3 s).
        let answer = tokio::time::timeout(within, client.member_info(req)).await.ok()?;
        answer.ok().map(tonic::Response::into_inner)
    }

    /// The current membership config.
    pub(crate) fn membership(&self) -> openraft::Membership<NodeId, PeerNode> {
        self.raft.metrics().borrow_watched().membership_config.membership().clone()
    }

    /// Run a read of the MVCC store on tokio's blocking pool (RocksDB work stays off the
    /// async workers that openraft and the services share).
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&MvccStore) -> Result<T, cairn_mvcc::MvccError> + Send + 'static,
    ) -> Result<T, cairn_core::BackendError> {
        let store = self.store.clone();
        cairn_core::blocking(move || Ok(read(&store)?)).await
    }

    pub(crate) fn peer_addr(&self, id: NodeId) -> Option<String> {
        peer_addr_of(&self.raft, id)
    }

    /// Stop serving peers and shut Raft down; the database closes when the last handle drops.
    pub async fn shutdown(&self) {
        for task in &self.lease_tasks {
            task.abort();
        }
        self.stopping.send_replace(true);
        let peer_server = self.peer_server.lock().expect("peer server slot poisoned").take();
        if let Some((stop, mut server)) = peer_server {
            let _ = stop.send(());
            // A graceful stop waits for every open request to end; after a fatal error one
            // may never end (found by cairn-sim's disk-failure fault: the member hung here
            // instead of exiting), so the drain is bounded.
            if tokio::time::timeout(PEER_SERVER_DRAIN, &mut server).await.is_err() {
                tracing::warn!("peer requests still open after {PEER_SERVER_DRAIN:?}: stopping without them");
                server.abort();
            }
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// How long a stopping member waits for its open peer requests to end.
const PEER_SERVER_DRAIN: Duration = Duration::from_secs(2);

/// How often each peer's round trip is measured (etcd's prober: every few seconds).
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// Times a small request (`MemberInfo`) to every other member every [`PROBE_EVERY`], for
/// `etcd_network_peer_round_trip_time_seconds`. A member that does not answer within its
/// timeout is not recorded (etcd records only answered probes too).
async fn probe_peers(raft: Raft, channels: PeerChannels, me: NodeId) {
    let mut every = tokio::time::interval(PROBE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let peers: Vec<(NodeId, String)> = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != me)
                .map(|(id, n)| (*id, n.peer_addr.clone()))
                .collect()
        };
        for (id, addr) in peers {
            let Ok(mut client) = channels.client(&addr) else { continue };
            let mut request = tonic::Request::new(pb::MemberInfoRequest {});
            request.set_timeout(Duration::from_secs(1));
            let started = std::time::Instant::now();
            if client.member_info(request).await.is_ok() {
                crate::metrics::record_peer_round_trip(id, started.elapsed());
            }
        }
    }
}

/// Counts every new leader this member sees (etcd's `leader_changes_seen`).
async fn count_leader_changes(raft: Raft) {
    // Server metrics change with the leader (and role, vote, membership), not at every append.
    let mut metrics = raft.server_metrics();
    let mut leader = None;
    loop {
        let seen = metrics.borrow_and_update().current_leader;
        if seen.is_some() && seen != leader {
            crate::metrics::record_leader_change();
        }
        if seen.is_some() {
            leader = seen;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// openraft's `(election_timeout_min, election_timeout_max)` for Cairn's election timeout `t`.
///
/// openraft adds its leader lease (`election_timeout_max`) to the sampled timeout: a follower
/// calls an election `lease + [min, max)` after it last heard from the leader, and refuses
/// votes during the lease. Mapping etcd's `[t, 2t)` straight onto `[min, max)` made that
/// `[3t, 4t)` (3.0-4.0 s with the defaults, measured by `cairn-failover`). With
/// `max = 0.45t`, `min = t/4` a dead leader is replaced between `0.7t` and `0.9t` after its
/// last heartbeat, so that a failover with its election and first write fits in `t`; every
/// candidate fires after the other followers' leases ran out, and a live leader keeps a lease
/// of at least two heartbeats (the smallest timeout allowed is 5 heartbeats).
pub fn openraft_election_window(election_timeout: Duration) -> (u64, u64) {
    let t = election_timeout.as_millis().min(u64::MAX as u128) as u64;
    let max = (t * 9 / 20).max(2);
    let min = (t / 4).clamp(1, max - 1);
    (min, max)
}

/// See [`RaftNode::status_changes`].
pub struct StatusChanges(
    openraft::alias::WatchReceiverOf<
        crate::types::TypeConfig,
        openraft::metrics::RaftServerMetrics<crate::types::TypeConfig>,
    >,
);

impl StatusChanges {
    /// Resolves at the next change; `false` once the Raft core is gone.
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

#[cfg(test)]
mod election_window_tests {
    use super::openraft_election_window;
    use std::time::Duration;

    #[test]
    fn default_timeout_calls_an_election_within_0_9_timeouts() {
        let (min, max) = openraft_election_window(Duration::from_millis(1000));
        assert_eq!((min, max), (250, 450));
        // openraft fires after lease (= max) + a sample in [min, max).
        assert_eq!((max + min, max + max), (700, 900));
    }

    #[test]
    fn tiny_timeouts_still_give_openraft_a_valid_window() {
        for t in [0, 1, 2, 3, 5, 7, 10] {
            let (min, max) = openraft_election_window(Duration::from_millis(t));
            assert!(1 <= min && min < max, "t={t}: ({min}, {max})");
        }
    }
}
