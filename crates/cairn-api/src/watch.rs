//! `etcdserverpb.Watch`: many watches on one bidirectional stream.
//!
//! Each watch is a task that reads the member's event log from its next revision up to the
//! applied revision, sends what matches, and waits for the applied revision to move. So a
//! watch is ordered, gap-free and atomic (a revision's events are never split across
//! responses) by construction, resumes from any uncompacted revision, and never delivers
//! an event before it is applied (hence committed). A slow client only fills its own
//! bounded stream; writers never wait for watchers.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cairn_core::{KeyRange, RequestError, RevisionEvents};
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::watch_server::Watch;
use cairn_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use cairn_proto::mvccpb::event::EventType;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

use crate::fill_header;
use crate::{Backend, BackendError};

/// Revisions read from the event log per step of a catching-up watcher.
const CATCH_UP_REVISIONS: usize = 256;
/// Upper bound of the bytes a repeated message field adds around an event (tag + length).
const EVENT_FIELD_OVERHEAD: usize = 11;
/// Responses buffered per stream before the watchers of that stream wait for the client.
const STREAM_BUFFER: usize = 128;
/// Bytes of responses buffered per stream (beyond one response of any size) before the
/// watchers of that stream wait for the client: a client that never reads holds at most
/// this much of the member's memory per stream.
const STREAM_BUFFER_BYTES: usize = 4 << 20;
/// Why a create beyond [`crate::Limits::max_watches_per_stream`] is canceled.
pub const TOO_MANY_WATCHES: &str = "cairn: too many watches on this stream";

pub struct WatchService<B> {
    pub backend: Arc<B>,
    /// How often a watch that asked for progress notifications gets one (etcd: 10 min).
    pub progress_interval: Duration,
    /// A watch created with `fragment` splits responses larger than this (etcd:
    /// `--max-request-bytes`).
    pub fragment_bytes: usize,
    /// Most watches on one stream.
    pub max_watches: usize,
    /// The newest revision's events, shared by every synced watcher of this member.
    pub(crate) latest: Arc<LatestRevision>,
    pub enforce: crate::auth::Enforce,
}

/// The events of the newest revision, read from the store once for all the watchers that
/// are waiting for it (etcd's synced group) instead of once per watcher: with 10,000
/// watchers a put would otherwise cost 10,000 event-log reads.
#[derive(Default)]
pub(crate) struct LatestRevision {
    /// The newest revision asked for. Held only to look at or replace the entry, never
    /// across the read itself (the entry's cell serialises that).
    slot: std::sync::Mutex<Option<Arc<CachedRevision>>>,
}

struct CachedRevision {
    revision: i64,
    with_prev_kv: bool,
    events: tokio::sync::OnceCell<Arc<Vec<RevisionEvents>>>,
}

impl LatestRevision {
    /// The events of `revision` (with previous key-values if `prev_kv`), read by `read` only
    /// if no watcher read them before; concurrent callers wait for the one read. Events of
    /// a revision never change once applied.
    async fn get<F>(
        &self,
        revision: i64,
        prev_kv: bool,
        read: F,
    ) -> Result<Arc<Vec<RevisionEvents>>, BackendError>
    where
        F: std::future::Future<Output = Result<Vec<RevisionEvents>, BackendError>>,
    {
        let entry = {
            let mut slot = self.slot.lock().expect("latest revision cache poisoned");
            match &*slot {
                Some(cached) if cached.revision == revision && (cached.with_prev_kv || !prev_kv) => {
                    Some(cached.clone())
                }
                // A watcher that saw an older revision than another: read alone, keep the newer.
                Some(cached) if cached.revision > revision => None,
                _ => {
                    let fresh = Arc::new(CachedRevision {
                        revision,
                        with_prev_kv: prev_kv,
                        events: Default::default(),
                    });
                    *slot = Some(fresh.clone());
                    Some(fresh)
                }
            }
        };
        let Some(entry) = entry else { return read.await.map(Arc::new) };
        entry.events.get_or_try_init(|| async { read.await.map(Arc::new) }).await.cloned()
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<B: Backend> Watch for WatchService<B> {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let tx = Outbox { tx, budget: Arc::new(tokio::sync::Semaphore::new(STREAM_BUFFER_BYTES)) };
        let stream = WatchStream {
            // Each create is checked against the token the stream was opened with.
            metadata: req.metadata().clone(),
            enforce: self.enforce,
            backend: self.backend.clone(),
            tx,
            progress_interval: self.progress_interval,
            fragment_bytes: self.fragment_bytes,
            max_watches: self.max_watches,
            latest: self.latest.clone(),
        };
        tokio::spawn(stream.run(req.into_inner()));
        // A response's share of the byte budget is returned as the transport takes it.
        let responses = tokio_stream::wrappers::ReceiverStream::new(rx).map(|(resp, _budget)| resp);
        Ok(Response::new(Box::pin(responses)))
    }
}

/// A stream's responses on their way to the client, bounded in number and in bytes.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::Sender<(Result<WatchResponse, Status>, tokio::sync::OwnedSemaphorePermit)>,
    budget: Arc<tokio::sync::Semaphore>,
}

