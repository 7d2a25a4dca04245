//! [`MvccStore`]: the MVCC semantics over one [`Engine`]. Readers take a consistent
//! snapshot; the single applier writes whole batches of requests with [`ApplyBatch`].

use std::sync::Arc;

use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};

use crate::encoding::{
    decode_revision, encode_events, encode_kv, encode_revision, encode_version, history_key, EventKey,
    Version,
};
use cairn_core::seal::Sealer;
use cairn_core::{is_read_only, RequestError, RevisionEvents, WriteRequest, WriteResponse, INITIAL_REVISION};

use crate::engine::{Batch, Durability, Engine, EngineRead, Family};
use crate::error::MvccError;
use crate::range::{self, current_kvs};
use crate::txn::{branch, TxnPath};
use crate::view::{Overlay, View};
use cairn_core::KeyRange;

const META_CURRENT_REVISION: &[u8] = b"mvcc/current_revision";
const META_COMPACT_REVISION: &[u8] = b"mvcc/compact_revision";
/// The meta rows every [`MvccStore::begin_apply`] reads first: an engine whose reads are
/// round trips may read them ahead, with the keys the writes touch.
pub const APPLY_META_KEYS: [&[u8]; 2] = [META_CURRENT_REVISION, META_COMPACT_REVISION];

/// A metadata row: (key, value).
pub type MetaRow = (Vec<u8>, Vec<u8>);

/// The MVCC store. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct MvccStore {
    engine: Arc<dyn Engine>,
    /// Seals the values of covered keys as they are written and opens them as they are
    /// read (secrets at rest, [`cairn_core::seal`]).
    sealer: Option<Arc<Sealer>>,
    /// A Compaction writes the compaction point and drops events only; the history rows it
    /// makes invisible are deleted later by [`MvccStore::prune_step`].
    deferred_pruning: bool,
}

impl MvccStore {
    pub fn new(engine: Arc<dyn Engine>) -> Self {
        MvccStore { engine, sealer: None, deferred_pruning: false }
    }

    /// The same store, leaving the deletion of compacted history rows to
    /// [`MvccStore::prune_step`] (see `prune.rs`).
    pub fn with_deferred_pruning(self) -> Self {
        MvccStore { deferred_pruning: true, ..self }
    }

    /// The same store, sealing and opening values with `sealer`.
    pub fn with_sealer(self, sealer: Option<Arc<Sealer>>) -> Self {
        MvccStore { sealer, ..self }
    }

    pub fn sealer(&self) -> Option<&Sealer> {
        self.sealer.as_deref()
    }

    /// A store on a fresh [`crate::MemEngine`].
    pub fn in_memory() -> Self {
        MvccStore::new(Arc::new(crate::MemEngine::new()))
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// (current revision, compacted revision) as last written.
    pub fn revisions(&self) -> Result<(i64, i64), MvccError> {
        revisions(&View::of(&*self.engine.latest()))
    }

    /// Run `read` on the latest committed state (one key or one scan each, no snapshot).
    pub(crate) fn with_latest<T>(&self, read: impl FnOnce(&View<'_>) -> T) -> T {
        let base = self.engine.latest();
        read(&View::of(&*base))
    }

    /// Run `read` on one consistent snapshot.
    pub(crate) fn with_snapshot<T>(&self, read: impl FnOnce(&View<'_>) -> T) -> T {
        let base = self.engine.snapshot();
        read(&View { sealer: self.sealer(), ..View::of(&*base) })
    }

    /// A metadata row written with [`ApplyBatch::put_meta`].
    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MvccError> {
        self.engine.latest().get(Family::Meta, key)
    }

    /// Every metadata row whose key starts with `prefix`, in key order.
    pub fn meta_with_prefix(&self, prefix: &[u8]) -> Result<Vec<MetaRow>, MvccError> {
        let mut rows = Vec::new();
        self.with_latest(|view| {
            view.scan(Family::Meta, prefix, None, &mut |k, v| {
                if !k.starts_with(prefix) {
                    return Ok(false);
                }
                rows.push((k.to_vec(), v.to_vec()));
                Ok(true)
            })
        })?;
        Ok(rows)
    }

    /// Serve a Range from one consistent snapshot of the store.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.with_snapshot(|view| {
            let (current, compacted) = revisions(view)?;
            range::execute(view, req, current, compacted)
        })
    }

