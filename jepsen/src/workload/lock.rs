//! Lock workload: mutual exclusion through the etcd Lock service, checked with fencing tokens.
//!
//! Each worker loops: grant a lease (5 s TTL), `acquire` one of 3 locks (`Lock` with the lease,
//! then the lock key's create revision is the fencing token), two fenced `write`s to the
//! lock's resource key — a `Txn` that puts only if the lock key still exists with that create
//! revision, i.e. only while this holder still owns the lock — then `release` (`Unlock`) and
//! revoke the lease.
//!
//! Checked per lock: ordered by the revision each fenced write committed at, fencing tokens
//! never decrease (a holder never writes after a later holder acquired: that would be two
//! owners at once as the resource sees it); no two acquisitions return the same token; every
//! fenced write carries a token some acquisition returned. Overlapping holds in real time are
//! reported as details only: with leases they are legal (a holder whose lease expired without
//! knowing it), and the fence is what keeps the resource safe.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Result;
use cairn_tests::Cluster;
use etcd_client::{Compare, CompareOp, LockOptions, Txn, TxnOp};
use rand::Rng;
use serde_json::{json, Value};

use super::Ctx;
use crate::checker::{CheckResult, Validity};
use crate::client::Worker;
use crate::history::{pair, Event, Kind};

const LOCKS: u64 = 3;

fn lock_name(l: u64) -> String {
    format!("jepsen/lock/{l}")
}

fn resource(l: u64) -> String {
    format!("jepsen/lock-resource/{l}")
}

#[derive(Default)]
pub struct LockWorkload;

impl LockWorkload {
    pub async fn worker(&self, mut w: Worker, ctx: Arc<Ctx>) {
        while ctx.pause().await {
            let l = rand::rng().random_range(0..LOCKS);
            let key = Some(lock_name(l));
            // Lease grant and revoke are recorded too (f = grant / revoke); no checker uses them.
            let (kind, lease) = w
                .op("grant", None, json!(5), true, |mut c| async move {
                    let r = c.lease_grant(5, None).await?;
                    Ok(Ok(json!(r.id())))
                })
                .await;
            let Some(lease) = lease.as_i64().filter(|_| kind == Kind::Ok) else { continue };
            let (kind, got) = w
                .op("acquire", key.clone(), json!(l), true, |mut c| async move {
                    let r = c.lock(lock_name(l), Some(LockOptions::new().with_lease(lease))).await?;
                    let k = r.key().to_vec();
                    let g = c.get(k.clone(), None).await?;
                    // No key: its lease ran out since the lock was granted, and the lock with
                    // it. No token then: fencing on create revision 0 would let any write
                    // through while the key is absent.
                    let token = g.kvs().first().map(|kv| kv.create_revision());
                    Ok(Ok(json!({"key": String::from_utf8_lossy(&k), "token": token})))
                })
                .await;
            if kind == Kind::Ok {
                let lock_key = got["key"].as_str().unwrap_or_default().to_string();
                let token = got["token"].as_i64();
                for n in 0..2 {
                    let Some(token) = token else { break };
                    let lk = lock_key.clone();
                    let (kind, _) = w
                        .op("write", key.clone(), json!([token, n]), true, |mut c| async move {
                            let txn = Txn::new()
                                .when(vec![Compare::create_revision(lk, CompareOp::Equal, token)])
                                .and_then(vec![TxnOp::put(resource(l), format!("{token}:{n}"), None)]);
                            let r = c.txn(txn).await?;
                            let rev = r.header().map(|h| h.revision()).unwrap_or(0);
                            Ok(if r.succeeded() {
                                Ok(json!([token, n, rev]))
                            } else {
                                Err(json!([token, n]))
                            })
                        })
                        .await;
                    if kind != Kind::Ok {
                        break;
                    }
                }
                let lk = lock_key.clone();
                w.op("release", key.clone(), json!(token), true, |mut c| async move {
                    c.unlock(lk).await?;
                    Ok(Ok(json!(token)))
                })
                .await;
            }
            let _ = w
                .op("revoke", None, json!(lease), true, |mut c| async move {
                    c.lease_revoke(lease).await?;
                    Ok(Ok(json!(lease)))
                })
                .await;
        }
    }

    pub async fn finish(&self, _cluster: &Cluster, _ctx: &Arc<Ctx>, _first_process: u64) -> Result<()> {
        Ok(())
    }
}

