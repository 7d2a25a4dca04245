//! Watch workload: workers put unique values to a few keys under `jepsen/watch/`; one watcher
//! per node watches the prefix from the revision the test started at, reconnecting to its node
//! (resuming after the last revision it saw) whenever its stream breaks. After the run a final
//! read takes the revision `R` and the final values; every watcher must reach `R`.
//!
//! Checked: every watcher's revisions strictly increase (ordered, unique); all watchers agree
//! on every revision they share; each has every revision any watcher saw since its start
//! (reliable, gap-free); the events end in the final state; no acknowledged put is missing
//! from the events and no failed put appears.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_tests::Cluster;
use etcd_client::{EventType, GetOptions, WatchOptions};
use rand::Rng;
use serde_json::{json, Value};

use super::Ctx;
use crate::checker::{CheckResult, Validity};
use crate::client::Worker;
use crate::history::{pair, Event, Invocation, Kind};

const PREFIX: &str = "jepsen/watch/";
/// Process ids of watchers: `WATCHER_PROCESS + node`.
pub const WATCHER_PROCESS: u64 = 1_000_000;

/// (revision, key, value or null for a delete)
type Seen = Vec<(i64, String, Option<String>)>;

struct Watcher {
    inv: Invocation,
    start_rev: i64,
    seen: Arc<Mutex<Seen>>,
    reconnects: Arc<AtomicU64>,
}

#[derive(Default)]
pub struct WatchWorkload {
    counter: AtomicU64,
    watchers: Mutex<Vec<Watcher>>,
    stop: Arc<AtomicBool>,
}

impl WatchWorkload {
    pub async fn setup(&self, cluster: &Cluster, ctx: &Arc<Ctx>) -> Result<()> {
        let mut c = cluster.client(0).await?;
        let r = c.get(PREFIX, Some(GetOptions::new().with_prefix())).await.context("initial revision")?;
        let start_rev = r.header().map(|h| h.revision()).unwrap_or(0) + 1;
        let mut watchers = Vec::new();
        for node in 0..cluster.len() {
            let endpoint = cluster.endpoint(node);
            let inv = ctx.shared.recorder.invoke(
                WATCHER_PROCESS + node as u64,
                "watch",
                None,
                json!({"start_revision": start_rev}),
                Some(node),
            );
            let seen: Arc<Mutex<Seen>> = Arc::default();
            let reconnects = Arc::new(AtomicU64::new(0));
            tokio::spawn(watch_loop(
                endpoint,
                start_rev,
                seen.clone(),
                reconnects.clone(),
                self.stop.clone(),
            ));
            watchers.push(Watcher { inv, start_rev, seen, reconnects });
        }
        *self.watchers.lock().unwrap_or_else(|p| p.into_inner()) = watchers;
        Ok(())
    }

    pub async fn worker(&self, mut w: Worker, ctx: Arc<Ctx>) {
        while ctx.pause().await {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let k = format!("{PREFIX}{}", rand::rng().random_range(0..4));
            let key = k.clone();
            w.op("write", Some(k), json!(n), true, |mut c| async move {
                c.put(key, n.to_string(), None).await?;
                Ok(Ok(json!(n)))
            })
            .await;
        }
    }

