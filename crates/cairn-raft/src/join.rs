//! Joining a running cluster (`cairn serve --join`): the new node asks any member, a follower
//! passes the request on to the leader (once), and the leader adds the node as a learner,
//! which then catches up by log or snapshot. Promotion to voter is the autopilot's
//! (`autopilot.rs`).

use std::time::Duration;

// tokio's clock: the real one in a process, the virtual one in a simulation.
use tokio::time::Instant;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;

use crate::network::PeerChannels;
use crate::pb::{JoinRequest, JoinResponse};
use crate::peer_error::PeerError;
use crate::types::{node_id_of, PeerNode, Raft};

/// Most learners at once (etcd allows 1; joining several servers at once is common here).
pub const MAX_LEARNERS: usize = 4;

/// How long a joining node keeps asking before it gives up.
pub const JOIN_PATIENCE: Duration = Duration::from_secs(60);

pub use cairn_proto::release_line;

/// On the leader: admit `req`'s node as a learner, and return its member id. Joining again
/// with the same name and address is a no-op; anything that clashes with a member is
/// refused, with etcd's text where etcd has one. A node added already (`req.existing`) is
/// only told its id, found by its peer address.
pub async fn admit(raft: &Raft, req: &JoinRequest) -> Result<u64, PeerError> {
    let (state, leader, membership) = {
        let m = raft.metrics();
        let m = m.borrow_watched();
        (m.state, m.current_leader, m.membership_config.membership().clone())
    };
    if state != ServerState::Leader {
        return Err(PeerError::NotLeader { leader_hint: leader });
    }
    let ours = env!("CARGO_PKG_VERSION");
    if release_line(&req.version) != release_line(ours) {
        return Err(PeerError::Refused(format!(
            "version {} cannot join a cluster running {ours} (major.minor must match)",
            if req.version.is_empty() { "unknown" } else { &req.version }
        )));
    }
    if req.name.is_empty() || req.peer_addr.is_empty() {
        return Err(PeerError::Refused("a joining node needs a name and a peer address".into()));
    }
    if req.existing {
        return match membership.nodes().find(|(_, n)| n.peer_addr == req.peer_addr) {
            Some((id, _)) => Ok(*id),
            None => Err(PeerError::Refused(format!(
                "no member has peer address {}: add it first (etcdctl member add {} --peer-urls=http://{})",
                req.peer_addr, req.name, req.peer_addr
            ))),
        };
    }
    let id = node_id_of(&req.name);
    if let Some((_, node)) = membership.nodes().find(|(n, _)| **n == id) {
        if node.peer_addr == req.peer_addr {
            return Ok(id);
        }
        return Err(PeerError::Refused(format!(
            "etcdserver: member ID already exist (a member named {} has peer address {})",
            node.name, node.peer_addr
        )));
    }
    if let Some((_, node)) = membership.nodes().find(|(_, n)| n.peer_addr == req.peer_addr) {
        return Err(PeerError::Refused(format!(
            "etcdserver: Peer URLs already exists (member {} has {})",
            node.name, node.peer_addr
        )));
    }
    let voters: Vec<_> = membership.voter_ids().collect();
    let learners = membership.nodes().filter(|(n, _)| !voters.contains(n)).count();
    if learners >= MAX_LEARNERS {
        return Err(PeerError::Refused(format!(
            "etcdserver: too many learner members in cluster (at most {MAX_LEARNERS})"
        )));
    }
    let node = PeerNode { name: req.name.clone(), peer_addr: req.peer_addr.clone() };
    match raft.add_learner(id, node, false).await {
        Ok(_) => {
            tracing::info!(name = %req.name, peer = %req.peer_addr, member_id = format!("{id:x}"), "added a learner");
            Ok(id)
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(PeerError::NotLeader { leader_hint: f.leader_id })
        }
        // Another membership change is under way: the joining node asks again.
        Err(RaftError::APIError(e @ ClientWriteError::ChangeMembershipError(_))) => {
            Err(PeerError::Unavailable(e.to_string()))
        }
        Err(RaftError::APIError(e)) => Err(PeerError::Refused(e.to_string())),
        Err(RaftError::Fatal(f)) => Err(PeerError::Unavailable(f.to_string())),
    }
}

/// On any member: admit here if this member leads, else pass the request to the leader once.
pub async fn admit_or_pass(
    raft: &Raft,
    channels: &PeerChannels,
    req: JoinRequest,
    cluster_id: u64,
) -> Result<JoinResponse, PeerError> {
    match admit(raft, &req).await {
        Ok(member_id) => Ok(JoinResponse { cluster_id, member_id }),
        Err(PeerError::NotLeader { leader_hint: Some(leader) }) if !req.forwarded => {
            let Some(addr) = crate::node::peer_addr_of(raft, leader) else {
                return Err(PeerError::NotLeader { leader_hint: Some(leader) });
            };
            let mut client = channels.client(&addr).map_err(|_| PeerError::NotDelivered)?;
            let request = JoinRequest { forwarded: true, ..req };
            Ok(client.join(request).await.map_err(PeerError::from)?.into_inner())
        }
        Err(e) => Err(e),
    }
}

/// Why joining failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinFailure {
    /// A member refused the node (its text says why): asking again will not help.
    Refused(String),
    /// No member admitted it within [`JOIN_PATIENCE`]; the last reason.
    Unreachable(String),
}

/// On the joining node: ask the members at `addrs` in turn until one admits this node, and
/// return the cluster's answer.
pub async fn join(
    channels: &PeerChannels,
    addrs: &[String],
    req: JoinRequest,
    patience: Duration,
) -> Result<JoinResponse, JoinFailure> {
    let deadline = Instant::now() + patience;
    let mut last = String::from("no member was asked");
    for addr in addrs.iter().cycle() {
        if Instant::now() >= deadline {
            break;
        }
        let outcome = match channels.client(addr) {
            Err(e) => Err(PeerError::Unavailable(e.to_string())),
            Ok(mut client) => {
                let mut request = tonic::Request::new(req.clone());
                request.set_timeout(Duration::from_secs(10));
                client.join(request).await.map(tonic::Response::into_inner).map_err(PeerError::from)
            }
        };
        match outcome {
            Ok(answer) => return Ok(answer),
            Err(PeerError::Refused(why)) => return Err(JoinFailure::Refused(why)),
            Err(PeerError::Unimplemented) => {
                return Err(JoinFailure::Refused(format!(
                    "the member at {addr} runs a version that cannot add members"
                )))
            }
            Err(e) => {
                last = format!("{addr}: {e:?}");
                tracing::info!(member = %addr, reason = ?e, "join not accepted yet; asking again");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(JoinFailure::Unreachable(last))
}
