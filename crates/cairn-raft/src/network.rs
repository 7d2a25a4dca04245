//! The peer transport, client side: openraft's `RaftNetworkV2` over tonic to each peer's
//! `cairnpb.Peer` service. One lazily connected channel per peer, reused by every RPC.
//!
//! Outgoing connections bind to this node's own peer address, so that a firewall rule on
//! the source address (how the chaos harness partitions nodes on one machine) applies.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock: the real one in a process, the virtual one in a simulation.
use tokio::time::Instant;

use futures::{FutureExt, Stream, StreamExt};
use hyper_util::rt::TokioIo;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{stream_append_sequential, RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::RaftNetworkV2;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::cluster_key::{ClusterKey, KeyStamp};
use crate::codec;
use crate::pb::peer_client::PeerClient;
use crate::pb::{RaftPayload, SnapshotChunk};
use crate::peer_error::PeerError;
use crate::state_machine::SnapshotData;
use crate::types::{NodeId, PeerNode, Snapshot, TypeConfig, Vote};
use cairn_tls::MaybeTls;
use tonic::service::interceptor::InterceptedService;

const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Open (or reuse) channels to peers. Cheap to clone.
#[derive(Clone)]
pub struct PeerChannels {
    local_ip: Option<IpAddr>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Stamps every request with this member's cluster key fingerprint.
    stamp: KeyStamp,
    /// Every connection proves this key before its first request (unless it is none).
    key: ClusterKey,
    /// The largest message sent or accepted ([`peer_message_limit`]).
    max_message: usize,
    /// TLS towards the other members (`--peer-cert-file`), under the key handshake.
    tls: Option<Arc<cairn_tls::rustls::ClientConfig>>,
    /// The network, when not the operating system's TCP (a simulation's).
    transport: Option<Arc<dyn crate::transport::PeerTransport>>,
}

/// A client of a peer's `cairnpb.Peer` service, its requests stamped with the key fingerprint.
pub type Client = PeerClient<InterceptedService<Channel, KeyStamp>>;

impl PeerChannels {
    /// `local_ip`: the address outgoing connections bind to (`None` or unspecified: any);
    /// `key`: the cluster key whose fingerprint every request carries.
    pub fn new(local_ip: Option<IpAddr>, key: &ClusterKey) -> PeerChannels {
        let local_ip = local_ip.filter(|ip| !ip.is_unspecified());
        PeerChannels {
            local_ip,
            channels: Default::default(),
            stamp: key.stamp(),
            key: key.clone(),
            max_message: peer_message_limit(DEFAULT_MAX_REQUEST_BYTES),
            tls: None,
            transport: None,
        }
    }

    /// The same channels over another network than TCP (`None`: TCP).
    pub fn with_transport(
        mut self,
        transport: Option<Arc<dyn crate::transport::PeerTransport>>,
    ) -> PeerChannels {
        self.transport = transport;
        self
    }

    /// The same channels through TLS.
    pub fn with_tls(mut self, tls: Option<Arc<cairn_tls::rustls::ClientConfig>>) -> PeerChannels {
        self.tls = tls;
        self
    }

    /// The same channels with another message size limit.
    pub fn with_max_message(mut self, bytes: usize) -> PeerChannels {
        self.max_message = bytes;
        self
    }

    /// A channel to `addr` (host:port).
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().expect("peer channel map poisoned");
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let local_ip = self.local_ip;
        let (key, tls, transport) = (self.key.clone(), self.tls.clone(), self.transport.clone());
        let connector = tower::service_fn(move |uri: Uri| {
            connect(uri, local_ip, key.clone(), tls.clone(), transport.clone())
        });
        let channel = endpoint.connect_with_connector_lazy(connector);
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    pub fn client(&self, addr: &str) -> Result<Client, tonic::transport::Error> {
        Ok(PeerClient::with_interceptor(self.channel(addr)?, self.stamp.clone())
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message))
    }
}

/// etcd's default `--max-request-bytes` (the API layer's default too).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// Log entries in one AppendEntries at most (openraft's `max_payload_entries`).
pub const MAX_PAYLOAD_ENTRIES: u64 = 64;

