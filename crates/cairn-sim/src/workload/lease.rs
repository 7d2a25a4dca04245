//! Lease clients: grant a lease, put a key on it, keep it alive for a while with reads in
//! between, then revoke it or abandon it and watch the key go. Checked by `cairn-jepsen`'s
//! lease checker (no key vanishes while its lease is promised, none outlives it by more
//! than the bound); after every fault healed and every lease had time to expire, each key
//! is read once more.

use std::time::Duration;

use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
};
use rand::Rng;
use serde_json::json;

use super::{client_rng, now, Client, Plan, WorkloadKind};
use crate::World;

/// The TTL every lease asks for (the members' minimum: 1.5 election timeouts).
pub(crate) const TTL: i64 = 2;

/// The checker's bounds: the expiry tick (500 ms) and a revoke's commit after a promise
/// ran out; an election and the new leader's restarted timers (TTL + election timeout)
/// after a fault healed; a lease may expire early by as much as a member's clock jumped.
pub(crate) fn bound(
    faults: Vec<(u64, u64)>,
    clock_jumps: Vec<(u64, u64)>,
) -> cairn_jepsen::checker::lease::Bound {
    cairn_jepsen::checker::lease::Bound {
        after_expiry: Duration::from_secs(2),
        after_fault: Duration::from_secs(8),
        faults,
        clock_jumps,
    }
}

impl Client<'_> {
    async fn read(&mut self, key: &str, lease: i64) -> Option<bool> {
        let k = key.as_bytes().to_vec();
        let value = self
            .op("read", key, json!({ "lease": lease }), true, |mut conn| async move {
                let r = conn.kv.range(RangeRequest { key: k, ..Default::default() }).await;
                let r = r.map(|r| {
                    let kv = r.into_inner().kvs.into_iter().next();
                    json!({ "present": kv.is_some(), "lease_of_key": kv.map(|kv| kv.lease) })
                });
                (conn, r)
            })
            .await?;
        value["present"].as_bool()
    }

    /// One keepalive on a fresh stream; the TTL the leader answered (0: no such lease).
    async fn keepalive(&mut self, key: &str, lease: i64) -> Option<i64> {
        let value = self
            .op("keepalive", key, json!({ "lease": lease }), false, |mut conn| async move {
                let requests = futures::stream::iter([LeaseKeepAliveRequest { id: lease }]);
                let r = match conn.lease.lease_keep_alive(requests).await {
                    Ok(stream) => match stream.into_inner().message().await {
                        Ok(Some(r)) => Ok(json!({ "lease": lease, "ttl": r.ttl })),
                        Ok(None) => Err(tonic::Status::unavailable("the keepalive stream ended")),
                        Err(status) => Err(status),
                    },
                    Err(status) => Err(status),
                };
                (conn, r)
            })
            .await?;
        value["ttl"].as_i64()
    }
}

pub(crate) async fn client(c: usize, plan: Plan, world: &World) {
    let mut rng = client_rng();
    let mut client = Client::new(world, WorkloadKind::Lease, 100 + c as u64, c % plan.members, plan.members);
    let mut keys: Vec<(String, i64)> = Vec::new();
    let mut n = 0;
    while now() < plan.duration {
        n += 1;
        let key = format!("l{}-{n}", c + 1);
        let granted = client
            .op("grant", &key, json!({ "ttl": TTL }), false, |mut conn| async move {
                let r = conn.lease.lease_grant(LeaseGrantRequest { ttl: TTL, id: 0 }).await;
                let r = r.map(|r| {
                    let r = r.into_inner();
                    json!({ "lease": r.id, "ttl": r.ttl })
                });
                (conn, r)
            })
            .await;
        let Some(lease) = granted.and_then(|g| g["lease"].as_i64()) else { continue };
        let k = key.as_bytes().to_vec();
        let put = client
            .op("put", &key, json!({ "lease": lease }), false, |mut conn| async move {
                let r = conn
                    .kv
                    .put(PutRequest { key: k, value: b"x".to_vec(), lease, ..Default::default() })
                    .await;
                (conn, r.map(|_| json!({ "lease": lease })))
            })
            .await;
        keys.push((key.clone(), lease));
        if put.is_none() {
            continue;
        }
        // Keep it alive for a while (often longer than its TTL), reading the key.
        for _ in 0..rng.random_range(0..10) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..900))).await;
            if now() >= plan.duration {
                break;
            }
            if client.keepalive(&key, lease).await == Some(0) {
                break;
            }
            if rng.random_bool(0.5) {
                client.read(&key, lease).await;
            }
        }
        if rng.random_bool(0.3) {
            client
                .op("revoke", &key, json!({ "lease": lease }), false, |mut conn| async move {
                    let r = conn.lease.lease_revoke(LeaseRevokeRequest { id: lease }).await;
                    (conn, r.map(|_| json!({ "lease": lease })))
                })
                .await;
        }
        // Watch it go (or not, if abandoned: it has up to its TTL left).
        for _ in 0..rng.random_range(0..3) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..2500))).await;
            client.read(&key, lease).await;
        }
    }
    // Every fault healed and every lease expired by now: each key must be gone.
    if let Some(wait) = plan.final_at.checked_sub(now()) {
        tokio::time::sleep(wait).await;
    }
    for (key, lease) in keys {
        for _ in 0..5 {
            if client.read(&key, lease).await.is_some() {
                break;
            }
        }
    }
}
