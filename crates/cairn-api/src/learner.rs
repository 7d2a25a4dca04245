//! What a learner serves: as in etcd 3.4, only `Maintenance.Status` and serializable
//! `KV.Range`; every other call (unary or stream) gets etcd's "etcdserver: rpc not
//! supported for learner" (Unavailable, so that clients move on to another endpoint). The
//! gate sits in front of every service on the network listener; the Range handler checks
//! the serializable flag itself, since the gate does not decode bodies.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;

/// etcd's error for a call a learner does not serve.
pub fn not_supported() -> Status {
    Status::unavailable("etcdserver: rpc not supported for learner")
}

/// The gRPC methods a learner may be asked at all.
fn allowed(path: &str) -> bool {
    matches!(path, "/etcdserverpb.Maintenance/Status" | "/etcdserverpb.KV/Range")
}

/// A tower layer that refuses what a learner does not serve, asking `is_learner` per call.
#[derive(Clone)]
pub struct LearnerGateLayer {
    pub is_learner: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl<S> tower::Layer<S> for LearnerGateLayer {
    type Service = LearnerGate<S>;

    fn layer(&self, inner: S) -> LearnerGate<S> {
        LearnerGate { inner, is_learner: self.is_learner.clone() }
    }
}

#[derive(Clone)]
pub struct LearnerGate<S> {
    inner: S,
    is_learner: Arc<dyn Fn() -> bool + Send + Sync>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for LearnerGate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !allowed(req.uri().path()) && (self.is_learner)() {
            let refused = not_supported().into_http();
            return Box::pin(async move { Ok(refused) });
        }
        Box::pin(self.inner.call(req))
    }
}