/// The largest peer message a member sends or accepts, given `--max-request-bytes`: a full
/// AppendEntries of the largest entries, with room for their framing; never less than
/// 16 MiB (snapshot chunks are 1 MiB). About 100 MiB at the default 1.5 MiB requests.
pub fn peer_message_limit(max_request_bytes: usize) -> usize {
    let entry = max_request_bytes.saturating_add(64 << 10);
    (MAX_PAYLOAD_ENTRIES as usize).saturating_mul(entry).max(16 << 20)
}

async fn connect(
    uri: Uri,
    local_ip: Option<IpAddr>,
    key: ClusterKey,
    tls: Option<Arc<cairn_tls::rustls::ClientConfig>>,
    transport: Option<Arc<dyn crate::transport::PeerTransport>>,
) -> io::Result<TokioIo<MaybeTls>> {
    match connect_with(&uri, local_ip, &key, tls.clone(), transport.as_deref()).await {
        // During a key rotation the member called may not have switched yet: prove the
        // previous key on a new connection.
        Err(ConnectError::Refused(_)) if key.previous().is_some() => {
            let previous = key.previous().expect("checked").clone();
            connect_with(&uri, local_ip, &previous, tls, transport.as_deref())
                .await
                .map_err(ConnectError::into_io)
        }
        other => other.map_err(ConnectError::into_io),
    }
}

/// Prove the cluster key on a new connection (nothing to prove without one).
async fn prove_key(stream: &mut MaybeTls, key: &ClusterKey) -> Result<(), ConnectError> {
    if key.is_none() {
        return Ok(());
    }
    let proved = tokio::time::timeout(
        crate::peer_auth::HANDSHAKE_TIMEOUT,
        crate::peer_auth::authenticate(stream, key),
    )
    .await;
    match proved {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ crate::peer_auth::HandshakeError::Refused(_))) => Err(ConnectError::Refused(e.into_io())),
        Ok(Err(e)) => Err(ConnectError::Other(e.into_io())),
        Err(_) => Err(crate::peer_auth::HandshakeError::Timeout.into_io().into()),
    }
}

/// Why a peer connection failed: refused by the member's handshake, or anything else.
enum ConnectError {
    Refused(io::Error),
    Other(io::Error),
}

impl ConnectError {
    fn into_io(self) -> io::Error {
        match self {
            ConnectError::Refused(e) | ConnectError::Other(e) => e,
        }
    }
}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        ConnectError::Other(e)
    }
}

async fn connect_with(
    uri: &Uri,
    local_ip: Option<IpAddr>,
    key: &ClusterKey,
    tls: Option<Arc<cairn_tls::rustls::ClientConfig>>,
    transport: Option<&dyn crate::transport::PeerTransport>,
) -> Result<TokioIo<MaybeTls>, ConnectError> {
    let host = uri.host().ok_or_else(|| io::Error::other("peer address without host"))?;
    let port = uri.port_u16().ok_or_else(|| io::Error::other("peer address without port"))?;
    if let Some(transport) = transport {
        if tls.is_some() {
            return Err(io::Error::other("TLS is not available on a simulated network").into());
        }
        let mut stream = MaybeTls::Other(transport.connect(host.to_string(), port).await?);
        prove_key(&mut stream, key).await?;
        return Ok(TokioIo::new(stream));
    }
    let mut last_err = io::Error::other(format!("{host}:{port} resolved to no address"));
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket =
            if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        if let Some(ip) = local_ip.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        match socket.connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                let mut stream = match &tls {
                    None => MaybeTls::Plain(stream),
                    Some(tls) => {
                        let name = cairn_tls::server_name(host).map_err(io::Error::other)?;
                        let secured = cairn_tls::tokio_rustls::TlsConnector::from(tls.clone())
                            .connect(name, stream)
                            .await?;
                        MaybeTls::from(secured)
                    }
                };
                prove_key(&mut stream, key).await?;
                return Ok(TokioIo::new(stream));
            }
            Err(e) => last_err = e,
        }
    }
    Err(last_err.into())
}

