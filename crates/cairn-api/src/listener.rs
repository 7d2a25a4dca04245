//! The client port's connections: plain TCP, or TLS (`--cert-file`), accepted and
//! handshaken off the accept loop so that a slow client holds up nobody. A verified client
//! certificate's common name reaches the services as [`COMMON_NAME_HEADER`] (etcd's user
//! for certificate auth), set from the connection alone: a client cannot send it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_tls::rustls::ServerConfig;
use cairn_tls::MaybeTls;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

/// The metadata that carries a verified client certificate's common name.
pub const COMMON_NAME_HEADER: &str = "cairn-client-cert-cn";

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in their TLS handshake at once; more wait in the kernel's backlog.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// What the services know of a client's connection.
#[derive(Debug, Clone, Default)]
pub struct ClientConnInfo {
    pub remote: Option<SocketAddr>,
    /// The common name of the client's certificate, when it presented one the CA signed.
    pub common_name: Option<String>,
}

/// One client connection: TCP, or TLS over it, and what the services know of it.
pub struct ClientStream {
    io: MaybeTls,
    info: ClientConnInfo,
}

impl tonic::transport::server::Connected for ClientStream {
    type ConnectInfo = ClientConnInfo;

    fn connect_info(&self) -> ClientConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The connections `listener` accepts, through TLS when `tls` is set. Stops accepting when
/// the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
) -> impl futures::Stream<Item = io::Result<ClientStream>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<ClientStream>>(128);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    let acceptor = tls.map(cairn_tls::tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a client connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Without TCP_NODELAY small responses wait for Nagle's timer (~40 ms each).
            let _ = tcp.set_nodelay(true);
            let info = ClientConnInfo { remote: Some(remote), common_name: None };
            let Some(acceptor) = acceptor.clone() else {
                if tx.send(Ok(ClientStream { io: MaybeTls::Plain(tcp), info })).await.is_err() {
                    return;
                }
                continue;
            };
            let Ok(permit) = pending.clone().acquire_owned().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let common_name = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .and_then(cairn_tls::common_name);
                        let info = ClientConnInfo { common_name, ..info };
                        let _ = tx.send(Ok(ClientStream { io: MaybeTls::from(tls), info })).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Sets [`COMMON_NAME_HEADER`] from the connection (and drops one a client sent).
pub fn with_common_name<B>(mut request: http::Request<B>) -> http::Request<B> {
    request.headers_mut().remove(COMMON_NAME_HEADER);
    let cn = request.extensions().get::<ClientConnInfo>().and_then(|i| i.common_name.clone());
    if let Some(value) = cn.and_then(|cn| http::HeaderValue::from_str(&cn).ok()) {
        request.headers_mut().insert(COMMON_NAME_HEADER, value);
    }
    request
}
