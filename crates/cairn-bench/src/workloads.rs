//! The request-response workloads (put, range, txn, delete, mixed, lease, fill) as [`Op`]s
//! over the raw tonic clients of `cairn-proto`, and the key-space prefill.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use cairn_client::Transport;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    request_op, response_op, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use cairn_proto::v3lockpb::lock_client::LockClient;
use cairn_proto::v3lockpb::{LockRequest, UnlockRequest};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::args::{BenchArgs, Consistency};
use crate::runner::{run_clients, Op, Shared};

/// Key `index` of the key space: zero-padded decimal, `size` bytes.
pub fn key(index: u64, size: usize) -> Vec<u8> {
    format!("{index:0size$}").into_bytes()
}

/// Client `client`'s random generator (the same seed for gRPC and `--gateway`).
pub(crate) fn client_rng(args: &BenchArgs, client: usize) -> SmallRng {
    rng(args, client)
}

fn rng(args: &BenchArgs, client: usize) -> SmallRng {
    SmallRng::seed_from_u64(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(client as u64))
}

fn put_request(key: Vec<u8>, value: Vec<u8>) -> PutRequest {
    PutRequest { key, value, ..Default::default() }
}

fn put_op(key: Vec<u8>, value: Vec<u8>) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestPut(put_request(key, value))) }
}

/// Put of a random key.
pub struct PutOp {
    kv: KvClient<Transport>,
    rng: SmallRng,
    key_space: u64,
    key_size: usize,
    value: Vec<u8>,
}

impl Op for PutOp {
    async fn call(&mut self, _seq: u64) -> Result<(), Status> {
        let k = key(self.rng.random_range(0..self.key_space), self.key_size);
        self.kv.put(put_request(k, self.value.clone())).await.map(drop)
    }
}

/// Range of a random key, or of `keys` consecutive keys from a random one.
pub struct RangeOp {
    kv: KvClient<Transport>,
    rng: SmallRng,
    key_space: u64,
    key_size: usize,
    serializable: bool,
    keys: u64,
}

impl Op for RangeOp {
    async fn call(&mut self, _seq: u64) -> Result<(), Status> {
        let first = self.rng.random_range(0..self.key_space.saturating_sub(self.keys - 1).max(1));
        let k = key(first, self.key_size);
        let range_end = if self.keys > 1 { key(first + self.keys, self.key_size) } else { Vec::new() };
        let req = RangeRequest { key: k, range_end, serializable: self.serializable, ..Default::default() };
        self.kv.range(req).await.map(drop)
    }
}

/// Compare-and-swap on a random key: `if mod_revision(k) == last seen then put else get`;
/// the else branch tells the current mod revision for the next attempt on that key.
pub struct TxnOp {
    kv: KvClient<Transport>,
    rng: SmallRng,
    key_space: u64,
    key_size: usize,
    value: Vec<u8>,
    /// Last mod revision this client saw per key index (absent: assume 0, "not there").
    seen: HashMap<u64, i64>,
    succeeded: Arc<AtomicU64>,
}

impl Op for TxnOp {
    async fn call(&mut self, _seq: u64) -> Result<(), Status> {
        let i = self.rng.random_range(0..self.key_space);
        let k = key(i, self.key_size);
        let expected = self.seen.get(&i).copied().unwrap_or(0);
        let req = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: k.clone(),
                range_end: Vec::new(),
                target_union: Some(TargetUnion::ModRevision(expected)),
            }],
            success: vec![put_op(k.clone(), self.value.clone())],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: k,
                    ..Default::default()
                })),
            }],
        };
        let resp = self.kv.txn(req).await?.into_inner();
        if resp.succeeded {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
            // The put's revision is the response header's.
            if let Some(h) = resp.header {
                self.seen.insert(i, h.revision);
            }
        } else {
            let current = resp
                .responses
                .into_iter()
                .find_map(|r| match r.response {
                    Some(response_op::Response::ResponseRange(rr)) => {
                        Some(rr.kvs.first().map_or(0, |kv| kv.mod_revision))
                    }
                    _ => None,
                })
                .unwrap_or(0);
            self.seen.insert(i, current);
        }
        Ok(())
    }
}

/// Deletes the key space in order, each key once (a shared cursor).
pub struct DeleteOp {
    kv: KvClient<Transport>,
    cursor: Arc<AtomicU64>,
    key_space: u64,
    key_size: usize,
    deleted: Arc<AtomicU64>,
}

