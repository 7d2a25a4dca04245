//! The HTTP side of a Cairn member, served on its client port next to gRPC:
//!
//! - [`gateway`]: etcd's JSON gateway — `POST /v3/...` for every etcd service, with
//!   grpc-gateway's JSON (proto field names, 64-bit integers as strings, bytes as base64,
//!   zero values omitted), its streams (`{"result":…}` per message) and its error bodies;
//!   `/v3beta/` and `/v3alpha/` are aliases, as in etcd 3.4.
//! - `GET /version`, and the health checks of [`health`]: `/health` (etcd's JSON), `/livez`
//!   and `/readyz` (etcd 3.6's checks and text output) for load balancers.
//! - [`cluster`]: the cluster page (`GET /`, `GET /v1/cluster` and its actions).
//! - `GET /metrics`: the member's Prometheus metrics (rendered by whoever builds the
//!   router: [`HttpOptions::metrics`]).
//!
//! **Architecture invariant:** this crate reaches the member only through the etcd gRPC API
//! (a tonic [`Channel`], in-process in `cairn`), exactly as etcd's gateway is a gRPC client
//! of its own server: the semantics, limits and errors are the gRPC services'. It must never
//! depend on the storage, Raft or service crates (`cairn-mvcc`, `cairn-raft`, `cairn-api`,
//! `cairn-core`); `tests/tests/invariants.rs` checks that.

pub mod cluster;
pub mod error;
pub mod gateway;
pub mod health;

use axum::routing::get;
use axum::Router;
use tonic::transport::Channel;

pub use error::HttpError;

/// What the HTTP side needs besides the channels.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The etcd API version this member implements (`/version`'s `etcdserver`).
    pub etcd_version: String,
    /// Cairn's own version (`/version`'s `cairn`).
    pub cairn_version: String,
    /// The largest gRPC message the member takes (etcd: `--max-request-bytes` + 512 KiB):
    /// JSON bodies may be base64's and JSON's overhead larger; the gRPC services check the
    /// decoded request themselves.
    pub max_message_bytes: usize,
    /// How long a health check's read may take.
    pub health_timeout: std::time::Duration,
    /// Whether `/readyz` passes on a learner (for load balancers that also send serializable
    /// reads to learners); by default a learner is not ready.
    pub ready_when_learner: bool,
    /// `/metrics`' body (the OpenMetrics text of the member's registry); `None`: no route.
    pub metrics: Option<MetricsText>,
    /// The timeouts the cluster page shows, and when it calls a silent member unhealthy.
    pub timing: cluster::Timing,
    /// How the cluster page reaches other members (`None`: plain connections).
    pub member_channels: Option<cluster::MemberChannels>,
}

/// Renders the member's metrics in the OpenMetrics text format.
#[derive(Clone)]
pub struct MetricsText(pub std::sync::Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for MetricsText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsText")
    }
}

/// Every HTTP route of a member. `api` is the channel the gateway's calls take (the one
/// clients get: learner gate included); `local` reaches this member's services without the
/// learner gate, for the health checks.
pub fn router(api: Channel, local: Channel, options: HttpOptions) -> Router {
    let health = health::Health { local: local.clone(), options: options.clone() };
    let mut router = gateway::routes(api, options.max_message_bytes)
        .route(
            "/version",
            get({
                let options = options.clone();
                move || gateway::version(options.clone())
            }),
        )
        .merge(health::routes(health))
        .merge(cluster::routes(local, options.timing, options.member_channels.clone()));
    if let Some(metrics) = options.metrics {
        router = router.route(
            "/metrics",
            get(move || async move {
                let text = (metrics.0)();
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
            }),
        );
    }
    router
}

/// For requests no route takes: gRPC calls get gRPC's `Unimplemented`, anything else a JSON
/// 404 (etcd answers a plain "Not Found").
pub async fn fallback(req: http::Request<axum::body::Body>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let status = tonic::Status::unimplemented(format!("unknown method {}", req.uri().path()));
        return status.into_http::<axum::body::Body>().into_response();
    }
    HttpError::NotFound(req.uri().path().to_string()).into_response()
}
