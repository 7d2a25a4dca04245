//! After a cluster key rotation (or once a prefix is made secret), each member re-seals what
//! it stores with the current key, online: the values under the secret prefixes in bounded
//! steps run by the state machine between applies, then a snapshot, a purge of the log
//! entries written before, and a compaction of the files that still held the old forms.
//! Nothing is replicated: the data does not change, only how this member stores it.
//!
//! When it is done the member logs it and `cairn_reseal_pending` drops to 0: its data
//! directory no longer needs the previous key, which can then be dropped from its start.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use cairn_mvcc::{MvccError, MvccStore, ResealCursor, ResealStep};
use openraft::async_runtime::watch::WatchReceiver;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::types::{Raft, TypeConfig};

/// Rows looked at in one step (one state-machine turn between two apply batches).
const ROWS_PER_STEP: usize = 1000;
/// The pause between two steps, so that applies keep their pace during a long pass.
const PAUSE: Duration = Duration::from_millis(5);
/// How long to wait for the snapshot and the purge that drop the old log entries.
const SETTLE: Duration = Duration::from_secs(120);
/// How long to wait for a requested snapshot before asking again.
const RETRIGGER: Duration = Duration::from_secs(5);

static RESEALED: LazyLock<Counter<u64, AtomicU64>> = LazyLock::new(Counter::default);
static PENDING: LazyLock<Gauge<i64, AtomicI64>> = LazyLock::new(Gauge::default);

pub(crate) fn register(registry: &mut Registry) {
    registry.register(
        "cairn_values_resealed",
        "Stored values this member sealed again with the current cluster key (after a rotation, or a prefix made secret)",
        RESEALED.clone(),
    );
    registry.register(
        "cairn_reseal_pending",
        "1 while this member still stores something sealed with a previous cluster key (or in the clear under a secret prefix); 0 when the previous key is no longer needed",
        PENDING.clone(),
    );
}

/// Why the pass stopped before its end.
#[derive(Debug, thiserror::Error)]
enum ResealError {
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    #[error("raft stopped: {0}")]
    Stopped(String),
}

/// One pass over this member's stored values, then the log and the files (see the module).
pub(crate) async fn reseal(raft: Raft, store: MvccStore, compact_log: Arc<dyn Fn() + Send + Sync>) {
    let Some(sealer) = store.sealer() else { return };
    let rotating = sealer.has_previous();
    let key_id = sealer.current_key_id();
    PENDING.set(1);
    let start_last_log = raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
    let resealed = match pass(&raft).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "re-sealing stored values stopped; the next start resumes it");
            return;
        }
    };
    if resealed > 0 || rotating {
        tracing::info!(
            resealed,
            key_id,
            "stored values re-sealed with the current key; dropping the log entries and files written before"
        );
        if let Err(why) = drop_older_log(&raft, start_last_log).await {
            tracing::warn!(%why, "the log entries written before the rotation are still kept; the next start tries again");
            return;
        }
        let compact = tokio::task::spawn_blocking(move || {
            compact_log();
            store.engine().compact_storage()
        });
        match compact.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return tracing::warn!(error = %e, "compacting after re-sealing"),
            Err(e) => return tracing::warn!(error = %e, "compacting after re-sealing"),
        }
    }
    PENDING.set(0);
    if rotating {
        tracing::info!(
            key_id,
            "re-sealing done: this member's data directory no longer needs the previous cluster key"
        );
    }
}

async fn pass(raft: &Raft) -> Result<u64, ResealError> {
    let mut cursor = ResealCursor::default();
    let mut resealed = 0;
    loop {
        let (back, step) = raft
            .with_state_machine(move |sm| {
                Box::pin(async move {
                    let step = sm.reseal_step(&mut cursor, ROWS_PER_STEP);
                    (cursor, step)
                })
            })
            .await
            .map_err(|e| ResealError::Stopped(e.to_string()))?;
        let ResealStep { resealed: n, done, .. } = step?;
        cursor = back;
        resealed += n;
        RESEALED.inc_by(n);
        if done {
            return Ok(resealed);
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// A snapshot that covers every entry this member held when it started (the ones sealed
/// with the previous key), and a purge of the log up to it.
async fn drop_older_log(raft: &Raft, start_last_log: u64) -> Result<(), String> {
    let applied = raft.metrics().borrow_watched().last_applied.map_or(0, |l| l.index);
    let upto = applied.max(start_last_log);
    // The log may hold entries not applied yet (e.g. the blank entry of a new leader): a
    // snapshot built before they are applied would stop short of them, and with no more
    // writes nothing would build the next one.
    wait_metrics(raft, SETTLE, |m| m.last_applied.filter(|l| l.index >= upto).map(|_| ()))
        .await
        .ok_or_else(|| format!("log index {upto} was not applied within {SETTLE:?}"))?;
    let deadline = tokio::time::Instant::now() + SETTLE;
    let covered = loop {
        // A trigger while another snapshot is being built may be dropped: ask again.
        raft.trigger().snapshot().await.map_err(|e| e.to_string())?;
        let covered =
            wait_metrics(raft, RETRIGGER, |m| m.snapshot.filter(|s| s.index >= upto).map(|s| s.index)).await;
        if let Some(covered) = covered {
            break covered;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no snapshot reached log index {upto} within {SETTLE:?}"));
        }
    };
    raft.trigger().purge_log(covered).await.map_err(|e| e.to_string())?;
    wait_metrics(raft, SETTLE, |m| m.purged.filter(|p| p.index >= covered).map(|_| ()))
        .await
        .ok_or_else(|| format!("the log was not purged up to {covered} within {SETTLE:?}"))
}

/// The first `Some` that `seen` makes of Raft's metrics within `within`.
async fn wait_metrics<T>(
    raft: &Raft,
    within: Duration,
    seen: impl Fn(&openraft::RaftMetrics<TypeConfig>) -> Option<T>,
) -> Option<T> {
    let mut metrics = raft.metrics();
    tokio::time::timeout(within, async {
        loop {
            if let Some(found) = seen(&metrics.borrow_watched()) {
                return Some(found);
            }
            metrics.changed().await.ok()?;
        }
    })
    .await
    .ok()
    .flatten()
}
