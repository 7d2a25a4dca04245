//! The history: every operation's invocation and completion, as Jepsen records them.
//!
//! An operation is an `invoke` event followed (same `process`) by exactly one completion:
//! `ok` (it happened, with this result), `fail` (it certainly did not happen) or `info` (its
//! outcome is unknown: it may or may not have happened, at any time after its invocation).
//! A process whose operation ended `info` never issues another one: the worker continues
//! under a new process id, so every process is sequential.

use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The type of a history event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Invoke => "invoke",
            Kind::Ok => "ok",
            Kind::Fail => "fail",
            Kind::Info => "info",
        }
    }
}

/// One line of `history.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the history (0-based, in real-time order of recording).
    pub index: usize,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub process: u64,
    /// The operation: `read`, `write`, `cas`, `add`, `txn`, ...
    pub f: String,
    /// The key, for single-key operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Invocation: the arguments; completion: the result (workload-specific JSON).
    pub value: Value,
    /// Nanoseconds since the start of the test.
    pub time: u64,
    /// The node the client talked to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<usize>,
    /// Why an operation failed or is indeterminate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Records events from many tasks, in the order they happen.
pub struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

/// What an invocation returns, to complete it with.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub process: u64,
    pub f: String,
    pub key: Option<String>,
    pub node: Option<usize>,
}

impl Recorder {
    pub fn new(start: Instant) -> Recorder {
        Recorder { start, events: Mutex::new(Vec::new()) }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// Nanoseconds since the start of the test.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn push(&self, mut e: Event) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        // The time is taken under the lock, so indexes and times agree.
        e.time = self.now();
        e.index = events.len();
        events.push(e);
    }

    pub fn invoke(
        &self,
        process: u64,
        f: &str,
        key: Option<String>,
        value: Value,
        node: Option<usize>,
    ) -> Invocation {
        self.push(Event {
            index: 0,
            kind: Kind::Invoke,
            process,
            f: f.to_string(),
            key: key.clone(),
            value,
            time: 0,
            node,
            error: None,
        });
        Invocation { process, f: f.to_string(), key, node }
    }

    pub fn complete(&self, inv: &Invocation, kind: Kind, value: Value, error: Option<String>) {
        debug_assert!(kind != Kind::Invoke);
        self.push(Event {
            index: 0,
            kind,
            process: inv.process,
            f: inv.f.clone(),
            key: inv.key.clone(),
            value,
            time: 0,
            node: inv.node,
            error,
        });
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// An invocation paired with its completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub process: u64,
    pub f: String,
    pub key: Option<String>,
    /// The invocation's value.
    pub input: Value,
    /// `Ok`, `Fail` or `Info` (an invocation without completion is `Info`).
    pub kind: Kind,
    /// The completion's value (`Null` when there is none).
    pub output: Value,
    pub invoke_index: usize,
    /// `None` when the operation never completed.
    pub complete_index: Option<usize>,
    pub start: u64,
    /// Completion time; `None` for `info` (it may take effect at any time after `start`).
    pub end: Option<u64>,
    pub node: Option<usize>,
    pub error: Option<String>,
}

impl Op {
    /// A compact JSON rendering for reports.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "process": self.process,
            "f": self.f,
            "key": self.key,
            "type": self.kind.as_str(),
            "input": self.input,
            "output": self.output,
            "invoke_index": self.invoke_index,
            "complete_index": self.complete_index,
            "start_s": self.start as f64 / 1e9,
            "end_s": self.end.map(|e| e as f64 / 1e9),
            "node": self.node,
            "error": self.error,
        })
    }
}

impl Op {
    /// [`Op::to_json`] without the (possibly huge) output.
    pub fn to_json_without_output(&self) -> Value {
        let mut v = self.to_json();
        v["output"] = Value::String("(omitted)".into());
        v
    }
}

/// Pairs every invocation with the next completion of the same process. An `info`
/// completion's time is dropped (`end: None`), as are invocations never completed.
pub fn pair(events: &[Event]) -> Vec<Op> {
    let mut open: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut ops: Vec<Op> = Vec::new();
    for e in events {
        match e.kind {
            Kind::Invoke => {
                open.insert(e.process, ops.len());
                ops.push(Op {
                    process: e.process,
                    f: e.f.clone(),
                    key: e.key.clone(),
                    input: e.value.clone(),
                    kind: Kind::Info,
                    output: Value::Null,
                    invoke_index: e.index,
                    complete_index: None,
                    start: e.time,
                    end: None,
                    node: e.node,
                    error: None,
                });
            }
            kind => {
                if let Some(i) = open.remove(&e.process) {
                    let op = &mut ops[i];
                    op.kind = kind;
                    op.output = e.value.clone();
                    op.complete_index = Some(e.index);
                    op.end = (kind != Kind::Info).then_some(e.time);
                    op.error = e.error.clone();
                }
            }
        }
    }
    ops
}

/// Reads `history.jsonl`.
pub fn read_jsonl(path: &std::path::Path) -> anyhow::Result<Vec<Event>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, l)| serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), n + 1)))
        .collect()
}

/// Writes `history.jsonl`.
pub fn write_jsonl(path: &std::path::Path, events: &[Event]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for e in events {
        serde_json::to_writer(&mut out, e)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pairs_by_process_and_drops_info_end_times() {
        let r = Recorder::new(Instant::now());
        let a = r.invoke(0, "write", Some("k".into()), json!(1), Some(0));
        let b = r.invoke(1, "read", Some("k".into()), Value::Null, Some(1));
        r.complete(&b, Kind::Ok, json!(1), None);
        r.complete(&a, Kind::Info, json!(1), Some("timeout".into()));
        let c = r.invoke(2, "read", Some("k".into()), Value::Null, None);
        let _ = c;
        let ops = pair(&r.events());
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].kind, Kind::Info);
        assert_eq!(ops[0].end, None);
        assert_eq!(ops[1].kind, Kind::Ok);
        assert!(ops[1].end.unwrap() >= ops[1].start);
        assert_eq!(ops[1].output, json!(1));
        assert_eq!(ops[2].kind, Kind::Info, "never completed");
        assert_eq!(ops[2].complete_index, None);
    }

    #[test]
    fn jsonl_round_trip() {
        let r = Recorder::new(Instant::now());
        let a = r.invoke(3, "cas", Some("k".into()), json!([1, 2]), Some(2));
        r.complete(&a, Kind::Fail, json!([1, 2]), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        write_jsonl(&path, &r.events()).unwrap();
        assert_eq!(read_jsonl(&path).unwrap(), r.events());
        let line = std::fs::read_to_string(&path).unwrap();
        assert!(line.contains(r#""type":"invoke""#), "{line}");
    }
}
