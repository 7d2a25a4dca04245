//! Peer authentication: a connection to the peer port serves nothing until the caller has
//! proved that it holds the cluster key, and the caller sends nothing until the member it
//! called has proved the same.
//!
//! The proof is a challenge-response at the start of every TCP connection, before HTTP/2:
//!
//! ```text
//! caller → member   MAGIC "CAIRNP1\n" | key fingerprint (16 hex) | caller nonce (32)
//! member → caller   0 | member nonce (32)                 or  1 | len u16 | refusal text
//! caller → member   HMAC(peer key, "client" | caller nonce | member nonce)
//! member → caller   0 | HMAC(peer key, "server" | caller nonce | member nonce)   or a refusal
//! ```
//!
//! The peer key is derived from the cluster key with HKDF-SHA256 and never crosses the wire;
//! both nonces are fresh per connection, so a recorded handshake cannot be replayed. The
//! handshake authenticates the start of a connection; it does not encrypt it, nor protect a
//! connection that an on-path attacker takes over afterwards: that is peer TLS's job
//! (`docs/security.md`).
//!
//! A member without a cluster key (and every member of 0.1) speaks plain HTTP/2 from the
//! first byte; a member tells the two apart by that byte (`C` against HTTP/2's `P`). Plain
//! connections to a member that has a key are served only with refusals ([`KeyCheck`]), so
//! that a node started without the key learns why it is not let in.
//!
//! [`KeyCheck`]: crate::cluster_key::KeyCheck

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use cairn_tls::MaybeTls;

use crate::cluster_key::ClusterKey;

/// The first bytes of an authenticating connection (version 1 of the handshake).
pub const MAGIC: &[u8; 8] = b"CAIRNP1\n";
const FINGERPRINT_BYTES: usize = 16;
const NONCE_BYTES: usize = 32;
const PROOF_BYTES: usize = 32;
const HELLO_BYTES: usize = MAGIC.len() + FINGERPRINT_BYTES + NONCE_BYTES;
const ACCEPTED: u8 = 0;
const REFUSED: u8 = 1;
/// The longest refusal text sent or read.
const MAX_REFUSAL_BYTES: usize = 1024;

/// How long a caller has to complete the handshake (and a member to answer it).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections still in their handshake at once; more are closed at once (a flood of
/// connections that never speak cannot hold a member's memory).
pub const MAX_PENDING_HANDSHAKES: usize = 256;

type HmacSha256 = Hmac<Sha256>;

/// Why a handshake did not authenticate a connection.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The other side refused this one, and said why.
    #[error("{0}")]
    Refused(String),
    /// The member called did not prove that it holds the cluster key.
    #[error("the member called did not prove that it holds the cluster key")]
    Unproven,
    /// The bytes received are not this handshake.
    #[error("not a cairn peer handshake: {0}")]
    Malformed(&'static str),
    #[error("peer handshake timed out after {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    #[error("peer handshake: {0}")]
    Io(#[from] io::Error),
}

impl HandshakeError {
    /// As the `io::Error` a connector returns (the peer error layer finds this value in it).
    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            HandshakeError::Refused(_) | HandshakeError::Unproven => io::ErrorKind::PermissionDenied,
            HandshakeError::Timeout => io::ErrorKind::TimedOut,
            HandshakeError::Malformed(_) => io::ErrorKind::InvalidData,
            HandshakeError::Io(e) => e.kind(),
        };
        io::Error::new(kind, self)
    }
}

fn proof(peer_key: &[u8; 32], role: &[u8], caller_nonce: &[u8], member_nonce: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(peer_key).expect("HMAC takes a key of any length");
    mac.update(b"cairn peer handshake v1 ");
    mac.update(role);
    mac.update(caller_nonce);
    mac.update(member_nonce);
    mac
}

fn nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    cairn_core::sim::fill_random(&mut nonce);
    nonce
}

async fn read_refusal<S: AsyncRead + Unpin>(io: &mut S) -> HandshakeError {
    let mut len = [0u8; 2];
    if let Err(e) = io.read_exact(&mut len).await {
        return e.into();
    }
    let len = usize::from(u16::from_be_bytes(len)).min(MAX_REFUSAL_BYTES);
    let mut text = vec![0u8; len];
    if let Err(e) = io.read_exact(&mut text).await {
        return e.into();
    }
    HandshakeError::Refused(String::from_utf8_lossy(&text).into_owned())
}

