//! An Elle-style checker for list-append transactions (Kingsbury & Alvaro, "Elle: Inferring
//! Isolation Anomalies from Experimental Observations", VLDB 2020), for strict serializability.
//!
//! Every append writes a value unique per key, so a read (a whole list) names the writer of
//! every element, and the longest read of a key gives its version order (every other read must
//! be a prefix of it). From that come the dependency edges between transactions:
//! - `ww`: the writer of element i → the writer of element i+1;
//! - `wr`: the writer of a read's last element → the reader;
//! - `rw`: a reader that saw i elements → the writer of element i+1 (anti-dependency);
//! - `rt`: real time, T1 completed before T2 was invoked (strictness).
//!
//! A cycle is an anomaly, named by its edges: only ww = G0, ww/wr = G1c, one rw = G-single,
//! more rw = G2; `-realtime` when it needs a real-time edge (not strictly serializable, but
//! perhaps serializable). Also reported without a cycle: reads of aborted (failed) appends
//! (G1a), elements nobody appended (garbage), duplicate elements, reads that are not a prefix
//! of the version order (incompatible order).
//!
//! Why not the `adya` crate: it is new (0.1), and this harness needs `info` transactions (which
//! may or may not have committed: their appends count only if someone read them) and witness
//! output for the report; the graph part is petgraph's Tarjan SCC plus a BFS for one cycle.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use petgraph::algo::tarjan_scc;
use petgraph::graphmap::DiGraphMap;
use serde_json::{json, Value};

use super::{CheckResult, Validity};
use crate::history::{pair, Event, Kind, Op};

/// A micro-operation: `["append", k, v]` or `["r", k, list-or-null]`.
#[derive(Clone, Debug, PartialEq)]
pub enum Mop {
    Append(u64, u64),
    Read(u64, Option<Vec<u64>>),
}

pub fn parse_mops(v: &Value) -> Option<Vec<Mop>> {
    v.as_array()?
        .iter()
        .map(|m| {
            let m = m.as_array()?;
            let k = m.get(1)?.as_u64()?;
            match m.first()?.as_str()? {
                "append" => Some(Mop::Append(k, m.get(2)?.as_u64()?)),
                "r" => {
                    let list = match m.get(2) {
                        None | Some(Value::Null) => None,
                        Some(l) => {
                            Some(l.as_array()?.iter().map(|x| x.as_u64()).collect::<Option<Vec<u64>>>()?)
                        }
                    };
                    Some(Mop::Read(k, list))
                }
                _ => None,
            }
        })
        .collect()
}

pub fn mops_json(mops: &[Mop]) -> Value {
    Value::Array(
        mops.iter()
            .map(|m| match m {
                Mop::Append(k, v) => json!(["append", k, v]),
                Mop::Read(k, l) => json!(["r", k, l]),
            })
            .collect(),
    )
}

const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const RT: u8 = 8;

