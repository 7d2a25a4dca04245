//! Lease timers: the one clock that decides when leases expire. Which leases exist is
//! stored state (the MVCC `leases` family); when each one expires is decided here, by one
//! member alone (the Raft leader; the only process of an unreplicated backend), as etcd's
//! lessor does:
//! - every member mirrors the applied leases (granted/revoked on apply, reloaded from the
//!   store at start and after a snapshot), so a new leader has them all;
//! - only the leader ("primary") renews and expires: keepalives reach it wherever they are
//!   sent, and an expired lease becomes a replicated revoke;
//! - a member that becomes leader restarts every timer at `now + TTL + election timeout`,
//!   so no lease expires early because its keepalives went to the old leader.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock: the real one in a process, the virtual one in a simulation.
use tokio::time::Instant;

use cairn_proto::etcdserverpb::{LeaseGrantRequest, LeaseGrantResponse};

use crate::error::{BackendError, RequestError};
use crate::request::{Lease, WriteRequest, WriteResponse};

/// A lease grant as every backend makes it: the TTL raised to `min_ttl`; id 0 lets the
/// backend choose one, random in [1, 2^63), a collision tried again with another (five
/// tries). `write` applies one grant (replicated or not).
pub async fn grant<F, Fut>(
    id: i64,
    ttl: i64,
    min_ttl: i64,
    mut write: F,
) -> Result<LeaseGrantResponse, BackendError>
where
    F: FnMut(WriteRequest) -> Fut,
    Fut: std::future::Future<Output = Result<WriteResponse, BackendError>>,
{
    let ttl = ttl.max(min_ttl);
    let chosen_here = id == 0;
    for _ in 0..5 {
        let id = if chosen_here { (crate::sim::random_u64() >> 1).max(1) as i64 } else { id };
        match write(WriteRequest::LeaseGrant(LeaseGrantRequest { ttl, id })).await {
            Ok(WriteResponse::LeaseGrant(r)) => return Ok(r),
            Ok(other) => return Err(BackendError::Corrupt(format!("a lease grant answered {other:?}"))),
            Err(BackendError::Request(RequestError::LeaseExists)) if chosen_here => continue,
            Err(e) => return Err(e),
        }
    }
    Err(RequestError::LeaseExists.into())
}

/// How long an expired lease waits for its revoke before it is proposed again.
const REVOKE_RETRY: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseError {
    /// This member is not the leader: ask the leader.
    NotPrimary,
    /// No such lease (or it has expired and its revoke is under way).
    NotFound,
}

#[derive(Debug)]
struct Timer {
    ttl: i64,
    deadline: Instant,
    /// When a revoke for this expired lease was last proposed.
    revoking: Option<Instant>,
}

#[derive(Debug, Default)]
struct Timers {
    primary: bool,
    leases: HashMap<i64, Timer>,
}

/// The lease timers of one member.
#[derive(Debug)]
pub struct Lessor {
    timers: Mutex<Timers>,
    /// A new leader's grace on top of each TTL (etcd: the election timeout).
    extend: Duration,
    /// The smallest TTL a grant gets, in seconds.
    min_ttl: i64,
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

impl Lessor {
    /// `heartbeat` and `election_timeout` give etcd's minimum TTL:
    /// ⌈(3 × election ticks / 2) × heartbeat⌉ in seconds.
    pub fn new(heartbeat: Duration, election_timeout: Duration) -> Lessor {
        let heartbeat_ms = heartbeat.as_millis().max(1) as u64;
        let ticks = (election_timeout.as_millis() as u64 / heartbeat_ms).max(1);
        let min_ms = (3 * ticks / 2) * heartbeat_ms;
        Lessor {
            timers: Mutex::default(),
            extend: election_timeout,
            min_ttl: min_ms.div_ceil(1000).max(1) as i64,
        }
    }

    pub fn min_ttl(&self) -> i64 {
        self.min_ttl
    }

