#![deny(missing_docs)]
//! Cairn: an embeddable, Raft-replicated key-value store that speaks the etcd v3 API.
//!
//! Run a member in your process with [`Node`], and talk to it with the in-process
//! [`Client`] (same validation, results and errors as the gRPC API) or with any etcd client
//! over the network at [`Node::client_addr`]. The coordination recipes a product needs
//! (typed configuration, a component registry, single-runner jobs, a messenger, locks and
//! elections) are in [`recipes`], each with an example. A member serves from its own
//! replicated store, or from a shared SQL database ([`NodeBuilder::backend`]).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! # let dir = tempfile::tempdir()?;
//! # let peer = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
//! // One member, alone in its cluster (add others with `.initial_cluster(…)` or `.join(…)`).
//! let node = cairn::Node::builder()
//!     .name("n1")
//!     .data_dir(dir.path().join("n1"))
//!     .client_addr("127.0.0.1:0") // etcdctl and every etcd client can use it
//!     .peer_addr(peer)
//!     .start()
//!     .await?;
//! let client = node.client(); // in-process: no network hop
//! client.put("greeting", "hello").await?;
//! let kv = client.get("greeting").await?.kvs.pop().unwrap();
//! assert_eq!(kv.value, b"hello");
//! assert_eq!(node.status().role, cairn::Role::Leader);
//!
//! // Typed configuration with a schema version, compare-and-swap and watch.
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Limits { max_uploads: u32 }
//! let limits: cairn::TypedKey<Limits> = cairn::TypedKey::new(&client, "config/limits");
//! limits.put(&Limits { max_uploads: 10 }).await?;
//! assert_eq!(limits.get().await?.unwrap().value, Limits { max_uploads: 10 });
//!
//! node.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

mod backend;
mod builder;
mod client_port;
pub mod config;
mod metrics;
pub mod recipes;
mod sql_member;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use cairn_raft::{NodeConfig, RaftNode, StartError};
use tokio::task::JoinHandle;

pub use backend::RaftBackend;
pub use builder::NodeBuilder;
pub use cairn_api::Limits;
/// What the client and its recipes fail with.
pub use cairn_client::Error as ClientError;
pub use cairn_client::{
    CasOutcome, Client, ComponentStatus, Election, Inbox, Leadership, Lease, Lock, LockGuard, Message,
    Messenger, Registered, Registration, Registry, SingleRunner, Turn, TypedKey, Versioned,
};
pub use cairn_core as core;
pub use cairn_proto as proto;
pub use cairn_sql::SqlBackend;
pub use config::Config;

/// Why a node could not start. [`Error::exit_code`] gives the binary's exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The member could not start: its data directory, its peer port, its cluster.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The client address could not be listened on.
    #[error("cannot listen on client address {addr}: {source}")]
    ClientListen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it could not be had.
        source: std::io::Error,
    },
    /// The SQL backend could not start (bad URL, database unreachable or refusing, a newer
    /// schema).
    #[error("SQL backend: {0}")]
    Sql(#[from] cairn_sql::OpenError),
    /// A setting is invalid (the text says which and why).
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// 2: bad configuration (or the cluster refused to add this member); 3: data directory
    /// locked; 4: data directory corrupted; 5: an address is in use or not available; 6: data
    /// directory (or SQL schema) written by a newer version; 9: the SQL database is
    /// unreachable; 1: anything else (e.g. no member answered a join).
    /// (The binary also exits 7 when the member is removed from the cluster while it runs,
    /// and 8 when its Raft stops on a fatal error, see [`Node::failed`].)
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Start(StartError::Config(_) | StartError::JoinRefused(_)) => 2,
            Error::Start(StartError::Open(cairn_raft::OpenError::Locked(_))) => 3,
            Error::Start(StartError::Open(cairn_raft::OpenError::Corrupt { .. })) => 4,
            Error::ClientListen { .. } | Error::Start(StartError::Listen { .. }) => 5,
            Error::Start(StartError::Open(cairn_raft::OpenError::NewerFormat { .. })) => 6,
            Error::Sql(cairn_sql::OpenError::BadUrl(_)) => 2,
            Error::Sql(cairn_sql::OpenError::NewerSchema { .. }) => 6,
            Error::Sql(cairn_sql::OpenError::Unreachable(_)) => 9,
            _ => 1,
        }
    }
}

