//! The client port, whatever the backend: every etcd service (gRPC) and the HTTP side (JSON
//! gateway, health, metrics, the cluster page) on one listener, and its graceful stop. The
//! Raft member and the SQL member (both a [`crate::Node`]) serve through it.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Resolved;

/// How long a stop waits for client requests and streams to end before closing them.
const API_DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The running client port.
pub(crate) struct ClientPort {
    running: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

/// Serve `backend` on `listener`; returns the in-process client of every service (without
/// the learner gate: the library's client) and the running port.
pub(crate) fn serve<B: cairn_core::Backend>(
    backend: Arc<B>,
    resolved: &Resolved,
    listener: tokio::net::TcpListener,
    metrics: cairn_http::MetricsText,
) -> (cairn_client::Client, ClientPort) {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // In-process: `local` reaches every service without the learner gate (the library's
    // client calls them directly; the health checks and the cluster page, which also talk to
    // other members, through a channel); the JSON gateway calls the very services network
    // clients reach, learner gate and metrics included.
    let local = cairn_api::routes(backend.clone(), resolved.limits);
    let client = cairn_client::Client::from_transport(cairn_api::in_process_transport(local.clone()));
    let grpc = cairn_api::client_routes(backend, resolved.limits);
    let gateway = cairn_api::in_process_channel(grpc.clone());
    let http = cairn_http::router(
        gateway,
        cairn_api::in_process_channel(local),
        cairn_http::HttpOptions {
            etcd_version: cairn_api::maintenance::API_VERSION.to_string(),
            cairn_version: env!("CARGO_PKG_VERSION").to_string(),
            max_message_bytes: resolved.limits.max_grpc_message_bytes(),
            health_timeout: resolved.request_timeout,
            ready_when_learner: resolved.ready_when_learner,
            metrics: Some(metrics),
            timing: cairn_http::cluster::Timing {
                heartbeat_interval: resolved.heartbeat_interval,
                election_timeout: resolved.election_timeout,
                stale_timeout: resolved.stale_timeout,
            },
            member_channels: resolved.member_tls.clone().map(crate::tls::member_channels),
        },
    );
    let app = grpc.into_axum_router().merge(http).fallback(cairn_http::fallback);
    let serve = cairn_api::serve_router(app, listener, resolved.client_tls.clone(), resolved.limits, async {
        let _ = stop_rx.await;
    });
    let api = tokio::spawn(async move {
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "client API server failed");
        }
    });
    (client, ClientPort { running: Mutex::new(Some((stop_tx, api))) })
}

impl ClientPort {
    /// Stop serving: requests under way finish; streams that never end by themselves (a
    /// client's watch) would hold the stop forever: they are cut after a short grace.
    pub(crate) async fn stop(&self) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((stop, mut handle)) = running {
            let _ = stop.send(());
            if tokio::time::timeout(API_DRAIN_GRACE, &mut handle).await.is_err() {
                handle.abort();
                tracing::info!("client streams still open after {API_DRAIN_GRACE:?}: closed");
            }
        }
    }
}
