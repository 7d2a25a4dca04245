//! `etcdserverpb.Watch`: many watches on one bidirectional stream.
//!
//! One task per stream serves all of its watches: it answers creates, cancels and progress
//! requests in order, and moves every watch from its next revision up to the member's
//! applied revision, a bounded step at a time, lowest first. The events of the newest
//! revisions are read from the event log once for every stream of the member
//! ([`recent::RecentEvents`], etcd's synced group); a watch that is far behind reads the
//! log itself. So a watch is ordered, gap-free and atomic (a revision's events are never
//! split across responses) by construction, resumes from any uncompacted revision, and
//! never delivers an event before it is applied (hence committed). A slow client only
//! fills its own bounded stream; writers never wait for watchers.

mod recent;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cairn_core::{KeyRange, RequestError};
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::watch_server::Watch;
use cairn_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::Event;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use crate::fill_header;
use crate::{Backend, BackendError};
pub(crate) use recent::RecentEvents;

/// Upper bound of the bytes a repeated message field adds around an event (tag + length).
const EVENT_FIELD_OVERHEAD: usize = 11;
/// Batches of responses buffered per stream before the stream waits for the client.
const STREAM_BUFFER: usize = 128;
/// A step's responses go to the client in batches of about this many bytes.
const BATCH_BYTES: usize = 256 << 10;
/// Bytes of responses buffered per stream (beyond one response of any size) before the
/// stream waits for the client: a client that never reads holds at most this much of the
/// member's memory per stream.
const STREAM_BUFFER_BYTES: usize = 4 << 20;
/// Why a create beyond [`crate::Limits::max_watches_per_stream`] is canceled.
pub const TOO_MANY_WATCHES: &str = "cairn: too many watches on this stream";

pub struct WatchService<B> {
    pub backend: Arc<B>,
    /// How often a watch that asked for progress notifications gets one when it had no
    /// events (etcd: 10 min).
    pub progress_interval: Duration,
    /// A watch created with `fragment` splits responses larger than this (etcd:
    /// `--max-request-bytes`).
    pub fragment_bytes: usize,
    /// Most watches on one stream.
    pub max_watches: usize,
    /// The newest revisions' events, shared by every stream of this member.
    pub(crate) recent: Arc<RecentEvents>,
    pub enforce: crate::auth::Enforce,
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
            recent: self.recent.clone(),
            watches: BTreeMap::new(),
            next_id: 0,
            progress_requested: false,
        };
        tokio::spawn(stream.run(req.into_inner()));
        // A batch's share of the byte budget is returned once the transport took all of it.
        let responses = tokio_stream::wrappers::ReceiverStream::new(rx).flat_map(|(batch, budget)| {
            let batch: Vec<WatchResponse> = batch;
            futures::stream::iter(batch.into_iter().map(move |resp| {
                let _held_until_the_last_is_taken = &budget;
                Ok(resp)
            }))
        });
        Ok(Response::new(Box::pin(responses)))
    }
}

/// A stream's responses on their way to the client, in batches (one per step, or less),
/// bounded in number and in bytes.
struct Outbox {
    tx: mpsc::Sender<(Vec<WatchResponse>, tokio::sync::OwnedSemaphorePermit)>,
    budget: Arc<tokio::sync::Semaphore>,
}

/// The client went away: nothing will read this stream's responses any more.
struct Gone;

impl Outbox {
    /// Queue `resp`, waiting while the client has not taken enough of what is queued.
    async fn send(&self, resp: WatchResponse) -> Result<(), Gone> {
        let bytes = resp.encoded_len();
        self.send_batch(vec![resp], bytes).await
    }

    /// Queue `batch` (of `bytes` encoded), waiting while the client has not taken enough of
    /// what is queued.
    async fn send_batch(&self, batch: Vec<WatchResponse>, bytes: usize) -> Result<(), Gone> {
        let bytes = bytes.clamp(1, STREAM_BUFFER_BYTES);
        let permit = self.budget.clone().acquire_many_owned(bytes as u32).await.map_err(|_| Gone)?;
        self.tx.send((batch, permit)).await.map_err(|_| Gone)
    }
}

/// One watch of a stream.
struct Watching {
    key: Vec<u8>,
    range_end: Vec<u8>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    /// Set for a watch created with `fragment`: the response size it splits above.
    fragment_bytes: Option<usize>,
    /// The first revision this watch has not delivered yet.
    next: i64,
    /// When this watch last sent a response (for progress notifications).
    last_sent: Instant,
    _counted: crate::metrics::WatcherCount,
}

impl Watching {
    fn wants(&self, e: &Event) -> bool {
        let key = e.kv.as_ref().map(|kv| kv.key.as_slice()).unwrap_or_default();
        let filtered = if e.r#type == EventType::Put as i32 { self.no_put } else { self.no_delete };
        !filtered && KeyRange::new(&self.key, &self.range_end).contains(key)
    }

