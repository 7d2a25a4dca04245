//! Operator membership changes (etcd's MemberRemove and MemberPromote), decided on the
//! leader with etcd's safety checks, one at a time through Raft's joint consensus; and how a
//! removed member notices it was removed.

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_core::{BackendError, RequestError};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};

use crate::autopilot::{heard_within, in_sync, matched_index};
use crate::node::RaftNode;
use crate::pb::{member_change_request::Kind, MemberChangeRequest};
use crate::peer_error::PeerError;
use crate::route::Repeat;
use crate::types::{NodeId, Raft};

/// A membership change an operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    Remove(NodeId),
    Promote(NodeId),
}

impl MemberChange {
    pub fn to_pb(self) -> MemberChangeRequest {
        match self {
            MemberChange::Remove(id) => MemberChangeRequest { kind: Kind::Remove as i32, id },
            MemberChange::Promote(id) => MemberChangeRequest { kind: Kind::Promote as i32, id },
        }
    }

    pub fn from_pb(req: &MemberChangeRequest) -> Option<MemberChange> {
        match Kind::try_from(req.kind).ok()? {
            Kind::Remove => Some(MemberChange::Remove(req.id)),
            Kind::Promote => Some(MemberChange::Promote(req.id)),
            Kind::Unknown => None,
        }
    }
}

/// On the leader: check `change` as etcd does and make it. `Ok(Err(_))`: refused, nothing
/// changed. `contact`: how recently a voter must have answered to count as started.
pub async fn change(
    raft: &Raft,
    change: MemberChange,
    max_lag: u64,
    contact: Duration,
) -> Result<Result<(), RequestError>, PeerError> {
    let m = raft.metrics().borrow_watched().clone();
    if m.state != ServerState::Leader {
        return Err(PeerError::NotLeader { leader_hint: m.current_leader });
    }
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let known = |id: NodeId| membership.nodes().any(|(n, _)| *n == id);
    let members = match change {
        MemberChange::Remove(id) => {
            if !known(id) {
                return Ok(Err(RequestError::MemberNotFound));
            }
            if voters.contains(&id) {
                // etcd's isReadyToRemoveVoter: the voters left must have a quorum started.
                let left: Vec<NodeId> = voters.iter().copied().filter(|v| *v != id).collect();
                let started = left.iter().filter(|v| heard_within(&m, **v, contact)).count();
                if left.is_empty() || started < left.len() / 2 + 1 {
                    return Ok(Err(RequestError::NotEnoughStartedMembers));
                }
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            }
        }
        MemberChange::Promote(id) => {
            if !known(id) {
                return Ok(Err(RequestError::MemberNotFound));
            }
            if voters.contains(&id) {
                return Ok(Err(RequestError::MemberNotLearner));
            }
            if !in_sync(&m, id, max_lag, contact) {
                return Ok(Err(RequestError::LearnerNotReady));
            }
            ChangeMembers::AddVoterIds(BTreeSet::from([id]))
        }
    };
    match raft.change_membership(members, false).await {
        Ok(_) => {
            tracing::info!(change = ?change, "membership changed");
            Ok(Ok(()))
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(PeerError::NotLeader { leader_hint: f.leader_id })
        }
        Err(RaftError::APIError(e)) => Err(PeerError::Unavailable(e.to_string())),
        Err(RaftError::Fatal(f)) => Err(PeerError::Unavailable(f.to_string())),
    }
}

