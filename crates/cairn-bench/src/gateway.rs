//! `--gateway`: the put and range workloads as JSON over HTTP/1.1 (etcd's JSON gateway,
//! `POST /v3/kv/put` and `/v3/kv/range`), one kept-alive connection per client, to compare
//! the gateway with gRPC on the same member.

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use rand::rngs::SmallRng;
use rand::Rng;
use tonic::Status;

use crate::args::{BenchArgs, Consistency, Workload};
use crate::runner::{run_clients, ClientResult, Op, Shared};
use crate::workloads::key;

/// One client's connection to `authority` (host:port).
async fn connect(authority: &str) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

enum Kind {
    Put { value: Vec<u8> },
    Range { serializable: bool },
}

pub struct GatewayOp {
    send: SendRequest<Full<Bytes>>,
    authority: String,
    rng: SmallRng,
    key_space: u64,
    key_size: usize,
    kind: Kind,
}

impl Op for GatewayOp {
    async fn call(&mut self, _seq: u64) -> Result<(), Status> {
        let k = key(self.rng.random_range(0..self.key_space), self.key_size);
        let (path, body) = match &self.kind {
            Kind::Put { value } => (
                "/v3/kv/put",
                serde_json::to_vec(&PutRequest { key: k, value: value.clone(), ..Default::default() }),
            ),
            Kind::Range { serializable } => (
                "/v3/kv/range",
                serde_json::to_vec(&RangeRequest {
                    key: k,
                    serializable: *serializable,
                    ..Default::default()
                }),
            ),
        };
        let body = body.map_err(|e| Status::internal(e.to_string()))?;
        let req = http::Request::post(path)
            .header(http::header::HOST, &self.authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Status::internal(e.to_string()))?;
        let resp = self.send.send_request(req).await.map_err(|e| Status::unavailable(e.to_string()))?;
        let status = resp.status();
        let body =
            resp.into_body().collect().await.map_err(|e| Status::unavailable(e.to_string()))?.to_bytes();
        if status.is_success() {
            Ok(())
        } else {
            Err(Status::unknown(format!("HTTP {status}: {}", String::from_utf8_lossy(&body))))
        }
    }
}

/// Runs put or range with `--gateway`.
pub async fn run(
    args: &BenchArgs,
    endpoints: &[String],
    shared: &Arc<Shared>,
    period: Option<std::time::Duration>,
) -> Result<ClientResult> {
    let kind = |_: usize| match args.workload {
        Workload::Put => Ok(Kind::Put { value: vec![b'v'; args.value_size] }),
        Workload::Range => Ok(Kind::Range { serializable: args.consistency == Consistency::S }),
        other => Err(anyhow!("--gateway runs put and range only, not {other:?}")),
    };
    let mut ops = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let authority =
            endpoints[c % endpoints.len()].trim_start_matches("http://").trim_end_matches('/').to_string();
        ops.push(GatewayOp {
            send: connect(&authority).await?,
            authority,
            rng: crate::workloads::client_rng(args, c),
            key_space: args.key_space,
            key_size: args.key_size,
            kind: kind(c)?,
        });
    }
    run_clients(shared, ops, period, args.timeout).await
}
