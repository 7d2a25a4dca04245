//! The etcd v3 gRPC API over a [`Backend`]: KV, Watch, Lease, Lock, Election, Maintenance
//! (status, alarms) and Cluster (member list).
//!
//! **Architecture invariant:** only this crate knows the client-facing gRPC services and
//! etcd's error codes and texts ([`errors`]). It knows nothing of Raft: it sees a
//! [`Backend`].

pub mod auth;
pub mod election;
pub mod errors;
pub mod kv;
pub mod learner;
pub mod lease;
pub mod listener;
pub mod lock;
pub mod maintenance;
pub mod metrics;
pub mod quota;
pub mod watch;

use std::sync::Arc;

use tower::Layer;

pub use cairn_core::{
    Backend, BackendError, ClusterBackend, KvBackend, LeaseBackend, LeaseTime, MaintenanceBackend, Member,
    MemberStatus, WatchSource,
};
use cairn_proto::etcdserverpb::auth_server::AuthServer;
use cairn_proto::etcdserverpb::cluster_server::ClusterServer;
use cairn_proto::etcdserverpb::kv_server::KvServer;
use cairn_proto::etcdserverpb::lease_server::LeaseServer;
use cairn_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use cairn_proto::etcdserverpb::watch_server::WatchServer;
use cairn_proto::etcdserverpb::ResponseHeader;
use cairn_proto::v3electionpb::election_server::ElectionServer;
use cairn_proto::v3lockpb::lock_server::LockServer;
use tokio::sync::mpsc;
use tonic::service::Routes;

/// Request limits, with etcd's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// etcd `--max-request-bytes` (1.5 MiB).
    pub max_request_bytes: usize,
    /// etcd `--max-txn-ops` (128).
    pub max_txn_ops: usize,
    /// etcd `--quota-backend-bytes` (2 GiB): see [`quota`].
    pub quota_backend_bytes: u64,
    /// Watches one watch stream may hold at once (etcd: no limit); a create beyond it is
    /// answered created-and-canceled with [`watch::TOO_MANY_WATCHES`].
    pub max_watches_per_stream: usize,
    /// HTTP/2 streams one client connection may have open at once (etcd 3.5's
    /// `--max-concurrent-streams`; the client waits for a stream to end before opening more).
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            quota_backend_bytes: quota::DEFAULT_QUOTA_BYTES,
            max_watches_per_stream: 10_000,
            max_concurrent_streams: 10_000,
        }
    }
}

/// etcd accepts gRPC messages this much larger than max-request-bytes, then checks the
/// request size itself (so that the client gets etcd's "request is too large").
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

impl Limits {
    /// The largest gRPC message etcd's server accepts.
    pub fn max_grpc_message_bytes(&self) -> usize {
        self.max_request_bytes + GRPC_OVERHEAD_BYTES
    }
}

/// tonic's own limit, far above etcd's: the services check etcd's limit themselves so
/// that clients get grpc-go's ResourceExhausted text rather than tonic's.
fn decode_limit(limits: &Limits) -> usize {
    (limits.max_grpc_message_bytes() * 4).max(64 << 20)
}

/// Fill cluster, member and term into a header whose revision the backend set.
pub fn fill_header(header: &mut Option<ResponseHeader>, s: &MemberStatus) {
    let h = header.get_or_insert_with(Default::default);
    h.cluster_id = s.cluster_id;
    h.member_id = s.member_id;
    h.raft_term = s.raft_term;
}

/// The services that read and write the store itself (all but Lock and Election), checking
/// permissions or not (`enforce`).
fn store_routes<B: Backend>(backend: Arc<B>, limits: Limits, enforce: auth::Enforce) -> Routes {
    let kv = KvServer::new(kv::KvService { backend: backend.clone(), limits, enforce })
        .max_decoding_message_size(decode_limit(&limits))
        .max_encoding_message_size(usize::MAX);
    let maintenance =
        MaintenanceServer::new(maintenance::MaintenanceService { backend: backend.clone(), enforce });
    let lease_limits = limits;
    let watch = WatchServer::new(watch::WatchService {
        backend: backend.clone(),
        progress_interval: std::time::Duration::from_secs(600),
        fragment_bytes: limits.max_request_bytes,
        max_watches: limits.max_watches_per_stream,
        recent: Default::default(),
        enforce,
    });
    let lease =
        LeaseServer::new(lease::LeaseService { backend: backend.clone(), limits: lease_limits, enforce });
    let cluster = ClusterServer::new(maintenance::ClusterService { backend: backend.clone(), enforce });
    let routes =
        Routes::new(kv).add_service(maintenance).add_service(cluster).add_service(watch).add_service(lease);
    match enforce {
        auth::Enforce::Checked => routes.add_service(AuthServer::new(auth::AuthService { backend })),
        auth::Enforce::Trusted => routes,
    }
}

