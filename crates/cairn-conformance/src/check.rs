//! What every test shares: the check macros, the key space a test writes in, request
//! builders, and backend calls that turn a [`BackendError`] into a message naming the step.

use std::fmt::Debug;

use cairn_core::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_core::proto::etcdserverpb::request_op::Request;
use cairn_core::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, TxnRequest, TxnResponse,
};
use cairn_core::proto::mvccpb::KeyValue;
use cairn_core::{
    BackendError, KvBackend, LeaseBackend, RequestError, Revisions, WriteRequest, WriteResponse,
};

/// What a test returns: `Err` says which check failed and how.
pub(crate) type Outcome = Result<(), String>;

/// Fail the test with a formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Fail the test unless `got == want`, saying what was checked, what was expected and what came.
macro_rules! ensure_eq {
    ($got:expr, $want:expr, $($msg:tt)+) => {{
        let got = &$got;
        let want = &$want;
        if got != want {
            return Err(format!("{}: expected {:?}, got {:?}", format!($($msg)+), want, got));
        }
    }};
}

/// The keys one test may write: everything starting with `base` (the run's prefix followed
/// by the test's name and a slash).
pub(crate) struct Space<'a> {
    base: &'a str,
}

impl<'a> Space<'a> {
    pub(crate) fn new(base: &'a str) -> Self {
        Space { base }
    }

    /// The key `name` inside this space.
    pub(crate) fn key(&self, name: &str) -> Vec<u8> {
        format!("{}{name}", self.base).into_bytes()
    }

    /// The first key of the space (its prefix itself).
    pub(crate) fn start(&self) -> Vec<u8> {
        self.base.as_bytes().to_vec()
    }

    /// The `range_end` that selects exactly the keys of the space.
    pub(crate) fn end(&self) -> Vec<u8> {
        prefix_end(self.base.as_bytes())
    }

    /// A key as messages show it: relative to the space, or whole (marked) if outside it.
    pub(crate) fn name(&self, key: &[u8]) -> String {
        match key.strip_prefix(self.base.as_bytes()) {
            Some(rest) => text(rest),
            None => format!("<outside the test's space: {}>", text(key)),
        }
    }

    /// The keys of `kvs`, as [`Space::name`] shows them.
    pub(crate) fn names(&self, kvs: &[KeyValue]) -> Vec<String> {
        kvs.iter().map(|kv| self.name(&kv.key)).collect()
    }

    /// The seed for ids (lease ids) that differ between spaces: FNV-1a of the base.
    pub(crate) fn hash(&self) -> u64 {
        self.base
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    }
}

pub(crate) use cairn_core::prefix_end;

/// Bytes as text for messages.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A response header's revision (0 if the header is missing).
pub(crate) fn hrev(header: &Option<ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |h| h.revision)
}

/// The label [`fields`] values are shown with.
pub(crate) const FIELDS: &str = "(create_revision, mod_revision, version, value, lease)";

/// A key-value's fields besides its key: see [`FIELDS`].
pub(crate) type Fields = (i64, i64, i64, String, i64);

/// The fields of a key-value besides its key, for comparisons (see [`FIELDS`]).
pub(crate) fn fields(kv: &KeyValue) -> Fields {
    (kv.create_revision, kv.mod_revision, kv.version, text(&kv.value), kv.lease)
}

// ---- Request builders -------------------------------------------------------------------

pub(crate) fn put_req(key: &[u8], value: &str) -> PutRequest {
    PutRequest { key: key.to_vec(), value: value.as_bytes().to_vec(), ..Default::default() }
}

pub(crate) fn range_req(key: &[u8], range_end: &[u8]) -> RangeRequest {
    RangeRequest { key: key.to_vec(), range_end: range_end.to_vec(), ..Default::default() }
}

pub(crate) fn delete_req(key: &[u8], range_end: &[u8], prev_kv: bool) -> DeleteRangeRequest {
    DeleteRangeRequest { key: key.to_vec(), range_end: range_end.to_vec(), prev_kv }
}

pub(crate) fn op_put(key: &[u8], value: &str) -> RequestOp {
    op_put_req(put_req(key, value))
}

pub(crate) fn op_put_req(req: PutRequest) -> RequestOp {
    RequestOp { request: Some(Request::RequestPut(req)) }
}

pub(crate) fn op_range(req: RangeRequest) -> RequestOp {
    RequestOp { request: Some(Request::RequestRange(req)) }
}

pub(crate) fn op_get(key: &[u8]) -> RequestOp {
    op_range(range_req(key, b""))
}

pub(crate) fn op_delete(req: DeleteRangeRequest) -> RequestOp {
    RequestOp { request: Some(Request::RequestDeleteRange(req)) }
}

pub(crate) fn op_txn(req: TxnRequest) -> RequestOp {
    RequestOp { request: Some(Request::RequestTxn(req)) }
}

pub(crate) fn compare(
    key: &[u8],
    target: CompareTarget,
    result: CompareResult,
    union: TargetUnion,
) -> Compare {
    Compare {
        key: key.to_vec(),
        target: target as i32,
        result: result as i32,
        target_union: Some(union),
        range_end: Vec::new(),
    }
}

// ---- Backend calls ----------------------------------------------------------------------

/// The message for a backend call that failed where it should have worked.
pub(crate) fn failed(what: &str, e: &BackendError) -> String {
    format!("{what}: unexpected backend error {e:?} ({e})")
}

fn unexpected(what: &str, wanted: &str, got: &WriteResponse) -> String {
    format!("{what}: expected a {wanted} response, got {got:?}")
}

