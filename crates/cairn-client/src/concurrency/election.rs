//! Leader election, as etcd's `concurrency.Election` (and so as `etcdctl elect` and the
//! Election service): candidates put `<name>/<lease in hex>` holding their value, the oldest
//! key is the leader, and the leader may change its value (proclaim) while it leads.

use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::*;
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::KeyValue;
use futures::Stream;
use tokio::sync::mpsc;

use super::lease::Lease;
use super::{created_at, delete_if_created_at, key_under, prefix_of, wait_turn, DeleteOnDrop};
use crate::watch::first_created;
use crate::{op, range_kvs, Client, Error};

/// An election by name.
#[derive(Clone)]
pub struct Election {
    client: Client,
    name: Vec<u8>,
    prefix: Vec<u8>,
}

/// The leader's key and its create revision (which orders leaderships: a fencing token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The leader's key, `<name>/<lease hex>`.
    pub key: Vec<u8>,
    /// The key's create revision.
    pub revision: i64,
    /// The lease the leadership lives under.
    pub lease: i64,
}

impl Election {
    /// The election `name` (its candidates' keys are under `name/`).
    pub fn new(client: &Client, name: impl Into<Vec<u8>>) -> Election {
        let name = name.into();
        Election { client: client.clone(), prefix: prefix_of(name.clone()), name }
    }

    /// The election's name.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// Waits until this lease leads, announcing `value`. Fails with
    /// [`Error::SessionExpired`] when the lease is lost first. Dropping the future withdraws
    /// the candidacy.
    pub async fn campaign(&self, lease: &Lease, value: impl Into<Vec<u8>>) -> Result<Leadership, Error> {
        let (leader, header) = tokio::select! {
            won = campaign(&self.client, &self.prefix, lease.id(), value.into()) => won?,
            _ = lease.lost() => return Err(Error::SessionExpired),
        };
        Ok(Leadership { client: self.client.clone(), name: self.name.clone(), leader, header, leading: true })
    }

    /// The current leader's key-value (its value is what it proclaimed), if there is one.
    pub async fn leader(&self) -> Result<Option<KeyValue>, Error> {
        Ok(leader(&self.client, &self.prefix).await?.1)
    }

    /// Every leader and every value a leader proclaims, in order, starting with the current
    /// one (or the next, if there is none yet). Ends only with an error.
    pub fn observe(&self) -> impl Stream<Item = Result<(ResponseHeader, KeyValue), Error>> + Send + 'static {
        let (client, prefix) = (self.client.clone(), self.prefix.clone());
        crate::spawn_stream(move |tx| async move { observe(&client, &prefix, &tx).await })
    }
}

/// The oldest candidate under `prefix` (the leader), with the header of the read.
pub async fn leader(client: &Client, prefix: &[u8]) -> Result<(ResponseHeader, Option<KeyValue>), Error> {
    let resp = first_created(client, prefix).await?;
    Ok((resp.header.unwrap_or_default(), resp.kvs.into_iter().next()))
}

/// Won leadership. Dropping it resigns (in the background); so does the end of its lease.
pub struct Leadership {
    client: Client,
    name: Vec<u8>,
    leader: Leader,
    header: ResponseHeader,
    leading: bool,
}

impl Leadership {
    /// This leadership's key, revision and lease.
    pub fn leader(&self) -> &Leader {
        &self.leader
    }

    /// The name of the election this leadership won.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The leader key's create revision: grows with every new leadership (a fencing token).
    pub fn fencing_token(&self) -> i64 {
        self.leader.revision
    }

    /// The header of the response that completed the campaign.
    pub fn header(&self) -> &ResponseHeader {
        &self.header
    }

    /// Announces a new value, if this candidate still leads ([`Error::NotLeader`] if not).
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<ResponseHeader, Error> {
        proclaim(&self.client, &self.leader, value.into()).await
    }