/// Every etcd service for `backend`. Lock and Election are, as in etcd, clients of the
/// others: they run `cairn-client`'s recipes over an in-process channel.
///
/// Their in-process client reaches services that check no permissions (it cannot be reached
/// from outside the process): Lock and Election check the caller's themselves.
pub fn routes<B: Backend>(backend: Arc<B>, limits: Limits) -> Routes {
    let internal = cairn_client::Client::from_transport(in_process_transport(store_routes(
        backend.clone(),
        limits,
        auth::Enforce::Trusted,
    )));
    let permissions: Arc<dyn auth::Permissions> = backend.clone();
    store_routes(backend, limits, auth::Enforce::Checked)
        .add_service(LockServer::new(lock::LockService {
            client: internal.clone(),
            permissions: permissions.clone(),
        }))
        .add_service(ElectionServer::new(election::ElectionService { client: internal, permissions }))
}

/// A gRPC channel to `routes` served in this process over in-memory pipes: the same
/// service code, encoding and errors as over TCP, without a socket. The server task ends
/// when the last clone of the channel is dropped.
pub fn in_process_channel(routes: Routes) -> tonic::transport::Channel {
    let (connections, incoming) = mpsc::unbounded_channel::<std::io::Result<tokio::io::DuplexStream>>();
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::UnboundedReceiverStream::new(incoming);
        if let Err(e) =
            tonic::transport::Server::builder().add_routes(routes).serve_with_incoming(incoming).await
        {
            tracing::warn!("in-process API server stopped: {e}");
        }
    });
    let connector = tower::service_fn(move |_: http::Uri| {
        let connections = connections.clone();
        async move {
            let (client, server) = tokio::io::duplex(IN_PROCESS_PIPE_BYTES);
            connections.send(Ok(server)).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "in-process API server stopped")
            })?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
        }
    });
    tonic::transport::Endpoint::from_static("http://in-process.invalid")
        .connect_with_connector_lazy(connector)
}

/// A client transport that calls `routes` directly in this process: the same service code,
/// message encoding, limits and errors as over the network, without HTTP/2 framing, a pipe
/// or a connection task (each call runs the service in the caller's task).
pub fn in_process_transport(routes: Routes) -> cairn_client::Transport {
    cairn_client::Transport::new(
        tower::util::MapErrLayer::new(|never: std::convert::Infallible| -> cairn_client::TransportError {
            match never {}
        })
        .layer(routes),
    )
}

/// Buffer of one direction of an in-process connection.
const IN_PROCESS_PIPE_BYTES: usize = 256 * 1024;

/// Every etcd service for `backend` behind the learner gate: what clients reach (over the
/// network, or through the JSON gateway's in-process channel).
pub fn client_routes<B: Backend>(backend: Arc<B>, limits: Limits) -> Routes {
    let status = backend.clone();
    let gate = learner::LearnerGateLayer { is_learner: Arc::new(move || status.status().is_learner) };
    let common_name = tower::util::MapRequestLayer::new(listener::with_common_name);
    Routes::from(
        routes(backend, limits)
            .into_axum_router()
            .layer(gate)
            .layer(metrics::GrpcMetricsLayer)
            .layer(common_name),
    )
}

/// Serve `router` — [`client_routes`], with other HTTP routes merged in — on `listener`
/// until `shutdown` completes: gRPC (HTTP/2) and HTTP/1.1 on one port, through TLS when
/// `tls` is set ([`listener::incoming`]), with the per-connection limits of `limits`.
pub async fn serve_router(
    router: axum::Router,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<cairn_tls::rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let incoming = listener::incoming(listener, tls);
    tonic::transport::Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(limits.max_concurrent_streams)
        // A connection whose peer vanished without a FIN is found and closed (etcd's
        // server keepalive: a ping after 2 h of silence, 20 s to answer).
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(2 * 60 * 60)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .add_routes(Routes::from(router))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