/// `/metrics`' renderer: the member's registry in the OpenMetrics text format.
fn metrics_text(backend: &Arc<RaftBackend>) -> cairn_http::MetricsText {
    registry_text(metrics::registry(backend))
}

/// `/metrics`' renderer for a member on a SQL database.
fn sql_metrics_text(backend: &Arc<cairn_sql::SqlBackend>) -> cairn_http::MetricsText {
    registry_text(metrics::sql_registry(backend))
}

fn registry_text(registry: prometheus_client::registry::Registry) -> cairn_http::MetricsText {
    cairn_http::MetricsText(Arc::new(move || {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        text
    }))
}

/// What a member is in its cluster (see [`Node::roles`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It leads: writes are committed through it.
    Leader,
    /// A voter that follows a known leader.
    Follower,
    /// A voter that knows no leader (an election is under way, or a quorum is lost).
    NoLeader,
    /// A leader cut off from a quorum of voters for an election timeout: it cannot commit
    /// (writes through it wait and fail), and the others elect another leader. Stop work
    /// that must run on the leader only.
    LostQuorum,
    /// A member that receives the log but does not vote (joined, not yet promoted).
    Learner,
    /// Removed from the cluster: stop it (the binary exits with code 7).
    Removed,
    /// A member on a shared SQL database ([`NodeBuilder::backend`]): there is no leader,
    /// every member writes through the database, so no member is "the one" — use
    /// [`Election`] or [`SingleRunner`] for work that must run on one server at a time.
    SharedDatabase,
}

/// A member's view of its cluster, now (see [`Node::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStatus {
    /// This member's id (etcd's member id).
    pub member_id: u64,
    /// The cluster's id.
    pub cluster_id: u64,
    /// This member's role now.
    pub role: Role,
    /// The leader this member knows, if any (none on a SQL database).
    pub leader: Option<u64>,
    /// The Raft term this member knows (0 on a SQL database).
    pub term: u64,
    /// The last log index this member applied (on a SQL database: the newest revision it
    /// knows committed).
    pub applied_index: u64,
}

/// A running Cairn member: the etcd API server and the store behind it — the replicated
/// store with its peer server (the default), or a shared SQL database
/// ([`NodeBuilder::backend`]).
pub struct Node {
    member: Member,
    client: Client,
    client_addr: SocketAddr,
    port: client_port::ClientPort,
    roles: tokio::sync::watch::Sender<Role>,
}

/// The store a [`Node`] serves from.
enum Member {
    Raft { backend: Arc<RaftBackend>, follow_roles: JoinHandle<()> },
    Sql(Arc<cairn_sql::SqlBackend>),
}

fn status_of(node: &RaftNode) -> NodeStatus {
    let s = node.status();
    let role = if node.is_removed() {
        Role::Removed
    } else if s.is_learner {
        Role::Learner
    } else if s.is_leader && s.quorum_lost {
        Role::LostQuorum
    } else if s.is_leader {
        Role::Leader
    } else if s.leader.is_some() {
        Role::Follower
    } else {
        Role::NoLeader
    };
    NodeStatus {
        member_id: s.member_id,
        cluster_id: s.cluster_id,
        role,
        leader: s.leader,
        term: s.term,
        applied_index: s.applied_index,
    }
}

/// How often the role is looked at again when no Raft state changed.
const ROLE_RECHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Keeps `roles` up to date until the backend goes away.
async fn follow_roles(backend: std::sync::Weak<RaftBackend>, roles: tokio::sync::watch::Sender<Role>) {
    let Some(mut changes) = backend.upgrade().map(|b| b.node.status_changes()) else { return };
    let mut core_running = true;
    loop {
        let Some(b) = backend.upgrade() else { return };
        let role = status_of(&b.node).role;
        roles.send_if_modified(|r| std::mem::replace(r, role) != role);
        if role == Role::Removed {
            return;
        }
        // A leader losing its quorum changes no Raft state (its acknowledgements just stop
        // coming): look again after a while too.
        tokio::select! {
            running = changes.changed(), if core_running => core_running = running,
            _ = b.node.removed() => {}
            _ = tokio::time::sleep(ROLE_RECHECK) => {}
        }
    }
}

