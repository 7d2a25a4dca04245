//! Connections from this member to other members' client ports through TLS (the cluster
//! page asks every member's status at its client URL): the member's own certificate as the
//! client's, the other members' verified against `--trusted-ca-file`.

use std::sync::Arc;
use std::time::Duration;

use cairn_tls::rustls::ClientConfig;
use tonic::transport::{Endpoint, Uri};

/// Channels to members' `https://` client URLs.
pub(crate) fn member_channels(tls: Arc<ClientConfig>) -> cairn_http::cluster::MemberChannels {
    cairn_http::cluster::MemberChannels(Arc::new(move |url: &str, timeout: Duration| {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("bad client URL {url}: {e}"))?
            .connect_timeout(timeout)
            .timeout(timeout);
        let tls = tls.clone();
        let connector = tower::service_fn(move |uri: Uri| {
            let tls = tls.clone();
            async move {
                let host = uri.host().ok_or_else(|| std::io::Error::other("client URL without a host"))?;
                let port = uri.port_u16().unwrap_or(2379);
                let tcp = tokio::net::TcpStream::connect((host, port)).await?;
                tcp.set_nodelay(true)?;
                let name = cairn_tls::server_name(host).map_err(std::io::Error::other)?;
                let stream = cairn_tls::tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        Ok(endpoint.connect_with_connector_lazy(connector))
    }))
}