pub fn check(events: &[Event]) -> CheckResult {
    let ops = pair(events);
    let mut problems: Vec<Value> = Vec::new();
    // Per lock: tokens of acquisitions (ok and info: an info acquire may have succeeded, but
    // only an ok one tells us its token).
    let mut tokens: BTreeMap<String, HashMap<i64, usize>> = BTreeMap::new();
    let mut acquires = 0;
    for (i, o) in ops.iter().enumerate() {
        if o.f == "acquire" && o.kind == Kind::Ok {
            acquires += 1;
            let lock = o.key.clone().unwrap_or_default();
            // A lock lost before its key was read has no token.
            let Some(token) = o.output["token"].as_i64() else { continue };
            if let Some(prev) = tokens.entry(lock.clone()).or_default().insert(token, i) {
                problems.push(json!({"anomaly": "duplicate-token", "lock": lock, "token": token,
                                     "ops": [ops[prev].to_json(), o.to_json()]}));
            }
        }
    }
    // Fenced writes that committed, in commit (revision) order.
    let mut writes: BTreeMap<String, Vec<(i64, i64, usize)>> = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        if o.f == "write" && o.kind == Kind::Ok {
            let (Some(token), Some(rev)) = (o.output[0].as_i64(), o.output[2].as_i64()) else { continue };
            let lock = o.key.clone().unwrap_or_default();
            if !tokens.get(&lock).is_some_and(|t| t.contains_key(&token)) {
                problems.push(json!({"anomaly": "unknown-token", "op": o.to_json()}));
            }
            writes.entry(lock).or_default().push((rev, token, i));
        }
    }
    let mut fenced = 0;
    for (lock, ws) in writes.iter_mut() {
        ws.sort_unstable();
        fenced += ws.len();
        let mut max: Option<(i64, usize)> = None;
        for &(rev, token, i) in ws.iter() {
            if let Some((t, j)) = max {
                if token < t {
                    problems.push(json!({"anomaly": "stale-holder-write", "lock": lock, "revision": rev,
                                         "write": ops[i].to_json(), "after_write_of_later_holder": ops[j].to_json()}));
                }
            }
            if max.is_none_or(|(t, _)| token >= t) {
                max = Some((token, i));
            }
        }
    }
    // Real-time overlaps of holds (acquire ok .. release invoke), for information.
    let mut overlaps = 0;
    let mut holds: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let mut open: HashMap<u64, (String, u64)> = HashMap::new();
    for o in &ops {
        match (o.f.as_str(), o.kind) {
            ("acquire", Kind::Ok) => {
                open.insert(o.process, (o.key.clone().unwrap_or_default(), o.end.unwrap_or(o.start)));
            }
            ("release", _) => {
                if let Some((lock, from)) = open.remove(&o.process) {
                    holds.entry(lock).or_default().push((from, o.start));
                }
            }
            _ => {}
        }
    }
    for hs in holds.values_mut() {
        hs.sort_unstable();
        for w in hs.windows(2) {
            if w[1].0 < w[0].1 {
                overlaps += 1;
            }
        }
    }
    let valid = if !problems.is_empty() {
        Validity::Invalid
    } else if fenced == 0 {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    problems.truncate(20);
    CheckResult::new(
        "lock-fencing",
        valid,
        json!({
            "locks": tokens.len(),
            "acquisitions": acquires,
            "fenced_writes": fenced,
            "fenced_writes_refused": ops.iter().filter(|o| o.f == "write" && o.kind == Kind::Fail).count(),
            "realtime_overlapping_holds": overlaps,
            "anomalies": problems,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Recorder;

    /// (process, f, input, output) completed ok, in order.
    fn hist(ops: &[(u64, &str, Value, Value)]) -> Vec<Event> {
        let r = Recorder::new(std::time::Instant::now());
        for (p, f, input, output) in ops {
            let inv = r.invoke(*p, f, Some("jepsen/lock/0".into()), input.clone(), None);
            r.complete(&inv, Kind::Ok, output.clone(), None);
        }
        r.events()
    }

    #[test]
    fn fenced_writes_in_token_order_are_valid_and_a_stale_holder_is_not() {
        let good = hist(&[
            (1, "acquire", json!(0), json!({"key": "a", "token": 10})),
            (1, "write", json!([10, 0]), json!([10, 0, 11])),
            (1, "release", json!(10), json!(10)),
            (2, "acquire", json!(0), json!({"key": "b", "token": 12})),
            (2, "write", json!([12, 0]), json!([12, 0, 14])),
        ]);
        assert_eq!(check(&good).valid, Validity::Valid, "{}", check(&good).details);
        // Holder 1 writes (revision 15) after holder 2 (token 12) wrote at 14.
        let bad = hist(&[
            (1, "acquire", json!(0), json!({"key": "a", "token": 10})),
            (2, "acquire", json!(0), json!({"key": "b", "token": 12})),
            (2, "write", json!([12, 0]), json!([12, 0, 14])),
            (1, "write", json!([10, 0]), json!([10, 0, 15])),
        ]);
        let res = check(&bad);
        assert_eq!(res.valid, Validity::Invalid);
        assert_eq!(res.details["anomalies"][0]["anomaly"], "stale-holder-write");
        let dup = hist(&[
            (1, "acquire", json!(0), json!({"key": "a", "token": 10})),
            (2, "acquire", json!(0), json!({"key": "b", "token": 10})),
            (2, "write", json!([10, 0]), json!([10, 0, 14])),
        ]);
        assert_eq!(check(&dup).valid, Validity::Invalid);
        // Locks lost before their keys were read carry no token: two are no duplicate, and a
        // write fenced on create revision 0 (an absent key) is a forged token.
        let lost = hist(&[
            (1, "acquire", json!(0), json!({"key": "a", "token": null})),
            (2, "acquire", json!(0), json!({"key": "b", "token": null})),
            (1, "write", json!([0, 0]), json!([0, 0, 14])),
        ]);
        let res = check(&lost);
        assert_eq!(res.valid, Validity::Invalid);
        let anomalies = res.details["anomalies"].as_array().unwrap().clone();
        assert!(anomalies.iter().all(|a| a["anomaly"] != "duplicate-token"), "{anomalies:?}");
        let forged = hist(&[(2, "write", json!([99, 0]), json!([99, 0, 14]))]);
        assert_eq!(check(&forged).valid, Validity::Invalid);
        assert_eq!(check(&[]).valid, Validity::Unknown);
    }
}
