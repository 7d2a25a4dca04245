//! `etcdserverpb.Lease`: grant, revoke, keepalive stream, time-to-live and listing.
//! Timers live with the backend's leader; this layer only speaks etcd's protocol.

use std::pin::Pin;
use std::sync::Arc;

use cairn_core::{WriteRequest, WriteResponse};
use cairn_proto::etcdserverpb::lease_server::Lease;
use cairn_proto::etcdserverpb::*;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::errors::backend_status;
use crate::fill_header;
use crate::Backend;

/// Keepalive responses buffered per stream.
const KEEPALIVE_BUFFER: usize = 16;

pub struct LeaseService<B> {
    pub backend: Arc<B>,
    pub limits: crate::Limits,
    pub enforce: crate::auth::Enforce,
}

/// A header at this member's current (readable) revision.
pub(crate) fn current_header<B: Backend>(backend: &B) -> Option<ResponseHeader> {
    let revision = *backend.revision_updates().borrow();
    let mut header = Some(ResponseHeader { revision, ..Default::default() });
    fill_header(&mut header, &backend.status());
    header
}

/// Waits until this member has applied every write acknowledged before (a linearizable
/// read). The lease list and a lease's keys come from this member's applied state. A write
/// taken by this member is applied here before it is acknowledged (as in etcd); this also
/// covers grants and puts acknowledged by other members, which etcd does not promise.
///
/// Without a quorum the barrier fails after the request timeout and the member's own view is
/// served anyway, as etcd serves it.
async fn applied_barrier<B: Backend>(backend: &B) {
    let probe = RangeRequest { key: vec![0], count_only: true, ..Default::default() };
    if let Err(e) = backend.range(probe).await {
        tracing::debug!(error = %e, "lease read barrier failed: serving this member's view");
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<B: Backend> Lease for LeaseService<B> {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = req.into_inner();
        crate::quota::check_not_corrupt(&*self.backend)?;
        crate::quota::check(&*self.backend, self.limits.quota_backend_bytes, 64).await?;
        let mut resp = self.backend.lease_grant(req.id, req.ttl).await.map_err(backend_status)?;
        fill_header(&mut resp.header, &self.backend.status());
        Ok(Response::new(resp))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        // Revoking deletes the lease's keys: the caller must be allowed to write each (etcd).
        let mut auth_revision = 0;
        if self.enforce == crate::auth::Enforce::Checked
            && crate::auth::Permissions::auth_state(&*self.backend).enabled
        {
            let keys = self.backend.lease_keys(req.get_ref().id).await.map_err(backend_status)?;
            auth_revision =
                crate::auth::authorize(&*self.backend, self.enforce, req.metadata(), |auth, user| {
                    keys.iter().try_for_each(|k| auth.check(user, cairn_core::auth::Need::Write, k, b""))
                })?;
        }
        crate::quota::check_not_corrupt(&*self.backend)?;
        let revoke = WriteRequest::LeaseRevoke(req.into_inner());
        match self.backend.write_checked(revoke, auth_revision).await.map_err(backend_status)? {
            WriteResponse::LeaseRevoke(mut resp) => {
                fill_header(&mut resp.header, &self.backend.status());
                Ok(Response::new(resp))
            }
            _ => Err(Status::internal("backend answered a lease revoke with another kind of response")),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut requests = req.into_inner();
        let backend = self.backend.clone();
        let (tx, rx) = mpsc::channel(KEEPALIVE_BUFFER);
        tokio::spawn(async move {
            while let Some(Ok(LeaseKeepAliveRequest { id })) = requests.next().await {
                // etcd ends the stream on an error other than "not found" (which is TTL 0).
                let reply = match backend.lease_renew(id).await {
                    Ok(ttl) => Ok(LeaseKeepAliveResponse { header: current_header(&*backend), id, ttl }),
                    Err(e) => Err(backend_status(e)),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let LeaseTimeToLiveRequest { id, keys } = req.into_inner();
        let resp = match self.backend.lease_time(id).await.map_err(backend_status)? {
            // etcd answers an unknown lease with TTL -1, not an error.
            None => LeaseTimeToLiveResponse {
                header: current_header(&*self.backend),
                id,
                ttl: -1,
                ..Default::default()
            },
            Some(t) => {
                if keys {
                    applied_barrier(&*self.backend).await;
                }
                LeaseTimeToLiveResponse {
                    header: current_header(&*self.backend),
                    id,
                    ttl: t.remaining,
                    granted_ttl: t.granted,
                    keys: if keys {
                        self.backend.lease_keys(id).await.map_err(backend_status)?
                    } else {
                        Vec::new()
                    },
                }
            }
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        applied_barrier(&*self.backend).await;
        let leases = self
            .backend
            .leases()
            .await
            .map_err(backend_status)?
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse { header: current_header(&*self.backend), leases }))
    }
}