impl Outbox {
    /// Queue `resp`, waiting while the client has not taken enough of what is queued.
    async fn send(&self, resp: Result<WatchResponse, Status>) -> Result<(), ()> {
        let bytes = resp.as_ref().map_or(0, |r| r.encoded_len()).clamp(1, STREAM_BUFFER_BYTES);
        let permit = self.budget.clone().acquire_many_owned(bytes as u32).await.map_err(|_| ())?;
        self.tx.send((resp, permit)).await.map_err(|_| ())
    }

    async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A response for `watch_id` with a full header at `revision`.
fn response<B: Backend>(backend: &B, watch_id: i64, revision: i64) -> WatchResponse {
    let mut header = Some(ResponseHeader { revision, ..Default::default() });
    fill_header(&mut header, &backend.status());
    WatchResponse { header, watch_id, ..Default::default() }
}

struct WatchStream<B> {
    metadata: tonic::metadata::MetadataMap,
    enforce: crate::auth::Enforce,
    backend: Arc<B>,
    tx: Outbox,
    progress_interval: Duration,
    fragment_bytes: usize,
    max_watches: usize,
    latest: Arc<LatestRevision>,
}

impl<B: Backend> WatchStream<B> {
    fn current(&self) -> i64 {
        *self.backend.revision_updates().borrow()
    }