impl Op for DeleteOp {
    async fn call(&mut self, _seq: u64) -> Result<(), Status> {
        let i = self.cursor.fetch_add(1, Ordering::Relaxed);
        if i >= self.key_space {
            // The run's total is the key space, so this only happens on a retry after errors.
            return Ok(());
        }
        let resp = self
            .kv
            .delete_range(DeleteRangeRequest { key: key(i, self.key_size), ..Default::default() })
            .await?;
        self.deleted.fetch_add(resp.into_inner().deleted as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// A read (single-key range) with probability `read_ratio`, else a put.
pub struct MixedOp {
    put: PutOp,
    read_ratio: f64,
    serializable: bool,
    reads: Arc<AtomicU64>,
}

impl Op for MixedOp {
    async fn call(&mut self, seq: u64) -> Result<(), Status> {
        if self.put.rng.random_bool(self.read_ratio) {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let k = key(self.put.rng.random_range(0..self.put.key_space), self.put.key_size);
            let req = RangeRequest { key: k, serializable: self.serializable, ..Default::default() };
            self.put.kv.range(req).await.map(drop)
        } else {
            self.put.call(seq).await
        }
    }
}

/// Lock then unlock `name` under `lease` (granted before the run): one operation.
pub struct LockOp {
    lock: LockClient<Transport>,
    name: Vec<u8>,
    lease: i64,
}

impl Op for LockOp {
    async fn call(&mut self, _seq: u64) -> Result<(), Status> {
        let locked = self.lock.lock(LockRequest { name: self.name.clone(), lease: self.lease }).await?;
        self.lock.unlock(UnlockRequest { key: locked.into_inner().key }).await?;
        Ok(())
    }
}

/// Lease life cycle, one request per call: grant, `keepalives` keepalives on this client's
/// keepalive stream, revoke.
pub struct LeaseOp {
    lease: LeaseClient<Transport>,
    ttl: i64,
    keepalives: u32,
    /// The current lease and how many keepalives it has had.
    current: Option<(i64, u32)>,
    stream: Option<(mpsc::Sender<LeaseKeepAliveRequest>, Streaming<LeaseKeepAliveResponse>)>,
    counts: Arc<[AtomicU64; 3]>,
}

impl LeaseOp {
    async fn keepalive(&mut self, id: i64) -> Result<(), Status> {
        let sent = match self.stream.as_mut() {
            Some((tx, _)) => tx.send(LeaseKeepAliveRequest { id }).await,
            None => {
                // The first request is queued before the call: a server may send the response
                // headers only with its first message (etcd's grpc-go does), so awaiting the
                // call on an empty request stream would wait forever.
                let (tx, rx) = mpsc::channel(1);
                let sent = tx.send(LeaseKeepAliveRequest { id }).await;
                let resp =
                    self.lease.lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)).await?;
                self.stream = Some((tx, resp.into_inner()));
                sent
            }
        };
        let Some((_, responses)) = self.stream.as_mut() else { unreachable!("set above") };
        let got = match sent {
            Ok(()) => responses.message().await,
            Err(_) => Err(Status::unavailable("keepalive stream closed")),
        };
        match got {
            Ok(Some(r)) if r.ttl > 0 => Ok(()),
            Ok(Some(_)) => Err(Status::not_found("lease expired or revoked (keepalive ttl 0)")),
            Ok(None) => {
                self.stream = None;
                Err(Status::unavailable("keepalive stream ended"))
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }
}

impl Op for LeaseOp {
    async fn call(&mut self, _seq: u64) -> Result<(), Status> {
        match self.current {
            None => {
                let resp =
                    self.lease.lease_grant(LeaseGrantRequest { ttl: self.ttl, id: 0 }).await?.into_inner();
                if !resp.error.is_empty() {
                    return Err(Status::unknown(resp.error));
                }
                self.current = Some((resp.id, 0));
                self.counts[0].fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Some((id, n)) if n < self.keepalives => {
                let r = self.keepalive(id).await;
                // A failed keepalive moves on to the revoke, so one bad lease cannot stall a client.
                self.current = Some((id, if r.is_ok() { n + 1 } else { self.keepalives }));
                r.map(|()| {
                    self.counts[1].fetch_add(1, Ordering::Relaxed);
                })
            }
            Some((id, _)) => {
                self.current = None;
                self.lease.lease_revoke(LeaseRevokeRequest { id }).await?;
                self.counts[2].fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }
}

/// Writes keys `0..key_space` with txns of `fill_batch` puts over `clients` concurrent
/// writers; returns keys per second.
pub async fn prefill(args: &BenchArgs, channels: &[Transport]) -> Result<f64> {
    let start = Instant::now();
    let batch = args.fill_batch as u64;
    let batches = args.key_space.div_ceil(batch);
    let cursor = Arc::new(AtomicU64::new(0));
    let value = vec![b'v'; args.value_size];
    let writers = args.clients.min(batches as usize).max(1);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut kv = KvClient::new(channels[w % channels.len()].clone());
        let (cursor, value, args) = (cursor.clone(), value.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let b = cursor.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok::<(), anyhow::Error>(());
                }
                let ops: Vec<RequestOp> = (b * batch..((b + 1) * batch).min(args.key_space))
                    .map(|i| put_op(key(i, args.key_size), value.clone()))
                    .collect();
                let req = TxnRequest { compare: Vec::new(), success: ops, failure: Vec::new() };
                let mut tries = 0;
                loop {
                    match tokio::time::timeout(args.timeout, kv.txn(req.clone())).await {
                        Ok(Ok(_)) => break,
                        Ok(Err(e)) if tries < 5 => warn(&format!("prefill txn failed ({e}); retrying")),
                        Err(_) if tries < 5 => warn("prefill txn timed out; retrying"),
                        Ok(Err(e)) => return Err(anyhow!("prefill failed: {e}")),
                        Err(_) => return Err(anyhow!("prefill failed: timed out 6 times")),
                    }
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(args.key_space as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

fn warn(msg: &str) {
    eprintln!("cairn bench: {msg}");
}

/// Runs a request-response workload's measured phase; returns the merged client result and
/// the workload's extra figures.
pub async fn run_ops(
    args: &BenchArgs,
    channels: &[Transport],
    shared: &Arc<Shared>,
    period: Option<Duration>,
) -> Result<(crate::runner::ClientResult, BTreeMap<String, f64>)> {
    use crate::args::Workload;
    let chan = |c: usize| channels[c % channels.len()].clone();
    let value = vec![b'v'; args.value_size];
    let serializable = args.consistency == Consistency::S;
    let mut extra = BTreeMap::new();
    let put = |c: usize| PutOp {
        kv: KvClient::new(chan(c)),
        rng: rng(args, c),
        key_space: args.key_space,
        key_size: args.key_size,
        value: value.clone(),
    };
    let result = match args.workload {
        Workload::Put => {
            run_clients(shared, (0..args.clients).map(put).collect(), period, args.timeout).await?
        }
        Workload::Range => {
            let ops = (0..args.clients)
                .map(|c| RangeOp {
                    kv: KvClient::new(chan(c)),
                    rng: rng(args, c),
                    key_space: args.key_space,
                    key_size: args.key_size,
                    serializable,
                    keys: args.range_keys.max(1),
                })
                .collect();
            run_clients(shared, ops, period, args.timeout).await?
        }
        Workload::Txn => {
            let succeeded = Arc::new(AtomicU64::new(0));
            let ops = (0..args.clients)
                .map(|c| TxnOp {
                    kv: KvClient::new(chan(c)),
                    rng: rng(args, c),
                    key_space: args.key_space,
                    key_size: args.key_size,
                    value: value.clone(),
                    seen: HashMap::new(),
                    succeeded: succeeded.clone(),
                })
                .collect();
            let r = run_clients(shared, ops, period, args.timeout).await?;
            extra.insert("cas_succeeded".into(), succeeded.load(Ordering::Relaxed) as f64);
            r
        }
        Workload::Delete => {
            let (cursor, deleted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let ops = (0..args.clients)
                .map(|c| DeleteOp {
                    kv: KvClient::new(chan(c)),
                    cursor: cursor.clone(),
                    key_space: args.key_space,
                    key_size: args.key_size,
                    deleted: deleted.clone(),
                })
                .collect();
            let r = run_clients(shared, ops, period, args.timeout).await?;
            extra.insert("keys_deleted".into(), deleted.load(Ordering::Relaxed) as f64);
            r
        }
        Workload::Mixed => {
            let reads = Arc::new(AtomicU64::new(0));
            let ops = (0..args.clients)
                .map(|c| MixedOp {
                    put: put(c),
                    read_ratio: args.read_ratio,
                    serializable,
                    reads: reads.clone(),
                })
                .collect();
            let r = run_clients(shared, ops, period, args.timeout).await?;
            extra.insert("reads".into(), reads.load(Ordering::Relaxed) as f64);
            r
        }
        Workload::Lease => {
            let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
            let ops = (0..args.clients)
                .map(|c| LeaseOp {
                    lease: LeaseClient::new(chan(c)),
                    ttl: args.lease_ttl,
                    keepalives: args.keepalives_per_lease,
                    current: None,
                    stream: None,
                    counts: counts.clone(),
                })
                .collect();
            let r = run_clients(shared, ops, period, args.timeout).await?;
            for (i, name) in ["lease_grants", "lease_keepalives", "lease_revokes"].iter().enumerate() {
                extra.insert((*name).into(), counts[i].load(Ordering::Relaxed) as f64);
            }
            // The churn figure: grants and keepalives (not revokes) per second of the run.
            let secs = shared.start.elapsed().as_secs_f64().max(1e-9);
            let churn = (counts[0].load(Ordering::Relaxed) + counts[1].load(Ordering::Relaxed)) as f64;
            extra.insert("grants_keepalives_per_sec".into(), churn / secs);
            r
        }
        Workload::Lock => {
            let mut ops = Vec::with_capacity(args.clients);
            for c in 0..args.clients {
                let grant = LeaseGrantRequest { ttl: args.lease_ttl, id: 0 };
                let lease = LeaseClient::new(chan(c)).lease_grant(grant).await?.into_inner().id;
                let name = format!("bench/lock/{}", c as u64 % args.key_space).into_bytes();
                ops.push(LockOp { lock: LockClient::new(chan(c)), name, lease });
            }
            run_clients(shared, ops, period, args.timeout).await?
        }
        Workload::Watch | Workload::Fill => unreachable!("run separately"),
    };
    Ok((result, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_width_and_ordered() {
        assert_eq!(key(42, 8), b"00000042".to_vec());
        assert_eq!(key(0, 3), b"000".to_vec());
        assert!(key(9, 4) < key(10, 4));
    }
}
