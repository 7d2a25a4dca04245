//! Register clients: `cairn-jepsen`'s register workload (linearizable read, write,
//! compare-and-set on a few keys), checked by its linearizability checker.

use cairn_jepsen::history::Kind;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use rand::Rng;
use serde_json::{json, Value};

use super::{client_rng, now, status_text, Conn, Plan, WorkloadKind, OP_TIMEOUT};
use crate::World;

/// Keys the register workload spreads over.
const KEYS: u64 = 3;

pub(crate) async fn client(c: usize, plan: Plan, world: &World) {
    let history = world.history(WorkloadKind::Register);
    let mut rng = client_rng();
    let mut process = c as u64;
    let mut conn = Conn::new(c % plan.members, plan.members);
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
        let node = conn.node;
        history.record(Kind::Invoke, process, f, &key, input.clone(), node, None);
        let kv = &mut conn.kv;
        let call = async {
            match f {
                "read" => {
                    let r = kv
                        .range(RangeRequest { key: key.clone().into_bytes(), ..Default::default() })
                        .await?;
                    let value =
                        r.into_inner().kvs.first().map(|kv| register_value(&kv.value)).unwrap_or(Value::Null);
                    Ok::<_, tonic::Status>(Ok(value))
                }
                "write" => {
                    kv.put(PutRequest {
                        key: key.clone().into_bytes(),
                        value: a.to_string().into_bytes(),
                        ..Default::default()
                    })
                    .await?;
                    Ok(Ok(json!(a)))
                }
                _ => {
                    let txn = TxnRequest {
                        compare: vec![Compare {
                            result: CompareResult::Equal as i32,
                            target: CompareTarget::Value as i32,
                            key: key.clone().into_bytes(),
                            target_union: Some(TargetUnion::Value(a.to_string().into_bytes())),
                            ..Default::default()
                        }],
                        success: vec![RequestOp {
                            request: Some(Op::RequestPut(PutRequest {
                                key: key.clone().into_bytes(),
                                value: b.to_string().into_bytes(),
                                ..Default::default()
                            })),
                        }],
                        failure: vec![],
                    };
                    let r = kv.txn(txn).await?.into_inner();
                    Ok(if r.succeeded { Ok(json!([a, b])) } else { Err(json!([a, b])) })
                }
            }
        };
        match tokio::time::timeout(OP_TIMEOUT, call).await {
            Ok(Ok(Ok(value))) => history.record(Kind::Ok, process, f, &key, value, node, None),
            Ok(Ok(Err(value))) => history.record(Kind::Fail, process, f, &key, value, node, None),
            outcome => {
                let error = match outcome {
                    Ok(Err(status)) => status_text(&status),
                    _ => "timed out".to_string(),
                };
                if f == "read" {
                    // A read that failed changed nothing.
                    history.record(Kind::Fail, process, f, &key, Value::Null, node, Some(error));
                } else {
                    // It may or may not have happened: this process never issues another.
                    history.record(Kind::Info, process, f, &key, input, node, Some(error));
                    process += 1000;
                }
                conn.next_member();
            }
        }
    }
}

fn register_value(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes).ok().and_then(|s| s.parse::<i64>().ok()) {
        Some(n) => json!(n),
        None => json!(String::from_utf8_lossy(bytes)),
    }
}