async fn send_refusal<S: AsyncWrite + Unpin>(io: &mut S, why: &str) -> io::Result<()> {
    let mut text = why.as_bytes();
    if text.len() > MAX_REFUSAL_BYTES {
        text = &text[..MAX_REFUSAL_BYTES];
    }
    let mut frame = Vec::with_capacity(3 + text.len());
    frame.push(REFUSED);
    frame.extend_from_slice(&(text.len() as u16).to_be_bytes());
    frame.extend_from_slice(text);
    io.write_all(&frame).await?;
    io.flush().await
}

/// The caller's side, on a fresh connection: prove the key and check the member's proof.
/// A caller without a key does not call this (it speaks plain HTTP/2).
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    key: &ClusterKey,
) -> Result<(), HandshakeError> {
    let peer_key = key.peer_key().ok_or(HandshakeError::Malformed("the caller has no cluster key"))?;
    let caller_nonce = nonce();
    let mut hello = Vec::with_capacity(HELLO_BYTES);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(key.fingerprint().as_bytes());
    hello.extend_from_slice(&caller_nonce);
    debug_assert_eq!(hello.len(), HELLO_BYTES);
    io.write_all(&hello).await?;
    io.flush().await?;

    let mut status = [0u8; 1];
    io.read_exact(&mut status).await?;
    match status[0] {
        ACCEPTED => {}
        REFUSED => return Err(read_refusal(io).await),
        _ => return Err(HandshakeError::Malformed("unknown answer to the hello")),
    }
    let mut member_nonce = [0u8; NONCE_BYTES];
    io.read_exact(&mut member_nonce).await?;
    let ours = proof(peer_key, b"client", &caller_nonce, &member_nonce).finalize().into_bytes();
    io.write_all(&ours).await?;
    io.flush().await?;

    io.read_exact(&mut status).await?;
    match status[0] {
        ACCEPTED => {}
        REFUSED => return Err(read_refusal(io).await),
        _ => return Err(HandshakeError::Malformed("unknown answer to the proof")),
    }
    let mut theirs = [0u8; PROOF_BYTES];
    io.read_exact(&mut theirs).await?;
    proof(peer_key, b"server", &caller_nonce, &member_nonce)
        .verify_slice(&theirs)
        .map_err(|_| HandshakeError::Unproven)
}

/// The text a member refuses a caller with when their key fingerprints differ.
pub fn mismatch(ours: &str, theirs: &str) -> String {
    format!(
        "cluster key mismatch: this member's key fingerprint is {ours}, the caller's is {theirs} \
         (every member must be started with the same --encryption-key-file or CAIRN_ENCRYPTION_KEY)"
    )
}

/// Why a member refused a connection (the `reason` label of the refusal counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The caller claims another key's fingerprint (or none, or this member has none).
    KeyMismatch,
    /// The caller claims this key's fingerprint but could not prove it holds the key.
    BadProof,
    /// Not a handshake, or the caller stopped half way.
    Malformed,
    /// The caller did not finish within [`HANDSHAKE_TIMEOUT`].
    Timeout,
    /// Too many connections were already in their handshake.
    Overloaded,
    /// A plain (unauthenticated) connection asked for a peer RPC.
    Unauthenticated,
    /// The TLS handshake failed (no certificate, another CA's, not TLS at all).
    Tls,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::KeyMismatch => "key_mismatch",
            Refusal::BadProof => "bad_proof",
            Refusal::Malformed => "malformed",
            Refusal::Timeout => "timeout",
            Refusal::Overloaded => "overloaded",
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Tls => "tls",
        }
    }
}

static REFUSALS: LazyLock<Family<Vec<(String, String)>, Counter>> = LazyLock::new(Family::default);

/// Registers `cairn_peer_refusals_total{reason}`.
pub fn register(registry: &mut prometheus_client::registry::Registry) {
    registry.register(
        "cairn_peer_refusals",
        "Peer connections and requests refused for want of the cluster key, by reason",
        REFUSALS.clone(),
    );
}

/// Refusals counted so far for `reason` (tests and status).
pub fn refusals(reason: Refusal) -> u64 {
    REFUSALS.get_or_create(&vec![("reason".to_string(), reason.label().to_string())]).get()
}

