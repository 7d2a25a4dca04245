//! Single-runner jobs: a job (a scheduler, an indexer) runs on exactly one server at a
//! time. Each server asks [`SingleRunner::acquire`]; the one that gets its [`Turn`] runs the
//! job, with a fencing token that grows with every turn; when that server dies its lease
//! expires and another server's `acquire` returns. A turn's writes go through
//! [`Turn::fenced_txn`] / [`Turn::fenced_put`], which apply only while the turn is still the
//! current one, so a runner that was paused past its lease cannot overwrite its
//! successor's work. Built on [`Election`] (etcd's election keys).

use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{PutRequest, RequestOp, TxnRequest, TxnResponse};

use super::{created_at, Election, Leadership, Lease};
use crate::{Client, Error};

/// The job `name`, run by one server at a time.
pub struct SingleRunner {
    client: Client,
    election: Election,
    ttl: i64,
}

/// One server's turn at running the job.
pub struct Turn {
    client: Client,
    lease: Lease,
    leadership: Leadership,
}

impl SingleRunner {
    /// The job `name`; a runner that stops renewing loses its turn after `ttl` seconds.
    pub fn new(client: &Client, name: impl Into<Vec<u8>>, ttl: i64) -> SingleRunner {
        SingleRunner { client: client.clone(), election: Election::new(client, name), ttl }
    }

    /// Waits until `server` may run the job (every other turn ended), then returns its turn.
    pub async fn acquire(&self, server: &str) -> Result<Turn, Error> {
        let lease = Lease::grant(&self.client, self.ttl).await?;
        let leadership = self.election.campaign(&lease, server.as_bytes().to_vec()).await?;
        Ok(Turn { client: self.client.clone(), lease, leadership })
    }
}

impl Turn {
    /// Grows with every turn: pass it to systems outside Cairn that must refuse an older
    /// runner's writes.
    pub fn fencing_token(&self) -> i64 {
        self.leadership.fencing_token()
    }

    /// The lease this turn lives under.
    pub fn lease_id(&self) -> i64 {
        self.lease.id()
    }

    /// Completes when this turn is over (its lease expired or was revoked): stop the job.
    pub async fn lost(&self) {
        self.lease.lost().await
    }

    /// Runs `ops` in one transaction if this turn is still the current one; else
    /// [`Error::NotLeader`] and nothing is written.
    pub async fn fenced_txn(&self, ops: Vec<RequestOp>) -> Result<TxnResponse, Error> {
        let leader = self.leadership.leader();
        let resp = self
            .client
            .txn(TxnRequest {
                compare: vec![created_at(&leader.key, leader.revision)],
                success: ops,
                failure: vec![],
            })
            .await?;
        if !resp.succeeded {
            return Err(Error::NotLeader);
        }
        Ok(resp)
    }

    /// Puts `value` under `key` if this turn is still the current one (see [`Turn::fenced_txn`]).
    pub async fn fenced_put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<i64, Error> {
        let put = PutRequest { key: key.into(), value: value.into(), ..Default::default() };
        let resp = self.fenced_txn(vec![RequestOp { request: Some(Op::RequestPut(put)) }]).await?;
        Ok(resp.header.map_or(0, |h| h.revision))
    }

    /// Ends the turn now, so that another server takes over at once.
    pub async fn release(self) -> Result<(), Error> {
        self.leadership.resign().await?;
        self.lease.revoke().await
    }
}
