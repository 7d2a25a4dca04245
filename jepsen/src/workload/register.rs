//! Register workload: read / write / compare-and-set on independent keys, checked for
//! linearizability key by key.
//!
//! Keys rotate: every `ops_per_key × active_keys` operations a fresh generation of
//! `active_keys` keys takes over, so each key's history stays small enough for the
//! Wing–Gong search (which is exponential in concurrency, not in length, but info ops stay
//! open until the end of their key's history). Values are small integers (0..5) so that
//! CASes often succeed. After the run every key is read once more on every node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use cairn_tests::Cluster;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use rand::Rng;
use serde_json::{json, Value};

use super::{final_workers, Ctx};
use crate::checker::linear::{self, CasRegister, LinOp, RegOp, Verdict};
use crate::checker::{CheckResult, Validity};
use crate::client::Worker;
use crate::history::{pair, Event, Kind, Op};

const PREFIX: &str = "jepsen/register/";

pub struct Register {
    pub active_keys: u64,
    pub ops_per_key: u64,
    counter: AtomicU64,
    used: Mutex<BTreeSet<String>>,
}

impl Default for Register {
    fn default() -> Self {
        Register { active_keys: 3, ops_per_key: 100, counter: AtomicU64::new(0), used: Mutex::default() }
    }
}

fn parse_value(kv_value: &[u8]) -> Value {
    match std::str::from_utf8(kv_value).ok().and_then(|s| s.parse::<i64>().ok()) {
        Some(v) => json!(v),
        None => json!(String::from_utf8_lossy(kv_value)),
    }
}

async fn read(key: String, mut c: etcd_client::Client) -> crate::client::OpResult {
    let r = c.get(key, None).await?;
    Ok(Ok(r.kvs().first().map(|kv| parse_value(kv.value())).unwrap_or(Value::Null)))
}

impl Register {
    fn next_key(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let generation = n / (self.ops_per_key * self.active_keys);
        let k = generation * self.active_keys + rand::rng().random_range(0..self.active_keys);
        let key = format!("{PREFIX}{k}");
        self.used.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone());
        key
    }

    pub async fn worker(&self, mut w: Worker, ctx: Arc<Ctx>) {
        while ctx.pause().await {
            let key = self.next_key();
            let (choice, a, b) = {
                let mut rng = rand::rng();
                (rng.random_range(0..4), rng.random_range(0..5i64), rng.random_range(0..5i64))
            };
            match choice {
                0 | 1 => {
                    let k = key.clone();
                    w.op("read", Some(key), Value::Null, false, |c| read(k, c)).await;
                }
                2 => {
                    let k = key.clone();
                    w.op("write", Some(key), json!(a), true, |mut c| async move {
                        c.put(k, a.to_string(), None).await?;
                        Ok(Ok(json!(a)))
                    })
                    .await;
                }
                _ => {
                    let k = key.clone();
                    w.op("cas", Some(key), json!([a, b]), true, |mut c| async move {
                        let txn = Txn::new()
                            .when(vec![Compare::value(k.clone(), CompareOp::Equal, a.to_string())])
                            .and_then(vec![TxnOp::put(k, b.to_string(), None)]);
                        let r = c.txn(txn).await?;
                        Ok(if r.succeeded() { Ok(json!([a, b])) } else { Err(json!([a, b])) })
                    })
                    .await;
                }
            }
        }
    }

    pub async fn finish(&self, _cluster: &Cluster, ctx: &Arc<Ctx>, first_process: u64) -> Result<()> {
        let keys: Vec<String> = self.used.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        let workers = final_workers(ctx, first_process);
        let tasks = workers.into_iter().map(|mut w| {
            let keys = keys.clone();
            async move {
                for key in keys {
                    let k = key.clone();
                    w.op("read", Some(key), Value::Null, false, |c| read(k, c)).await;
                }
            }
        });
        futures::future::join_all(tasks).await;
        Ok(())
    }
}

/// The model operation for one history op, or `None` when it carries no information
/// (failed ops, reads without a result).
fn to_reg_op(op: &Op) -> Option<RegOp> {
    let int = |v: &Value| v.as_i64();
    match (op.f.as_str(), op.kind) {
        ("read", Kind::Ok) => Some(RegOp::Read(int(&op.output))),
        ("write", Kind::Ok | Kind::Info) => int(&op.input).map(RegOp::Write),
        ("cas", Kind::Ok) => Some(RegOp::Cas(int(&op.input[0])?, int(&op.input[1])?)),
        ("cas", Kind::Info) => Some(RegOp::CasMaybe(int(&op.input[0])?, int(&op.input[1])?)),
        _ => None,
    }
}

