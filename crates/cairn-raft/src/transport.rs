//! How members reach each other: TCP (every real member, `None` in [`crate::NodeConfig`]'s
//! `transport`), or a [`PeerTransport`] given by the caller — a deterministic simulation's
//! network. Everything above the byte stream (the key handshake, HTTP/2, the peer service)
//! is the same code either way.

use std::fmt::Debug;
use std::io;
use std::net::SocketAddr;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

/// A connection on a [`PeerTransport`].
pub type PeerIo = Box<dyn cairn_tls::Io>;

/// Accepted connections, each with the caller's address.
pub type Accepted = BoxStream<'static, io::Result<(PeerIo, SocketAddr)>>;

/// A network other than the operating system's TCP (no TLS on it).
pub trait PeerTransport: Debug + Send + Sync + 'static {
    /// Open a connection to `host:port`.
    fn connect(&self, host: String, port: u16) -> BoxFuture<'static, io::Result<PeerIo>>;
    /// Listen on `addr`.
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Accepted>>;
}
