//! List-append workload (Elle): transactions of 1–4 micro-ops, each `append v to list k` or
//! `read list k`, over a small rotating window of keys.
//!
//! A list is stored as one etcd key per element, `jepsen/append/<k>/<v>`, and read as a range
//! over the prefix ordered by create revision. A transaction is one etcd `Txn` with no
//! compares: every range first, then every put (at most one append per key per transaction).
//! A read that follows the transaction's own append of the same key gets the append added on
//! the client side (etcd applies a txn atomically, so that is the txn's view). The checker is
//! [`crate::checker::elle`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use cairn_tests::Cluster;
use etcd_client::{GetOptions, Txn, TxnOp, TxnOpResponse};
use rand::Rng;

use super::{final_workers, Ctx};
use crate::checker::elle::{self, mops_json, Mop};
use crate::checker::CheckResult;
use crate::client::{OpResult, Worker};
use crate::history::Event;

const PREFIX: &str = "jepsen/append/";

pub struct Append {
    /// Keys in use at once.
    pub active_keys: u64,
    /// Transactions before the key window moves on by one key.
    pub txns_per_shift: u64,
    txns: AtomicU64,
    values: AtomicU64,
    used: Mutex<BTreeSet<u64>>,
}

impl Default for Append {
    fn default() -> Self {
        Append {
            active_keys: 5,
            txns_per_shift: 40,
            txns: AtomicU64::new(0),
            values: AtomicU64::new(1),
            used: Mutex::default(),
        }
    }
}

fn key_prefix(k: u64) -> String {
    format!("{PREFIX}{k:08}/")
}

/// Runs `mops` as one etcd transaction and fills in the reads.
async fn run_txn(mut c: etcd_client::Client, mops: Vec<Mop>) -> OpResult {
    let reads: Vec<u64> = mops
        .iter()
        .filter_map(|m| match m {
            Mop::Read(k, _) => Some(*k),
            _ => None,
        })
        .collect();
    let mut ops: Vec<TxnOp> =
        reads.iter().map(|k| TxnOp::get(key_prefix(*k), Some(GetOptions::new().with_prefix()))).collect();
    for m in &mops {
        if let Mop::Append(k, v) = m {
            ops.push(TxnOp::put(format!("{}{v:012}", key_prefix(*k)), v.to_string(), None));
        }
    }
    let resp = c.txn(Txn::new().and_then(ops)).await?;
    let mut lists: Vec<Vec<u64>> = Vec::new();
    for r in resp.op_responses() {
        if let TxnOpResponse::Get(g) = r {
            let mut kvs: Vec<(i64, u64)> = g
                .kvs()
                .iter()
                .filter_map(|kv| {
                    Some((kv.create_revision(), std::str::from_utf8(kv.value()).ok()?.parse().ok()?))
                })
                .collect();
            kvs.sort_unstable();
            lists.push(kvs.into_iter().map(|(_, v)| v).collect());
        }
    }
    if lists.len() != reads.len() {
        return Err(etcd_client::Error::InvalidArgs(format!(
            "txn returned {} range responses for {} reads",
            lists.len(),
            reads.len()
        )));
    }
    let mut lists = lists.into_iter();
    let mut own: Vec<(u64, u64)> = Vec::new();
    let mut out = Vec::with_capacity(mops.len());
    for m in mops {
        match m {
            Mop::Append(k, v) => {
                own.push((k, v));
                out.push(Mop::Append(k, v));
            }
            Mop::Read(k, _) => {
                let mut l = lists.next().unwrap_or_default();
                l.extend(own.iter().filter(|(ok, _)| *ok == k).map(|(_, v)| *v));
                out.push(Mop::Read(k, Some(l)));
            }
        }
    }
    Ok(Ok(mops_json(&out)))
}

impl Append {
    fn generate(&self) -> Vec<Mop> {
        let t = self.txns.fetch_add(1, Ordering::Relaxed);
        let base = t / self.txns_per_shift;
        let mut rng = rand::rng();
        let n = rng.random_range(1..=4);
        let mut appended = BTreeSet::new();
        let mut mops = Vec::with_capacity(n);
        for _ in 0..n {
            let k = base + rng.random_range(0..self.active_keys);
            if rng.random_bool(0.5) && appended.insert(k) {
                mops.push(Mop::Append(k, self.values.fetch_add(1, Ordering::Relaxed)));
            } else {
                mops.push(Mop::Read(k, None));
            }
            self.used.lock().unwrap_or_else(|p| p.into_inner()).insert(k);
        }
        mops
    }

    pub async fn worker(&self, mut w: Worker, ctx: Arc<Ctx>) {
        while ctx.pause().await {
            let mops = self.generate();
            let mutating = mops.iter().any(|m| matches!(m, Mop::Append(..)));
            let input = mops_json(&mops);
            w.op("txn", None, input, mutating, |c| run_txn(c, mops)).await;
        }
    }

    /// Every node reads every key used, in one transaction per 8 keys.
    pub async fn finish(&self, _cluster: &Cluster, ctx: &Arc<Ctx>, first_process: u64) -> Result<()> {
        let keys: Vec<u64> = self.used.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
        let tasks = final_workers(ctx, first_process).into_iter().map(|mut w| {
            let keys = keys.clone();
            async move {
                for chunk in keys.chunks(8) {
                    let mops: Vec<Mop> = chunk.iter().map(|k| Mop::Read(*k, None)).collect();
                    w.op("txn", None, mops_json(&mops), false, |c| run_txn(c, mops)).await;
                }
            }
        });
        futures::future::join_all(tasks).await;
        Ok(())
    }
}

pub fn check(events: &[Event]) -> CheckResult {
    elle::check(events)
}