/// Counts a refusal and logs it, at most once per [`LOG_EVERY`] (a scanner or a misconfigured
/// node retrying in a loop must not flood the log); the log line says how many it stands for.
pub fn record_refusal(reason: Refusal, remote: Option<SocketAddr>, detail: &str) {
    REFUSALS.get_or_create(&vec![("reason".to_string(), reason.label().to_string())]).inc();
    static LAST_LOGGED: Mutex<Option<Instant>> = Mutex::new(None);
    static UNLOGGED: AtomicU64 = AtomicU64::new(0);
    let mut last = LAST_LOGGED.lock().unwrap_or_else(|e| e.into_inner());
    if last.is_some_and(|at| at.elapsed() < LOG_EVERY) {
        UNLOGGED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    *last = Some(Instant::now());
    let also = UNLOGGED.swap(0, Ordering::Relaxed);
    tracing::warn!(
        reason = reason.label(),
        remote = remote.map(|a| a.to_string()).unwrap_or_default(),
        refused_since_last_log = also,
        "refused a peer: {detail}"
    );
}

/// The shortest interval between two refusal log lines.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The member's side, after the caller's first byte showed a handshake: check the caller's
/// proof, and prove the key back.
pub async fn admit<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    key: &ClusterKey,
) -> Result<(), (Refusal, String)> {
    let malformed = |e: io::Error| (Refusal::Malformed, format!("reading the handshake: {e}"));
    let mut hello = [0u8; HELLO_BYTES];
    io.read_exact(&mut hello).await.map_err(malformed)?;
    if &hello[..MAGIC.len()] != MAGIC {
        return Err((Refusal::Malformed, "not a cairn peer handshake".into()));
    }
    let theirs = String::from_utf8_lossy(&hello[MAGIC.len()..MAGIC.len() + FINGERPRINT_BYTES]).into_owned();
    let caller_nonce = &hello[MAGIC.len() + FINGERPRINT_BYTES..];
    // The current key, or during a rotation the previous one (a member not switched yet).
    let proved_with = std::iter::once(key).chain(key.previous()).find(|k| k.fingerprint() == theirs);
    let peer_key = match proved_with.and_then(ClusterKey::peer_key) {
        Some(k) => k,
        None => return refuse(io, Refusal::KeyMismatch, mismatch(key.fingerprint(), &theirs)).await,
    };
    let member_nonce = nonce();
    let mut answer = Vec::with_capacity(1 + NONCE_BYTES);
    answer.push(ACCEPTED);
    answer.extend_from_slice(&member_nonce);
    io.write_all(&answer).await.map_err(malformed)?;
    io.flush().await.map_err(malformed)?;

    let mut theirs = [0u8; PROOF_BYTES];
    io.read_exact(&mut theirs).await.map_err(malformed)?;
    if proof(peer_key, b"client", caller_nonce, &member_nonce).verify_slice(&theirs).is_err() {
        let why = "authentication failed: the caller has this cluster's key fingerprint but could not \
                   prove that it holds the key";
        return refuse(io, Refusal::BadProof, why.into()).await;
    }
    let ours = proof(peer_key, b"server", caller_nonce, &member_nonce).finalize().into_bytes();
    let mut answer = Vec::with_capacity(1 + PROOF_BYTES);
    answer.push(ACCEPTED);
    answer.extend_from_slice(&ours);
    io.write_all(&answer).await.map_err(malformed)?;
    io.flush().await.map_err(malformed)?;
    Ok(())
}

async fn refuse<S: AsyncWrite + Unpin>(
    io: &mut S,
    reason: Refusal,
    why: String,
) -> Result<(), (Refusal, String)> {
    let _ = send_refusal(io, &why).await;
    Err((reason, why))
}

/// What the peer service knows about the connection a request came on (tonic puts it in
/// each request's extensions).
#[derive(Debug, Clone, Copy)]
pub struct PeerConnInfo {
    pub remote: Option<SocketAddr>,
    /// The caller proved it holds the cluster key.
    pub authenticated: bool,
}

/// An accepted peer connection, past its handshake if it made one. The first byte, read to
/// tell a handshake from HTTP/2, is given back to whoever reads next.
pub struct PeerStream {
    /// TCP, or TLS over it (`--peer-cert-file`).
    io: MaybeTls,
    first: Option<u8>,
    info: PeerConnInfo,
}

impl tonic::transport::server::Connected for PeerStream {
    type ConnectInfo = PeerConnInfo;

