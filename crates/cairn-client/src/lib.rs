#![deny(missing_docs)]
//! An etcd v3 client with coordination recipes, for Cairn and for etcd alike.
//!
//! [`Client`] wraps one [`Transport`]: a gRPC channel to remote members
//! ([`Client::connect`]), or a member's services called in the same process
//! (`cairn::Node::client`: the same service code, without HTTP/2 or a socket). On it sit
//! the recipes that etcd's `clientv3/concurrency` package offers, with the same keys and
//! the same waiting discipline, so a Cairn lock and an etcd lock interoperate
//! with `etcdctl lock` and `etcdctl elect`:
//!
//! - [`Lease`]: a lease kept alive in the background, with a loss signal;
//! - [`Lock`]: a mutex; its guard's [`LockGuard::fencing_token`] orders holders;
//! - [`Election`]: campaign, proclaim, observe, resign (also on drop);
//! - [`TypedKey`]: a serde value under a key, with compare-and-swap and watch.
//! - [`Registry`]: the product's components per server, with version and heartbeat;
//! - [`SingleRunner`]: a scheduled job on exactly one server, with a fencing token;
//! - [`Messenger`]: messages to one server or all, at least once, in lease-bound inboxes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cairn_client::Error> {
//! use cairn_client::{Client, Lease, Lock};
//! let client = Client::connect(["127.0.0.1:2379"]).await?;
//! let lease = Lease::grant(&client, 10).await?;
//! let guard = Lock::new(&client, "migrations").lock(&lease).await?;
//! // Pass guard.fencing_token() to the storage that the lock protects.
//! guard.unlock().await?;
//! # Ok(()) }
//! ```

pub mod concurrency;
pub mod config;
pub mod messenger;
pub mod registry;
mod watch;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::*;
use tonic::transport::{Channel, Endpoint};
use tower::Layer;

pub use cairn_proto as proto;
pub use concurrency::{Election, Leadership, Lease, Lock, LockGuard, SingleRunner, Turn};
pub use config::{CasOutcome, TypedKey, Versioned};
pub use messenger::{Inbox, Message, Messenger};
pub use registry::{ComponentStatus, Registered, Registration, Registry};
pub use watch::{wait_deletes, WatchStream};

/// What a recipe can fail with. Errors of the etcd API keep their gRPC status (etcd's code
/// and text); the recipes' own errors carry etcd's texts too.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call of the etcd API failed: its gRPC status, with etcd's code and text.
    #[error(transparent)]
    Status(#[from] tonic::Status),
    /// No connection could be made.
    #[error("cannot connect: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// An endpoint that is not `host:port` or a URL (or none given).
    #[error("invalid endpoint {0:?}")]
    Endpoint(String),
    /// The lease under a lock or an election ended (expired or revoked) before it was won.
    #[error("mutex: session is expired")]
    SessionExpired,
    /// Proclaim by a candidate that no longer leads.
    #[error("election: not leader")]
    NotLeader,
    /// A lease keepalive found the lease gone.
    #[error("lease {0:x} not found or expired")]
    LeaseLost(i64),
    /// A watch ended without the event it waited for (stream closed, or canceled by the server).
    #[error("watch ended: {0}")]
    WatchEnded(String),
    /// A [`TypedKey`] value that is not the expected JSON.
    #[error("cannot decode the value of {key:?}: {source}")]
    Decode {
        /// The key whose value it is.
        key: String,
        /// What JSON said.
        source: serde_json::Error,
    },
    /// A value that cannot be written as JSON.
    #[error("cannot encode a value: {0}")]
    Encode(serde_json::Error),
    /// A [`Messenger`] message to a server without an open inbox (down, or never started).
    #[error("server {0:?} has no open inbox")]
    NoInbox(String),
    /// A [`TypedKey`] value written with a newer schema version than this reader knows.
    #[error("the value of {key:?} has schema version {found}, newer than this reader's {supported}: upgrade this replica")]
    NewerSchema {
        /// The key whose value it is.
        key: String,
        /// The schema version the value was written with.
        found: u32,
        /// The newest schema version this reader reads.
        supported: u32,
    },
}

/// What a [`Client`] sends its gRPC requests through: a tonic [`Channel`] to remote members,
/// or any other service taking gRPC's HTTP requests (e.g. a member's services called
/// directly in the same process). Cheap to clone.
pub type Transport = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    TransportError,
>;

/// Why a [`Transport`] could not carry a request (tonic turns it into a `Status`: e.g.
/// Unavailable when no member could be connected to). A type of its own rather than a boxed
/// error: the compiler cannot prove the tasks that hold a boxed-error service `Send`.
#[derive(Debug)]
pub struct TransportError(pub tower::BoxError);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A tonic channel as a [`Transport`].
pub fn channel_transport(channel: Channel) -> Transport {
    Transport::new(tower::util::MapErrLayer::new(|e| TransportError(Box::new(e))).layer(channel))
}

