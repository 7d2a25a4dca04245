//! Operator membership changes (etcd's MemberAdd, MemberUpdate, MemberRemove and
//! MemberPromote), decided on the
//! leader with etcd's safety checks, one at a time through Raft's joint consensus; and how a
//! removed member notices it was removed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cairn_core::{BackendError, RequestError};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};

use crate::autopilot::{heard_within, in_sync, matched_index};
use crate::join::MAX_LEARNERS;
use crate::node::RaftNode;
use crate::pb::{member_change_request::Kind, MemberChangeRequest};
use crate::peer_error::PeerError;
use crate::route::Repeat;
use crate::types::{NodeId, PeerNode, Raft};

/// A membership change an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// A new member at this peer address (`host:port`), as a learner or a voter.
    Add {
        peer_addr: String,
        is_learner: bool,
    },
    /// Member `id` moves to another peer address.
    Update {
        id: NodeId,
        peer_addr: String,
    },
    Remove(NodeId),
    Promote(NodeId),
}

impl MemberChange {
    pub fn to_pb(&self) -> MemberChangeRequest {
        let (kind, id, peer_addr, is_learner) = match self {
            MemberChange::Remove(id) => (Kind::Remove, *id, String::new(), false),
            MemberChange::Promote(id) => (Kind::Promote, *id, String::new(), false),
            MemberChange::Add { peer_addr, is_learner } => (Kind::Add, 0, peer_addr.clone(), *is_learner),
            MemberChange::Update { id, peer_addr } => (Kind::Update, *id, peer_addr.clone(), false),
        };
        MemberChangeRequest { kind: kind as i32, id, peer_addr, is_learner }
    }

    pub fn from_pb(req: &MemberChangeRequest) -> Option<MemberChange> {
        match Kind::try_from(req.kind).ok()? {
            Kind::Remove => Some(MemberChange::Remove(req.id)),
            Kind::Promote => Some(MemberChange::Promote(req.id)),
            Kind::Add => {
                Some(MemberChange::Add { peer_addr: req.peer_addr.clone(), is_learner: req.is_learner })
            }
            Kind::Update => Some(MemberChange::Update { id: req.id, peer_addr: req.peer_addr.clone() }),
            Kind::Unknown => None,
        }
    }
}

/// A member id no member has: random, as etcd's are (etcd hashes the URLs and the time).
fn fresh_id(membership: &openraft::Membership<NodeId, PeerNode>) -> NodeId {
    loop {
        let id: NodeId = cairn_core::sim::random_u64();
        if id != 0 && !membership.nodes().any(|(n, _)| *n == id) {
            return id;
        }
    }
}

