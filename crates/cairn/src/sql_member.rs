//! Starting a member on a SQL database ([`cairn_sql`]): the same etcd API and HTTP side as
//! a Raft member, with no peer port and no data directory. Any number of members share one
//! database. [`crate::Node::start`] calls it when a backend URL is set.

use std::net::SocketAddr;
use std::sync::Arc;

use cairn_sql::{SqlBackend, SqlConfig};

use crate::{Client, Config, Error};

/// A member serving the etcd API from a SQL database.
pub(crate) struct Started {
    pub backend: Arc<SqlBackend>,
    pub client: Client,
    pub client_addr: SocketAddr,
    pub port: crate::client_port::ClientPort,
}

/// Connect to `config.backend` (creating or checking Cairn's tables) and serve clients on
/// `config.client_addr`.
pub(crate) async fn start(config: Config) -> Result<Started, Error> {
    let resolved = config.resolve().map_err(Error::Config)?;
    let url = config.backend.clone().ok_or_else(|| Error::Config("no --backend given".into()))?;
    let password = match (&config.backend_password_file, &config.backend_password) {
        (Some(_), Some(_)) => {
            return Err(Error::Config(
                "give the database password once: --backend-password-file or CAIRN_BACKEND_PASSWORD".into(),
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
    let client_addr =
        listener.local_addr().map_err(|source| Error::ClientListen { addr: resolved.client_addr, source })?;
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
    let metrics = crate::sql_metrics_text(&backend);
    let (local, port) = crate::client_port::serve(backend.clone(), &resolved, listener, metrics);
    tracing::info!(client = %client_addr, backend = ?backend.kind(), "serving the etcd v3 API from a SQL database");
    Ok(Started { backend, client: local, client_addr, port })
}