/// openraft's network factory: a [`PeerConnection`] per target.
#[derive(Clone)]
pub struct PeerNetwork {
    pub channels: PeerChannels,
    /// The shortest deadline of one RPC (the election timeout). openraft offers the
    /// heartbeat interval; a link slower than that is slow, not broken, and cutting every
    /// message at it would stop all progress (the chaos harness's `delay` nemesis found it).
    pub min_rpc_deadline: Duration,
    /// Set when a peer answers a vote request with "you were removed".
    pub removed: Arc<tokio::sync::watch::Sender<bool>>,
    /// Where each member serves peers now (see [`follow_addresses`]).
    pub addresses: Addresses,
}

/// Every member's current peer address. A connection looks its target up for every
/// request, so a member moved by MemberUpdate is reached at its new address although
/// openraft keeps the connection it made for the old one.
pub type Addresses = Arc<std::sync::RwLock<std::collections::BTreeMap<NodeId, String>>>;

/// Keep `addresses` equal to the members' addresses in `raft`'s configuration (runs until
/// aborted or Raft stops).
pub(crate) async fn follow_addresses(raft: crate::types::Raft, addresses: Addresses) {
    use openraft::async_runtime::watch::WatchReceiver;
    // Server metrics change with the membership (and role), not at every append.
    let mut metrics = raft.server_metrics();
    loop {
        let nodes: Vec<(NodeId, String)> = {
            let m = metrics.borrow_watched();
            m.membership_config.membership().nodes().map(|(id, n)| (*id, n.peer_addr.clone())).collect()
        };
        {
            let mut book = addresses.write().unwrap_or_else(|e| e.into_inner());
            for (id, addr) in nodes {
                book.insert(id, addr);
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> PeerConnection {
        self.addresses.write().unwrap_or_else(|e| e.into_inner()).insert(target, node.peer_addr.clone());
        PeerConnection {
            target,
            channels: self.channels.clone(),
            addresses: self.addresses.clone(),
            min_rpc_deadline: self.min_rpc_deadline,
            pipelined: true,
            removed: self.removed.clone(),
        }
    }
}

pub struct PeerConnection {
    target: NodeId,
    channels: PeerChannels,
    addresses: Addresses,
    min_rpc_deadline: Duration,
    /// Whether the peer serves `StreamAppend`; cleared when it answers Unimplemented (an
    /// older member during a rolling upgrade), after which AppendEntries go one at a time.
    pipelined: bool,
    removed: Arc<tokio::sync::watch::Sender<bool>>,
}

/// Requests encoded ahead of the transport on a replication stream.
const PIPELINE_DEPTH: usize = 16;

/// Aborts a task when dropped (ties a helper task to the stream that needs it).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What replication receives from a pipelined stream.
type AppendResults = BoxStream<'static, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>;

fn unreachable<E: std::error::Error + 'static>(e: &E) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(e))
}

fn status_to_rpc(status: tonic::Status) -> RPCError<TypeConfig> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            unreachable(&status)
        }
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

impl PeerConnection {
    fn client(&self) -> Result<Client, RPCError<TypeConfig>> {
        let addr = self.addresses.read().unwrap_or_else(|e| e.into_inner()).get(&self.target).cloned();
        let addr = addr.ok_or_else(|| unreachable(&io::Error::other("no address for this member")))?;
        self.channels.client(&addr).map_err(|e| unreachable(&e))
    }

    async fn unary<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        rpc: &Req,
        ttl: Duration,
        call: impl AsyncFnOnce(
            Client,
            tonic::Request<RaftPayload>,
        ) -> Result<tonic::Response<RaftPayload>, tonic::Status>,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let data = codec::encode(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut req = tonic::Request::new(RaftPayload { data });
        req.set_timeout(ttl.max(self.min_rpc_deadline));
        let resp = call(self.client()?, req).await.map_err(status_to_rpc)?;
        codec::decode(&resp.into_inner().data).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }

    /// Open a `StreamAppend` stream that carries `input` and yields the follower's results in
    /// order. A request unanswered for the RPC deadline ends the stream with `Unreachable`
    /// (a paused or partitioned follower keeps the TCP connection open).
    async fn pipelined_append<S>(
        &mut self,
        input: S,
        option: &RPCOption,
    ) -> Result<AppendResults, RPCError<TypeConfig>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        let mut client = self.client()?;
        let deadline = option.soft_ttl().max(self.min_rpc_deadline);
        // When each unanswered request went out, oldest first.
        let in_flight: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
        let encode_failure: Arc<Mutex<Option<String>>> = Arc::default();
        // openraft's request generator holds its replication state locked while it waits for
        // new entries, and the next session needs that lock: the generator must be dropped
        // as soon as this session ends, whatever the transport is doing (hyper stops polling
        // a request body whose HTTP/2 window is full). So a pump task owns it, and dropping
        // the result stream aborts the pump.
        let (to_send, outbound) = tokio::sync::mpsc::channel::<RaftPayload>(PIPELINE_DEPTH);
        let pump = {
            let in_flight = in_flight.clone();
            let encode_failure = encode_failure.clone();
            let mut input = input;
            tokio::spawn(async move {
                while let Some(req) = input.next().await {
                    let data = match codec::encode(&req) {
                        Ok(data) => data,
                        Err(e) => {
                            *encode_failure.lock().expect("encode failure slot poisoned") =
                                Some(e.to_string());
                            return;
                        }
                    };
                    if let (Some(f), Some(l)) = (req.entries.first(), req.entries.last()) {
                        crate::probe::mark_range(
                            f.log_id.index,
                            l.log_id.index,
                            crate::probe::Stage::ReplSent,
                        );
                    }
                    in_flight.lock().expect("in-flight queue poisoned").push_back(Instant::now());
                    if to_send.send(RaftPayload { data }).await.is_err() {
                        return;
                    }
                }
            })
        };
        let session_alive = AbortOnDrop(pump.abort_handle());
        let outbound = tokio_stream::wrappers::ReceiverStream::new(outbound);
        let inbound = match tokio::time::timeout(deadline, client.stream_append(outbound)).await {
            Err(_) => return Err(unreachable(&io::Error::other("opening the replication stream timed out"))),
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(
                    target = self.target,
                    "peer has no StreamAppend: replicating one request at a time"
                );
                self.pipelined = false;
                return Err(unreachable(&status));
            }
            Ok(Err(status)) => return Err(status_to_rpc(status)),
            Ok(Ok(response)) => response.into_inner(),
        };
        let results = futures::stream::unfold(Some((inbound, session_alive)), move |state| {
            let in_flight = in_flight.clone();
            let encode_failure = encode_failure.clone();
            async move {
                let (mut inbound, session_alive) = state?;
                let answer = loop {
                    let oldest = in_flight.lock().expect("in-flight queue poisoned").front().copied();
                    let wait_until = oldest.unwrap_or_else(Instant::now) + deadline;
                    match tokio::time::timeout_at(wait_until, inbound.message()).await {
                        Ok(answer) => break answer,
                        // Nothing was in flight for the whole wait: keep waiting.
                        Err(_) if oldest.is_none() => continue,
                        Err(_) => {
                            let e = io::Error::other(format!("no append result within {deadline:?}"));
                            return Some((Err(unreachable(&e)), None));
                        }
                    }
                };
                let item = match answer {
                    Ok(Some(payload)) => {
                        in_flight.lock().expect("in-flight queue poisoned").pop_front();
                        let r = codec::decode::<StreamAppendResult<TypeConfig>>(&payload.data)
                            .map_err(|e| RPCError::Network(NetworkError::new(&e)));
                        if let Ok(Ok(Some(l))) = &r {
                            crate::probe::mark(l.index, crate::probe::Stage::ReplAcked);
                        }
                        r
                    }
                    Ok(None) => {
                        let failure = encode_failure.lock().expect("encode failure slot poisoned").take();
                        return failure.map(|e| {
                            (Err(RPCError::Network(NetworkError::new(&io::Error::other(e)))), None)
                        });
                    }
                    Err(status) => Err(status_to_rpc(status)),
                };
                let next = item.is_ok().then_some((inbound, session_alive));
                Some((item, next))
            }
        });
        Ok(Box::pin(results))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&rpc, option.hard_ttl(), async |mut c, r| c.append_entries(r).await).await
    }

    /// Pipelined replication: one gRPC bidirectional stream per replication session, so the
    /// leader sends the next entries while the follower still syncs the previous ones
    /// (openraft's default sends one request and waits for its answer). A stream of one
    /// request (a heartbeat) is a plain unary call.
    fn stream_append<'s, S>(
        &'s mut self,
        mut input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            if !self.pipelined {
                return stream_append_sequential(self, input, option).await;
            }
            let Some(first) = input.next().await else {
                return Ok(Box::pin(futures::stream::empty()) as BoxStream<'s, _>);
            };
            let first = futures::stream::iter([first]);
            // The request already generated, if any (`None`: the next one is not ready yet).
            let second = match input.next().now_or_never() {
                Some(None) => return stream_append_sequential(self, first, option).await,
                ready => ready.flatten(),
            };
            let input = first.chain(futures::stream::iter(second)).chain(input);
            Ok(self.pipelined_append(input, &option).await? as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let removed = self.removed.clone();
        self.unary(&rpc, option.hard_ttl(), async move |mut c, r| {
            let answer = c.vote(r).await;
            if let Err(status) = &answer {
                if PeerError::from_status(status) == PeerError::Removed {
                    tracing::error!("a member says this one was removed from the cluster");
                    removed.send_replace(true);
                }
            }
            answer
        })
        .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&req, option.hard_ttl(), async |mut c, r| c.transfer_leader(r).await).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let sent = self.send_snapshot(vote, snapshot, cancel).await;
        if let Err(e) = &sent {
            tracing::warn!(target = self.target, error = %e, "sending a snapshot failed");
        }
        sent
    }
}