    /// Start applying a batch of writes. Nothing is visible to readers until
    /// [`ApplyBatch::commit`]. Only one batch may be in flight at a time (the applier is
    /// single-threaded by construction: it runs in the Raft state machine task).
    pub fn begin_apply(&self) -> Result<ApplyBatch<'_>, MvccError> {
        ApplyBatch::on(self, self.engine.latest())
    }

    /// Run a txn that writes nothing (see [`is_read_only`]) on one consistent snapshot,
    /// without replication: etcd serves read-only txns this way too.
    pub fn read_txn(&self, t: &TxnRequest) -> Result<TxnResponse, MvccError> {
        debug_assert!(is_read_only(t));
        ApplyBatch::on(self, self.engine.snapshot())?.txn(t)
    }
}

pub(crate) fn revisions(view: &View<'_>) -> Result<(i64, i64), MvccError> {
    let current = match view.get(Family::Meta, META_CURRENT_REVISION)? {
        Some(v) => decode_revision(&v)?,
        None => INITIAL_REVISION,
    };
    let compacted = match view.get(Family::Meta, META_COMPACT_REVISION)? {
        Some(v) => decode_revision(&v)?,
        None => 0,
    };
    Ok((current, compacted))
}

/// A batch of applied writes, written to the engine in one atomic [`Batch`].
pub struct ApplyBatch<'a> {
    store: &'a MvccStore,
    /// The state the batch reads under its overlay: the latest committed state, or one
    /// snapshot for a read-only txn.
    base: Box<dyn EngineRead + 'a>,
    /// What this batch wrote so far, so that its later requests read their predecessors.
    overlay: Overlay,
    batch: Batch,
    current: i64,
    compacted: i64,
    events: Vec<RevisionEvents>,
}

/// The writes of one revision in progress.
pub(crate) struct RevisionWriter {
    revision: i64,
    events: Vec<Event>,
}

