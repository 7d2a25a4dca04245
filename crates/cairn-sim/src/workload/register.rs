//! Register clients: `cairn-jepsen`'s register workload (linearizable read, write,
//! compare-and-set on a few keys), checked by its linearizability checker.

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use rand::Rng;
use serde_json::{json, Value};

use super::{client_rng, now, Client, Plan, WorkloadKind};
use crate::World;

/// Keys the register workload spreads over.
const KEYS: u64 = 3;

pub(crate) async fn client(c: usize, plan: Plan, world: &World) {
    let mut rng = client_rng();
    let mut client = Client::new(world, WorkloadKind::Register, c as u64, c % plan.members, plan.members);
    while now() < plan.duration {
        let key = format!("r{}", rng.random_range(0..KEYS));
        let (a, b) = (rng.random_range(0..5i64), rng.random_range(0..5i64));
        let f = match rng.random_range(0..4) {
            0 | 1 => "read",
            2 => "write",
            _ => "cas",
        };
        let input = match f {
            "read" => Value::Null,
            "write" => json!(a),
            _ => json!([a, b]),
        };
        let k = key.clone().into_bytes();
        client
            .op_refusable(f, &key, input, f == "read", |mut conn| async move {
                let r = match f {
                    "read" => conn.kv.range(RangeRequest { key: k, ..Default::default() }).await.map(|r| {
                        Ok(r.into_inner()
                            .kvs
                            .first()
                            .map(|kv| register_value(&kv.value))
                            .unwrap_or(Value::Null))
                    }),
                    "write" => conn
                        .kv
                        .put(PutRequest { key: k, value: a.to_string().into_bytes(), ..Default::default() })
                        .await
                        .map(|_| Ok(json!(a))),
                    _ => {
                        let txn = TxnRequest {
                            compare: vec![Compare {
                                result: CompareResult::Equal as i32,
                                target: CompareTarget::Value as i32,
                                key: k.clone(),
                                target_union: Some(TargetUnion::Value(a.to_string().into_bytes())),
                                ..Default::default()
                            }],
                            success: vec![RequestOp {
                                request: Some(Op::RequestPut(PutRequest {
                                    key: k,
                                    value: b.to_string().into_bytes(),
                                    ..Default::default()
                                })),
                            }],
                            failure: vec![],
                        };
                        conn.kv.txn(txn).await.map(|r| {
                            // A CAS whose compare failed certainly did nothing.
                            if r.into_inner().succeeded {
                                Ok(json!([a, b]))
                            } else {
                                Err(json!([a, b]))
                            }
                        })
                    }
                };
                (conn, r)
            })
            .await;
    }
}

fn register_value(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes).ok().and_then(|s| s.parse::<i64>().ok()) {
        Some(n) => json!(n),
        None => json!(String::from_utf8_lossy(bytes)),
    }
}