/// On the leader: check `change` as etcd does and make it; returns the member changed (for
/// an add, the new member's id). `Ok(Err(_))`: refused, nothing changed. `contact`: how
/// recently a voter must have answered to count as started; `published`: the members that
/// ever started (published their attributes).
pub async fn change(
    raft: &Raft,
    published: &BTreeSet<NodeId>,
    change: &MemberChange,
    max_lag: u64,
    contact: Duration,
) -> Result<Result<NodeId, RequestError>, PeerError> {
    let m = raft.metrics().borrow_watched().clone();
    if m.state != ServerState::Leader {
        return Err(PeerError::NotLeader { leader_hint: m.current_leader });
    }
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let node = |id: NodeId| membership.nodes().find(|(n, _)| **n == id).map(|(_, node)| node.clone());
    let started =
        |ids: &mut dyn Iterator<Item = NodeId>| ids.filter(|v| heard_within(&m, *v, contact)).count();
    let address_taken = |addr: &str, except: NodeId| {
        membership.nodes().any(|(n, node)| *n != except && node.peer_addr == addr)
    };
    let (id, members) = match change {
        MemberChange::Add { peer_addr, is_learner } => {
            // etcd's strict reconfiguration checks, in etcd's order. A voter: the started
            // voters (ever published, or heard from now) must be a quorum of the cluster with
            // the new one (etcd allows 1 → 2, to restore a cluster from one member).
            let ever_started =
                voters.iter().filter(|v| published.contains(v) || heard_within(&m, **v, contact));
            let ever_started = ever_started.count();
            let grown = voters.len() + 1;
            if !(*is_learner || ever_started == 1 && grown == 2) && ever_started < grown / 2 + 1 {
                return Ok(Err(RequestError::NotEnoughStartedMembers));
            }
            // Every voter in contact now.
            if started(&mut voters.iter().copied()) < voters.len() {
                return Ok(Err(RequestError::Unhealthy));
            }
            if address_taken(peer_addr, 0) {
                return Ok(Err(RequestError::PeerUrlExists));
            }
            let id = fresh_id(membership);
            let node = PeerNode { name: String::new(), peer_addr: peer_addr.clone() };
            if *is_learner {
                let learners = membership.nodes().filter(|(n, _)| !voters.contains(n)).count();
                if learners >= MAX_LEARNERS {
                    return Ok(Err(RequestError::TooManyLearners));
                }
                (id, ChangeMembers::AddNodes(BTreeMap::from([(id, node)])))
            } else {
                (id, ChangeMembers::AddVoters(BTreeMap::from([(id, node)])))
            }
        }
        MemberChange::Update { id, peer_addr } => {
            let Some(current) = node(*id) else { return Ok(Err(RequestError::MemberNotFound)) };
            if address_taken(peer_addr, *id) {
                return Ok(Err(RequestError::PeerUrlExists));
            }
            if current.peer_addr == *peer_addr {
                return Ok(Ok(*id));
            }
            let moved = PeerNode { peer_addr: peer_addr.clone(), ..current };
            (*id, ChangeMembers::SetNodes(BTreeMap::from([(*id, moved)])))
        }
        MemberChange::Remove(id) => {
            if node(*id).is_none() {
                return Ok(Err(RequestError::MemberNotFound));
            }
            if voters.contains(id) {
                // etcd's isReadyToRemoveVoter: the voters left must have a quorum started.
                let left: Vec<NodeId> = voters.iter().copied().filter(|v| v != id).collect();
                if left.is_empty() || started(&mut left.iter().copied()) < left.len() / 2 + 1 {
                    return Ok(Err(RequestError::NotEnoughStartedMembers));
                }
                (*id, ChangeMembers::RemoveVoters(BTreeSet::from([*id])))
            } else {
                (*id, ChangeMembers::RemoveNodes(BTreeSet::from([*id])))
            }
        }
        MemberChange::Promote(id) => {
            if node(*id).is_none() {
                return Ok(Err(RequestError::MemberNotFound));
            }
            if voters.contains(id) {
                return Ok(Err(RequestError::MemberNotLearner));
            }
            if !in_sync(&m, *id, max_lag, contact) {
                return Ok(Err(RequestError::LearnerNotReady));
            }
            (*id, ChangeMembers::AddVoterIds(BTreeSet::from([*id])))
        }
    };
    if matches!(change, MemberChange::Add { is_learner: false, .. }) && voters.len() == 1 {
        // A second voter, not started yet: Raft cannot commit the change until it runs (its
        // configuration counts from when it is appended, where etcd's counts once applied),
        // so the change is answered once in this leader's log and completes when the new
        // member starts — the cluster waits for it meanwhile, as an etcd cluster of two does.
        let (proposer, wanted) = (raft.clone(), members);
        tokio::spawn(async move {
            if let Err(e) = proposer.change_membership(wanted, false).await {
                tracing::warn!(error = %e, member_id = format!("{id:x}"), "adding the second voter failed");
            }
        });
        let mut metrics = raft.metrics();
        let appended =
            metrics.wait_until(|m| m.membership_config.membership().nodes().any(|(n, _)| *n == id));
        return match tokio::time::timeout(contact * 2, appended).await {
            Ok(Ok(_)) => {
                tracing::info!(change = ?change, member_id = format!("{id:x}"), "membership change appended; it commits once the new member runs");
                Ok(Ok(id))
            }
            _ => Err(PeerError::Unavailable("the membership change was not appended in time".into())),
        };
    }
    match raft.change_membership(members, false).await {
        Ok(_) => {
            tracing::info!(change = ?change, member_id = format!("{id:x}"), "membership changed");
            Ok(Ok(id))
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

    /// Make `change` on the leader, wherever it is; returns the member changed (for an add,
    /// the new member's id), once this member's own configuration shows the change (so that
    /// a MemberList here right after includes it, as etcdctl's `member add` expects).
    pub async fn change_member(&self, member_change: MemberChange) -> Result<NodeId, BackendError> {
        let member_change = &member_change;
        let refused = self
            .on_leader(
                Repeat::IfNotApplied,
                |_| async move {
                    let published =
                        self.published_ids().await.map_err(|e| PeerError::Unavailable(e.to_string()))?;
                    change(&self.raft, &published, member_change, self.promotion.max_lag, self.contact).await
                },
                |addr, remaining| async move {
                    let mut client = self.channels.client(&addr).map_err(|_| PeerError::NotDelivered)?;
                    let mut request = tonic::Request::new(member_change.to_pb());
                    request.set_timeout(remaining);
                    let answer = client.change_member(request).await.map_err(PeerError::from)?.into_inner();
                    match answer.refused {
                        0 => Ok(Ok(answer.member_id)),
                        code => RequestError::from_code(code).map(Err).ok_or_else(|| {
                            PeerError::Unavailable(format!("the leader refused with unknown code {code}"))
                        }),
                    }
                },
            )
            .await?;
        let id = refused.map_err(BackendError::from)?;
        let shows = |m: &openraft::RaftMetrics<crate::types::TypeConfig>| {
            let membership = m.membership_config.membership();
            let node = membership.nodes().find(|(n, _)| **n == id).map(|(_, node)| node);
            match member_change {
                MemberChange::Add { peer_addr, .. } | MemberChange::Update { peer_addr, .. } => {
                    node.is_some_and(|n| n.peer_addr == *peer_addr)
                }
                MemberChange::Remove(_) => node.is_none(),
                MemberChange::Promote(_) => membership.voter_ids().any(|v| v == id),
            }
        };
        let mut metrics = self.raft.metrics();
        let _ = tokio::time::timeout(self.request_timeout, metrics.wait_until(|m| shows(m))).await;
        Ok(id)
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