    /// The events of `revisions` from this watch's next revision on that it selects.
    fn select(&self, revisions: &[Arc<cairn_core::RevisionEvents>]) -> Vec<Event> {
        let mut events = Vec::new();
        for rev in revisions.iter().filter(|r| r.revision >= self.next) {
            for e in rev.events.iter().filter(|e| self.wants(e)) {
                events.push(Event {
                    r#type: e.r#type,
                    kv: e.kv.clone(),
                    prev_kv: if self.prev_kv { e.prev_kv.clone() } else { None },
                });
            }
        }
        events
    }
}

struct WatchStream<B> {
    metadata: tonic::metadata::MetadataMap,
    enforce: crate::auth::Enforce,
    backend: Arc<B>,
    tx: Outbox,
    progress_interval: Duration,
    fragment_bytes: usize,
    max_watches: usize,
    recent: Arc<RecentEvents>,
    /// Ordered by id, so that a step serves its watches in a fixed order.
    watches: BTreeMap<i64, Watching>,
    next_id: i64,
    /// A progress request waits until every watch has delivered the applied revision.
    progress_requested: bool,
}

impl<B: Backend> WatchStream<B> {
    fn current(&self) -> i64 {
        *self.backend.revision_updates().borrow()
    }

    /// A response for `watch_id` with a full header at `revision`.
    fn response(&self, watch_id: i64, revision: i64) -> WatchResponse {
        let mut header = Some(ResponseHeader { revision, ..Default::default() });
        fill_header(&mut header, &self.backend.status());
        WatchResponse { header, watch_id, ..Default::default() }
    }

    async fn run(mut self, mut requests: Streaming<WatchRequest>) {
        let mut applied = self.backend.revision_updates();
        let mut requests_open = true;
        loop {
            let current = *applied.borrow_and_update();
            let behind = self.watches.values().any(|w| w.next <= current);
            if !behind && self.progress_requested {
                self.progress_requested = false;
                if self.tx.send(self.response(-1, current)).await.is_err() {
                    return;
                }
            }
            let progress_due = self.progress_due();
            // Requests first, so that a long catch-up does not hold up creates and cancels;
            // then one step of delivery; then wait for whatever comes next.
            let outcome = tokio::select! {
                biased;
                msg = requests.next(), if requests_open => match msg {
                    Some(Ok(msg)) => self.handle(msg, current).await,
                    // A broken stream: nothing will read the responses either.
                    Some(Err(_)) => Err(Gone),
                    // The client closed its sending side (grpc-gateway does after the
                    // request body): as in etcd, the watches go on until it goes away.
                    None => {
                        requests_open = false;
                        Ok(())
                    }
                },
                () = self.tx.tx.closed() => Err(Gone),
                () = std::future::ready(()), if behind => self.step(current).await,
                changed = applied.changed() => changed.map_err(|_| Gone),
                () = sleep_until(progress_due), if progress_due.is_some() => {
                    self.notify_progress(current).await
                }
            };
            if outcome.is_err() {
                return;
            }
        }
    }

