//! A lease kept alive in the background, with a loss signal.

use std::time::Duration;

use cairn_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::{Client, Error};

/// How long to wait before trying a broken keepalive stream again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// A lease whose keepalives a background task sends (every third of its TTL, as etcd's
/// client does) for as long as this value lives. When the lease is gone — revoked, expired
/// because no keepalive got through in time — [`Lease::lost`] completes: whatever the lease
/// stood for (a lock, a leadership, a presence key) is gone too.
///
/// Dropping it stops the keepalives; the lease then expires after its TTL. [`Lease::revoke`]
/// ends it at once.
pub struct Lease {
    client: Client,
    id: i64,
    ttl: i64,
    lost: watch::Receiver<bool>,
    keeper: Option<JoinHandle<()>>,
}

impl Lease {
    /// Grants a lease of `ttl` seconds (the server may raise it to its minimum) and keeps it
    /// alive.
    pub async fn grant(client: &Client, ttl: i64) -> Result<Lease, Error> {
        let resp = client.lease().lease_grant(LeaseGrantRequest { ttl, id: 0 }).await?.into_inner();
        if !resp.error.is_empty() {
            return Err(Error::Status(tonic::Status::unknown(resp.error)));
        }
        Ok(Lease::keep(client, resp.id, resp.ttl))
    }

    /// Keeps an existing lease alive, `ttl` being what it was granted with (it paces the
    /// keepalives). An unknown lease is reported lost after the first keepalive.
    pub fn keep(client: &Client, id: i64, ttl: i64) -> Lease {
        let (lost_tx, lost) = watch::channel(false);
        let keeper = tokio::spawn(keep_alive(client.clone(), id, ttl, lost_tx));
        Lease { client: client.clone(), id, ttl, lost, keeper: Some(keeper) }
    }

    /// The lease's id (attach keys to it with `PutRequest::lease`).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The TTL in seconds the lease was granted with.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// The client the lease was granted through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether the lease is known to be gone (see [`Lease::lost`]).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Completes when the lease is known to be gone (at once if it already is).
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        // An error means the keeper ended without saying "lost": only on drop or orphan.
        let _ = lost.wait_for(|lost| *lost).await;
        if !*lost.borrow() {
            std::future::pending::<()>().await;
        }
    }

    /// Stops the keepalives but leaves the lease to expire on its own; returns its ID.
    pub fn orphan(mut self) -> i64 {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
        self.id
    }

    /// Revokes the lease: every key attached to it is deleted, in one revision.
    pub async fn revoke(mut self) -> Result<(), Error> {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
        self.client.lease().lease_revoke(LeaseRevokeRequest { id: self.id }).await?;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
    }
}

/// Sends a keepalive every `ttl / 3` over one stream, reopening it after a failure, until
/// the server says the lease is gone or no keepalive succeeded before the lease's deadline.
async fn keep_alive(client: Client, id: i64, ttl: i64, lost: watch::Sender<bool>) {
    let mut ttl = Duration::from_secs(ttl.max(1) as u64);
    // The lease is known alive until this instant (a keepalive counts from when it was sent).
    let mut alive_until = Instant::now() + ttl;
    loop {
        let (tx, rx) = mpsc::channel(1);
        // The first request goes in before the call: etcd's server sends its response
        // headers only with its first answer, so the call would wait for it forever.
        let mut sent = Instant::now();
        let _ = tx.try_send(LeaseKeepAliveRequest { id });
        let mut stub = client.lease();
        if let Ok(Ok(resp)) = tokio::time::timeout(ttl, stub.lease_keep_alive(ReceiverStream::new(rx))).await
        {
            let mut responses = resp.into_inner();
            loop {
                let wait = alive_until.saturating_duration_since(sent).max(Duration::from_millis(100));
                match tokio::time::timeout(wait, responses.message()).await {
                    Ok(Ok(Some(r))) if r.ttl <= 0 => {
                        let _ = lost.send(true);
                        return;
                    }
                    Ok(Ok(Some(r))) => {
                        ttl = Duration::from_secs(r.ttl as u64);
                        alive_until = sent + ttl;
                        tokio::time::sleep((ttl / 3).max(Duration::from_millis(500))).await;
                    }
                    _ => break,
                }
                sent = Instant::now();
                if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                    break;
                }
            }
        }
        if Instant::now() >= alive_until {
            tracing::warn!(lease = format_args!("{id:x}"), "lease keepalive failed until its TTL ran out");
            let _ = lost.send(true);
            return;
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}
