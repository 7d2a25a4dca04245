//! The API's Prometheus metrics, under the names etcd's dashboards use:
//! `grpc_server_handled_total` (go-grpc-prometheus: every finished call by type, service,
//! method and status code) and `etcd_debugging_mvcc_watcher_total` (open watchers).
//! [`GrpcMetricsLayer`] sits in front of the services; [`register`] adds both to a registry.

use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use http_body::{Body, Frame};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Call {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

static HANDLED: LazyLock<Family<Call, Counter>> = LazyLock::new(Family::default);
static WATCHERS: LazyLock<Gauge> = LazyLock::new(Gauge::default);

pub fn register(registry: &mut Registry) {
    registry.register(
        "grpc_server_handled",
        "Total number of RPCs completed on the server, regardless of success or failure",
        HANDLED.clone(),
    );
    registry.register(
        "etcd_debugging_mvcc_watcher_total",
        "Total number of watchers (open watches on this member)",
        WATCHERS.clone(),
    );
}

/// Counts one open watcher for as long as it lives.
pub(crate) struct WatcherCount;

impl WatcherCount {
    pub(crate) fn new() -> WatcherCount {
        WATCHERS.inc();
        WatcherCount
    }
}

impl Drop for WatcherCount {
    fn drop(&mut self) {
        WATCHERS.dec();
    }
}

/// go-grpc-prometheus' `grpc_type` of an etcd method.
fn call_type(method: &str) -> &'static str {
    match method {
        "Watch" | "LeaseKeepAlive" => "bidi_stream",
        "Snapshot" | "Observe" => "server_stream",
        _ => "unary",
    }
}

/// grpc-go's names of the codes (`codes.Code.String()`).
fn code_name(code: &str) -> &'static str {
    match code.trim() {
        "0" => "OK",
        "1" => "Canceled",
        "2" => "Unknown",
        "3" => "InvalidArgument",
        "4" => "DeadlineExceeded",
        "5" => "NotFound",
        "6" => "AlreadyExists",
        "7" => "PermissionDenied",
        "8" => "ResourceExhausted",
        "9" => "FailedPrecondition",
        "10" => "Aborted",
        "11" => "OutOfRange",
        "12" => "Unimplemented",
        "13" => "Internal",
        "14" => "Unavailable",
        "15" => "DataLoss",
        "16" => "Unauthenticated",
        _ => "Unknown",
    }
}

/// Counts every gRPC call when it finishes: with the `grpc-status` of a trailers-only
/// response (an error before any message), else of the body's trailers.
#[derive(Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Body + Unpin + Send + 'static,
{
    type Response = http::Response<Counted<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // "/etcdserverpb.KV/Range" -> ("etcdserverpb.KV", "Range")
        let (service, method) = req.uri().path().trim_start_matches('/').split_once('/').unwrap_or(("", ""));
        let call = Call {
            grpc_type: call_type(method),
            grpc_service: service.to_string(),
            grpc_method: method.to_string(),
            grpc_code: "OK",
        };
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            let early = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(code_name);
            let mut call = Some(call);
            if let Some(code) = early {
                if let Some(mut c) = call.take() {
                    c.grpc_code = code;
                    HANDLED.get_or_create(&c).inc();
                }
            }
            Ok(response.map(|body| Counted { body, call }))
        })
    }
}

/// A response body that counts its call once its trailers (or its end) arrive.
pub struct Counted<B> {
    body: B,
    call: Option<Call>,
}

impl<B> Counted<B> {
    fn finish(&mut self, code: &'static str) {
        if let Some(mut c) = self.call.take() {
            c.grpc_code = code;
            HANDLED.get_or_create(&c).inc();
        }
    }
}

impl<B: Body + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code =
                        trailers.get("grpc-status").and_then(|v| v.to_str().ok()).map_or("OK", code_name);
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish("Unknown"),
            Poll::Ready(None) => self.finish("OK"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        // A stream the client went away from: go-grpc-prometheus counts it Canceled.
        self.finish("Canceled");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_go_grpc_prometheus() {
        assert_eq!(call_type("Watch"), "bidi_stream");
        assert_eq!(call_type("Snapshot"), "server_stream");
        assert_eq!(call_type("Range"), "unary");
        assert_eq!(code_name("0"), "OK");
        assert_eq!(code_name("14"), "Unavailable");
        assert_eq!(code_name("x"), "Unknown");
    }
}
