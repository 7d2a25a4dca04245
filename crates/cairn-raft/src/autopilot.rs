//! The leader's autopilot: promote a learner to voter once it is healthy — caught up to
//! within [`Promotion::max_lag`] log entries of the leader and heard from within an election
//! timeout — continuously for [`Promotion::stable_for`], and only if it asked to be promoted
//! (it publishes `stay_learner = false`, the default of `--auto-promote`). One change at a
//! time, through Raft's joint consensus.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

// tokio's clock: the real one in a process, the virtual one in a simulation.
use tokio::time::Instant;

use cairn_mvcc::MvccStore;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::{ChangeMembers, ServerState};

use crate::types::{NodeId, Raft};

/// When a learner is promoted (Consul's autopilot defaults: 250 entries, 10 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promotion {
    /// Most log entries a healthy learner may trail the leader by.
    pub max_lag: u64,
    /// How long a learner must stay healthy before it is promoted.
    pub stable_for: Duration,
}

impl Default for Promotion {
    fn default() -> Self {
        Promotion { max_lag: 250, stable_for: Duration::from_secs(10) }
    }
}

/// The metrics the leader keeps of every member's replication.
pub(crate) type Metrics = openraft::RaftMetrics<crate::types::TypeConfig>;

/// The last log index the leader knows member `id` holds (0 if unknown).
pub(crate) fn matched_index(m: &Metrics, id: NodeId) -> u64 {
    m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map_or(0, |l| l.index)
}

/// Whether the leader heard from member `id` within `contact` (the leader itself: always).
pub(crate) fn heard_within(m: &Metrics, id: NodeId, contact: Duration) -> bool {
    id == m.id
        || m.heartbeat
            .as_ref()
            .and_then(|h| h.get(&id).cloned().flatten())
            .is_some_and(|at| openraft::Instant::elapsed(&*at) <= contact)
}

/// Whether member `id` is in sync with the leader: at most `max_lag` entries behind and
/// heard from within `contact` (what promotion asks of a learner, automatic or not).
pub(crate) fn in_sync(m: &Metrics, id: NodeId, max_lag: u64, contact: Duration) -> bool {
    m.last_log_index.unwrap_or(0).saturating_sub(matched_index(m, id)) <= max_lag
        && heard_within(m, id, contact)
}

/// Run until the task is aborted: on the leader, promote healthy learners that want it.
pub(crate) async fn promote_learners(raft: Raft, store: MvccStore, policy: Promotion, contact: Duration) {
    let mut healthy_since: BTreeMap<NodeId, Instant> = BTreeMap::new();
    let period = (policy.stable_for / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let m = raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            healthy_since.clear();
            continue;
        }
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners: Vec<NodeId> =
            membership.nodes().map(|(id, _)| *id).filter(|id| !voters.contains(id)).collect();
        healthy_since.retain(|id, _| learners.contains(id));
        if learners.is_empty() {
            continue;
        }
        let now = Instant::now();
        for id in &learners {
            if in_sync(&m, *id, policy.max_lag, contact) {
                healthy_since.entry(*id).or_insert(now);
            } else {
                healthy_since.remove(id);
            }
        }
        let stable: Vec<NodeId> = learners
            .iter()
            .copied()
            .filter(|id| {
                healthy_since.get(id).is_some_and(|since| now.duration_since(*since) >= policy.stable_for)
            })
            .collect();
        if stable.is_empty() {
            continue;
        }
        let published = {
            let store = store.clone();
            match cairn_core::sim::run_blocking(move || crate::members::published(&store)).await {
                Ok(Ok(published)) => published,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "autopilot: reading member attributes failed");
                    continue;
                }
                Err(_) => return,
            }
        };
        // A learner that has not published yet has not said what it wants: wait for it.
        let Some(id) = stable.into_iter().find(|id| published.iter().any(|a| a.id == *id && !a.stay_learner))
        else {
            continue;
        };
        match raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await {
            Ok(_) => tracing::info!(member_id = format!("{id:x}"), "autopilot: promoted a learner to voter"),
            Err(e) => {
                tracing::info!(member_id = format!("{id:x}"), error = %e, "autopilot: promotion not done; trying again")
            }
        }
        healthy_since.remove(&id);
    }
}

/// Optional dead-member cleanup (off by default): the leader removes a member it has not
/// heard from for [`DeadMembers::after`], one at a time, and never a voter when fewer than
/// [`DeadMembers::min_voters`] would remain or the voters left would not have a quorum in
/// contact. A new leader starts counting afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadMembers {
    pub after: Duration,
    pub min_voters: usize,
}

/// Run until the task is aborted: on the leader, remove members out of contact too long.
pub(crate) async fn remove_dead_members(raft: Raft, policy: DeadMembers, contact: Duration) {
    let mut silent_since: BTreeMap<NodeId, Instant> = BTreeMap::new();
    let mut tick =
        tokio::time::interval((policy.after / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let m = raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            silent_since.clear();
            continue;
        }
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members: Vec<NodeId> = membership.nodes().map(|(id, _)| *id).filter(|id| *id != m.id).collect();
        silent_since.retain(|id, _| members.contains(id));
        let now = Instant::now();
        for id in &members {
            if heard_within(&m, *id, contact) {
                silent_since.remove(id);
            } else {
                silent_since.entry(*id).or_insert(now);
            }
        }
        let removable = |id: &NodeId| {
            if !voters.contains(id) {
                return true;
            }
            let left: Vec<NodeId> = voters.iter().copied().filter(|v| v != id).collect();
            let in_contact = left.iter().filter(|v| heard_within(&m, **v, contact)).count();
            left.len() >= policy.min_voters && in_contact > left.len() / 2
        };
        let dead = silent_since
            .iter()
            .filter(|(id, since)| now.duration_since(**since) >= policy.after && removable(id))
            .map(|(id, _)| *id)
            .next();
        let Some(id) = dead else { continue };
        let change = if voters.contains(&id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        match raft.change_membership(change, false).await {
            Ok(_) => {
                tracing::warn!(
                    member_id = format!("{id:x}"),
                    after_s = policy.after.as_secs(),
                    "autopilot: removed a member out of contact"
                );
                silent_since.remove(&id);
            }
            Err(e) => {
                tracing::info!(member_id = format!("{id:x}"), error = %e, "autopilot: removal not done; trying again")
            }
        }
    }
}
