//! Coordination recipes over the etcd API, with etcd's `clientv3/concurrency` keys and
//! algorithms: a Cairn process, an etcd client library and `etcdctl` can share one lock or
//! election.

mod election;
mod lease;
mod lock;
mod runner;

pub use election::{campaign, leader, observe, proclaim, resign, Election, Leader, Leadership};
pub use lease::Lease;
pub use lock::{acquire, Acquired, Lock, LockGuard};
pub use runner::{SingleRunner, Turn};

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{Compare, DeleteRangeRequest, ResponseHeader, TxnRequest};

use crate::watch::wait_deletes;
use crate::{Client, Error};

/// `name` → `name/`: the prefix under which the contenders' keys live.
pub fn prefix_of(mut name: Vec<u8>) -> Vec<u8> {
    name.push(b'/');
    name
}

/// A contender's key: the prefix and its lease ID in lower-case hex (etcd's `%s%x`).
pub fn key_under(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// "`key` has create revision `revision`" (0: `key` does not exist).
pub(crate) fn created_at(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
        range_end: vec![],
    }
}

/// A txn deleting `key` if it still has create revision `revision` (so that a stale handle
/// never deletes a successor's key of the same name).
pub(crate) fn delete_if_created_at(key: Vec<u8>, revision: i64) -> TxnRequest {
    TxnRequest {
        compare: vec![created_at(&key, revision)],
        success: vec![crate::op(Op::RequestDeleteRange(DeleteRangeRequest { key, ..Default::default() }))],
        failure: vec![],
    }
}

/// Waits for the turn of the contender whose key (`cleanup`'s) was created at `revision`
/// under `prefix`: until every older contender is gone, then checks that its key is still
/// there — its lease may have ended while it waited ([`Error::SessionExpired`]; nothing left
/// to clean up then). The key stays in place either way.
pub(crate) async fn wait_turn(
    client: &Client,
    prefix: &[u8],
    revision: i64,
    cleanup: &mut DeleteOnDrop,
) -> Result<ResponseHeader, Error> {
    wait_deletes(client, prefix, revision - 1).await?;
    let mine = client.get(cleanup.key().to_vec()).await?;
    if mine.kvs.is_empty() {
        cleanup.disarm();
        return Err(Error::SessionExpired);
    }
    Ok(mine.header.unwrap_or_default())
}

/// Deletes a contender's key when dropped, unless disarmed: a waiter that gives up (its
/// future dropped, an error) leaves the queue, as etcd's do on a canceled context.
pub(crate) struct DeleteOnDrop {
    client: Client,
    key: Option<Vec<u8>>,
}

impl DeleteOnDrop {
    pub(crate) fn key(&self) -> &[u8] {
        self.key.as_deref().unwrap_or_default()
    }

    pub(crate) fn new(client: &Client, key: Vec<u8>) -> DeleteOnDrop {
        DeleteOnDrop { client: client.clone(), key: Some(key) }
    }

    pub(crate) fn disarm(&mut self) {
        self.key = None;
    }

    /// Deletes `key` in the background (from a `Drop`, which cannot wait).
    pub(crate) fn spawn(client: &Client, key: Vec<u8>) {
        drop(DeleteOnDrop::new(client, key));
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let client = self.client.clone();
        runtime.spawn(async move {
            if let Err(e) = client.delete(DeleteRangeRequest { key: key.clone(), ..Default::default() }).await
            {
                tracing::warn!(key = %String::from_utf8_lossy(&key), "could not delete a contender key: {e}");
            }
        });
    }
}