    pub async fn finish(&self, _cluster: &Cluster, ctx: &Arc<Ctx>, first_process: u64) -> Result<()> {
        // The final state, read from node 0 (retried: the cluster just healed).
        let mut w = Worker::new(0, 0, ctx.shared.clone());
        w.process = first_process;
        let mut final_rev = None;
        for _ in 0..10 {
            let (kind, v) = w
                .op("final-read", None, Value::Null, false, |mut c| async move {
                    let r = c.get(PREFIX, Some(GetOptions::new().with_prefix())).await?;
                    let kvs: BTreeMap<String, Value> = r
                        .kvs()
                        .iter()
                        .map(|kv| {
                            (
                                String::from_utf8_lossy(kv.key()).to_string(),
                                json!([String::from_utf8_lossy(kv.value()), kv.mod_revision()]),
                            )
                        })
                        .collect();
                    Ok(Ok(json!({"revision": r.header().map(|h| h.revision()).unwrap_or(0), "kvs": kvs})))
                })
                .await;
            if kind == Kind::Ok {
                final_rev = v["revision"].as_i64();
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Let every watcher catch up to the final revision (or give up after 30 s).
        let deadline = Instant::now() + Duration::from_secs(30);
        if let Some(r) = final_rev {
            loop {
                let behind = self.watchers.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|w| {
                    w.seen.lock().unwrap_or_else(|p| p.into_inner()).last().map(|e| e.0).unwrap_or(0) < r
                        && r >= w.start_rev
                });
                if !behind || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.stop.store(true, Ordering::SeqCst);
        for w in self.watchers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let seen = w.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let events: Vec<Value> = seen.iter().map(|(r, k, v)| json!([r, k, v])).collect();
            ctx.shared.recorder.complete(
                &w.inv,
                Kind::Ok,
                json!({"start_revision": w.start_rev, "events": events,
                       "reconnects": w.reconnects.load(Ordering::Relaxed)}),
                None,
            );
        }
        Ok(())
    }

    pub fn check(&self, events: &[Event]) -> Vec<CheckResult> {
        vec![check(events)]
    }
}

async fn watch_loop(
    endpoint: String,
    start_rev: i64,
    seen: Arc<Mutex<Seen>>,
    reconnects: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut attempt = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if attempt > 0 {
            reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        attempt += 1;
        let next =
            seen.lock().unwrap_or_else(|p| p.into_inner()).last().map(|e| e.0 + 1).unwrap_or(start_rev);
        let options = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
        let Ok(Ok(mut client)) = tokio::time::timeout(
            Duration::from_secs(2),
            etcd_client::Client::connect([&endpoint], Some(options)),
        )
        .await
        else {
            continue;
        };
        let opts = WatchOptions::new().with_prefix().with_start_revision(next).with_progress_notify();
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(3), client.watch(PREFIX, Some(opts))).await
        else {
            continue;
        };
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            // A silent stream (paused or partitioned node) is re-established after 5 s; progress
            // notifications keep a healthy idle stream alive.
            let msg = match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
                Ok(Ok(Some(m))) => m,
                _ => break,
            };
            if msg.canceled() {
                break;
            }
            let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
            for e in msg.events() {
                let Some(kv) = e.kv() else { continue };
                let value = match e.event_type() {
                    EventType::Put => Some(String::from_utf8_lossy(kv.value()).to_string()),
                    EventType::Delete => None,
                };
                s.push((kv.mod_revision(), String::from_utf8_lossy(kv.key()).to_string(), value));
            }
        }
    }
}

