//! What only the leader answers: proposing a write, giving a linearizable read point, and
//! a lease's clock. The same functions serve this member's own requests (when it leads)
//! and other members' peer requests, so both get the same outcomes; a failure is a typed
//! [`PeerError`] either way.

use cairn_core::{LeaseTime, RequestError, WriteRequest, WriteResponse};
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::raft::linearizable_read::Linearizer;
use openraft::ReadPolicy;

use crate::pb::MemberAttributes;
use crate::peer_error::PeerError;
use crate::types::{Command, Raft, TypeConfig};
use cairn_core::lessor::{LeaseError, Lessor};

/// A write applied on the leader: its result and the log index of its entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposed {
    pub result: Result<WriteResponse, RequestError>,
    pub log_index: u64,
}

/// Propose `write` on this member and wait for its result once applied. `auth_revision`:
/// the auth revision its permissions were checked at (0: not checked).
pub async fn propose(raft: &Raft, write: WriteRequest, auth_revision: u64) -> Result<Proposed, PeerError> {
    let command = match auth_revision {
        0 => Command::Write(write),
        auth_revision => Command::CheckedWrite { write, auth_revision },
    };
    let (result, log_index) = propose_command(raft, command).await?;
    let result =
        result.ok_or_else(|| PeerError::Unavailable("a write entry applied without a result".into()))?;
    Ok(Proposed { result, log_index })
}

/// Propose a member's attributes on this member (the leader) and wait until applied.
pub async fn publish(raft: &Raft, attributes: MemberAttributes) -> Result<(), PeerError> {
    propose_command(raft, Command::SetMember(attributes)).await.map(|_| ())
}

pub async fn set_alarm(raft: &Raft, change: crate::pb::AlarmChange) -> Result<(), PeerError> {
    propose_command(raft, Command::SetAlarm(change)).await.map(|_| ())
}

/// Propose an auth command on this member (the leader): its result and log index.
pub async fn auth(
    raft: &Raft,
    command: crate::types::AuthCommand,
) -> Result<(Result<(), RequestError>, u64), PeerError> {
    let (result, log_index) = propose_command(raft, Command::Auth(command)).await?;
    let result = match result {
        Some(Err(refused)) => Err(refused),
        None | Some(Ok(_)) => Ok(()),
    };
    Ok((result, log_index))
}

/// Propose any command; its result (`None` for commands without one) and log index.
async fn propose_command(
    raft: &Raft,
    command: Command,
) -> Result<(Option<Result<WriteResponse, RequestError>>, u64), PeerError> {
    let started = crate::probe::stamp();
    match raft.client_write(command).await {
        Ok(resp) => {
            crate::probe::mark_at(resp.log_id.index(), crate::probe::Stage::ProposeStart, started);
            crate::probe::mark(resp.log_id.index(), crate::probe::Stage::ProposeDone);
            Ok((resp.data.0, resp.log_id.index()))
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(PeerError::NotLeader { leader_hint: f.leader_id })
        }
        Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => Err(PeerError::LeaderChanged),
        Err(RaftError::APIError(
            e @ (ClientWriteError::ChangeMembershipError(_) | ClientWriteError::PreconditionFailed(_)),
        )) => Err(PeerError::Refused(e.to_string())),
        Err(RaftError::Fatal(fatal)) => Err(PeerError::Unavailable(fatal.to_string())),
    }
}

/// The log index a linearizable read must wait for (the leader's read index).
pub async fn read_index(raft: &Raft) -> Result<u64, PeerError> {
    Ok(read_linearizer(raft).await?.read_log_id().index())
}

/// The leader's read point, or why this member cannot give one.
async fn read_linearizer(raft: &Raft) -> Result<Linearizer<TypeConfig>, PeerError> {
    match raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
        Ok(linearizer) => Ok(linearizer),
        Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
            Err(PeerError::NotLeader { leader_hint: f.leader_id })
        }
        Err(e) => Err(PeerError::Unavailable(e.to_string())),
    }
}

/// What a member asks the leader's lessor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseQuestion {
    /// A keepalive: restart the lease's timer.
    Renew,
    /// Time to live.
    Remaining,
}

/// The leader's answer about lease `id`; `None` if it does not exist. A lease granted in an
/// earlier term may not be applied here yet, so "not found" is only said after catching up
/// to the read index (as etcd does); a renewal always waits for it.
pub async fn ask_lessor(
    raft: &Raft,
    lessor: &Lessor,
    id: i64,
    question: LeaseQuestion,
) -> Result<Option<LeaseTime>, PeerError> {
    let ask = || match question {
        LeaseQuestion::Renew => lessor.renew(id).map(|ttl| LeaseTime { remaining: ttl, granted: ttl }),
        LeaseQuestion::Remaining => {
            lessor.remaining(id).map(|(remaining, granted)| LeaseTime { remaining, granted })
        }
    };
    let not_leader = || PeerError::NotLeader { leader_hint: None };
    // A renewal always waits for the read index: a deposed leader that has not noticed yet
    // must not promise time the new leader will not honour, and a revoke proposed before a
    // leader change can still be in the log, about to delete the lease a renewal would
    // promise (both found by cairn-sim's lease workload).
    if question == LeaseQuestion::Remaining {
        match ask() {
            Ok(time) => return Ok(Some(time)),
            Err(LeaseError::NotPrimary) => return Err(not_leader()),
            Err(LeaseError::NotFound) => {}
        }
    }
    read_linearizer(raft)
        .await?
        .await_ready(raft)
        .await
        .map_err(|e| PeerError::Unavailable(e.to_string()))?;
    match ask() {
        Ok(time) => Ok(Some(time)),
        Err(LeaseError::NotPrimary) => Err(not_leader()),
        Err(LeaseError::NotFound) => Ok(None),
    }
}
