//! Where a write's time goes: timestamps of each log entry at each stage of the put path
//! (proposal, log append, WAL sync, replication, follower sync, apply, answer), kept in
//! memory. A debug-logged timeline is too distorted by the logging itself to time hand-offs
//! of tens of microseconds; this costs a mutex push per mark.
//!
//! Off unless `CAIRN_PROBE_DIR` is set when the process starts (then one relaxed atomic load
//! per mark). On, a thread appends the marks to `<dir>/probe-<pid>.tsv` every second as
//! `log index, stage, wall-clock ns` lines. The clock is the system's, so the files of
//! members on one machine line up: `benches/probe-put.sh` runs a cluster and a one-client
//! put load and prints the median time of each stage after the proposal.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A point on the put path (its number is what the file holds).
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
pub enum Stage {
    /// The leader: `client_write` called, and returned.
    ProposeStart = 0,
    ProposeDone = 1,
    /// Any member: the log append called, its write done (not synced), the WAL sync begun
    /// and done (marked with the batch's last index).
    AppendIn = 2,
    AppendWritten = 3,
    SyncStart = 4,
    SyncDone = 5,
    /// The leader: a replication request encoded for a follower, and a follower's answer.
    ReplSent = 6,
    ReplAcked = 7,
    /// A follower: a replication request decoded, and its answer encoded.
    FollowerReceived = 8,
    FollowerAnswered = 9,
    /// Any member: the entry handed to the state machine, its batch written, answered.
    ApplyIn = 10,
    ApplyCommitted = 11,
    Responded = 12,
}

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
static MARKS: Mutex<Vec<(u64, u8, u64)>> = Mutex::new(Vec::new());

fn now_ns() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn on() -> bool {
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => start(),
    }
}

/// Decide once whether probing is on; if so, start the thread that writes the marks out.
#[cold]
fn start() -> bool {
    let Some(dir) = std::env::var_os("CAIRN_PROBE_DIR") else {
        STATE.store(OFF, Ordering::Relaxed);
        return false;
    };
    if STATE.compare_exchange(UNKNOWN, ON, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        let path = std::path::Path::new(&dir).join(format!("probe-{}.tsv", std::process::id()));
        let spawned = std::thread::Builder::new().name("cairn-probe".into()).spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let marks = std::mem::take(&mut *MARKS.lock().unwrap_or_else(|e| e.into_inner()));
            if let Err(e) = write_out(&path, &marks) {
                tracing::warn!(path = %path.display(), error = %e, "probe marks not written: probing stops");
                STATE.store(OFF, Ordering::Relaxed);
                return;
            }
        });
        if spawned.is_err() {
            STATE.store(OFF, Ordering::Relaxed);
        }
    }
    STATE.load(Ordering::Relaxed) == ON
}

fn write_out(path: &std::path::Path, marks: &[(u64, u8, u64)]) -> std::io::Result<()> {
    if marks.is_empty() {
        return Ok(());
    }
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let mut out = std::io::BufWriter::new(file);
    for (index, stage, ns) in marks {
        writeln!(out, "{index}\t{stage}\t{ns}")?;
    }
    out.flush()
}

fn push(first: u64, last: u64, stage: Stage, ns: u64) {
    let mut marks = MARKS.lock().unwrap_or_else(|e| e.into_inner());
    marks.extend((first..=last).map(|index| (index, stage as u8, ns)));
}

/// Entry `index` reached `stage` now.
pub fn mark(index: u64, stage: Stage) {
    if on() {
        push(index, index, stage, now_ns());
    }
}

/// Entries `first..=last` reached `stage` now.
pub fn mark_range(first: u64, last: u64, stage: Stage) {
    if on() {
        push(first, last, stage, now_ns());
    }
}

/// The time now, for a mark made once the entry's index is known (0 when probing is off).
pub fn stamp() -> u64 {
    if on() {
        now_ns()
    } else {
        0
    }
}

/// Entry `index` reached `stage` at `stamp` (from [`stamp`]; nothing when it is 0).
pub fn mark_at(index: u64, stage: Stage, stamp: u64) {
    if stamp != 0 {
        push(index, index, stage, stamp);
    }
}
