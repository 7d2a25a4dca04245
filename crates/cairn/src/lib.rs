//! Cairn: an embeddable, Raft-replicated key-value store that speaks the etcd v3 API.
//!
//! Run a member in your process with [`Node`], and talk to it with the in-process
//! [`Client`] (same validation, results and errors as the gRPC API) or with any etcd client
//! over the network at [`Node::client_addr`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let node = cairn::Node::start(cairn::Config { data_dir: "cairn-data".into(), ..Default::default() }).await?;
//! let client = node.client();
//! client.put("greeting", "hello").await?;
//! let kv = client.get("greeting").await?.kvs.pop().unwrap();
//! assert_eq!(kv.value, b"hello");
//! node.stop().await;
//! # Ok(()) }
//! ```

mod backend;
pub mod config;

use std::net::SocketAddr;
use std::sync::Arc;

use backend::RaftBackend;
use cairn_api::kv::KvService;
use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_proto::etcdserverpb::*;
use cairn_raft::{NodeConfig, RaftNode, StartError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Request;

pub use cairn_api::Limits;
pub use cairn_proto as proto;
pub use config::Config;

/// Why a node could not start. [`Error::exit_code`] gives the binary's exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot listen on client address {addr}: {source}")]
    ClientListen { addr: SocketAddr, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// 2: bad configuration; 3: data directory locked; 4: data directory corrupted;
    /// 5: an address is in use or not available; 1: anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Start(StartError::Config(_)) => 2,
            Error::Start(StartError::Open(cairn_raft::OpenError::Locked(_))) => 3,
            Error::Start(StartError::Open(cairn_raft::OpenError::Corrupt { .. })) => 4,
            Error::ClientListen { .. } | Error::Start(StartError::Listen { .. }) => 5,
            _ => 1,
        }
    }
}

/// A running Cairn member: the replicated store, the peer server and the etcd API server.
pub struct Node {
    backend: Arc<RaftBackend>,
    limits: Limits,
    client_addr: SocketAddr,
    api: std::sync::Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl Node {
    pub async fn start(config: Config) -> Result<Node, Error> {
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
        node.set_client_urls(vec![format!("http://{client_addr}")]);
        let backend = Arc::new(RaftBackend { node, data_dir: resolved.data_dir.clone() });
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let serve = cairn_api::serve(backend.clone(), resolved.limits, listener, async {
            let _ = stop_rx.await;
        });
        let api = tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "client API server failed");
            }
        });
        tracing::info!(client = %client_addr, "serving the etcd v3 API");
        Ok(Node {
            backend,
            limits: resolved.limits,
            client_addr,
            api: std::sync::Mutex::new(Some((stop_tx, api))),
        })
    }

    /// Where etcd clients reach this member.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// An in-process client: the etcd KV API without the network.
    pub fn client(&self) -> Client {
        Client { kv: Arc::new(KvService { backend: self.backend.clone(), limits: self.limits }) }
    }

    /// This member's id (as in response headers).
    pub fn member_id(&self) -> u64 {
        self.backend.node.id()
    }

    /// Stop serving clients and peers. Acknowledged writes are already durable. Logs the
    /// process's replication counters (`cairn_raft::metrics`; the benchmark comparison reads
    /// group-commit efficiency from this line).
    pub async fn stop(&self) {
        let api = self.api.lock().expect("api slot poisoned").take();
        if let Some((stop, handle)) = api {
            let _ = stop.send(());
            let _ = handle.await;
        }
        self.backend.node.shutdown().await;
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

/// An in-process etcd KV client. Requests go through the same service code as gRPC
/// requests, so validation, results and errors (`tonic::Status` with etcd's code and text)
/// are identical.
#[derive(Clone)]
pub struct Client {
    kv: Arc<KvService<RaftBackend>>,
}

impl Client {
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, tonic::Status> {
        Ok(self.kv.range(Request::new(req)).await?.into_inner())
    }

    /// A linearizable get of one key.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<RangeResponse, tonic::Status> {
        self.range(RangeRequest { key: key.into(), ..Default::default() }).await
    }

    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<PutResponse, tonic::Status> {
        self.put_request(PutRequest { key: key.into(), value: value.into(), ..Default::default() }).await
    }

    pub async fn put_request(&self, req: PutRequest) -> Result<PutResponse, tonic::Status> {
        Ok(self.kv.put(Request::new(req)).await?.into_inner())
    }

    pub async fn delete(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse, tonic::Status> {
        Ok(self.kv.delete_range(Request::new(req)).await?.into_inner())
    }

    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, tonic::Status> {
        Ok(self.kv.txn(Request::new(req)).await?.into_inner())
    }

    pub async fn compact(&self, revision: i64) -> Result<CompactionResponse, tonic::Status> {
        Ok(self.kv.compact(Request::new(CompactionRequest { revision, physical: true })).await?.into_inner())
    }
}