/// Check that `result` is the refusal `want`, matched by variant.
pub(crate) fn refused<T: Debug>(result: Result<T, BackendError>, want: RequestError, what: &str) -> Outcome {
    match result {
        Err(BackendError::Request(e)) if e == want => Ok(()),
        Err(e) => Err(format!("{what}: expected RequestError::{want:?}, got the error {e:?}")),
        Ok(v) => Err(format!("{what}: expected RequestError::{want:?}, but it succeeded: {v:?}")),
    }
}

pub(crate) async fn revisions<B: KvBackend>(b: &B) -> Result<Revisions, String> {
    b.revisions().await.map_err(|e| failed("revisions()", &e))
}

/// `revisions().current`.
pub(crate) async fn current<B: KvBackend>(b: &B) -> Result<i64, String> {
    Ok(revisions(b).await?.current)
}

pub(crate) async fn write<B: KvBackend>(
    b: &B,
    req: WriteRequest,
    what: &str,
) -> Result<WriteResponse, String> {
    b.write(req).await.map_err(|e| failed(what, &e))
}

pub(crate) async fn put<B: KvBackend>(b: &B, req: PutRequest, what: &str) -> Result<PutResponse, String> {
    match write(b, WriteRequest::Put(req), what).await? {
        WriteResponse::Put(r) => Ok(r),
        other => Err(unexpected(what, "Put", &other)),
    }
}

/// Put `key = value` (no options); returns the header revision.
pub(crate) async fn put_value<B: KvBackend>(b: &B, key: &[u8], value: &str) -> Result<i64, String> {
    let what = format!("put {}={value}", text(key));
    Ok(hrev(&put(b, put_req(key, value), &what).await?.header))
}

pub(crate) async fn delete<B: KvBackend>(
    b: &B,
    req: DeleteRangeRequest,
    what: &str,
) -> Result<DeleteRangeResponse, String> {
    match write(b, WriteRequest::DeleteRange(req), what).await? {
        WriteResponse::DeleteRange(r) => Ok(r),
        other => Err(unexpected(what, "DeleteRange", &other)),
    }
}

pub(crate) async fn txn<B: KvBackend>(b: &B, req: TxnRequest, what: &str) -> Result<TxnResponse, String> {
    match write(b, WriteRequest::Txn(req), what).await? {
        WriteResponse::Txn(r) => Ok(r),
        other => Err(unexpected(what, "Txn", &other)),
    }
}

pub(crate) async fn range<B: KvBackend>(
    b: &B,
    req: RangeRequest,
    what: &str,
) -> Result<RangeResponse, String> {
    b.range(req).await.map_err(|e| failed(what, &e))
}

/// The key-value of `key` at `revision` (0: the current one), if it exists.
pub(crate) async fn get_at<B: KvBackend>(
    b: &B,
    key: &[u8],
    revision: i64,
) -> Result<Option<KeyValue>, String> {
    let what = format!("get {} at revision {revision}", text(key));
    let mut r = range(b, RangeRequest { revision, ..range_req(key, b"") }, &what).await?;
    ensure!(r.kvs.len() <= 1, "{what}: a single-key range returned {} key-values", r.kvs.len());
    ensure_eq!(r.count, r.kvs.len() as i64, "{what}: count");
    Ok(r.kvs.pop())
}

/// The current key-value of `key`, if it exists.
pub(crate) async fn get<B: KvBackend>(b: &B, key: &[u8]) -> Result<Option<KeyValue>, String> {
    get_at(b, key, 0).await
}

/// The current key-value of `key`, which must exist.
pub(crate) async fn get_some<B: KvBackend>(b: &B, key: &[u8], what: &str) -> Result<KeyValue, String> {
    get(b, key).await?.ok_or_else(|| format!("{what}: key {} does not exist", text(key)))
}

/// Delete every key of the space (left over from an earlier run with the same prefix), so
/// a test starts from nothing in it.
pub(crate) async fn clear<B: KvBackend>(b: &B, space: &Space<'_>) -> Outcome {
    delete(b, delete_req(&space.start(), &space.end(), false), "clearing the test's key space").await?;
    Ok(())
}

/// A lease id of this space: positive, and different for different spaces and `n`.
pub(crate) fn lease_id(space: &Space<'_>, n: i64) -> i64 {
    // 61 bits of hash leave room for `n` without overflow.
    ((space.hash() >> 3) as i64 + n).max(1)
}

/// A lease id that does not exist on the backend (checked with `leases()`).
pub(crate) async fn unknown_lease<B: LeaseBackend>(b: &B, space: &Space<'_>) -> Result<i64, String> {
    let existing = b.leases().await.map_err(|e| failed("leases()", &e))?;
    (1000..1100)
        .map(|n| lease_id(space, n))
        .find(|id| !existing.contains(id))
        .ok_or_else(|| "could not find an unused lease id".to_string())
}

/// Revoke the leases among `ids` that still exist, ignoring failures: the clean-up after a
/// lease test, so that no lease of the suite outlives it and expires in a later test.
pub(crate) async fn revoke_leftovers<B: KvBackend + LeaseBackend>(b: &B, ids: &[i64]) {
    let Ok(existing) = b.leases().await else {
        return;
    };
    for id in ids.iter().filter(|id| existing.contains(id)) {
        let _ignored = b
            .write(WriteRequest::LeaseRevoke(cairn_core::proto::etcdserverpb::LeaseRevokeRequest { id: *id }))
            .await;
    }
}
