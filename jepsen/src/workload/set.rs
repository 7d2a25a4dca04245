//! Set workload: every add puts a distinct key `jepsen/set/<n>`; after the run every node
//! reads the whole prefix. Checked: no acknowledged add is missing from a final read (lost),
//! nothing appears that was never added (unexpected); indeterminate adds may go either way.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use cairn_tests::Cluster;
use etcd_client::GetOptions;
use serde_json::{json, Value};

use super::{final_workers, Ctx};
use crate::checker::{CheckResult, Validity};
use crate::client::Worker;
use crate::history::{pair, Event, Kind};

const PREFIX: &str = "jepsen/set/";

#[derive(Default)]
pub struct SetWorkload {
    counter: AtomicU64,
}

impl SetWorkload {
    pub async fn worker(&self, mut w: Worker, ctx: Arc<Ctx>) {
        while ctx.pause().await {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            w.op("add", None, json!(n), true, |mut c| async move {
                c.put(format!("{PREFIX}{n:012}"), n.to_string(), None).await?;
                Ok(Ok(json!(n)))
            })
            .await;
        }
    }

    pub async fn finish(&self, _cluster: &Cluster, ctx: &Arc<Ctx>, first_process: u64) -> Result<()> {
        let tasks = final_workers(ctx, first_process).into_iter().map(|mut w| async move {
            w.op("read", None, Value::Null, false, |mut c| async move {
                let r = c.get(PREFIX, Some(GetOptions::new().with_prefix())).await?;
                let mut vals: Vec<u64> = r
                    .kvs()
                    .iter()
                    .filter_map(|kv| std::str::from_utf8(kv.value()).ok()?.parse().ok())
                    .collect();
                vals.sort_unstable();
                Ok(Ok(json!(vals)))
            })
            .await;
        });
        futures::future::join_all(tasks).await;
        Ok(())
    }
}

/// Compact rendering of a set of integers: `[[lo, hi], ...]` ranges.
fn ranges(s: &BTreeSet<u64>) -> Value {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &v in s {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == v => *hi = v,
            _ => out.push((v, v)),
        }
    }
    json!(out
        .into_iter()
        .take(50)
        .map(|(a, b)| if a == b { json!(a) } else { json!([a, b]) })
        .collect::<Vec<_>>())
}

pub fn check(events: &[Event]) -> CheckResult {
    let ops = pair(events);
    let (mut ok, mut info, mut attempted) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut reads: Vec<(usize, BTreeSet<u64>)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match (op.f.as_str(), op.kind) {
            ("add", k) => {
                let Some(v) = op.input.as_u64() else { continue };
                attempted.insert(v);
                match k {
                    Kind::Ok => {
                        ok.insert(v);
                    }
                    Kind::Info => {
                        info.insert(v);
                    }
                    _ => {}
                }
            }
            ("read", Kind::Ok) => {
                let vals = op.output.as_array().map(|a| a.iter().filter_map(|v| v.as_u64()).collect());
                reads.push((i, vals.unwrap_or_default()));
            }
            _ => {}
        }
    }
    // A failed add is one that certainly did not happen: seeing it is as wrong as seeing a
    // value never attempted.
    let possible: BTreeSet<u64> = ok.union(&info).copied().collect();
    let mut problems = Vec::new();
    for (i, read) in &reads {
        let lost: BTreeSet<u64> = ok.difference(read).copied().collect();
        let unexpected: BTreeSet<u64> = read.difference(&possible).copied().collect();
        if !lost.is_empty() || !unexpected.is_empty() {
            problems.push(json!({
                "read": ops[*i].to_json_without_output(),
                "lost_count": lost.len(),
                "lost": ranges(&lost),
                "unexpected_count": unexpected.len(),
                "unexpected": ranges(&unexpected),
            }));
        }
    }
    let recovered = reads.first().map(|(_, r)| info.intersection(r).count()).unwrap_or(0);
    let valid = if !problems.is_empty() {
        Validity::Invalid
    } else if reads.is_empty() || attempted.is_empty() {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    CheckResult::new(
        "set",
        valid,
        json!({
            "attempted": attempted.len(),
            "acknowledged": ok.len(),
            "indeterminate": info.len(),
            "indeterminate_present": recovered,
            "final_reads": reads.len(),
            "anomalies": problems,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Recorder;
    use std::time::Instant;

    fn hist(adds: &[(u64, Kind)], final_read: &[u64]) -> Vec<Event> {
        let r = Recorder::new(Instant::now());
        for (p, (v, k)) in adds.iter().enumerate() {
            let inv = r.invoke(p as u64, "add", None, json!(v), None);
            r.complete(&inv, *k, json!(v), None);
        }
        let inv = r.invoke(100, "read", None, Value::Null, None);
        r.complete(&inv, Kind::Ok, json!(final_read), None);
        r.events()
    }

    #[test]
    fn lost_and_unexpected_adds_are_invalid() {
        let ok = hist(&[(0, Kind::Ok), (1, Kind::Info), (2, Kind::Fail)], &[0]);
        assert_eq!(check(&ok).valid, Validity::Valid);
        let ok = hist(&[(0, Kind::Ok), (1, Kind::Info)], &[0, 1]);
        assert_eq!(check(&ok).valid, Validity::Valid);
        let failed_but_present = hist(&[(0, Kind::Ok), (1, Kind::Fail)], &[0, 1]);
        assert_eq!(check(&failed_but_present).valid, Validity::Invalid);
        let lost = hist(&[(0, Kind::Ok), (1, Kind::Ok)], &[1]);
        let res = check(&lost);
        assert_eq!(res.valid, Validity::Invalid);
        assert_eq!(res.details["anomalies"][0]["lost"], json!([0]));
        let unexpected = hist(&[(0, Kind::Ok)], &[0, 7]);
        assert_eq!(check(&unexpected).valid, Validity::Invalid);
    }
}