impl Node {
    /// Builds a member setting by setting (see [`NodeBuilder`]).
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// Starts a member with `config`: opens (or creates) its data directory, founds, joins or
    /// rejoins its cluster, and serves clients on `config.client_addr`. With
    /// `config.backend` set, it connects to that SQL database instead (creating or checking
    /// Cairn's tables) and needs no data directory and no peer port.
    pub async fn start(config: Config) -> Result<Node, Error> {
        if config.backend.is_some() {
            let started = sql_member::start(config).await?;
            return Ok(Node {
                member: Member::Sql(started.backend),
                client: started.client,
                client_addr: started.client_addr,
                port: started.port,
                roles: tokio::sync::watch::Sender::new(Role::SharedDatabase),
            });
        }
        let resolved = config.resolve().map_err(Error::Config)?;
        let node = RaftNode::start(NodeConfig {
            name: resolved.name.clone(),
            data_dir: resolved.data_dir.clone(),
            peer_listen: resolved.peer_addr,
            initial_cluster: resolved.initial_cluster.clone(),
            heartbeat_interval: resolved.heartbeat_interval,
            election_timeout: resolved.election_timeout,
            snapshot_count: resolved.snapshot_count,
            request_timeout: resolved.request_timeout,
            join: resolved.join.clone(),
            existing: resolved.existing,
            auto_promote: resolved.auto_promote,
            promotion: resolved.promotion,
            cluster_key: resolved.cluster_key.clone(),
            dead_members: resolved.dead_members,
            max_request_bytes: resolved.limits.max_request_bytes,
            peer_tls: resolved.peer_tls.clone(),
            corrupt_check_interval: resolved.corrupt_check_interval,
            sealer: resolved.sealer.clone(),
            memory: None,
            transport: None,
        })
        .await?;
        // Bind clients last: a second process on the same data directory must fail on the
        // directory's lock (exit 3), not on the port.
        let bound = async {
            let listener = tokio::net::TcpListener::bind(resolved.client_addr).await?;
            let addr = listener.local_addr()?;
            Ok::<_, std::io::Error>((listener, addr))
        };
        let (listener, client_addr) = match bound.await {
            Ok(bound) => bound,
            Err(source) => {
                node.shutdown().await;
                return Err(Error::ClientListen { addr: resolved.client_addr, source });
            }
        };
        let scheme = if resolved.client_tls.is_some() { "https" } else { "http" };
        node.set_client_urls(vec![format!("{scheme}://{client_addr}")]);
        let backend = Arc::new(RaftBackend::new(node, resolved.data_dir.clone()));
        // Like etcd, publish this member's attributes before serving clients, so that a
        // member that served is listed with its URLs even once it is down. Bounded: without
        // a quorum (or beside a 0.1 member) it serves anyway and goes on trying.
        let mut publishing = tokio::spawn(backend::publish_attributes(Arc::downgrade(&backend)));
        let bound = resolved.election_timeout * 2 + std::time::Duration::from_secs(1);
        if tokio::time::timeout(bound, &mut publishing).await.is_err() {
            tracing::info!("serving before this member's attributes are published (no quorum yet?)");
        }
        let (local, port) = client_port::serve(backend.clone(), &resolved, listener, metrics_text(&backend));
        tracing::info!(client = %client_addr, "serving the etcd v3 API (gRPC, and HTTP: the JSON gateway, /health, /readyz)");
        let roles = tokio::sync::watch::Sender::new(status_of(&backend.node).role);
        let follow_roles = tokio::spawn(follow_roles(Arc::downgrade(&backend), roles.clone()));
        Ok(Node { member: Member::Raft { backend, follow_roles }, client: local, client_addr, port, roles })
    }

