//! Process-wide counters of the replication layer (read by the status endpoint and benches).

use std::sync::atomic::{AtomicU64, Ordering};

static WAL_SYNCS: AtomicU64 = AtomicU64::new(0);
static APPENDS_SYNCED: AtomicU64 = AtomicU64::new(0);
static ENTRIES_APPLIED: AtomicU64 = AtomicU64::new(0);
static APPLY_BATCHES: AtomicU64 = AtomicU64::new(0);

pub(crate) fn record_wal_sync(appends: usize) {
    WAL_SYNCS.fetch_add(1, Ordering::Relaxed);
    APPENDS_SYNCED.fetch_add(appends as u64, Ordering::Relaxed);
}

pub(crate) fn record_apply(entries: usize) {
    APPLY_BATCHES.fetch_add(1, Ordering::Relaxed);
    ENTRIES_APPLIED.fetch_add(entries as u64, Ordering::Relaxed);
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// WAL fsyncs done for log appends.
    pub wal_syncs: u64,
    /// Log append calls made durable by those fsyncs (≥ wal_syncs: group commit).
    pub appends_synced: u64,
    pub entries_applied: u64,
    pub apply_batches: u64,
}

pub fn counters() -> Counters {
    Counters {
        wal_syncs: WAL_SYNCS.load(Ordering::Relaxed),
        appends_synced: APPENDS_SYNCED.load(Ordering::Relaxed),
        entries_applied: ENTRIES_APPLIED.load(Ordering::Relaxed),
        apply_batches: APPLY_BATCHES.load(Ordering::Relaxed),
    }
}
