//! Append clients: `cairn-jepsen`'s Elle list-append workload (transactions of reads and
//! appends over a sliding window of keys, one etcd key per list element), checked by its
//! Elle checker; after every fault healed, every list is read once more.

use std::cell::RefCell;
use std::collections::BTreeSet;

use cairn_jepsen::checker::elle::{mops_json, Mop};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::response_op::Response as Reply;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest, RequestOp, TxnRequest};
use rand::rngs::SmallRng;
use rand::Rng;

use super::{client_rng, now, Client, Conn, Plan, WorkloadKind};
use crate::World;

/// Keys in use at once, and transactions before the window moves on by one key.
const ACTIVE_KEYS: u64 = 4;
const TXNS_PER_SHIFT: u64 = 30;

/// The generator the append clients share (as `cairn_jepsen::workload::append::Append`).
#[derive(Default)]
pub(crate) struct Keys {
    txns: u64,
    next_value: u64,
    used: BTreeSet<u64>,
}

fn key_prefix(k: u64) -> String {
    format!("a/{k:08}/")
}

fn generate(keys: &RefCell<Keys>, rng: &mut SmallRng) -> Vec<Mop> {
    let mut keys = keys.borrow_mut();
    let base = keys.txns / TXNS_PER_SHIFT;
    keys.txns += 1;
    let mut appended = BTreeSet::new();
    let mut mops = Vec::new();
    for _ in 0..rng.random_range(1..=4) {
        let k = base + rng.random_range(0..ACTIVE_KEYS);
        if rng.random_bool(0.5) && appended.insert(k) {
            keys.next_value += 1;
            mops.push(Mop::Append(k, keys.next_value));
        } else {
            mops.push(Mop::Read(k, None));
        }
        keys.used.insert(k);
    }
    mops
}

/// `mops` as one etcd transaction (every range first, then every put), with the reads
/// filled in; a read after the transaction's own append of that key includes it.
async fn run_txn(conn: &mut Conn, mops: &[Mop]) -> Result<Vec<Mop>, tonic::Status> {
    let reads: Vec<u64> =
        mops.iter().filter_map(|m| if let Mop::Read(k, _) = m { Some(*k) } else { None }).collect();
    let mut success: Vec<RequestOp> = reads
        .iter()
        .map(|k| {
            let prefix = key_prefix(*k).into_bytes();
            let mut end = prefix.clone();
            *end.last_mut().expect("a prefix is not empty") += 1;
            RequestOp {
                request: Some(Op::RequestRange(RangeRequest {
                    key: prefix,
                    range_end: end,
                    ..Default::default()
                })),
            }
        })
        .collect();
    for m in mops {
        if let Mop::Append(k, v) = m {
            success.push(RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: format!("{}{v:012}", key_prefix(*k)).into_bytes(),
                    value: v.to_string().into_bytes(),
                    ..Default::default()
                })),
            });
        }
    }
    let reply = conn.kv.txn(TxnRequest { compare: vec![], success, failure: vec![] }).await?.into_inner();
    let mut lists = reply.responses.into_iter().filter_map(|r| match r.response {
        Some(Reply::ResponseRange(range)) => {
            let mut kvs: Vec<(i64, u64)> = range
                .kvs
                .iter()
                .filter_map(|kv| {
                    Some((kv.create_revision, std::str::from_utf8(&kv.value).ok()?.parse().ok()?))
                })
                .collect();
            kvs.sort_unstable();
            Some(kvs.into_iter().map(|(_, v)| v).collect::<Vec<u64>>())
        }
        _ => None,
    });
    let mut own: Vec<(u64, u64)> = Vec::new();
    let mut out = Vec::with_capacity(mops.len());
    for m in mops {
        match m {
            Mop::Append(k, v) => {
                own.push((*k, *v));
                out.push(Mop::Append(*k, *v));
            }
            Mop::Read(k, _) => {
                let Some(mut list) = lists.next() else {
                    return Err(tonic::Status::internal("the txn returned fewer ranges than it had"));
                };
                list.extend(own.iter().filter(|(ok, _)| ok == k).map(|(_, v)| *v));
                out.push(Mop::Read(*k, Some(list)));
            }
        }
    }
    Ok(out)
}

/// One transaction, recorded: a failed read-only one is a `fail`, a failed one that appends
/// an `info`.
async fn txn(client: &mut Client<'_>, mops: Vec<Mop>) {
    let mutating = mops.iter().any(|m| matches!(m, Mop::Append(..)));
    client
        .op("txn", "", mops_json(&mops), !mutating, |mut conn| async move {
            let r = run_txn(&mut conn, &mops).await.map(|out| mops_json(&out));
            (conn, r)
        })
        .await;
}

pub(crate) async fn client(c: usize, plan: Plan, world: &World) {
    let mut rng = client_rng();
    let mut client = Client::new(world, WorkloadKind::Append, 200 + c as u64, c % plan.members, plan.members);
    while now() < plan.duration {
        let mops = generate(&world.append_keys, &mut rng);
        txn(&mut client, mops).await;
    }
    if c != 0 {
        return;
    }
    // The final reads, by one client, eight lists per transaction.
    if let Some(wait) = plan.final_at.checked_sub(now()) {
        tokio::time::sleep(wait).await;
    }
    let keys: Vec<u64> = world.append_keys.borrow().used.iter().copied().collect();
    for chunk in keys.chunks(8) {
        let mops: Vec<Mop> = chunk.iter().map(|k| Mop::Read(*k, None)).collect();
        txn(&mut client, mops).await;
    }
}
