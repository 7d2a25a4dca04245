//! The simulated network under the real transport code: turmoil's TCP, for the peer port
//! (through `cairn_raft::transport::PeerTransport`) and the client port (tonic over it).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use cairn_raft::transport::{Accepted, PeerIo, PeerTransport};
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Members reach each other over turmoil's TCP, by host name.
#[derive(Debug)]
pub struct TurmoilTransport;

impl PeerTransport for TurmoilTransport {
    fn connect(&self, host: String, port: u16) -> BoxFuture<'static, io::Result<PeerIo>> {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok(Box::new(stream) as PeerIo)
        })
    }

    fn listen(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Accepted>> {
        Box::pin(async move {
            let listener = turmoil::net::TcpListener::bind(addr).await?;
            let accepted = futures::stream::unfold(listener, |listener| async move {
                let next =
                    listener.accept().await.map(|(stream, remote)| (Box::new(stream) as PeerIo, remote));
                Some((next, listener))
            });
            Ok(Box::pin(accepted) as Accepted)
        })
    }
}

/// A client-port connection for tonic's server.
pub struct ClientConn(pub turmoil::net::TcpStream);

impl tonic::transport::server::Connected for ClientConn {
    type ConnectInfo = ();

    fn connect_info(&self) {}
}

impl AsyncRead for ClientConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Connections accepted on a member's client port.
pub async fn client_listener(
    port: u16,
) -> io::Result<impl futures::Stream<Item = io::Result<ClientConn>> + Send + 'static> {
    let listener = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)).await?;
    Ok(futures::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(stream, _)| ClientConn(stream));
        Some((next, listener))
    }))
}

/// A gRPC channel to `host:port` over the simulated network.
pub fn channel(host: &str, port: u16) -> tonic::transport::Channel {
    let target = (host.to_string(), port);
    let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let (host, port) = target.clone();
        async move {
            let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}"))
        .expect("a valid URI")
        .connect_timeout(std::time::Duration::from_secs(1))
        .connect_with_connector_lazy(connector)
}