/// One handle to an etcd v3 API: cheap to clone, all clones share the connections.
#[derive(Clone)]
pub struct Client {
    transport: Transport,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client balancing over `endpoints` (`host:port` or `http://host:port`). Connections
    /// are made lazily and re-made after a failure; a member that is down is skipped.
    pub async fn connect<I, S>(endpoints: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Vec::new();
        for e in endpoints {
            let e = e.as_ref();
            let url = if e.contains("://") { e.to_string() } else { format!("http://{e}") };
            let endpoint = Endpoint::from_shared(url).map_err(|_| Error::Endpoint(e.to_string()))?;
            list.push(endpoint.tcp_nodelay(true).connect_timeout(std::time::Duration::from_secs(3)));
        }
        match list.len() {
            0 => Err(Error::Endpoint(String::new())),
            1 => Ok(Client::from_channel(list.pop().expect("one endpoint").connect_lazy())),
            _ => Ok(Client::from_channel(Channel::balance_list(list.into_iter()))),
        }
    }

    /// A client over a channel made elsewhere (e.g. with TLS settings of its own).
    pub fn from_channel(channel: Channel) -> Client {
        Client::from_transport(channel_transport(channel))
    }

    /// A client over any [`Transport`] (e.g. a member's services in the same process).
    pub fn from_transport(transport: Transport) -> Client {
        Client { transport }
    }

    /// What the client sends on (to build other stubs on it: `XxxClient::new(t.clone())`).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The raw KV stub (etcd's messages, no conversion).
    pub fn kv(&self) -> KvClient<Transport> {
        KvClient::new(self.transport.clone()).max_decoding_message_size(usize::MAX)
    }

    /// The raw Lease stub.
    pub fn lease(&self) -> LeaseClient<Transport> {
        LeaseClient::new(self.transport.clone())
    }

    /// The raw Watch stub (see [`Client::watch`] for a stream of one watch).
    pub fn watch_client(&self) -> WatchClient<Transport> {
        WatchClient::new(self.transport.clone()).max_decoding_message_size(usize::MAX)
    }

    /// etcd's Range, as given.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, tonic::Status> {
        Ok(self.kv().range(req).await?.into_inner())
    }

    /// A linearizable get of one key.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<RangeResponse, tonic::Status> {
        self.range(RangeRequest { key: key.into(), ..Default::default() }).await
    }

    /// Puts `value` under `key` (no lease, no previous value).
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<PutResponse, tonic::Status> {
        self.put_request(PutRequest { key: key.into(), value: value.into(), ..Default::default() }).await
    }

    /// etcd's Put, as given (lease, `prev_kv`, `ignore_value`, …).
    pub async fn put_request(&self, req: PutRequest) -> Result<PutResponse, tonic::Status> {
        Ok(self.kv().put(req).await?.into_inner())
    }

    /// etcd's DeleteRange, as given.
    pub async fn delete(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse, tonic::Status> {
        Ok(self.kv().delete_range(req).await?.into_inner())
    }

    /// etcd's Txn, as given.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, tonic::Status> {
        Ok(self.kv().txn(req).await?.into_inner())
    }

    /// Compacts the history up to `revision` (physically: it returns once the history is gone).
    pub async fn compact(&self, revision: i64) -> Result<CompactionResponse, tonic::Status> {
        Ok(self.kv().compact(CompactionRequest { revision, physical: true }).await?.into_inner())
    }

    /// Watch `key` (with `range_end` as etcd: empty for one key) from `start_revision`
    /// (0: from now). The stream ends when the server cancels the watch.
    pub async fn watch(&self, create: WatchCreateRequest) -> Result<WatchStream, Error> {
        WatchStream::open(self, create).await
    }
}

/// The end of the range holding every key with `prefix` (etcd's `WithPrefix`).
pub use cairn_core::prefix_end;

pub(crate) fn header_revision(header: &Option<ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |h| h.revision)
}

pub(crate) fn op(request: Op) -> RequestOp {
    RequestOp { request: Some(request) }
}

/// The key-values of the `i`th response of a txn, when it is a range.
pub(crate) fn range_kvs(resp: &TxnResponse, i: usize) -> &[cairn_proto::mvccpb::KeyValue] {
    match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(OpResponse::ResponseRange(r)) => &r.kvs,
        _ => &[],
    }
}

/// A stream fed by `produce` on a task of its own; an error `produce` returns is the last
/// item. The task stops when the receiver is dropped.
pub(crate) fn spawn_stream<T, F, Fut>(produce: F) -> tokio_stream::wrappers::ReceiverStream<Result<T, Error>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Error>>) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
    let produced = produce(tx.clone());
    tokio::spawn(async move {
        tokio::select! {
            result = produced => {
                if let Err(e) = result {
                    let _ = tx.send(Err(e)).await;
                }
            }
            _ = tx.closed() => {}
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Items a slow consumer of an observe or watch stream may leave unread.
const STREAM_BUFFER: usize = 16;