impl PeerConnection {
    async fn send_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let to_streaming = |e: RPCError<TypeConfig>| match e {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::Network(n) => StreamingError::Network(n),
            other => StreamingError::Network(NetworkError::new(&other)),
        };
        let mut client = self.client().map_err(to_streaming)?;
        let net = |e: &dyn std::fmt::Display| {
            StreamingError::Network(NetworkError::new(&io::Error::other(e.to_string())))
        };
        let vote = codec::encode(&vote).map_err(|e| net(&e))?;
        // A live snapshot is written out now, at the state's own (newer or equal) log id.
        let (written_at, file) = cairn_core::sim::run_blocking(move || snapshot.snapshot.into_file())
            .await
            .map_err(|e| net(&e))?
            .map_err(|e| net(&e))?;
        let meta = codec::encode(written_at.as_ref().unwrap_or(&snapshot.meta)).map_err(|e| net(&e))?;
        // Read the file in chunks on a blocking thread (in a simulation: in a task) and
        // stream them.
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
        let mut offset = 0u64;
        let mut first = Some((vote, meta));
        // The next chunk to send, `None` once everything was.
        let mut next_chunk = move || -> io::Result<Option<SnapshotChunk>> {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; SNAPSHOT_CHUNK];
            let n = file.read_at(&mut buf, offset)?;
            buf.truncate(n);
            offset += n as u64;
            let (vote, meta) = first.take().unwrap_or_default();
            Ok((n > 0 || !vote.is_empty()).then_some(SnapshotChunk { vote, meta, data: buf }))
        };
        let reader = if cairn_core::sim::is_simulated() {
            tokio::spawn(async move {
                while let Some(chunk) = next_chunk()? {
                    let last = chunk.data.is_empty();
                    if tx.send(chunk).await.is_err() || last {
                        break;
                    }
                }
                Ok(())
            })
        } else {
            tokio::task::spawn_blocking(move || -> io::Result<()> {
                while let Some(chunk) = next_chunk()? {
                    let last = chunk.data.is_empty();
                    if tx.blocking_send(chunk).is_err() || last {
                        break;
                    }
                }
                Ok(())
            })
        };
        let send = client.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
        let resp = tokio::select! {
            r = send => r.map_err(|s| to_streaming(status_to_rpc(s)))?,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        reader.await.map_err(|e| net(&e))?.map_err(|e| net(&e))?;
        tracing::info!(target = self.target, "sent snapshot");
        codec::decode(&resp.into_inner().data).map_err(|e| net(&e))
    }
}