    fn connect_info(&self) -> PeerConnInfo {
        self.info
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(byte) = self.first {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            buf.put_slice(&[byte]);
            self.first = None;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
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

/// Sort one accepted connection (after TLS, if any): a handshake (authenticated, or refused
/// and closed) or plain HTTP/2 (unauthenticated).
async fn sort(io: MaybeTls, remote: SocketAddr, key: &ClusterKey) -> Result<PeerStream, (Refusal, String)> {
    let mut stream =
        PeerStream { io, first: None, info: PeerConnInfo { remote: Some(remote), authenticated: false } };
    let mut first = [0u8; 1];
    let n = stream.read(&mut first).await.map_err(|e| (Refusal::Malformed, e.to_string()))?;
    if n == 0 {
        return Err((Refusal::Malformed, "closed before sending anything".into()));
    }
    stream.first = Some(first[0]);
    if first[0] == MAGIC[0] {
        admit(&mut stream, key).await?;
        stream.info.authenticated = true;
    }
    Ok(stream)
}

/// Where the peer server accepts connections: a TCP listener, or a simulated network's.
pub enum PeerListener {
    Tcp(TcpListener),
    Other(crate::transport::Accepted),
}

/// An accepted connection, before TLS.
enum Conn {
    Tcp(TcpStream),
    Other(crate::transport::PeerIo),
}

impl PeerListener {
    async fn accept(&mut self) -> io::Result<(Conn, SocketAddr)> {
        match self {
            PeerListener::Tcp(listener) => {
                let (tcp, remote) = listener.accept().await?;
                let _ = tcp.set_nodelay(true);
                Ok((Conn::Tcp(tcp), remote))
            }
            PeerListener::Other(accepted) => match futures::StreamExt::next(accepted).await {
                Some(Ok((io, remote))) => Ok((Conn::Other(io), remote)),
                Some(Err(e)) => Err(e),
                // The network is gone: nothing more will come.
                None => std::future::pending().await,
            },
        }
    }
}

/// Accept TLS on `conn` when configured (never on a simulated network).
async fn secure(
    conn: Conn,
    tls: Option<&cairn_tls::tokio_rustls::TlsAcceptor>,
) -> Result<MaybeTls, (Refusal, String)> {
    let tcp = match conn {
        Conn::Tcp(tcp) => tcp,
        Conn::Other(_) if tls.is_some() => {
            return Err((Refusal::Tls, "TLS is not available on a simulated network".into()))
        }
        Conn::Other(io) => return Ok(MaybeTls::Other(io)),
    };
    match tls {
        None => Ok(MaybeTls::Plain(tcp)),
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(stream) => Ok(MaybeTls::from(stream)),
            Err(e) => Err((Refusal::Tls, format!("TLS handshake: {e}"))),
        },
    }
}

/// The peer server's incoming connections: accepted from `listener`, each sorted (and
/// authenticated) on its own task within [`HANDSHAKE_TIMEOUT`], so a caller that never
/// speaks holds up nobody. Stops accepting when the stream is dropped.
pub fn incoming(
    mut listener: PeerListener,
    key: ClusterKey,
    tls: Option<Arc<cairn_tls::tokio_rustls::rustls::ServerConfig>>,
) -> impl futures::Stream<Item = io::Result<PeerStream>> + Send + 'static {
    let tls = tls.map(cairn_tls::tokio_rustls::TlsAcceptor::from);
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<PeerStream>>(64);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (conn, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a peer connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                record_refusal(Refusal::Overloaded, Some(remote), "too many connections in their handshake");
                continue;
            };
            let (tx, key, tls) = (tx.clone(), key.clone(), tls.clone());
            tokio::spawn(async move {
                let admitted = async {
                    let io = secure(conn, tls.as_ref()).await?;
                    sort(io, remote, &key).await
                };
                let sorted = tokio::time::timeout(HANDSHAKE_TIMEOUT, admitted).await;
                drop(permit);
                match sorted {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err((reason, why))) => record_refusal(reason, Some(remote), &why),
                    Err(_) => record_refusal(Refusal::Timeout, Some(remote), "handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> ClusterKey {
        ClusterKey::from_secret(secret.as_bytes()).unwrap()
    }

    async fn handshake(
        caller: &ClusterKey,
        member: &ClusterKey,
    ) -> (Result<(), HandshakeError>, Result<(), (Refusal, String)>) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let (caller, member) = (caller.clone(), member.clone());
        let member = tokio::spawn(async move { admit(&mut b, &member).await });
        let called = authenticate(&mut a, &caller).await;
        (called, member.await.unwrap())
    }

    #[tokio::test]
    async fn the_same_key_authenticates_both_sides() {
        let k = key("the cluster's own secret");
        let (caller, member) = handshake(&k, &k).await;
        caller.unwrap();
        member.unwrap();
    }

    #[tokio::test]
    async fn during_a_rotation_the_previous_key_is_still_admitted() {
        let (old, new) = (key("the cluster key of this test"), key("the new cluster key of this test"));
        let rotated = new.clone().with_previous(old.clone());
        let (called, admitted) = handshake(&old, &rotated).await;
        assert!(called.is_ok() && admitted.is_ok(), "{called:?} {admitted:?}");
        let (called, admitted) = handshake(&new, &rotated).await;
        assert!(called.is_ok() && admitted.is_ok(), "{called:?} {admitted:?}");
        // A member that has not switched refuses the new key: the caller then tries its
        // previous one (network.rs).
        let (called, _) = handshake(&new, &old).await;
        assert!(matches!(called, Err(HandshakeError::Refused(_))));
    }

    #[tokio::test]
    async fn another_key_is_refused_naming_both_fingerprints() {
        let (ours, theirs) = (key("the cluster's own secret"), key("somebody else's secret!!"));
        let (caller, member) = handshake(&theirs, &ours).await;
        let HandshakeError::Refused(why) = caller.unwrap_err() else { panic!("not a refusal") };
        assert_eq!(why, mismatch(ours.fingerprint(), theirs.fingerprint()));
        assert_eq!(member.unwrap_err().0, Refusal::KeyMismatch);
        // A member without a key refuses a caller with one.
        let (caller, _) = handshake(&ours, &ClusterKey::none()).await;
        assert!(caller.unwrap_err().to_string().contains("this member's key fingerprint is none"));
    }

    /// Someone who read the fingerprint (it is not secret) but has another key gets nothing.
    #[tokio::test]
    async fn a_copied_fingerprint_without_the_key_is_refused() {
        let ours = key("the cluster's own secret");
        let forger = ClusterKey::forged(ours.fingerprint(), key("somebody else's secret!!"));
        let (caller, member) = handshake(&forger, &ours).await;
        assert!(caller.unwrap_err().to_string().contains("could not prove that it holds the key"));
        assert_eq!(member.unwrap_err().0, Refusal::BadProof);
    }

    /// A member that answers with the right fingerprint but not the key is not trusted.
    #[tokio::test]
    async fn an_impostor_member_is_detected_by_the_caller() {
        let ours = key("the cluster's own secret");
        let impostor = ClusterKey::forged(ours.fingerprint(), key("somebody else's secret!!"));
        let (mut a, mut b) = tokio::io::duplex(4096);
        // The impostor accepts any proof: it answers with its own key's proof.
        let fake = tokio::spawn(async move {
            let mut hello = [0u8; HELLO_BYTES];
            b.read_exact(&mut hello).await.unwrap();
            let member_nonce = nonce();
            b.write_all(&[ACCEPTED]).await.unwrap();
            b.write_all(&member_nonce).await.unwrap();
            let mut proof_in = [0u8; PROOF_BYTES];
            b.read_exact(&mut proof_in).await.unwrap();
            let caller_nonce = &hello[MAGIC.len() + FINGERPRINT_BYTES..];
            let forged = proof(impostor.peer_key().unwrap(), b"server", caller_nonce, &member_nonce);
            b.write_all(&[ACCEPTED]).await.unwrap();
            b.write_all(&forged.finalize().into_bytes()).await.unwrap();
        });
        assert!(matches!(authenticate(&mut a, &ours).await, Err(HandshakeError::Unproven)));
        fake.await.unwrap();
    }

    #[tokio::test]
    async fn garbage_and_silence_are_refused_and_counted() {
        let ours = key("the cluster's own secret");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = Box::pin(incoming(PeerListener::Tcp(listener), ours.clone(), None));
        let malformed = refusals(Refusal::Malformed);
        let mut garbage = TcpStream::connect(addr).await.unwrap();
        garbage.write_all(b"CAIRNXXXnot a handshake at all, but long enough to read in full").await.unwrap();
        let mut closed = Vec::new();
        let _ = garbage.read_to_end(&mut closed).await;
        assert!(closed.is_empty(), "nothing is answered to garbage");
        assert!(refusals(Refusal::Malformed) > malformed);
        // A real caller gets through meanwhile, and plain HTTP/2 is passed on unauthenticated.
        let mut good = TcpStream::connect(addr).await.unwrap();
        authenticate(&mut good, &ours).await.unwrap();
        let admitted = futures::StreamExt::next(&mut incoming).await.unwrap().unwrap();
        assert!(admitted.info.authenticated);
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let admitted = futures::StreamExt::next(&mut incoming).await.unwrap().unwrap();
        assert!(!admitted.info.authenticated);
    }
}