fn edge_names(bits: u8) -> Vec<&'static str> {
    [(WW, "ww"), (WR, "wr"), (RW, "rw"), (RT, "rt")]
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// Checks every `txn` operation of the history.
pub fn check(events: &[Event]) -> CheckResult {
    let all = pair(events);
    let ops: Vec<&Op> = all.iter().filter(|o| o.f == "txn").collect();
    // Micro-ops per op: the completion's for ok, the invocation's otherwise.
    let mops: Vec<Vec<Mop>> = ops
        .iter()
        .map(|o| {
            let v = if o.kind == Kind::Ok { &o.output } else { &o.input };
            parse_mops(v).unwrap_or_default()
        })
        .collect();
    let mut anomalies: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
    let mut add = |name: &'static str, v: Value| {
        let list = anomalies.entry(name).or_default();
        if list.len() < 10 {
            list.push(v);
        }
    };

    // Writers of each (key, value); failed appends.
    let mut writer: HashMap<(u64, u64), usize> = HashMap::new();
    let mut failed: HashSet<(u64, u64)> = HashSet::new();
    for (i, o) in ops.iter().enumerate() {
        for m in &mops[i] {
            if let Mop::Append(k, v) = m {
                match o.kind {
                    Kind::Ok | Kind::Info => {
                        if let Some(prev) = writer.insert((*k, *v), i) {
                            add(
                                "duplicate-appends",
                                json!({"key": k, "value": v, "ops": [ops[prev].to_json(), o.to_json()]}),
                            );
                        }
                    }
                    Kind::Fail => {
                        failed.insert((*k, *v));
                    }
                    Kind::Invoke => {}
                }
            }
        }
    }

    // Reads: (op, key, list) of ok ops, minus the reader's own appends made before the read
    // (those are not evidence about other transactions' order: they are the txn's own writes).
    let mut reads: Vec<(usize, u64, Vec<u64>)> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        if o.kind != Kind::Ok {
            continue;
        }
        for m in &mops[i] {
            if let Mop::Read(k, Some(list)) = m {
                reads.push((i, *k, list.clone()));
            }
        }
    }
    for (i, k, list) in &reads {
        let mut seen = HashSet::new();
        for v in list {
            if !seen.insert(*v) {
                add("duplicate-elements", json!({"key": k, "value": v, "op": ops[*i].to_json()}));
            }
            if failed.contains(&(*k, *v)) {
                add("G1a", json!({"key": k, "value": v, "reader": ops[*i].to_json()}));
            } else if !writer.contains_key(&(*k, *v)) {
                add("garbage-read", json!({"key": k, "value": v, "reader": ops[*i].to_json()}));
            }
        }
    }

    // Version order per key: the longest read; every read must be its prefix.
    let mut order: HashMap<u64, Vec<u64>> = HashMap::new();
    for (_, k, list) in &reads {
        let o = order.entry(*k).or_default();
        if list.len() > o.len() {
            *o = list.clone();
        }
    }
    for (i, k, list) in &reads {
        let o = &order[k];
        if o[..list.len()] != list[..] {
            add(
                "incompatible-order",
                json!({"key": k, "read": list, "longest": o, "op": ops[*i].to_json_without_output()}),
            );
        }
    }

    // Acknowledged appends missing from a read that began after they completed (not a cycle:
    // the version order only holds observed elements, so this is checked on its own).
    let mut acked: HashMap<u64, Vec<(u64, u64, usize)>> = HashMap::new(); // key -> (end, value, op)
    for (i, o) in ops.iter().enumerate() {
        if let (Kind::Ok, Some(end)) = (o.kind, o.end) {
            for m in &mops[i] {
                if let Mop::Append(k, v) = m {
                    acked.entry(*k).or_default().push((end, *v, i));
                }
            }
        }
    }
    for (i, k, list) in &reads {
        let start = ops[*i].start;
        let present: HashSet<u64> = list.iter().copied().collect();
        for &(end, v, w) in acked.get(k).map(|a| a.as_slice()).unwrap_or(&[]) {
            if end < start && !present.contains(&v) {
                add(
                    "lost-append",
                    json!({"key": k, "value": v, "writer": ops[w].to_json(), "reader": ops[*i].to_json()}),
                );
            }
        }
    }

    // The dependency graph.
    let mut labels: HashMap<(usize, usize), u8> = HashMap::new();
    let mut edge = |a: usize, b: usize, t: u8| {
        if a != b {
            *labels.entry((a, b)).or_default() |= t;
        }
    };
    for (k, o) in &order {
        for w in o.windows(2) {
            if let (Some(&a), Some(&b)) = (writer.get(&(*k, w[0])), writer.get(&(*k, w[1]))) {
                edge(a, b, WW);
            }
        }
    }
    for (i, k, list) in &reads {
        let o = &order[k];
        if o[..list.len()] != list[..] {
            continue;
        }
        if let Some(last) = list.last() {
            if let Some(&w) = writer.get(&(*k, *last)) {
                edge(w, *i, WR);
            }
        }
        if let Some(next) = o.get(list.len()) {
            if let Some(&w) = writer.get(&(*k, *next)) {
                edge(*i, w, RW);
            }
        }
    }
    // Real time: sweep invocations and completions in time order, keeping the frontier of
    // completed ops not yet followed by a later completed op that already orders them.
    let mut points: Vec<(u64, bool, usize)> = Vec::new(); // (time, is_completion, op)
    for (i, o) in ops.iter().enumerate() {
        if o.kind == Kind::Fail {
            continue;
        }
        points.push((o.start, false, i));
        if let (Kind::Ok, Some(end)) = (o.kind, o.end) {
            points.push((end, true, i));
        }
    }
    points.sort_by_key(|p| (p.0, p.1));
    let mut frontier: HashSet<usize> = HashSet::new();
    let mut preds: HashMap<usize, Vec<usize>> = HashMap::new();
    for (_, is_completion, i) in points {
        if !is_completion {
            let p: Vec<usize> = frontier.iter().copied().collect();
            for &a in &p {
                edge(a, i, RT);
            }
            preds.insert(i, p);
        } else {
            for a in preds.remove(&i).unwrap_or_default() {
                frontier.remove(&a);
            }
            frontier.insert(i);
        }
    }

    let mut g: DiGraphMap<usize, ()> = DiGraphMap::new();
    for &(a, b) in labels.keys() {
        g.add_edge(a, b, ());
    }
    let mut cycles = 0usize;
    for scc in tarjan_scc(&g) {
        if scc.len() < 2 {
            continue;
        }
        cycles += 1;
        let members: HashSet<usize> = scc.iter().copied().collect();
        let cycle = find_cycle(&g, &members, scc[0]);
        let mut bits = Vec::new();
        let steps: Vec<Value> = cycle
            .windows(2)
            .map(|w| {
                let l = labels[&(w[0], w[1])];
                bits.push(l);
                json!({"from": ops[w[0]].to_json(), "edge": edge_names(l)})
            })
            .collect();
        let name = classify(&bits);
        add(name, json!({"scc_size": scc.len(), "cycle": steps}));
    }

    let valid = if !anomalies.is_empty() {
        Validity::Invalid
    } else if reads.is_empty() {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    let counts: BTreeMap<&str, usize> = anomalies.iter().map(|(k, v)| (*k, v.len())).collect();
    CheckResult::new(
        "elle-list-append",
        valid,
        json!({
            "consistency_model": "strict-serializable",
            "txns": ops.len(),
            "ok": ops.iter().filter(|o| o.kind == Kind::Ok).count(),
            "info": ops.iter().filter(|o| o.kind == Kind::Info).count(),
            "fail": ops.iter().filter(|o| o.kind == Kind::Fail).count(),
            "keys": order.len(),
            "edges": labels.len(),
            "cyclic_components": cycles,
            "anomaly_types": counts,
            "anomalies": anomalies,
        }),
    )
}