impl RaftNode {
    /// etcd's MoveLeader: only the leader serves it; `target` must be a voter. Waits until
    /// `target` leads, at most the request timeout.
    pub async fn move_leader(&self, target: NodeId) -> Result<(), BackendError> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            return Err(RequestError::NotLeader.into());
        }
        if target == self.id {
            return Ok(());
        }
        if !m.membership_config.membership().voter_ids().any(|v| v == target) {
            return Err(RequestError::BadLeaderTransferee.into());
        }
        if self.transfer_leadership(target, self.request_timeout).await {
            Ok(())
        } else {
            Err(RequestError::LeaderTransferTimeout.into())
        }
    }

    /// Before a graceful stop: if this member leads, hand leadership to the most up-to-date
    /// voter, so that the cluster does not wait an election timeout for a new leader.
    pub async fn step_down(&self) {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            return;
        }
        let best = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != self.id)
            .max_by_key(|v| matched_index(&m, *v));
        let Some(to) = best else { return };
        let started = std::time::Instant::now();
        if self.transfer_leadership(to, self.contact * 2).await {
            tracing::info!(
                to = format!("{to:x}"),
                took_ms = started.elapsed().as_millis() as u64,
                "handed leadership over before stopping"
            );
        } else {
            tracing::warn!(to = format!("{to:x}"), "leadership hand-off did not complete; stopping anyway");
        }
    }

    /// Ask Raft to hand leadership to `to`; whether `to` leads within `within`.
    async fn transfer_leadership(&self, to: NodeId, within: Duration) -> bool {
        if self.raft.trigger().transfer_leader(to).await.is_err() {
            return false;
        }
        let mut metrics = self.raft.metrics();
        let wait = async {
            loop {
                if metrics.borrow_watched().current_leader == Some(to) {
                    return true;
                }
                if metrics.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(within, wait).await.unwrap_or(false)
    }

    /// Make `change` on the leader, wherever it is.
    pub async fn change_member(&self, member_change: MemberChange) -> Result<(), BackendError> {
        let refused = self
            .on_leader(
                Repeat::IfNotApplied,
                |_| change(&self.raft, member_change, self.promotion.max_lag, self.contact),
                |addr, remaining| async move {
                    let mut client = self.channels.client(&addr).map_err(|_| PeerError::NotDelivered)?;
                    let mut request = tonic::Request::new(member_change.to_pb());
                    request.set_timeout(remaining);
                    let code =
                        client.change_member(request).await.map_err(PeerError::from)?.into_inner().refused;
                    match code {
                        0 => Ok(Ok(())),
                        code => RequestError::from_code(code).map(Err).ok_or_else(|| {
                            PeerError::Unavailable(format!("the leader refused with unknown code {code}"))
                        }),
                    }
                },
            )
            .await?;
        refused.map_err(BackendError::from)
    }
}

/// Watch this member's membership until it finds itself removed: a configuration that no
/// longer names it, after one that did, and that stays the latest while nothing more reaches
/// this member's log for `grace`. (A member replaying the log — one joining, or re-added on
/// an empty data directory — passes through older configurations without itself; its log
/// keeps growing meanwhile, and a later configuration names it again.) Then `removed` turns
/// true and the process stops serving.
pub(crate) async fn watch_removal(
    raft: Raft,
    id: NodeId,
    grace: Duration,
    removed: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
) {
    let mut metrics = raft.metrics();
    let mut was_member = false;
    // Since when (and at which last log index) the latest configuration omits this member.
    let mut omitted: Option<(tokio::time::Instant, Option<u64>)> = None;
    loop {
        let (named, last_index) = {
            let m = metrics.borrow_watched();
            let named = m.membership_config.membership().nodes().any(|(n, _)| *n == id);
            (named, m.last_log_index)
        };
        if named {
            was_member = true;
            omitted = None;
        } else if was_member {
            match omitted {
                Some((_, index)) if index == last_index => {}
                _ => omitted = Some((tokio::time::Instant::now(), last_index)),
            }
        }
        let changed = match omitted {
            None => metrics.changed().await.is_ok(),
            Some((since, _)) => match tokio::time::timeout_at(since + grace, metrics.changed()).await {
                Ok(changed) => changed.is_ok(),
                Err(_) => {
                    tracing::error!("the member has been permanently removed from the cluster");
                    removed.send_replace(true);
                    return;
                }
            },
        };
        if !changed {
            return;
        }
    }
}

/// Whether the candidate of `vote` was removed from the cluster: the committed membership
/// here names members but not it, and was committed after everything the candidate has
/// (so the candidate campaigns from a configuration that committed history replaced; a
/// member added later than the candidate's log is never mistaken for a removed one).
pub(crate) fn was_removed(raft: &Raft, vote: &crate::types::VoteRequest) -> bool {
    use openraft::vote::RaftLeaderId;
    let candidate = *vote.vote.leader_id().node_id();
    let m = raft.metrics();
    let m = m.borrow_watched();
    let committed = &m.committed_membership_config;
    let membership = committed.membership();
    let names_others = membership.nodes().next().is_some();
    let knows_candidate = membership.nodes().any(|(n, _)| *n == candidate);
    let newer =
        committed.log_id().as_ref().map_or(0, |l| l.index) > vote.last_log_id.as_ref().map_or(0, |l| l.index);
    names_others && !knows_candidate && newer
}
