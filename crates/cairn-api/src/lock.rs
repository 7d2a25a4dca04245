//! `v3lockpb.Lock`, as etcd serves it: a client of this member's own KV, Lease and Watch
//! services (over an in-process channel) running the lock recipe of `cairn-client`, which
//! is etcd's `concurrency.Mutex`. The caller keeps its lease alive; the server does not.

use cairn_client::concurrency::{acquire, prefix_of};
use cairn_client::Client;
use cairn_proto::etcdserverpb::{DeleteRangeRequest, LeaseGrantRequest};
use cairn_proto::v3lockpb::lock_server::Lock;
use cairn_proto::v3lockpb::*;
use tonic::{Request, Response, Status};

/// TTL of the lease granted for a request that names none (etcd's session default).
pub const DEFAULT_SESSION_TTL: i64 = 60;

pub struct LockService {
    pub client: Client,
    /// The caller's permissions (the client above checks none).
    pub permissions: std::sync::Arc<dyn crate::auth::Permissions>,
}

/// What etcd's lock and election servers need on `prefix`: their recipes read and write
/// under it with the caller's token. A refusal is Unknown, as their other errors.
pub(crate) fn authorize_prefix(
    permissions: &dyn crate::auth::Permissions,
    metadata: &tonic::metadata::MetadataMap,
    prefix: &[u8],
    needs: &[cairn_core::auth::Need],
) -> Result<(), Status> {
    authorize_keys(permissions, metadata, prefix, &cairn_core::prefix_end(prefix), needs)
}

/// The same for `[key, range_end)` (`range_end` empty: the key alone).
pub(crate) fn authorize_keys(
    permissions: &dyn crate::auth::Permissions,
    metadata: &tonic::metadata::MetadataMap,
    key: &[u8],
    range_end: &[u8],
    needs: &[cairn_core::auth::Need],
) -> Result<(), Status> {
    crate::auth::authorize(permissions, crate::auth::Enforce::Checked, metadata, |auth, user| {
        needs.iter().try_for_each(|need| auth.check(user, *need, key, range_end))
    })
    .map(|_| ())
    .map_err(|s| Status::unknown(s.message()))
}

const READ_WRITE: &[cairn_core::auth::Need] = &[cairn_core::auth::Need::Read, cairn_core::auth::Need::Write];
pub(crate) const READ: &[cairn_core::auth::Need] = &[cairn_core::auth::Need::Read];
pub(crate) const WRITE: &[cairn_core::auth::Need] = &[cairn_core::auth::Need::Write];
pub(crate) const READ_AND_WRITE: &[cairn_core::auth::Need] = READ_WRITE;

/// Errors of the recipes reach the caller as etcd's server sends them: etcd's lock and
/// election servers return the errors of their own etcd client, which gRPC does not know,
/// so every error is Unknown with etcd's text (e.g. "etcdserver: requested lease not found").
pub(crate) fn recipe_status(e: cairn_client::Error) -> Status {
    match e {
        cairn_client::Error::Status(s) => Status::unknown(s.message()),
        other => Status::unknown(other.to_string()),
    }
}

/// The request's lease, or a new one of [`DEFAULT_SESSION_TTL`] for lease 0 (as etcd).
pub(crate) async fn lease_or_grant(client: &Client, lease: i64) -> Result<i64, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    let grant = LeaseGrantRequest { ttl: DEFAULT_SESSION_TTL, id: 0 };
    Ok(client.lease().lease_grant(grant).await?.into_inner().id)
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let prefix = prefix_of(req.get_ref().name.clone());
        authorize_prefix(&*self.permissions, req.metadata(), &prefix, READ_WRITE)?;
        let LockRequest { name, lease } = req.into_inner();
        let lease = lease_or_grant(&self.client, lease).await?;
        // If the caller goes away while it waits, tonic drops this future and the recipe
        // takes the waiter's key out of the queue.
        let won = acquire(&self.client, &prefix_of(name), lease).await.map_err(recipe_status)?;
        Ok(Response::new(LockResponse { header: Some(won.header), key: won.key }))
    }

    async fn unlock(&self, req: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let key = &req.get_ref().key;
        authorize_keys(&*self.permissions, req.metadata(), key, b"", WRITE)?;
        let key = req.into_inner().key;
        let resp = self.client.delete(DeleteRangeRequest { key, ..Default::default() }).await?;
        Ok(Response::new(UnlockResponse { header: resp.header }))
    }
}
