//! A member on a SQL database ([`cairn_sql`]): the same etcd API and HTTP side as a Raft
//! member, with no peer port and no data directory. Any number of members share one database.

use std::net::SocketAddr;
use std::sync::Arc;

use cairn_sql::{SqlBackend, SqlConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{Client, Config, Error};

/// A running member serving the etcd API from a SQL database.
pub struct SqlMember {
    backend: Arc<SqlBackend>,
    client: Client,
    client_addr: SocketAddr,
    api: std::sync::Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl SqlMember {
    /// Connect to `config.backend` (creating or checking Cairn's tables) and serve clients on
    /// `config.client_addr`.
    pub async fn start(config: Config) -> Result<SqlMember, Error> {
        let resolved = config.resolve().map_err(Error::Config)?;
        let url = config.backend.clone().ok_or_else(|| Error::Config("no --backend given".into()))?;
        let password = match (&config.backend_password_file, &config.backend_password) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "give the database password once: --backend-password-file or CAIRN_BACKEND_PASSWORD"
                        .into(),
                ))
            }
            (Some(path), None) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        Error::Config(format!("cannot read --backend-password-file {}: {e}", path.display()))
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            (None, password) => password.clone(),
        };
        let listener = tokio::net::TcpListener::bind(resolved.client_addr)
            .await
            .map_err(|source| Error::ClientListen { addr: resolved.client_addr, source })?;
        let client_addr = listener
            .local_addr()
            .map_err(|source| Error::ClientListen { addr: resolved.client_addr, source })?;
        let scheme = if resolved.client_tls.is_some() { "https" } else { "http" };
        let backend = Arc::new(
            SqlBackend::open(SqlConfig {
                url,
                password,
                name: resolved.name.clone(),
                client_urls: vec![format!("{scheme}://{client_addr}")],
                heartbeat: resolved.heartbeat_interval,
                election_timeout: resolved.election_timeout,
                poll_interval: std::time::Duration::from_millis(config.sql_poll_interval.max(1)),
                ..Default::default()
            })
            .await?,
        );
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let local = cairn_api::in_process_channel(cairn_api::routes(backend.clone(), resolved.limits));
        let grpc = cairn_api::client_routes(backend.clone(), resolved.limits);
        let gateway = cairn_api::in_process_channel(grpc.clone());
        let http = cairn_http::router(
            gateway,
            local.clone(),
            cairn_http::HttpOptions {
                etcd_version: cairn_api::maintenance::API_VERSION.to_string(),
                cairn_version: env!("CARGO_PKG_VERSION").to_string(),
                max_message_bytes: resolved.limits.max_grpc_message_bytes(),
                health_timeout: resolved.request_timeout,
                ready_when_learner: resolved.ready_when_learner,
                metrics: Some(crate::sql_metrics_text(&backend)),
                timing: cairn_http::cluster::Timing {
                    heartbeat_interval: resolved.heartbeat_interval,
                    election_timeout: resolved.election_timeout,
                    stale_timeout: resolved.stale_timeout,
                },
                member_channels: resolved.member_tls.clone().map(crate::tls::member_channels),
            },
        );
        let app = grpc.into_axum_router().merge(http).fallback(cairn_http::fallback);
        let serve =
            cairn_api::serve_router(app, listener, resolved.client_tls.clone(), resolved.limits, async {
                let _ = stop_rx.await;
            });
        let api = tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "client API server failed");
            }
        });
        tracing::info!(client = %client_addr, backend = ?backend.kind(), "serving the etcd v3 API from a SQL database");
        Ok(SqlMember {
            backend,
            client: Client::from_channel(local),
            client_addr,
            api: std::sync::Mutex::new(Some((stop_tx, api))),
        })
    }

    /// Where etcd clients reach this member.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// An in-process client (as [`crate::Node::client`]).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The backend (the `cairn_core` traits on the database).
    pub fn backend(&self) -> &SqlBackend {
        &self.backend
    }

    /// Stop serving and leave the member list. Acknowledged writes are already committed.
    pub async fn stop(&self) {
        let api = self.api.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((stop, mut handle)) = api {
            let _ = stop.send(());
            if tokio::time::timeout(crate::API_DRAIN_GRACE, &mut handle).await.is_err() {
                handle.abort();
            }
        }
        self.backend.leave().await;
    }
}
