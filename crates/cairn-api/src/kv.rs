//! `etcdserverpb.KV`: validate like etcd's gRPC layer, call the backend, fill the header.

use std::sync::Arc;

use cairn_core::{validate, RequestError, WriteRequest, WriteResponse};
use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_proto::etcdserverpb::*;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::auth::{authorize, Enforce};
use crate::errors::{backend_status, request_status};
use crate::Backend;
use crate::{fill_header, Limits};

pub struct KvService<B> {
    pub backend: Arc<B>,
    pub limits: Limits,
    pub enforce: Enforce,
}

impl<B: Backend> KvService<B> {
    /// etcd's two size limits: its gRPC server refuses messages over max-request-bytes +
    /// 512 KiB (ResourceExhausted, grpc-go's text), and etcd itself refuses requests over
    /// max-request-bytes ("request is too large").
    fn check_size<M: Message>(&self, m: &M) -> Result<(), Status> {
        let len = m.encoded_len();
        let grpc_max = self.limits.max_grpc_message_bytes();
        if len > grpc_max {
            return Err(Status::resource_exhausted(format!(
                "grpc: received message larger than max ({len} vs. {grpc_max})"
            )));
        }
        if len > self.limits.max_request_bytes {
            return Err(request_status(RequestError::RequestTooLarge));
        }
        Ok(())
    }

    /// `req`, whose permissions were checked at `auth_revision` (0: not checked).
    async fn write(&self, req: WriteRequest, auth_revision: u64) -> Result<WriteResponse, Status> {
        if !matches!(&req, WriteRequest::Txn(t) if cairn_core::is_read_only(t)) {
            crate::quota::check_not_corrupt(&*self.backend)?;
        }
        self.backend.write_checked(req, auth_revision).await.map_err(backend_status)
    }
}

fn unexpected(what: &str) -> Status {
    Status::internal(format!("backend answered a {what} with another kind of response"))
}

#[tonic::async_trait]
impl<B: Backend> Kv for KvService<B> {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        authorize(&*self.backend, self.enforce, req.metadata(), |auth, user| {
            auth.check_range(user, req.get_ref())
        })?;
        let req = req.into_inner();
        validate::check_range(&req).map_err(request_status)?;
        self.check_size(&req)?;
        if !req.serializable && self.backend.status().is_learner {
            return Err(crate::learner::not_supported());
        }
        let mut resp = self.backend.range(req).await.map_err(backend_status)?;
        fill_header(&mut resp.header, &self.backend.status());
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let auth_revision = authorize(&*self.backend, self.enforce, req.metadata(), |auth, user| {
            auth.check_put(user, req.get_ref())
        })?;
        if req.get_ref().lease != 0 && crate::auth::Permissions::auth_state(&*self.backend).enabled {
            // Attaching a key to a lease lets its revoke delete it: the caller must be allowed
            // to write every key the lease carries already (etcd).
            let keys = self.backend.lease_keys(req.get_ref().lease).await.unwrap_or_default();
            authorize(&*self.backend, self.enforce, req.metadata(), |auth, user| {
                keys.iter().try_for_each(|k| auth.check(user, cairn_core::auth::Need::Write, k, b""))
            })?;
        }
        let req = req.into_inner();
        validate::check_put(&req).map_err(request_status)?;
        self.check_size(&req)?;
        crate::quota::check(
            &*self.backend,
            self.limits.quota_backend_bytes,
            crate::quota::put_cost(&req.key, &req.value),
        )
        .await?;
        match self.write(WriteRequest::Put(req), auth_revision).await? {
            WriteResponse::Put(mut r) => {
                fill_header(&mut r.header, &self.backend.status());
                Ok(Response::new(r))
            }
            _ => Err(unexpected("put")),
        }
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let auth_revision = authorize(&*self.backend, self.enforce, req.metadata(), |auth, user| {
            auth.check_delete(user, req.get_ref())
        })?;
        let req = req.into_inner();
        validate::check_delete(&req).map_err(request_status)?;
        self.check_size(&req)?;
        match self.write(WriteRequest::DeleteRange(req), auth_revision).await? {
            WriteResponse::DeleteRange(mut r) => {
                fill_header(&mut r.header, &self.backend.status());
                Ok(Response::new(r))
            }
            _ => Err(unexpected("delete")),
        }
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let auth_revision = authorize(&*self.backend, self.enforce, req.metadata(), |auth, user| {
            auth.check_txn(user, req.get_ref())
        })?;
        let req = req.into_inner();
        validate::check_txn(&req, self.limits.max_txn_ops).map_err(request_status)?;
        self.check_size(&req)?;
        let cost = crate::quota::txn_cost(&req);
        if cost > 0 {
            crate::quota::check(&*self.backend, self.limits.quota_backend_bytes, cost).await?;
        }
        match self.write(WriteRequest::Txn(req), auth_revision).await? {
            WriteResponse::Txn(mut r) => {
                fill_header(&mut r.header, &self.backend.status());
                Ok(Response::new(r))
            }
            _ => Err(unexpected("txn")),
        }
    }

    async fn compact(&self, req: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        // Compaction destroys history for everyone: root only (etcd 3.4.42 and later).
        crate::auth::authorize_admin(&*self.backend, self.enforce, req.metadata())?;
        let req = req.into_inner();
        self.check_size(&req)?;
        match self.write(WriteRequest::Compact(req), 0).await? {
            WriteResponse::Compact(mut r) => {
                fill_header(&mut r.header, &self.backend.status());
                Ok(Response::new(r))
            }
            _ => Err(unexpected("compaction")),
        }
    }
}