    /// Where etcd clients reach this member.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// An in-process client: the whole etcd API (KV, Watch, Lease, Lock, Election, ...)
    /// through the same service code as over the network, without a socket; the recipes of
    /// [`cairn_client`] ([`Lease`], [`Lock`], [`Election`], [`TypedKey`]) run on it.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Every service of this member over an HTTP/2 channel on in-memory pipes: what
    /// [`Node::client`] was before it called the services directly (`cairn bench --embedded
    /// inproc-channel` measures one against the other).
    #[doc(hidden)]
    pub fn in_process_channel(&self) -> tonic::transport::Channel {
        let routes = match &self.member {
            Member::Raft { backend, .. } => cairn_api::routes(backend.clone(), Limits::default()),
            Member::Sql(backend) => cairn_api::routes(backend.clone(), Limits::default()),
        };
        cairn_api::in_process_channel(routes)
    }

    /// The replicated store this member serves the etcd API from (the `cairn_core` backend
    /// traits, what the conformance suite runs against); `None` on a SQL database.
    pub fn raft_backend(&self) -> Option<&RaftBackend> {
        match &self.member {
            Member::Raft { backend, .. } => Some(backend),
            Member::Sql(_) => None,
        }
    }

    /// The SQL database backend this member serves from, if it was started with one.
    pub fn sql_backend(&self) -> Option<&cairn_sql::SqlBackend> {
        match &self.member {
            Member::Sql(backend) => Some(backend),
            Member::Raft { .. } => None,
        }
    }

    /// Resolves when this member finds itself removed from the cluster; stop it then (the
    /// binary exits with code 7). Never, on a SQL database (members only come and go).
    pub async fn removed(&self) {
        match &self.member {
            Member::Raft { backend, .. } => backend.node.removed().await,
            Member::Sql(_) => std::future::pending().await,
        }
    }

    /// Resolves with the reason when this member's Raft stops on a fatal error (for
    /// instance its disk failed): it can no longer take part in the cluster, and the
    /// process should stop it and exit (the binary exits 8) so that a supervisor notices.
    /// Never, on a SQL database (an outage fails requests with Unavailable until it ends).
    pub async fn failed(&self) -> String {
        match &self.member {
            Member::Raft { backend, .. } => backend.node.failed().await,
            Member::Sql(_) => std::future::pending().await,
        }
    }

    /// This member's view of the cluster, now.
    pub fn status(&self) -> NodeStatus {
        match &self.member {
            Member::Raft { backend, .. } => status_of(&backend.node),
            Member::Sql(backend) => {
                let s = cairn_core::ClusterBackend::status(&**backend);
                NodeStatus {
                    member_id: s.member_id,
                    cluster_id: s.cluster_id,
                    role: Role::SharedDatabase,
                    leader: None,
                    term: 0,
                    applied_index: s.raft_applied_index,
                }
            }
        }
    }

    /// This member's role, updated as it changes (became leader, follower, learner, lost its
    /// leader, removed): `roles().changed().await`, then `borrow()`. Ends (`changed` fails)
    /// when the node stops. Always [`Role::SharedDatabase`] on a SQL database.
    pub fn roles(&self) -> tokio::sync::watch::Receiver<Role> {
        self.roles.subscribe()
    }

    /// Stop the member; a leader hands leadership to an up-to-date voter first (the same
    /// as [`Node::stop`]).
    pub async fn shutdown(&self) {
        self.stop().await
    }

    /// This member's id (as in response headers).
    pub fn member_id(&self) -> u64 {
        self.status().member_id
    }

    /// Stop serving clients and peers. Acknowledged writes are already durable. Logs the
    /// process's replication counters (`cairn_raft::metrics`; the benchmark comparison reads
    /// group-commit efficiency from this line). On a SQL database: stop serving and leave
    /// the member list.
    pub async fn stop(&self) {
        self.port.stop().await;
        let (backend, follow_roles) = match &self.member {
            Member::Raft { backend, follow_roles } => (backend, follow_roles),
            Member::Sql(backend) => return backend.leave().await,
        };
        // A leader hands over first, so that the others need not wait an election timeout.
        backend.node.step_down().await;
        follow_roles.abort();
        backend.node.shutdown().await;
        let c = cairn_raft::metrics::counters();
        tracing::info!(
            wal_syncs = c.wal_syncs,
            appends_synced = c.appends_synced,
            entries_applied = c.entries_applied,
            apply_batches = c.apply_batches,
            "replication counters"
        );
    }
}
