//! Test-only fault injection: deliberate consistency bugs that the chaos harness
//! (`jepsen/`, `cairn-jepsen`) must catch. Compiled only with the `fault-injection` cargo
//! feature, which no default or release build enables. A test build of the whole workspace
//! (`cargo test --workspace`) does enable it, through `cairn-jepsen`'s dev-dependency, so that
//! the `cairn-faulty` binary (`required-features = ["fault-injection"]`) gets built; the
//! `cairn` binary of that build then contains this code too, but inert: a fault is only ever
//! active after [`arm`], which only `cairn-faulty`'s `main` calls. `cairn` ignores
//! `CAIRN_FAULT` (with a warning), so a real server can never run a fault.
//!
//! In an armed process the fault is chosen at start by the `CAIRN_FAULT` environment variable:
//!
//! - `stale-read`: [`crate::RaftNode::linearize`] returns at once, without asking the leader
//!   for a read index, so "linearizable" reads are served from this member's local state
//!   (which may lag behind, or be a partitioned minority's).
//! - `ack-before-commit`: on the leader, [`crate::RaftNode::write`] computes the response on
//!   the local state machine, acknowledges it at once and proposes the write in the
//!   background; the client is told "done" before a quorum has the entry (and if the leader
//!   dies or loses leadership first, an acknowledged write is lost or applied differently).
//! - `unsynced-append`: the log store reports an append durable as soon as it is written,
//!   before the sync (which follows shortly): a member acknowledges entries to the leader
//!   that a crash can still take from it, so a crash of the wrong members loses a committed
//!   write. Only a crash that loses unsynced writes shows it (cairn-sim's simulated disk).
//! - `follower-lease-clock`: a member that becomes leader keeps the lease deadlines it
//!   had as a follower (set when each grant was applied, never moved by keepalives, which
//!   only the leader sees) instead of restarting them: expiry decided by a follower's
//!   clock, so after a leader change a lease kept alive all along expires early. Only a
//!   leader change while leases are kept alive shows it (cairn-sim's lease workload).
//! - unset or `none`: no fault (the binary behaves as `cairn`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use cairn_core::{WriteRequest, WriteResponse};
use cairn_mvcc::MvccStore;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;

use crate::types::{Command, Raft};
use cairn_core::BackendError;

/// Environment variable naming the fault.
pub const FAULT_ENV: &str = "CAIRN_FAULT";

/// The injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    StaleRead,
    AckBeforeCommit,
    UnsyncedAppend,
    FollowerLeaseClock,
}

static ARMED: AtomicBool = AtomicBool::new(false);

/// Lets [`FAULT_ENV`] choose a fault in this process. Called only by the `cairn-faulty`
/// binary's `main`, before anything else runs; without it every hook takes the correct path.
pub fn arm() {
    ARMED.store(true, Ordering::SeqCst);
}

/// The fault this process runs with (read once from [`FAULT_ENV`]; always [`Fault::None`]
/// unless [`arm`] was called first).
///
/// # Panics
/// On an unknown fault name in an armed process: a typo must not silently run the correct code.
pub fn current() -> Fault {
    static FAULT: OnceLock<Fault> = OnceLock::new();
    *FAULT.get_or_init(|| {
        let name = std::env::var(FAULT_ENV).unwrap_or_default();
        if !ARMED.load(Ordering::SeqCst) {
            if !name.is_empty() {
                tracing::warn!(
                    "{FAULT_ENV}={name:?} ignored: only the cairn-faulty test binary injects faults"
                );
            }
            return Fault::None;
        }
        let fault = match name.as_str() {
            "" | "none" => Fault::None,
            "stale-read" => Fault::StaleRead,
            "ack-before-commit" => Fault::AckBeforeCommit,
            "unsynced-append" => Fault::UnsyncedAppend,
            "follower-lease-clock" => Fault::FollowerLeaseClock,
            other => panic!(
                "{FAULT_ENV}={other:?}: expected none, stale-read, ack-before-commit, unsynced-append \
                 or follower-lease-clock"
            ),
        };
        tracing::warn!(?fault, "FAULT INJECTION BUILD: this binary is for testing the test harness only");
        fault
    })
}

/// Hook of `LogStore::append`: `true` when the append must be reported durable at once.
pub(crate) fn unsynced_append() -> bool {
    current() == Fault::UnsyncedAppend
}

/// Hook of the lease timers' leadership tracking: `true` when a new leader must keep its
/// follower deadlines.
pub(crate) fn follower_lease_clock() -> bool {
    current() == Fault::FollowerLeaseClock
}

/// Hook of `RaftNode::linearize`: `true` when the read barrier must be skipped.
pub(crate) fn skip_read_index() -> bool {
    current() == Fault::StaleRead
}

/// Hook of `RaftNode::write`: with `ack-before-commit` on the leader, the response computed
/// on local state (nothing is written locally) while the real proposal runs in the
/// background. `None`: take the normal path.
pub(crate) fn ack_before_commit(
    raft: &Raft,
    store: &MvccStore,
    req: &WriteRequest,
) -> Option<Result<WriteResponse, BackendError>> {
    if current() != Fault::AckBeforeCommit || raft.metrics().borrow_watched().state != ServerState::Leader {
        return None;
    }
    // Evaluate on the current local state without committing the batch: what the client is
    // told is a guess, exactly the bug being injected.
    let guess = store.begin_apply().and_then(|mut batch| batch.apply(req));
    let raft = raft.clone();
    let command = Command::Write(req.clone());
    tokio::spawn(async move {
        let _ = raft.client_write(command).await;
    });
    Some(guess.map_err(BackendError::from))
}
