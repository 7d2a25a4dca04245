//! The leader's corruption check (etcd's periodic HashKV comparison): every interval the
//! leader hashes its key-value history up to its applied revision and asks every other
//! member for its hash at that same revision (each waits briefly until it has applied it).
//! Hashes are compared only between members with the same compacted revision. A member
//! whose hash differs from the one a majority of the voters hold — or, with no majority,
//! from the leader's, as etcd decides — gets etcd's CORRUPT alarm, which stops every write
//! in the cluster until an operator has looked (`etcdctl alarm list`).
//!
//! Members before 0.3 do not answer the question (Unimplemented): they are left out.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_mvcc::MvccStore;
use openraft::async_runtime::watch::WatchReceiver;
use tonic::Status;

use crate::alarms::Raised;
use crate::network::PeerChannels;
use crate::pb::{AlarmChange, PeerHashKvRequest, PeerHashKvResponse};
use crate::types::{NodeId, Raft};

/// etcd's AlarmType CORRUPT.
const CORRUPT: i32 = 2;
/// How long a member waits to apply the revision it is asked to hash.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// This member's hash at `revision` (0: its applied revision), once it has applied it.
pub(crate) async fn hash_at(
    store: &MvccStore,
    mut applied: tokio::sync::watch::Receiver<i64>,
    revision: i64,
) -> Result<PeerHashKvResponse, Status> {
    if revision > 0 {
        let reached = tokio::time::timeout(APPLY_WAIT, applied.wait_for(|r| *r >= revision)).await;
        if !matches!(reached, Ok(Ok(_))) {
            return Err(Status::unavailable(format!("revision {revision} is not applied here yet")));
        }
    }
    let store = store.clone();
    let hashed = cairn_core::sim::run_blocking(move || store.hash_kv(revision))
        .await
        .map_err(|e| Status::unavailable(format!("hashing stopped: {e}")))?
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    Ok(PeerHashKvResponse {
        hash: hashed.hash,
        compact_revision: hashed.compact_revision,
        revision: hashed.revision,
    })
}

/// Run until aborted: as leader, compare the members' hashes every `interval`.
pub(crate) async fn check_periodically(
    raft: Raft,
    store: MvccStore,
    channels: PeerChannels,
    raised: Raised,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: let the cluster settle first
    loop {
        tick.tick().await;
        let metrics = raft.metrics().borrow_watched().clone();
        if metrics.current_leader != Some(metrics.id) {
            continue;
        }
        match check_once(&store, &channels, &metrics).await {
            Ok(diverged) => {
                for id in diverged {
                    let already = raised.read().unwrap_or_else(|e| e.into_inner()).contains(&(id, CORRUPT));
                    if already {
                        continue;
                    }
                    let change = AlarmChange { member_id: id, alarm: CORRUPT, activate: true };
                    if let Err(e) = crate::leader::set_alarm(&raft, change).await {
                        tracing::warn!(member_id = format!("{id:x}"), error = ?e, "could not raise the CORRUPT alarm");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "corruption check skipped"),
        }
    }
}

/// One comparison; the members found diverged.
async fn check_once(
    store: &MvccStore,
    channels: &PeerChannels,
    metrics: &crate::autopilot::Metrics,
) -> Result<Vec<NodeId>, String> {
    let own = {
        let store = store.clone();
        cairn_core::sim::run_blocking(move || store.hash_kv(0))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let membership = metrics.membership_config.membership().clone();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let asks = membership.nodes().filter(|(id, _)| **id != metrics.id).map(|(id, node)| {
        let (id, addr) = (*id, node.peer_addr.clone());
        async move {
            let mut client = channels.client(&addr).map_err(|e| e.to_string())?;
            let mut req = tonic::Request::new(PeerHashKvRequest { revision: own.revision });
            req.set_timeout(APPLY_WAIT + Duration::from_secs(5));
            let answer = client.hash_kv(req).await.map_err(|s| s.message().to_string())?.into_inner();
            Ok::<_, String>((id, answer))
        }
    });
    let mut hashes = BTreeMap::from([(metrics.id, own.hash)]);
    for answer in futures::future::join_all(asks).await {
        match answer {
            Ok((id, h)) if h.revision == own.revision && h.compact_revision == own.compact_revision => {
                hashes.insert(id, h.hash);
            }
            Ok((id, h)) => tracing::debug!(
                member_id = format!("{id:x}"),
                compact_revision = h.compact_revision,
                "corruption check: member compacted differently, not compared"
            ),
            Err(e) => tracing::debug!(error = %e, "corruption check: a member did not answer"),
        }
    }
    let diverged = diverged(&hashes, &voters, metrics.id);
    if diverged.is_empty() {
        tracing::debug!(revision = own.revision, members = hashes.len(), "corruption check: hashes agree");
    } else {
        let seen: Vec<String> = hashes.iter().map(|(id, h)| format!("{id:x}={h:08x}")).collect();
        tracing::error!(
            revision = own.revision,
            compact_revision = own.compact_revision,
            hashes = %seen.join(","),
            diverged = %diverged.iter().map(|id| format!("{id:x}")).collect::<Vec<_>>().join(","),
            "members' key-value histories differ at one revision: raising the CORRUPT alarm"
        );
    }
    Ok(diverged)
}

/// The members whose hash differs from the one held by a majority of `voters`; with no
/// such majority, those that differ from the `leader`'s hash.
fn diverged(hashes: &BTreeMap<NodeId, u32>, voters: &[NodeId], leader: NodeId) -> Vec<NodeId> {
    let mut votes: BTreeMap<u32, usize> = BTreeMap::new();
    for id in voters {
        if let Some(h) = hashes.get(id) {
            *votes.entry(*h).or_default() += 1;
        }
    }
    let majority = votes.iter().find(|(_, n)| **n > voters.len() / 2).map(|(h, _)| *h);
    let Some(good) = majority.or_else(|| hashes.get(&leader).copied()) else { return Vec::new() };
    hashes.iter().filter(|(_, h)| **h != good).map(|(id, _)| *id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(pairs: &[(NodeId, u32)]) -> BTreeMap<NodeId, u32> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn agreeing_members_are_not_diverged() {
        assert!(diverged(&hashes(&[(1, 7), (2, 7), (3, 7)]), &[1, 2, 3], 1).is_empty());
    }

    #[test]
    fn the_minority_is_diverged_even_when_it_is_the_leader() {
        assert_eq!(diverged(&hashes(&[(1, 7), (2, 7), (3, 9)]), &[1, 2, 3], 1), vec![3]);
        assert_eq!(diverged(&hashes(&[(1, 9), (2, 7), (3, 7)]), &[1, 2, 3], 1), vec![1]);
    }

    #[test]
    fn without_a_majority_the_leader_decides() {
        // Two of three answered and disagree: etcd's rule, the leader's hash is the reference.
        assert_eq!(diverged(&hashes(&[(1, 7), (2, 9)]), &[1, 2, 3], 1), vec![2]);
    }

    #[test]
    fn a_learner_that_differs_is_diverged() {
        assert_eq!(diverged(&hashes(&[(1, 7), (2, 7), (3, 7), (4, 8)]), &[1, 2, 3], 1), vec![4]);
    }
}
