//! The state machine's applied log index, and waiters for it: a forwarded write waits until
//! this member applied it, a linearizable read until the read index is applied. Each waiter
//! is woken once, when its index is applied (openraft's `Raft::wait` watches the full metrics
//! instead, which change several times per write: every waiter was woken for every change).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

/// Why a wait ended without the index applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    Timeout,
    /// The state machine is gone (the member stopped).
    Stopped,
}

/// The applied index; clones share it. The state machine advances it; dropping the last
/// [`AppliedIndex::publisher`] ends every wait with [`WaitError::Stopped`].
#[derive(Clone, Default)]
pub struct AppliedIndex {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    applied: u64,
    /// Waiters by the index they wait for.
    waiting: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
    stopped: bool,
}

/// Advances an [`AppliedIndex`]; held by the state machine. Dropped: waits end.
pub struct Publisher {
    inner: Arc<Mutex<Inner>>,
}

impl AppliedIndex {
    /// Starting at `applied`.
    pub fn new(applied: u64) -> AppliedIndex {
        let index = AppliedIndex::default();
        index.lock().applied = applied;
        index
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The one publisher (the state machine's).
    pub fn publisher(&self) -> Publisher {
        Publisher { inner: self.inner.clone() }
    }

    pub fn get(&self) -> u64 {
        self.lock().applied
    }

    /// Until `index` is applied here, for at most `timeout`.
    pub async fn wait_for(&self, index: u64, timeout: Duration) -> Result<(), WaitError> {
        let applied = {
            let mut inner = self.lock();
            if inner.applied >= index {
                return Ok(());
            }
            if inner.stopped {
                return Err(WaitError::Stopped);
            }
            let (tx, rx) = oneshot::channel();
            inner.waiting.entry(index).or_default().push(tx);
            rx
        };
        match tokio::time::timeout(timeout, applied).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(WaitError::Stopped),
            // The abandoned sender stays until its index is applied or the member stops:
            // a timeout is rare, and a sender without a receiver costs only its slot.
            Err(_) => Err(WaitError::Timeout),
        }
    }
}

impl Publisher {
    /// Everything up to `index` is applied (an installed snapshot may move it either way:
    /// waiters are woken only for indexes at or below it).
    pub fn applied(&self, index: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.applied = index;
        let later = inner.waiting.split_off(&(index + 1));
        let reached = std::mem::replace(&mut inner.waiting, later);
        drop(inner);
        for tx in reached.into_values().flatten() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.stopped = true;
        // Dropping the senders ends every wait.
        inner.waiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_is_woken_when_its_index_is_applied_not_before() {
        let index = AppliedIndex::new(3);
        let publisher = index.publisher();
        assert_eq!(index.wait_for(3, Duration::from_millis(1)).await, Ok(()));
        let waiter = tokio::spawn({
            let index = index.clone();
            async move { index.wait_for(5, Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        publisher.applied(4);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        publisher.applied(6);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(index.get(), 6);
    }

    #[tokio::test]
    async fn a_wait_times_out_and_ends_when_the_state_machine_stops() {
        let index = AppliedIndex::new(0);
        let publisher = index.publisher();
        assert_eq!(index.wait_for(1, Duration::from_millis(10)).await, Err(WaitError::Timeout));
        let waiter = tokio::spawn({
            let index = index.clone();
            async move { index.wait_for(1, Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        drop(publisher);
        assert_eq!(waiter.await.unwrap(), Err(WaitError::Stopped));
        assert_eq!(index.wait_for(1, Duration::from_secs(10)).await, Err(WaitError::Stopped));
    }
}