pub fn check(events: &[Event]) -> CheckResult {
    let ops = pair(events);
    let mut problems: Vec<Value> = Vec::new();
    let mut add = |v: Value| {
        if problems.len() < 20 {
            problems.push(v);
        }
    };
    let watches: Vec<(usize, i64, Seen)> = ops
        .iter()
        .filter(|o| o.f == "watch" && o.kind == Kind::Ok)
        .map(|o| {
            let seen: Seen = o.output["events"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| {
                            Some((
                                e[0].as_i64()?,
                                e[1].as_str()?.to_string(),
                                e[2].as_str().map(str::to_string),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (o.node.unwrap_or(0), o.output["start_revision"].as_i64().unwrap_or(0), seen)
        })
        .collect();
    let final_read = ops.iter().rev().find(|o| o.f == "final-read" && o.kind == Kind::Ok);
    // The union of all watchers' events, checking agreement.
    let mut union: BTreeMap<i64, (String, Option<String>)> = BTreeMap::new();
    for (node, _, seen) in &watches {
        let mut last = 0;
        for (r, k, v) in seen {
            if *r <= last {
                add(
                    json!({"anomaly": "out-of-order-or-duplicate", "node": node, "revision": r, "after": last}),
                );
            }
            last = last.max(*r);
            match union.get(r) {
                Some(prev) if prev != &(k.clone(), v.clone()) => add(json!({
                    "anomaly": "watchers-disagree", "revision": r, "node": node,
                    "this": [k, v], "other": [prev.0, prev.1]})),
                Some(_) => {}
                None => {
                    union.insert(*r, (k.clone(), v.clone()));
                }
            }
        }
    }
    let final_rev = final_read.and_then(|o| o.output["revision"].as_i64());
    let mut incomplete = Vec::new();
    for (node, start, seen) in &watches {
        let have: BTreeSet<i64> = seen.iter().map(|e| e.0).collect();
        let missing: Vec<i64> =
            union.range(*start..).map(|(r, _)| *r).filter(|r| !have.contains(r)).collect();
        if !missing.is_empty() {
            add(json!({"anomaly": "missed-events", "node": node, "count": missing.len(),
                       "first": &missing[..missing.len().min(20)]}));
        }
        if let Some(r) = final_rev {
            if have.last().copied().unwrap_or(0) < r && r >= *start {
                incomplete.push(json!({"node": node, "last_seen": have.last(), "final_revision": r}));
            }
        }
    }
    // The final state must be the last event of each key.
    if let Some(fr) = final_read {
        let mut last: HashMap<&str, (i64, &Option<String>)> = HashMap::new();
        for (r, (k, v)) in &union {
            last.insert(k.as_str(), (*r, v));
        }
        if let Some(kvs) = fr.output["kvs"].as_object() {
            for (k, kv) in kvs {
                let (v, mr) = (kv[0].as_str().map(str::to_string), kv[1].as_i64().unwrap_or(0));
                match last.get(k.as_str()) {
                    Some((r, lv)) if *r == mr && **lv == v => {}
                    other => add(json!({"anomaly": "final-state-mismatch", "key": k, "final": [v, mr],
                                        "last_event": other.map(|(r, v)| json!([v, r]))})),
                }
            }
        }
    }
    // Acknowledged writes are in the event log; failed ones are not.
    let written: BTreeSet<(String, String)> =
        union.values().filter_map(|(k, v)| Some((k.clone(), v.clone()?))).collect();
    let mut acked = 0;
    for o in ops.iter().filter(|o| o.f == "write") {
        let (Some(k), Some(n)) = (&o.key, o.input.as_u64()) else { continue };
        let present = written.contains(&(k.clone(), n.to_string()));
        match o.kind {
            Kind::Ok => {
                acked += 1;
                if !present && !watches.is_empty() && final_rev.is_some() {
                    add(json!({"anomaly": "lost-write", "op": o.to_json()}));
                }
            }
            Kind::Fail if present => add(json!({"anomaly": "failed-write-visible", "op": o.to_json()})),
            _ => {}
        }
    }
    let valid = if !problems.is_empty() {
        Validity::Invalid
    } else if watches.is_empty() || final_rev.is_none() || !incomplete.is_empty() {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    CheckResult::new(
        "watch",
        valid,
        json!({
            "watchers": watches.len(),
            "events_seen": union.len(),
            "final_revision": final_rev,
            "acknowledged_writes": acked,
            "reconnects": ops.iter().filter(|o| o.f == "watch").map(|o| o.output["reconnects"].as_u64().unwrap_or(0)).sum::<u64>(),
            "incomplete_watchers": incomplete,
            "anomalies": problems,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Recorder;

    fn run(
        watch_events: &[Vec<(i64, &str, &str)>],
        writes: &[(&str, u64, Kind)],
        final_kvs: Value,
        rev: i64,
    ) -> CheckResult {
        let r = Recorder::new(std::time::Instant::now());
        let invs: Vec<_> = (0..watch_events.len())
            .map(|i| {
                r.invoke(WATCHER_PROCESS + i as u64, "watch", None, json!({"start_revision": 2}), Some(i))
            })
            .collect();
        for (p, (k, n, kind)) in writes.iter().enumerate() {
            let inv = r.invoke(p as u64, "write", Some(k.to_string()), json!(n), Some(0));
            r.complete(&inv, *kind, json!(n), None);
        }
        let f = r.invoke(99, "final-read", None, Value::Null, Some(0));
        r.complete(&f, Kind::Ok, json!({"revision": rev, "kvs": final_kvs}), None);
        for (inv, evs) in invs.iter().zip(watch_events) {
            let events: Vec<Value> = evs.iter().map(|(r, k, v)| json!([r, k, v])).collect();
            r.complete(inv, Kind::Ok, json!({"start_revision": 2, "events": events, "reconnects": 0}), None);
        }
        check(&r.events())
    }

    #[test]
    fn agreeing_complete_watchers_are_valid_and_gaps_are_not() {
        let good = vec![(2, "a", "0"), (3, "b", "1"), (4, "a", "2")];
        let writes = [("a", 0, Kind::Ok), ("b", 1, Kind::Ok), ("a", 2, Kind::Ok), ("a", 9, Kind::Fail)];
        let fin = json!({"a": ["2", 4], "b": ["1", 3]});
        let res = run(&[good.clone(), good.clone()], &writes, fin.clone(), 4);
        assert_eq!(res.valid, Validity::Valid, "{}", res.details);

        let gap = vec![(2, "a", "0"), (4, "a", "2")];
        let res = run(&[good.clone(), gap], &writes, fin.clone(), 4);
        assert_eq!(res.valid, Validity::Invalid, "{}", res.details);

        let reordered = vec![(2, "a", "0"), (4, "a", "2"), (3, "b", "1")];
        assert_eq!(run(&[good.clone(), reordered], &writes, fin.clone(), 4).valid, Validity::Invalid);

        let disagree = vec![(2, "a", "0"), (3, "b", "7"), (4, "a", "2")];
        assert_eq!(run(&[good.clone(), disagree], &writes, fin.clone(), 4).valid, Validity::Invalid);

        // An acknowledged write nobody saw.
        let mut lost_writes = writes.to_vec();
        lost_writes.push(("b", 5, Kind::Ok));
        assert_eq!(run(&[good.clone(), good.clone()], &lost_writes, fin.clone(), 4).valid, Validity::Invalid);

        // Final state disagrees with the last event.
        let bad_fin = json!({"a": ["0", 2], "b": ["1", 3]});
        assert_eq!(run(&[good.clone(), good.clone()], &writes, bad_fin, 4).valid, Validity::Invalid);

        // A watcher that never caught up: unknown.
        let short = vec![(2, "a", "0"), (3, "b", "1")];
        assert_eq!(
            run(&[short.clone(), short], &writes[..2], json!({"a": ["0", 2], "b": ["1", 3]}), 5).valid,
            Validity::Unknown
        );
    }
}
