//! Process-wide counters of the replication layer (read by the status endpoint and benches),
//! and the Prometheus metrics it records, under etcd's names where the meaning is the same
//! ([`register`]; `/metrics` serves them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// etcd's buckets for disk latencies: 1 ms to 8 s.
fn disk_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

fn sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 12))
}

static WAL_FSYNC: LazyLock<Histogram> = LazyLock::new(disk_seconds);
static BACKEND_COMMIT: LazyLock<Histogram> = LazyLock::new(disk_seconds);
static APPENDS_PER_FSYNC: LazyLock<Histogram> = LazyLock::new(sizes);
static ENTRIES_PER_APPLY: LazyLock<Histogram> = LazyLock::new(sizes);
static APPLY: LazyLock<Histogram> = LazyLock::new(disk_seconds);
/// etcd's buckets for peer round trips: 0.1 ms to 3.3 s.
static PEER_RTT: LazyLock<Family<Vec<(String, String)>, Histogram>> =
    LazyLock::new(|| Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 16))));
static LEADER_CHANGES: LazyLock<Counter> = LazyLock::new(Counter::default);
static PROPOSALS_FAILED: LazyLock<Counter> = LazyLock::new(Counter::default);
static FORWARDED_WRITES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Registers the replication layer's metrics.
pub fn register(registry: &mut Registry) {
    crate::peer_auth::register(registry);
    crate::reseal::register(registry);
    registry.register(
        "etcd_disk_wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL",
        WAL_FSYNC.clone(),
    );
    registry.register(
        "etcd_disk_backend_commit_duration_seconds",
        "The latency distributions of commit called by backend (one applied batch)",
        BACKEND_COMMIT.clone(),
    );
    registry.register(
        "cairn_apply_duration_seconds",
        "Time to apply one batch of committed entries to the state machine, its commit included",
        APPLY.clone(),
    );
    registry.register(
        "etcd_network_peer_round_trip_time_seconds",
        "Round-trip-time histogram between peers (a small peer request every 5 s)",
        PEER_RTT.clone(),
    );
    registry.register(
        "etcd_server_leader_changes_seen",
        "The number of leader changes seen",
        LEADER_CHANGES.clone(),
    );
    registry.register(
        "etcd_server_proposals_failed",
        "The total number of failed proposals seen",
        PROPOSALS_FAILED.clone(),
    );
    registry.register(
        "cairn_wal_appends_per_fsync",
        "Log appends made durable by one WAL fsync (group commit)",
        APPENDS_PER_FSYNC.clone(),
    );
    registry.register(
        "cairn_apply_batch_entries",
        "Log entries applied in one state-machine batch",
        ENTRIES_PER_APPLY.clone(),
    );
    registry.register(
        "cairn_forwarded_writes",
        "Writes this member handed to the leader",
        FORWARDED_WRITES.clone(),
    );
}

/// A round trip to member `to` (etcd labels it `To`, the member id in hex).
pub(crate) fn record_peer_round_trip(to: u64, took: Duration) {
    PEER_RTT.get_or_create(&vec![("To".to_string(), format!("{to:x}"))]).observe(took.as_secs_f64());
}

pub(crate) fn record_leader_change() {
    LEADER_CHANGES.inc();
}

pub(crate) fn record_failed_proposal() {
    PROPOSALS_FAILED.inc();
}

pub(crate) fn record_forwarded_write() {
    FORWARDED_WRITES.inc();
}

static WAL_SYNCS: AtomicU64 = AtomicU64::new(0);
static APPENDS_SYNCED: AtomicU64 = AtomicU64::new(0);
static ENTRIES_APPLIED: AtomicU64 = AtomicU64::new(0);
static APPLY_BATCHES: AtomicU64 = AtomicU64::new(0);

pub(crate) fn record_wal_sync(appends: usize, took: Duration) {
    WAL_FSYNC.observe(took.as_secs_f64());
    APPENDS_PER_FSYNC.observe(appends as f64);
    WAL_SYNCS.fetch_add(1, Ordering::Relaxed);
    APPENDS_SYNCED.fetch_add(appends as u64, Ordering::Relaxed);
}

pub(crate) fn record_apply(entries: usize, apply_took: Duration, commit_took: Duration) {
    APPLY.observe(apply_took.as_secs_f64());
    BACKEND_COMMIT.observe(commit_took.as_secs_f64());
    ENTRIES_PER_APPLY.observe(entries as f64);
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