    /// How many leases are live (granted and not yet revoked or expired).
    pub fn count(&self) -> usize {
        self.lock().leases.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Timers> {
        self.timers.lock().expect("lessor lock poisoned")
    }

    /// Replace the mirrored leases (at start and after installing a snapshot).
    pub fn reload(&self, leases: &[Lease]) {
        let now = Instant::now();
        let mut t = self.lock();
        let grace = if t.primary { self.extend } else { Duration::ZERO };
        t.leases = leases
            .iter()
            .map(|l| {
                (l.id, Timer { ttl: l.ttl, deadline: now + ttl_duration(l.ttl) + grace, revoking: None })
            })
            .collect();
    }

    /// A grant was applied.
    pub fn granted(&self, id: i64, ttl: i64) {
        let timer = Timer { ttl, deadline: Instant::now() + ttl_duration(ttl), revoking: None };
        self.lock().leases.insert(id, timer);
    }

    /// A revoke was applied.
    pub fn revoked(&self, id: i64) {
        self.lock().leases.remove(&id);
    }

    /// This member became leader: restart every timer with the election timeout as grace.
    pub fn promote(&self) {
        let now = Instant::now();
        let mut t = self.lock();
        t.primary = true;
        for timer in t.leases.values_mut() {
            timer.deadline = now + ttl_duration(timer.ttl) + self.extend;
            timer.revoking = None;
        }
    }

    /// Only for fault injection (`cairn_raft::fault`'s `follower-lease-clock`, a bug the
    /// simulation must find): become leader keeping the deadlines this member set as a
    /// follower, which no keepalive moved.
    #[doc(hidden)]
    pub fn promote_keeping_follower_deadlines(&self) {
        self.lock().primary = true;
    }

    /// This member stopped being leader.
    pub fn demote(&self) {
        self.lock().primary = false;
    }

    pub fn is_primary(&self) -> bool {
        self.lock().primary
    }

    /// A keepalive: restart the lease's timer; returns its TTL.
    pub fn renew(&self, id: i64) -> Result<i64, LeaseError> {
        let now = Instant::now();
        let mut t = self.lock();
        if !t.primary {
            return Err(LeaseError::NotPrimary);
        }
        let timer = t.leases.get_mut(&id).ok_or(LeaseError::NotFound)?;
        if timer.revoking.is_some() || timer.deadline <= now {
            return Err(LeaseError::NotFound);
        }
        timer.deadline = now + ttl_duration(timer.ttl);
        Ok(timer.ttl)
    }

    /// (whole seconds left, granted TTL) of a lease, as the leader sees it.
    pub fn remaining(&self, id: i64) -> Result<(i64, i64), LeaseError> {
        let now = Instant::now();
        let t = self.lock();
        if !t.primary {
            return Err(LeaseError::NotPrimary);
        }
        let timer = t.leases.get(&id).ok_or(LeaseError::NotFound)?;
        Ok((timer.deadline.saturating_duration_since(now).as_secs() as i64, timer.ttl))
    }

    /// Leases whose time is up and whose revoke should be proposed now (at most `max`).
    /// Empty unless this member is the leader.
    pub fn take_expired(&self, max: usize) -> Vec<i64> {
        let now = Instant::now();
        let mut t = self.lock();
        if !t.primary {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (id, timer) in t.leases.iter_mut() {
            if out.len() >= max {
                break;
            }
            let due = timer.deadline <= now && timer.revoking.is_none_or(|at| now >= at + REVOKE_RETRY);
            if due {
                timer.revoking = Some(now);
                out.push(*id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lessor() -> Lessor {
        Lessor::new(Duration::from_millis(100), Duration::from_millis(1000))
    }

    #[test]
    fn min_ttl_follows_etcd() {
        assert_eq!(lessor().min_ttl(), 2); // 15 ticks of 100 ms = 1.5 s, rounded up
        assert_eq!(Lessor::new(Duration::from_millis(100), Duration::from_millis(3000)).min_ttl(), 5);
        assert_eq!(Lessor::new(Duration::from_millis(50), Duration::from_millis(300)).min_ttl(), 1);
    }

    #[test]
    fn only_the_primary_renews_and_expires() {
        let l = lessor();
        l.granted(1, 0);
        assert_eq!(l.renew(1), Err(LeaseError::NotPrimary));
        assert!(l.take_expired(10).is_empty());
        l.promote();
        // Promotion grants the election timeout on top of the TTL.
        assert_eq!(l.remaining(1), Ok((0, 0)));
        assert!(l.take_expired(10).is_empty());
        std::thread::sleep(Duration::from_millis(1050));
        assert_eq!(l.take_expired(10), vec![1]);
        assert!(l.take_expired(10).is_empty(), "a revoke under way is not proposed twice at once");
        assert_eq!(l.renew(1), Err(LeaseError::NotFound), "an expired lease cannot be kept alive");
        l.revoked(1);
        assert_eq!(l.remaining(1), Err(LeaseError::NotFound));
        l.granted(2, 30);
        assert_eq!(l.renew(2), Ok(30));
        assert_eq!(l.remaining(2), Ok((29, 30)));
        l.demote();
        assert_eq!(l.renew(2), Err(LeaseError::NotPrimary));
    }
}