/// Linearizability of every key's history (a CAS register starting absent), within `budget`.
pub fn check(events: &[Event], budget: Duration) -> CheckResult {
    let ops = pair(events);
    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Some(k) = &op.key {
            by_key.entry(k.clone()).or_default().push(i);
        }
    }
    let deadline = Instant::now() + budget;
    let (mut valid_keys, mut unknown_keys, mut bad) = (0usize, Vec::new(), Vec::new());
    let mut checked_ops = 0usize;
    for (key, idxs) in &by_key {
        let lin: Vec<LinOp<RegOp>> = idxs
            .iter()
            .filter_map(|&i| {
                let op = &ops[i];
                to_reg_op(op).map(|r| LinOp { call: op.start, ret: op.end, op: r, id: i })
            })
            .collect();
        checked_ops += lin.len();
        if Instant::now() >= deadline {
            unknown_keys.push(key.clone());
            continue;
        }
        match linear::check(&CasRegister, &lin, deadline) {
            Verdict::Linearizable => valid_keys += 1,
            Verdict::Unknown => unknown_keys.push(key.clone()),
            Verdict::NotLinearizable { prefix, stuck } => {
                let s = &ops[stuck];
                let s_end = s.end.unwrap_or(u64::MAX);
                let concurrent: Vec<Value> = idxs
                    .iter()
                    .map(|&i| &ops[i])
                    .filter(|o| to_reg_op(o).is_some())
                    .filter(|o| o.start <= s_end && o.end.is_none_or(|e| e >= s.start))
                    .map(|o| o.to_json())
                    .take(30)
                    .collect();
                let tail: Vec<Value> =
                    prefix.iter().rev().take(10).rev().map(|&i| ops[i].to_json()).collect();
                bad.push(json!({
                    "key": key,
                    "ops": lin.len(),
                    "unplaceable_op": s.to_json(),
                    "concurrent_ops": concurrent,
                    "longest_linearizable_prefix_len": prefix.len(),
                    "prefix_tail": tail,
                }));
            }
        }
    }
    let valid = if !bad.is_empty() {
        Validity::Invalid
    } else if !unknown_keys.is_empty() || by_key.is_empty() {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    let n_bad = bad.len();
    bad.truncate(10);
    CheckResult::new(
        "linearizable-register",
        valid,
        json!({
            "model": "cas-register (absent initially)",
            "algorithm": "Wing-Gong/Lowe (WGL) with memoization, per key",
            "keys": by_key.len(),
            "checked_ops": checked_ops,
            "linearizable_keys": valid_keys,
            "unknown_keys": unknown_keys,
            "non_linearizable_keys": n_bad,
            "anomalies": bad,
            "budget_s": budget.as_secs_f64(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Recorder;

    #[test]
    fn checker_reads_histories_and_flags_a_stale_read() {
        let r = Recorder::new(Instant::now());
        let k = || Some("jepsen/register/0".to_string());
        let w = r.invoke(0, "write", k(), json!(1), None);
        r.complete(&w, Kind::Ok, json!(1), None);
        let w = r.invoke(0, "write", k(), json!(2), None);
        r.complete(&w, Kind::Ok, json!(2), None);
        let rd = r.invoke(1, "read", k(), Value::Null, None);
        r.complete(&rd, Kind::Ok, json!(1), None);
        let res = check(&r.events(), Duration::from_secs(5));
        assert_eq!(res.valid, Validity::Invalid, "{}", res.details);
        assert_eq!(res.details["anomalies"][0]["unplaceable_op"]["output"], json!(1));

        // The same with the read concurrent to the second write is fine; failed CAS ignored.
        let r = Recorder::new(Instant::now());
        let w = r.invoke(0, "write", k(), json!(1), None);
        r.complete(&w, Kind::Ok, json!(1), None);
        let w = r.invoke(0, "write", k(), json!(2), None);
        let rd = r.invoke(1, "read", k(), Value::Null, None);
        r.complete(&rd, Kind::Ok, json!(1), None);
        r.complete(&w, Kind::Ok, json!(2), None);
        let c = r.invoke(2, "cas", k(), json!([4, 0]), None);
        r.complete(&c, Kind::Fail, json!([4, 0]), None);
        let res = check(&r.events(), Duration::from_secs(5));
        assert_eq!(res.valid, Validity::Valid, "{}", res.details);
    }

    #[test]
    fn empty_history_is_unknown_not_valid() {
        assert_eq!(check(&[], Duration::from_secs(1)).valid, Validity::Unknown);
    }
}