    /// Steps down: deletes the leader key if it is still this leadership's.
    pub async fn resign(mut self) -> Result<ResponseHeader, Error> {
        self.leading = false;
        resign(&self.client, &self.leader).await
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if !self.leading {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (client, leader) = (self.client.clone(), self.leader.clone());
        runtime.spawn(async move {
            if let Err(e) = resign(&client, &leader).await {
                tracing::warn!("could not resign on drop: {e}");
            }
        });
    }
}

/// Campaigns with `lease` under `prefix` (`name/`) and waits until it leads; on failure or
/// when the future is dropped, withdraws (deletes its key).
pub async fn campaign(
    client: &Client,
    prefix: &[u8],
    lease: i64,
    value: Vec<u8>,
) -> Result<(Leader, ResponseHeader), Error> {
    let key = key_under(prefix, lease);
    let resp = client
        .txn(TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![op(Op::RequestPut(PutRequest {
                key: key.clone(),
                value: value.clone(),
                lease,
                ..Default::default()
            }))],
            failure: vec![op(Op::RequestRange(RangeRequest { key: key.clone(), ..Default::default() }))],
        })
        .await?;
    let mut cleanup = DeleteOnDrop::new(client, key.clone());
    let mut leader = Leader { key: key.clone(), revision: crate::header_revision(&resp.header), lease };
    if !resp.succeeded {
        // Already a candidate with this lease: keep the place, update the value.
        if let Some(kv) = range_kvs(&resp, 0).first() {
            leader.revision = kv.create_revision;
            if kv.value != value {
                proclaim(client, &leader, value).await?;
            }
        }
    }
    let header = wait_turn(client, prefix, leader.revision, &mut cleanup).await?;
    cleanup.disarm();
    Ok((leader, header))
}

/// Puts `value` under the leader key if it is still `leader`'s ([`Error::NotLeader`] if
/// not), keeping its lease.
pub async fn proclaim(client: &Client, leader: &Leader, value: Vec<u8>) -> Result<ResponseHeader, Error> {
    let resp = client
        .txn(TxnRequest {
            compare: vec![created_at(&leader.key, leader.revision)],
            success: vec![op(Op::RequestPut(PutRequest {
                key: leader.key.clone(),
                value,
                lease: leader.lease,
                ..Default::default()
            }))],
            failure: vec![],
        })
        .await?;
    if !resp.succeeded {
        return Err(Error::NotLeader);
    }
    Ok(resp.header.unwrap_or_default())
}

/// Deletes the leader key if it is still `leader`'s; not leading is not an error (etcd).
pub async fn resign(client: &Client, leader: &Leader) -> Result<ResponseHeader, Error> {
    let resp = client.txn(delete_if_created_at(leader.key.clone(), leader.revision)).await?;
    Ok(resp.header.unwrap_or_default())
}

/// Sends each leader and each of its proclamations to `tx` (etcd's `Election.Observe`):
/// the first key created under `prefix`, then its changes until it is deleted, then the
/// next leader. Returns when `tx` is closed, or with an error.
pub async fn observe(
    client: &Client,
    prefix: &[u8],
    tx: &mpsc::Sender<Result<(ResponseHeader, KeyValue), Error>>,
) -> Result<(), Error> {
    loop {
        let resp = first_created(client, prefix).await?;
        let (mut header, kv) = match resp.kvs.into_iter().next() {
            Some(kv) => (resp.header.unwrap_or_default(), kv),
            None => {
                // No leader yet: the first key put under the prefix is the next one.
                let from = crate::header_revision(&resp.header);
                let mut watch = client
                    .watch(WatchCreateRequest {
                        key: prefix.to_vec(),
                        range_end: crate::prefix_end(prefix),
                        start_revision: from,
                        ..Default::default()
                    })
                    .await?;
                loop {
                    let r = watch.next_events().await?;
                    let put = r.events.into_iter().find(|e| e.r#type == EventType::Put as i32);
                    if let Some(kv) = put.and_then(|e| e.kv) {
                        let mut header = r.header.unwrap_or_default();
                        header.revision = kv.mod_revision;
                        break (header, kv);
                    }
                }
            }
        };
        header.revision = header.revision.max(kv.mod_revision);
        let key = kv.key.clone();
        if tx.send(Ok((header, kv))).await.is_err() {
            return Ok(());
        }
        // Follow this leader's proclamations until its key goes.
        let mut watch = client
            .watch(WatchCreateRequest { key, start_revision: header.revision + 1, ..Default::default() })
            .await?;
        'leader: loop {
            let r = watch.next_events().await?;
            let header = r.header.unwrap_or_default();
            for e in r.events {
                if e.r#type == EventType::Delete as i32 {
                    break 'leader;
                }
                if let Some(kv) = e.kv {
                    if tx.send(Ok((header, kv))).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}