/// One cycle through `start` inside the component (BFS: a shortest one), as a node list that
/// starts and ends with `start`.
fn find_cycle(g: &DiGraphMap<usize, ()>, members: &HashSet<usize>, start: usize) -> Vec<usize> {
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut q = VecDeque::from([start]);
    while let Some(a) = q.pop_front() {
        for b in g.neighbors(a) {
            if !members.contains(&b) {
                continue;
            }
            if b == start {
                let mut path = vec![start, a];
                let mut x = a;
                while x != start {
                    x = parent[&x];
                    path.push(x);
                }
                path.reverse();
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(b) {
                e.insert(a);
                q.push_back(b);
            }
        }
    }
    vec![start]
}

/// Names a cycle by its edge types (each cycle edge's label bits; a label with several types
/// counts as its weakest-needed one: ww, then wr, then rw, then rt).
fn classify(edges: &[u8]) -> &'static str {
    let mut rw = 0;
    let mut wr = false;
    let mut rt = false;
    for &l in edges {
        if l & WW != 0 {
        } else if l & WR != 0 {
            wr = true;
        } else if l & RW != 0 {
            rw += 1;
        } else {
            rt = true;
        }
    }
    match (rw, wr, rt) {
        (0, false, false) => "G0",
        (0, true, false) => "G1c",
        (1, _, false) => "G-single",
        (_, _, false) => "G2",
        (0, false, true) => "G0-realtime",
        (0, true, true) => "G1c-realtime",
        (1, _, true) => "G-single-realtime",
        (_, _, true) => "G2-realtime",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Recorder;
    use std::time::Instant;

    /// Builds a history from (kind, mops-with-results) entries. Ops run
    /// one after another unless `overlap` is set, in which case they all overlap.
    fn hist(txns: &[(Kind, Vec<Mop>)], overlap: bool) -> Vec<Event> {
        let r = Recorder::new(Instant::now());
        if overlap {
            let invs: Vec<_> = txns
                .iter()
                .enumerate()
                .map(|(p, (_, m))| r.invoke(p as u64, "txn", None, mops_json(&blank(m)), None))
                .collect();
            for (inv, (k, m)) in invs.iter().zip(txns) {
                r.complete(inv, *k, mops_json(m), None);
            }
        } else {
            for (p, (k, m)) in txns.iter().enumerate() {
                let inv = r.invoke(p as u64, "txn", None, mops_json(&blank(m)), None);
                r.complete(&inv, *k, mops_json(m), None);
            }
        }
        r.events()
    }

    fn blank(m: &[Mop]) -> Vec<Mop> {
        m.iter()
            .map(|x| match x {
                Mop::Read(k, _) => Mop::Read(*k, None),
                a => a.clone(),
            })
            .collect()
    }

    use Mop::{Append as A, Read as R};

    fn verdict(h: &[Event]) -> (Validity, Value) {
        let r = check(h);
        (r.valid, r.details)
    }

    #[test]
    fn serial_history_is_valid() {
        let h = hist(
            &[
                (Kind::Ok, vec![A(1, 1), A(2, 1)]),
                (Kind::Ok, vec![R(1, Some(vec![1])), A(1, 2)]),
                (Kind::Ok, vec![R(1, Some(vec![1, 2])), R(2, Some(vec![1]))]),
            ],
            false,
        );
        let (v, d) = verdict(&h);
        assert_eq!(v, Validity::Valid, "{d}");
    }

    #[test]
    fn stale_read_after_completed_append_is_a_realtime_cycle() {
        let h = hist(
            &[
                (Kind::Ok, vec![A(1, 1)]),
                (Kind::Ok, vec![R(1, Some(vec![]))]),
                (Kind::Ok, vec![R(1, Some(vec![1]))]),
            ],
            false,
        );
        let (v, d) = verdict(&h);
        assert_eq!(v, Validity::Invalid, "{d}");
        assert!(d["anomaly_types"]["G-single-realtime"].as_u64() == Some(1), "{d}");
        assert!(d["anomaly_types"]["lost-append"].as_u64() == Some(1), "{d}");
        // The same two transactions concurrent: fine (the read serializes first).
        let h = hist(&[(Kind::Ok, vec![A(1, 1)]), (Kind::Ok, vec![R(1, Some(vec![]))])], true);
        assert_eq!(verdict(&h).0, Validity::Valid);
    }

    #[test]
    fn g1c_circular_information_flow() {
        // T0 appends x, reads y including T1's append; T1 appends y, reads x including T0's.
        let h = hist(
            &[(Kind::Ok, vec![A(1, 1), R(2, Some(vec![1]))]), (Kind::Ok, vec![A(2, 1), R(1, Some(vec![1]))])],
            true,
        );
        let (v, d) = verdict(&h);
        assert_eq!(v, Validity::Invalid, "{d}");
        assert!(d["anomaly_types"]["G1c"].is_number(), "{d}");
    }

    #[test]
    fn g0_write_cycle() {
        // x order says T0 before T1, y order says T1 before T0.
        let h = hist(
            &[
                (Kind::Ok, vec![A(1, 1), A(2, 2)]),
                (Kind::Ok, vec![A(1, 2), A(2, 1)]),
                (Kind::Ok, vec![R(1, Some(vec![1, 2])), R(2, Some(vec![1, 2]))]),
            ],
            true,
        );
        let (v, d) = verdict(&h);
        assert_eq!(v, Validity::Invalid, "{d}");
        assert!(d["anomaly_types"]["G0"].is_number(), "{d}");
    }

    #[test]
    fn write_skew_is_g2() {
        // Both read both keys empty, each appends to a different one: no serial order has both
        // reads empty... T0 reads y=[] then T1 appends y (rw T0->T1), T1 reads x=[] and T0
        // appends x (rw T1->T0).
        let h = hist(
            &[
                (Kind::Ok, vec![R(2, Some(vec![])), A(1, 1)]),
                (Kind::Ok, vec![R(1, Some(vec![])), A(2, 1)]),
                (Kind::Ok, vec![R(1, Some(vec![1])), R(2, Some(vec![1]))]),
            ],
            true,
        );
        let (v, d) = verdict(&h);
        assert_eq!(v, Validity::Invalid, "{d}");
        assert!(d["anomaly_types"]["G2"].is_number(), "{d}");
    }

    #[test]
    fn aborted_read_garbage_duplicates_and_incompatible_orders() {
        let h = hist(&[(Kind::Fail, vec![A(1, 1)]), (Kind::Ok, vec![R(1, Some(vec![1]))])], false);
        assert!(verdict(&h).1["anomaly_types"]["G1a"].is_number());
        let h = hist(&[(Kind::Ok, vec![R(1, Some(vec![9]))])], false);
        assert!(verdict(&h).1["anomaly_types"]["garbage-read"].is_number());
        let h = hist(&[(Kind::Ok, vec![A(1, 1)]), (Kind::Ok, vec![R(1, Some(vec![1, 1]))])], false);
        assert!(verdict(&h).1["anomaly_types"]["duplicate-elements"].is_number());
        let h = hist(
            &[
                (Kind::Ok, vec![A(1, 1)]),
                (Kind::Ok, vec![A(1, 2)]),
                (Kind::Ok, vec![R(1, Some(vec![1, 2]))]),
                (Kind::Ok, vec![R(1, Some(vec![2, 1]))]),
            ],
            true,
        );
        let (v, d) = verdict(&h);
        assert_eq!(v, Validity::Invalid);
        assert!(d["anomaly_types"]["incompatible-order"].is_number(), "{d}");
    }

    #[test]
    fn info_appends_may_or_may_not_have_happened() {
        // Seen: counts as committed; unseen: as never happened. Neither is an anomaly.
        let h = hist(
            &[
                (Kind::Info, vec![A(1, 1)]),
                (Kind::Info, vec![A(1, 2)]),
                (Kind::Ok, vec![R(1, Some(vec![2]))]),
            ],
            false,
        );
        let (v, d) = verdict(&h);
        assert_eq!(v, Validity::Valid, "{d}");
    }

    #[test]
    fn lost_acknowledged_append_is_caught() {
        // Acknowledged append of 2 never shows up, later reads see 1 then 3.
        let h = hist(
            &[
                (Kind::Ok, vec![A(1, 1)]),
                (Kind::Ok, vec![A(1, 2)]),
                (Kind::Ok, vec![A(1, 3)]),
                (Kind::Ok, vec![R(1, Some(vec![1, 3]))]),
            ],
            false,
        );
        let (v, d) = verdict(&h);
        assert_eq!(v, Validity::Invalid, "{d}");
        assert!(d["anomaly_types"]["lost-append"].is_number(), "{d}");
    }
}
