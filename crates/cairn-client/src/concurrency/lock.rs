//! A distributed mutex, as etcd's `concurrency.Mutex` (and so as `etcdctl lock` and the
//! Lock service): each contender puts `<name>/<lease in hex>` bound to its lease, the oldest
//! key holds the lock, and every waiter watches only the key created just before its own.

use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::*;

use super::lease::Lease;
use super::{created_at, key_under, prefix_of, wait_turn, DeleteOnDrop};
use crate::watch::first_created_request;
use crate::{op, range_kvs, Client, Error};

/// A named lock. Cheap: it holds only the client and the name.
#[derive(Clone)]
pub struct Lock {
    client: Client,
    prefix: Vec<u8>,
}

impl Lock {
    /// The lock `name` (its holders' and waiters' keys are under `name/`).
    pub fn new(client: &Client, name: impl Into<Vec<u8>>) -> Lock {
        Lock { client: client.clone(), prefix: prefix_of(name.into()) }
    }

    /// Waits until this lease holds the lock. Fails with [`Error::SessionExpired`] when the
    /// lease is lost first. Dropping the future gives up the place in the queue.
    pub async fn lock(&self, lease: &Lease) -> Result<LockGuard, Error> {
        let acquired = tokio::select! {
            acquired = acquire(&self.client, &self.prefix, lease.id()) => acquired?,
            _ = lease.lost() => return Err(Error::SessionExpired),
        };
        Ok(LockGuard {
            client: self.client.clone(),
            key: acquired.key,
            revision: acquired.revision,
            header: acquired.header,
            held: true,
        })
    }
}

/// A held lock. Dropping it releases the lock (in the background); [`LockGuard::unlock`]
/// releases it and waits for the answer. The lock also ends when its lease does.
pub struct LockGuard {
    client: Client,
    key: Vec<u8>,
    revision: i64,
    header: ResponseHeader,
    held: bool,
}

impl LockGuard {
    /// The lock key, `<name>/<lease in hex>`.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The lock key's create revision: it grows with every new holder, so a storage layer
    /// that remembers the largest token it has seen and refuses smaller ones cannot be
    /// written by a holder whose lock already passed on (docs/recipes.md).
    pub fn fencing_token(&self) -> i64 {
        self.revision
    }

    /// The header of the response that completed the acquisition.
    pub fn header(&self) -> &ResponseHeader {
        &self.header
    }

    /// Releases the lock (deletes its key): the next waiter gets it.
    pub async fn unlock(mut self) -> Result<(), Error> {
        self.held = false;
        let key = std::mem::take(&mut self.key);
        self.client.delete(DeleteRangeRequest { key, ..Default::default() }).await?;
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.held {
            DeleteOnDrop::spawn(&self.client, std::mem::take(&mut self.key));
        }
    }
}

/// A won lock.
pub struct Acquired {
    /// The holder's key, `<name>/<lease hex>`.
    pub key: Vec<u8>,
    /// The key's create revision (the fencing token).
    pub revision: i64,
    /// The header of the read that saw the lock won.
    pub header: ResponseHeader,
}

/// Queues `lease` on the lock under `prefix` (`name/`) and waits for its turn; on failure
/// or when the returned future is dropped, leaves the queue (deletes its key). The
/// algorithm and keys are etcd's, so Cairn and etcd clients share locks.
pub async fn acquire(client: &Client, prefix: &[u8], lease: i64) -> Result<Acquired, Error> {
    let key = key_under(prefix, lease);
    let resp = client
        .txn(TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![
                op(Op::RequestPut(PutRequest { key: key.clone(), lease, ..Default::default() })),
                op(Op::RequestRange(first_created_request(prefix))),
            ],
            failure: vec![
                op(Op::RequestRange(RangeRequest { key: key.clone(), ..Default::default() })),
                op(Op::RequestRange(first_created_request(prefix))),
            ],
        })
        .await?;
    // From here on our key exists: take it away again unless we return it held.
    let mut cleanup = DeleteOnDrop::new(client, key.clone());
    let mut revision = crate::header_revision(&resp.header);
    if !resp.succeeded {
        revision = range_kvs(&resp, 0).first().map_or(revision, |kv| kv.create_revision);
    }
    let owner = range_kvs(&resp, 1).first().map(|kv| kv.create_revision);
    let header = if owner.is_none_or(|rev| rev == revision) {
        resp.header.unwrap_or_default()
    } else {
        wait_turn(client, prefix, revision, &mut cleanup).await?
    };
    cleanup.disarm();
    Ok(Acquired { key, revision, header })
}
