//! Lock clients: `cairn-jepsen`'s lock workload (grant a lease, `Lock` one of three locks with
//! it, two fenced writes to the lock's resource — a txn that puts only while the lock key
//! still has the token's create revision — `Unlock`, revoke), checked by its fencing-token
//! checker: per lock, in commit order, tokens never go back; no token is handed out twice.

use cairn_jepsen::history::Kind;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{
    Compare, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use cairn_proto::v3lockpb::{LockRequest, UnlockRequest};
use rand::Rng;
use serde_json::{json, Value};

use super::{client_rng, now, Client, Plan, WorkloadKind};
use crate::World;

const LOCKS: u64 = 3;
/// The TTL of each holder's lease: a holder that vanished blocks its lock this long.
const TTL: i64 = 3;

fn lock_name(l: u64) -> String {
    format!("jepsen/lock/{l}")
}

fn resource(l: u64) -> String {
    format!("jepsen/lock-resource/{l}")
}

pub(crate) async fn client(c: usize, plan: Plan, world: &World) {
    let mut rng = client_rng();
    let mut client = Client::new(world, WorkloadKind::Lock, 300 + c as u64, c % plan.members, plan.members);
    while now() < plan.duration {
        let l = rng.random_range(0..LOCKS);
        let name = lock_name(l);
        let granted = client
            .op("grant", "", json!(TTL), false, |mut conn| async move {
                let r = conn.lease.lease_grant(LeaseGrantRequest { ttl: TTL, id: 0 }).await;
                (conn, r.map(|r| json!(r.into_inner().id)))
            })
            .await;
        let Some(lease) = granted.and_then(|g| g.as_i64()) else { continue };
        let wanted = name.clone().into_bytes();
        let acquired = client
            .op("acquire", &name, json!(l), false, |mut conn| async move {
                let r = async {
                    let key = conn.lock.lock(LockRequest { name: wanted, lease }).await?.into_inner().key;
                    let got = conn.kv.range(RangeRequest { key: key.clone(), ..Default::default() }).await?;
                    // No key: its lease ran out since the lock was granted, and with it the
                    // lock (no token: fencing on create revision 0 would pass for any write
                    // while the key is absent).
                    let token = got.into_inner().kvs.first().map(|kv| kv.create_revision);
                    Ok(json!({ "key": String::from_utf8_lossy(&key), "token": token }))
                }
                .await;
                (conn, r)
            })
            .await;
        if let Some(got) = acquired {
            let lock_key = got["key"].as_str().unwrap_or_default().to_string();
            let token = got["token"].as_i64();
            for n in 0..2 {
                let Some(token) = token else { break };
                let (lk, name) = (lock_key.clone(), lock_name(l));
                let (kind, _) = client
                    .op_refusable("write", &name, json!([token, n]), false, |mut conn| async move {
                        let txn = TxnRequest {
                            compare: vec![Compare {
                                result: CompareResult::Equal as i32,
                                target: CompareTarget::Create as i32,
                                key: lk.into_bytes(),
                                target_union: Some(TargetUnion::CreateRevision(token)),
                                ..Default::default()
                            }],
                            success: vec![RequestOp {
                                request: Some(Op::RequestPut(PutRequest {
                                    key: resource(l).into_bytes(),
                                    value: format!("{token}:{n}").into_bytes(),
                                    ..Default::default()
                                })),
                            }],
                            failure: vec![],
                        };
                        let r = conn.kv.txn(txn).await.map(|r| {
                            let r = r.into_inner();
                            let rev = r.header.map_or(0, |h| h.revision);
                            if r.succeeded {
                                Ok(json!([token, n, rev]))
                            } else {
                                Err(json!([token, n]))
                            }
                        });
                        (conn, r)
                    })
                    .await;
                if kind != Kind::Ok {
                    break;
                }
            }
            client
                .op("release", &lock_name(l), json!(token), false, |mut conn| async move {
                    let r = conn.lock.unlock(UnlockRequest { key: lock_key.into_bytes() }).await;
                    (conn, r.map(|_| json!(token)))
                })
                .await;
        }
        client
            .op("revoke", "", json!(lease), false, |mut conn| async move {
                let r = conn.lease.lease_revoke(LeaseRevokeRequest { id: lease }).await;
                (conn, r.map(|_| Value::from(lease)))
            })
            .await;
    }
}