    async fn run(self, mut requests: Streaming<WatchRequest>) {
        let mut watchers: HashMap<i64, JoinHandle<()>> = HashMap::new();
        let mut next_id: i64 = 0;
        while let Some(msg) = requests.next().await {
            let Ok(msg) = msg else {
                // A broken stream: nothing will read the responses either.
                for (_, handle) in watchers {
                    handle.abort();
                }
                return;
            };
            watchers.retain(|_, h| !h.is_finished());
            let reply = match msg.request_union {
                Some(RequestUnion::CreateRequest(create)) => {
                    let permitted =
                        crate::auth::authorize(&*self.backend, self.enforce, &self.metadata, |auth, user| {
                            auth.check(user, cairn_core::auth::Need::Read, &create.key, &create.range_end)
                        });
                    if let Err(refused) = permitted {
                        // etcd cancels the watch with grpc-go's text of the error.
                        let mut resp = response(&*self.backend, -1, self.current());
                        resp.created = true;
                        resp.canceled = true;
                        resp.cancel_reason =
                            format!("rpc error: code = {:?} desc = {}", refused.code(), refused.message());
                        if self.tx.send(Ok(resp)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    let id = if create.watch_id != 0 {
                        create.watch_id
                    } else {
                        while watchers.contains_key(&next_id) {
                            next_id += 1;
                        }
                        next_id
                    };
                    let current = self.current();
                    if watchers.len() >= self.max_watches {
                        let mut resp = response(&*self.backend, -1, current);
                        resp.created = true;
                        resp.canceled = true;
                        resp.cancel_reason = format!("{TOO_MANY_WATCHES} (limit {})", self.max_watches);
                        if self.tx.send(Ok(resp)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    let std::collections::hash_map::Entry::Vacant(slot) = watchers.entry(id) else {
                        let mut resp = response(&*self.backend, -1, current);
                        resp.created = true;
                        resp.canceled = true;
                        resp.cancel_reason = "mvcc: duplicate watch ID provided on the WatchStream".into();
                        if self.tx.send(Ok(resp)).await.is_err() {
                            break;
                        }
                        continue;
                    };
                    let mut created = response(&*self.backend, id, current);
                    created.created = true;
                    // The created response goes out before any event of this watch.
                    if self.tx.send(Ok(created)).await.is_err() {
                        break;
                    }
                    let start = if create.start_revision > 0 { create.start_revision } else { current + 1 };
                    let watcher = Watcher {
                        id,
                        backend: self.backend.clone(),
                        tx: self.tx.clone(),
                        next: start,
                        progress_interval: self.progress_interval,
                        fragment_bytes: create.fragment.then_some(self.fragment_bytes),
                        latest: self.latest.clone(),
                        _counted: crate::metrics::WatcherCount::new(),
                    };
                    slot.insert(tokio::spawn(watcher.run(create)));
                    continue;
                }
                Some(RequestUnion::CancelRequest(cancel)) => match watchers.remove(&cancel.watch_id) {
                    Some(handle) => {
                        handle.abort();
                        let _ = handle.await;
                        let mut resp = response(&*self.backend, cancel.watch_id, self.current());
                        resp.canceled = true;
                        resp
                    }
                    None => continue,
                },
                Some(RequestUnion::ProgressRequest(_)) => {
                    // Not tied to one watch (etcd: watch id -1, sent to the whole stream).
                    response(&*self.backend, -1, self.current())
                }
                None => continue,
            };
            if self.tx.send(Ok(reply)).await.is_err() {
                break;
            }
        }
        // The client closed its sending side (grpc-gateway does after the request body):
        // as in etcd, the watches go on until the client goes away.
        self.tx.closed().await;
        for (_, handle) in watchers {
            handle.abort();
        }
    }
}

struct Watcher<B> {
    id: i64,
    backend: Arc<B>,
    tx: Outbox,
    /// The first revision this watcher has not delivered yet.
    next: i64,
    progress_interval: Duration,
    /// Set for a watch created with `fragment`: the response size it splits above.
    fragment_bytes: Option<usize>,
    latest: Arc<LatestRevision>,
    _counted: crate::metrics::WatcherCount,
}

impl<B: Backend> Watcher<B> {
    async fn run(mut self, create: WatchCreateRequest) {
        let range = KeyRange::new(&create.key, &create.range_end);
        let no_put = create.filters.contains(&(FilterType::Noput as i32));
        let no_delete = create.filters.contains(&(FilterType::Nodelete as i32));
        let mut applied = self.backend.revision_updates();
        loop {
            let current = *applied.borrow_and_update();
            while self.next <= current {
                let read = self.backend.events(self.next, current, CATCH_UP_REVISIONS, create.prev_kv);
                // A synced watcher (one revision behind) shares the read; others catch up alone.
                let batch = if self.next == current {
                    self.latest.get(current, create.prev_kv, read).await
                } else {
                    read.await.map(Arc::new)
                };
                let batch = match batch {
                    Ok(b) => b,
                    Err(e) => return self.cancel(e, current).await,
                };
                let read_all = batch.len() < CATCH_UP_REVISIONS;
                let last = batch.last().map(|r| r.revision);
                let mut events = Vec::new();
                for rev in batch.iter() {
                    for e in &rev.events {
                        let key = e.kv.as_ref().map(|kv| kv.key.as_slice()).unwrap_or_default();
                        let is_put = e.r#type == EventType::Put as i32;
                        if !range.contains(key) || (is_put && no_put) || (!is_put && no_delete) {
                            continue;
                        }
                        let mut e = e.clone();
                        if !create.prev_kv {
                            e.prev_kv = None;
                        }
                        events.push(e);
                    }
                }
                self.next = if read_all { current + 1 } else { last.map_or(current + 1, |l| l + 1) };
                if !events.is_empty() {
                    let mut resp =
                        response(&*self.backend, self.id, if read_all { current } else { self.next - 1 });
                    resp.events = events;
                    if self.send_events(resp).await.is_err() {
                        return;
                    }
                }
            }
            if create.progress_notify {
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(self.progress_interval) => {
                        let resp = response(&*self.backend, self.id, *applied.borrow());
                        if self.tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                }
            } else if applied.changed().await.is_err() {
                return;
            }
        }
    }

    /// Sends one revision batch's events; for a `fragment` watch, a response over the limit
    /// goes as several, all but the last marked `fragment` (etcd's `sendFragments`).
    async fn send_events(&self, resp: WatchResponse) -> Result<(), ()> {
        let Some(limit) = self.fragment_bytes.filter(|l| resp.encoded_len() >= *l && resp.events.len() > 1)
        else {
            return self.tx.send(Ok(resp)).await;
        };
        let mut events = resp.events.into_iter().peekable();
        let empty = WatchResponse { events: Vec::new(), fragment: true, ..resp };
        while events.peek().is_some() {
            let mut part = empty.clone();
            while let Some(e) = events.next_if(|e| {
                part.events.is_empty() || part.encoded_len() + e.encoded_len() + EVENT_FIELD_OVERHEAD < limit
            }) {
                part.events.push(e);
            }
            part.fragment = events.peek().is_some();
            self.tx.send(Ok(part)).await?;
        }
        Ok(())
    }

    /// End this watch: a compacted start revision reports the compacted revision, as etcd.
    async fn cancel(&self, e: BackendError, current: i64) {
        let mut resp = response(&*self.backend, self.id, current);
        resp.canceled = true;
        match e {
            BackendError::Request(RequestError::Compacted) => {
                resp.compact_revision = self.backend.revisions().await.map_or(0, |r| r.compacted);
            }
            other => resp.cancel_reason = other.to_string(),
        }
        let _ = self.tx.send(Ok(resp)).await;
    }
}