impl<'a> ApplyBatch<'a> {
    fn on(store: &'a MvccStore, base: Box<dyn EngineRead + 'a>) -> Result<ApplyBatch<'a>, MvccError> {
        let (current, compacted) = revisions(&View::of(&*base))?;
        Ok(ApplyBatch {
            store,
            base,
            overlay: Default::default(),
            batch: Batch::default(),
            current,
            compacted,
            events: Vec::new(),
        })
    }

    pub(crate) fn view(&self) -> View<'_> {
        View { base: &*self.base, overlay: Some(&self.overlay), sealer: self.store.sealer() }
    }

    pub(crate) fn write(&mut self, fam: Family, key: Vec<u8>, value: Option<Vec<u8>>) {
        match &value {
            Some(v) => self.batch.put(fam, key.clone(), v.clone()),
            None => self.batch.delete(fam, key.clone()),
        }
        self.overlay[fam as usize].insert(key, value);
    }

    /// Write a metadata row in the same atomic batch (e.g. the last applied log id).
    pub fn put_meta(&mut self, key: &[u8], value: &[u8]) {
        self.write(Family::Meta, key.to_vec(), Some(value.to_vec()));
    }

    /// Delete a metadata row in the same atomic batch.
    pub fn delete_meta(&mut self, key: &[u8]) {
        self.write(Family::Meta, key.to_vec(), None);
    }

    /// The revision after the writes applied so far.
    pub fn current_revision(&self) -> i64 {
        self.current
    }

    /// Apply one write. On error nothing of this request is applied (and no revision is
    /// used); earlier requests of the batch stay applied.
    pub fn apply(&mut self, req: &WriteRequest) -> Result<WriteResponse, MvccError> {
        match req {
            WriteRequest::Put(p) => {
                check_put_target(&self.view(), p)?;
                let mut w = self.start_revision();
                let resp = self.put(&mut w, p)?;
                self.finish_revision(w);
                Ok(WriteResponse::Put(resp))
            }
            WriteRequest::DeleteRange(d) => {
                let mut w = self.start_revision();
                let resp = self.delete_range(&mut w, d)?;
                self.finish_revision(w);
                Ok(WriteResponse::DeleteRange(resp))
            }
            WriteRequest::Txn(t) => Ok(WriteResponse::Txn(self.txn(t)?)),
            WriteRequest::Compact(c) => Ok(WriteResponse::Compact(self.compact(c)?)),
            WriteRequest::LeaseGrant(g) => Ok(WriteResponse::LeaseGrant(self.lease_grant(g)?)),
            WriteRequest::LeaseRevoke(r) => Ok(WriteResponse::LeaseRevoke(self.lease_revoke(r)?)),
        }
    }

    pub(crate) fn start_revision(&self) -> RevisionWriter {
        RevisionWriter { revision: self.current + 1, events: Vec::new() }
    }

    /// Record a revision's events; a revision that changed nothing is not used.
    pub(crate) fn finish_revision(&mut self, w: RevisionWriter) {
        if w.events.is_empty() {
            return;
        }
        let keys: Vec<EventKey> = w
            .events
            .iter()
            .map(|e| EventKey {
                deleted: e.r#type == EventType::Delete as i32,
                key: e.kv.as_ref().map(|kv| kv.key.clone()).unwrap_or_default(),
            })
            .collect();
        self.write(Family::Events, encode_revision(w.revision).to_vec(), Some(encode_events(&keys)));
        self.current = w.revision;
        self.events.push(RevisionEvents { revision: w.revision, events: w.events });
    }

    /// The revision reads inside an unfinished revision see (etcd: begin + 1 once changed).
    pub(crate) fn read_revision_in(&self, w: &RevisionWriter) -> i64 {
        if w.events.is_empty() {
            self.current
        } else {
            w.revision
        }
    }

    fn get_live(&self, key: &[u8]) -> Result<Option<KeyValue>, MvccError> {
        match self.view().get(Family::Kv, key)? {
            Some(v) => Ok(Some(crate::encoding::decode_kv(key, &v, self.store.sealer())?)),
            None => Ok(None),
        }
    }

    fn put(&mut self, w: &mut RevisionWriter, p: &PutRequest) -> Result<PutResponse, MvccError> {
        let prev = self.get_live(&p.key)?;
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => p.lease,
        };
        let (create_revision, version) = match &prev {
            Some(prev) => (prev.create_revision, prev.version + 1),
            None => (w.revision, 1),
        };
        let stored =
            KeyValue { key: Vec::new(), create_revision, mod_revision: w.revision, version, value, lease };
        let sealer = self.store.sealer();
        self.write(Family::Kv, p.key.clone(), Some(encode_kv(&p.key, &stored, sealer)));
        self.write(
            Family::History,
            history_key(&p.key, w.revision),
            Some(encode_version(&p.key, &Version::Put(stored.clone()), sealer)),
        );
        self.attach(&p.key, prev.as_ref().map_or(0, |prev| prev.lease), lease);
        let kv = KeyValue { key: p.key.clone(), ..stored };
        w.events.push(Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: prev.clone() });
        Ok(PutResponse { header: Some(header(w.revision)), prev_kv: if p.prev_kv { prev } else { None } })
    }

    pub(crate) fn delete_range(
        &mut self,
        w: &mut RevisionWriter,
        d: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let doomed =
            current_kvs(&self.view(), KeyRange::new(&d.key, &d.range_end), self.read_revision_in(w))?;
        for prev in &doomed {
            self.write(Family::Kv, prev.key.clone(), None);
            self.attach(&prev.key, prev.lease, 0);
            self.write(
                Family::History,
                history_key(&prev.key, w.revision),
                Some(encode_version(&prev.key, &Version::Tombstone, None)),
            );
            let kv = KeyValue { key: prev.key.clone(), mod_revision: w.revision, ..Default::default() };
            w.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(kv),
                prev_kv: Some(prev.clone()),
            });
        }
        Ok(DeleteRangeResponse {
            header: Some(header(self.read_revision_in(w))),
            deleted: doomed.len() as i64,
            prev_kvs: if d.prev_kv { doomed } else { Vec::new() },
        })
    }

    pub(crate) fn txn(&mut self, t: &TxnRequest) -> Result<TxnResponse, MvccError> {
        let path = TxnPath::decide(&self.view(), t, self.current)?;
        // Like etcd, check the whole path against the state before the txn writes.
        self.check_txn_path(t, &path)?;
        let mut w = self.start_revision();
        let mut resp = self.run_txn(&mut w, t, &path)?;
        let revision = self.read_revision_in(&w);
        self.finish_revision(w);
        resp.header = Some(header(revision));
        Ok(resp)
    }

    fn check_txn_path(&self, t: &TxnRequest, path: &TxnPath) -> Result<(), MvccError> {
        let mut nested = path.nested.iter();
        for op in branch(t, path.succeeded) {
            match &op.request {
                Some(Request::RequestPut(p)) => check_put_target(&self.view(), p)?,
                Some(Request::RequestRange(r)) => {
                    // Refuse before anything is written: a txn never fails half-way.
                    cairn_core::validate::check_range(r)?;
                    // etcd's checkRange: first revision is -1 until something was compacted.
                    let first = if self.compacted == 0 { -1 } else { self.compacted };
                    if r.revision != 0 && r.revision > self.current {
                        return Err(RequestError::FutureRevision.into());
                    }
                    if r.revision != 0 && r.revision < first {
                        return Err(RequestError::Compacted.into());
                    }
                }
                Some(Request::RequestTxn(inner)) => {
                    let p = nested.next().expect("a path entry per nested txn");
                    self.check_txn_path(inner, p)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn run_txn(
        &mut self,
        w: &mut RevisionWriter,
        t: &TxnRequest,
        path: &TxnPath,
    ) -> Result<TxnResponse, MvccError> {
        let mut nested = path.nested.iter();
        let mut responses = Vec::new();
        for RequestOp { request } in branch(t, path.succeeded) {
            let response = match request {
                Some(Request::RequestRange(r)) => {
                    let current = self.read_revision_in(w);
                    let view = self.view();
                    Response::ResponseRange(range::execute(&view, r, current, self.compacted)?)
                }
                Some(Request::RequestPut(p)) => Response::ResponsePut(self.put(w, p)?),
                Some(Request::RequestDeleteRange(d)) => {
                    Response::ResponseDeleteRange(self.delete_range(w, d)?)
                }
                Some(Request::RequestTxn(inner)) => {
                    let p = nested.next().expect("a path entry per nested txn");
                    let mut r = self.run_txn(w, inner, p)?;
                    r.header = Some(ResponseHeader::default());
                    Response::ResponseTxn(r)
                }
                None => return Err(RequestError::KeyNotFound.into()),
            };
            responses.push(ResponseOp { response: Some(response) });
        }
        Ok(TxnResponse { header: None, succeeded: path.succeeded, responses })
    }

    fn compact(&mut self, c: &CompactionRequest) -> Result<CompactionResponse, MvccError> {
        let rev = c.revision;
        if rev <= self.compacted {
            return Err(RequestError::Compacted.into());
        }
        if rev > self.current {
            return Err(RequestError::FutureRevision.into());
        }
        // Drop every version that no read at a revision ≥ `rev` can see: for each key, all
        // rows ≤ rev except the latest, and that one too if it is a tombstone.
        let doomed = if self.store.deferred_pruning {
            Vec::new()
        } else {
            let mut rows = crate::prune::Doomed::new(rev);
            self.view().scan(Family::History, &[], None, &mut |k, v| rows.push(k, v, false))?;
            rows.finish()
        };
        for row in doomed {
            self.write(Family::History, row, None);
        }
        self.batch.delete_range(Family::Events, encode_revision(0).to_vec(), encode_revision(rev).to_vec());
        self.write(Family::Meta, META_COMPACT_REVISION.to_vec(), Some(encode_revision(rev).to_vec()));
        self.compacted = rev;
        Ok(CompactionResponse { header: Some(header(self.current)) })
    }

    /// Write the batch without waiting for it to be durable: the caller's own log (Raft's,
    /// in the same RocksDB WAL, which orders this batch before any later synced append) is
    /// the durable record. Returns the events of every revision the batch created.
    pub fn commit(self) -> Result<Vec<RevisionEvents>, MvccError> {
        self.commit_with(Durability::Deferred)
    }

    /// Write the batch and make it durable before returning (for callers without a log of
    /// their own). Returns the events of every revision the batch created.
    pub fn commit_synced(self) -> Result<Vec<RevisionEvents>, MvccError> {
        self.commit_with(Durability::Synced)
    }

    fn commit_with(mut self, durability: Durability) -> Result<Vec<RevisionEvents>, MvccError> {
        // Once per batch, not per revision: every row written is a memtable insert, and
        // this one would otherwise be a quarter of a put's. (A revision is used exactly when
        // its events are recorded.)
        if !self.events.is_empty() {
            self.batch.put(
                Family::Meta,
                META_CURRENT_REVISION.to_vec(),
                encode_revision(self.current).to_vec(),
            );
        }
        let ApplyBatch { store, base, batch, events, .. } = self;
        // The latest-state reader must not outlive the writes it would then miss.
        drop(base);
        store.engine.write(batch, durability)?;
        Ok(events)
    }
}

/// etcd's `checkPut`: `ignore_value`/`ignore_lease` need an existing key, and a lease must
/// exist to be attached.
fn check_put_target(view: &View<'_>, p: &PutRequest) -> Result<(), MvccError> {
    if (p.ignore_value || p.ignore_lease) && view.get(Family::Kv, &p.key)?.is_none() {
        return Err(RequestError::KeyNotFound.into());
    }
    if p.lease != 0 && crate::lease::lease_in(view, p.lease)?.is_none() {
        return Err(RequestError::LeaseNotFound.into());
    }
    Ok(())
}

pub(crate) fn header(revision: i64) -> ResponseHeader {
    ResponseHeader { revision, ..Default::default() }
}