    async fn handle(&mut self, msg: WatchRequest, current: i64) -> Result<(), Gone> {
        match msg.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create, current).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                if self.watches.remove(&cancel.watch_id).is_none() {
                    return Ok(());
                }
                let mut resp = self.response(cancel.watch_id, self.current());
                resp.canceled = true;
                self.tx.send(resp).await
            }
            // Not tied to one watch (etcd: watch id -1, sent to the whole stream); answered
            // once every watch has caught up, so that its revision promises no event
            // below it is still to come.
            Some(RequestUnion::ProgressRequest(_)) => {
                self.progress_requested = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// A created (or refused: created and canceled at once) response, then the watch.
    async fn create(&mut self, create: WatchCreateRequest, current: i64) -> Result<(), Gone> {
        let permitted = crate::auth::authorize(&*self.backend, self.enforce, &self.metadata, |auth, user| {
            auth.check(user, cairn_core::auth::Need::Read, &create.key, &create.range_end)
        });
        let refusal = if let Err(refused) = permitted {
            // etcd cancels the watch with grpc-go's text of the error.
            Some(format!("rpc error: code = {:?} desc = {}", refused.code(), refused.message()))
        } else if self.watches.len() >= self.max_watches {
            Some(format!("{TOO_MANY_WATCHES} (limit {})", self.max_watches))
        } else if create.watch_id != 0 && self.watches.contains_key(&create.watch_id) {
            Some("mvcc: duplicate watch ID provided on the WatchStream".into())
        } else {
            None
        };
        if let Some(reason) = refusal {
            let mut resp = self.response(-1, current);
            resp.created = true;
            resp.canceled = true;
            resp.cancel_reason = reason;
            return self.tx.send(resp).await;
        }
        let id = if create.watch_id != 0 {
            create.watch_id
        } else {
            while self.watches.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        let mut created = self.response(id, current);
        created.created = true;
        // The created response goes out before any event of this watch.
        self.tx.send(created).await?;
        let next = if create.start_revision > 0 { create.start_revision } else { current + 1 };
        if next <= current {
            // The shared window may still hold revisions that were compacted since: a
            // start below the compacted revision is refused here, as etcd does.
            if let Ok(revisions) = self.backend.revisions().await {
                if next < revisions.compacted {
                    let mut resp = self.response(id, current);
                    resp.canceled = true;
                    resp.compact_revision = revisions.compacted;
                    return self.tx.send(resp).await;
                }
            }
        }
        let watch = Watching {
            no_put: create.filters.contains(&(FilterType::Noput as i32)),
            no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: create.prev_kv,
            progress_notify: create.progress_notify,
            fragment_bytes: create.fragment.then_some(self.fragment_bytes),
            key: create.key,
            range_end: create.range_end,
            next,
            last_sent: Instant::now(),
            _counted: crate::metrics::WatcherCount::new(),
        };
        self.watches.insert(id, watch);
        Ok(())
    }

    /// One step of delivery: the events from the lowest next revision of the watches that
    /// are behind `current`, sent to every watch they cover.
    async fn step(&mut self, current: i64) -> Result<(), Gone> {
        let Some(from) = self.watches.values().map(|w| w.next).filter(|n| *n <= current).min() else {
            return Ok(());
        };
        let prev_kv = self.watches.values().any(|w| w.next == from && w.prev_kv);
        let events = match self.recent.get(&*self.backend, from, current, prev_kv).await {
            Ok(events) => events,
            Err(e) => return self.cancel_at(from, e, current).await,
        };
        let covered = events.complete_to;
        // One header for every response of the step.
        let template = self.response(0, covered);
        // To the client in batches of ~BATCH_BYTES: one budget acquire and one channel send
        // per batch rather than per response.
        let mut batch = Vec::new();
        let mut bytes = 0;
        for (id, w) in self.watches.iter_mut() {
            if w.next < from || w.next > covered || (w.prev_kv && !events.with_prev_kv) {
                continue;
            }
            let selected = w.select(&events.revisions);
            w.next = covered + 1;
            if selected.is_empty() {
                continue;
            }
            w.last_sent = Instant::now();
            let resp = WatchResponse { watch_id: *id, events: selected, ..template.clone() };
            for part in fragments(resp, w.fragment_bytes) {
                bytes += part.encoded_len();
                batch.push(part);
                if bytes >= BATCH_BYTES {
                    self.tx.send_batch(std::mem::take(&mut batch), std::mem::take(&mut bytes)).await?;
                }
            }
        }
        if !batch.is_empty() {
            self.tx.send_batch(batch, bytes).await?;
        }
        Ok(())
    }

    /// End the watches whose next revision could not be read: a compacted one reports the
    /// compacted revision, as etcd.
    async fn cancel_at(&mut self, from: i64, e: BackendError, current: i64) -> Result<(), Gone> {
        let compact_revision = match e {
            BackendError::Request(RequestError::Compacted) => {
                Some(self.backend.revisions().await.map_or(0, |r| r.compacted))
            }
            _ => None,
        };
        let ids: Vec<i64> = self.watches.iter().filter(|(_, w)| w.next == from).map(|(id, _)| *id).collect();
        for id in ids {
            self.watches.remove(&id);
            let mut resp = self.response(id, current);
            resp.canceled = true;
            match compact_revision {
                Some(compacted) => resp.compact_revision = compacted,
                None => resp.cancel_reason = e.to_string(),
            }
            self.tx.send(resp).await?;
        }
        Ok(())
    }

    /// When the next progress notification is due: the earliest among the watches that
    /// asked for them and are caught up.
    fn progress_due(&self) -> Option<Instant> {
        self.watches
            .values()
            .filter(|w| w.progress_notify)
            .map(|w| w.last_sent + self.progress_interval)
            .min()
    }

    /// A progress notification (a response without events at the revision it has reached)
    /// to every watch that asked for them and sent nothing for a whole interval.
    async fn notify_progress(&mut self, current: i64) -> Result<(), Gone> {
        let now = Instant::now();
        let mut due = Vec::new();
        for (id, w) in self.watches.iter_mut() {
            if w.progress_notify && w.last_sent + self.progress_interval <= now && w.next > current {
                w.last_sent = now;
                due.push((*id, current));
            }
        }
        for (id, revision) in due {
            let resp = self.response(id, revision);
            self.tx.send(resp).await?;
        }
        Ok(())
    }
}

/// One step's events of a watch as responses: for a `fragment` watch, a response over the
/// limit goes as several, all but the last marked `fragment` (etcd's `sendFragments`).
fn fragments(resp: WatchResponse, fragment_bytes: Option<usize>) -> Vec<WatchResponse> {
    let Some(limit) = fragment_bytes.filter(|l| resp.encoded_len() >= *l && resp.events.len() > 1) else {
        return vec![resp];
    };
    let mut parts = Vec::new();
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
        parts.push(part);
    }
    parts
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
