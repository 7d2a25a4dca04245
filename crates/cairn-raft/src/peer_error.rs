//! Typed failures between members. A peer request that fails carries a
//! `cairnpb.PeerFailure` (a kind and a leader hint) in its gRPC status details; the caller
//! decides on that kind, never on a message text. A status without one comes from a member
//! before 0.2 (or from the transport itself) and is classified by its gRPC code and by the
//! transport error kept as the status's source.

use std::error::Error as _;

use cairn_core::BackendError;
use prost::Message;
use tonic::{Code, Status};

use crate::pb::{peer_failure::Kind, PeerFailure};
use crate::peer_auth::HandshakeError;
use crate::types::NodeId;

/// Why a request to another member failed, and so what the caller may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// The member does not lead: nothing was proposed. It named the leader it knows of.
    NotLeader { leader_hint: Option<NodeId> },
    /// The connection could not be made: the request never left this member.
    NotDelivered,
    /// Proposed, then lost to a leader change: it may or may not have happened.
    LeaderChanged,
    /// No answer within the deadline: it may or may not have happened.
    Timeout,
    /// The member does not know this RPC (an older version).
    Unimplemented,
    /// The request was malformed or not allowed: nothing was done.
    Refused(String),
    /// Anything else (a broken connection, a stopping member): it may have happened.
    Unavailable(String),
    /// The caller is no longer a member of the cluster (it was removed): it should stop.
    Removed,
}

impl PeerError {
    /// The status a server answers with, the failure kind in its details. The gRPC code is
    /// what members before 0.2 decide on (FailedPrecondition was "not leader" for them).
    pub fn into_status(self) -> Status {
        let (code, kind, hint, message) = match self {
            PeerError::NotLeader { leader_hint } => (
                Code::FailedPrecondition,
                Kind::NotLeader,
                leader_hint.unwrap_or(0),
                "cairn: not leader".into(),
            ),
            PeerError::LeaderChanged => {
                (Code::Unavailable, Kind::LeaderChanged, 0, "etcdserver: leader changed".into())
            }
            PeerError::Refused(why) => (Code::InvalidArgument, Kind::Refused, 0, why),
            PeerError::Unavailable(why) => (Code::Unavailable, Kind::Unavailable, 0, why),
            PeerError::Removed => (
                Code::PermissionDenied,
                Kind::Removed,
                0,
                "the member has been permanently removed from the cluster".into(),
            ),
            PeerError::NotDelivered | PeerError::Timeout | PeerError::Unimplemented => {
                (Code::Unavailable, Kind::Unavailable, 0, "cairn: unavailable".into())
            }
        };
        let details = PeerFailure { kind: kind as i32, leader_hint: hint }.encode_to_vec();
        Status::with_details(code, message, details.into())
    }

    /// What a failed peer call means. Decides on the typed details when the member sent
    /// them, else on the gRPC code and the transport error.
    pub fn from_status(status: &Status) -> PeerError {
        if let Ok(failure) = PeerFailure::decode(status.details()) {
            if !status.details().is_empty() {
                return match Kind::try_from(failure.kind) {
                    Ok(Kind::NotLeader) => PeerError::NotLeader {
                        leader_hint: (failure.leader_hint != 0).then_some(failure.leader_hint),
                    },
                    Ok(Kind::LeaderChanged) => PeerError::LeaderChanged,
                    Ok(Kind::Refused) => PeerError::Refused(status.message().to_string()),
                    Ok(Kind::Removed) => PeerError::Removed,
                    Ok(Kind::Unavailable) | Ok(Kind::Unknown) | Err(_) => {
                        PeerError::Unavailable(status.message().to_string())
                    }
                };
            }
        }
        match handshake_failure(status) {
            Some(HandshakeError::Refused(why)) => return PeerError::Refused(why.clone()),
            // The connection never carried the request.
            Some(_) => return PeerError::NotDelivered,
            None => {}
        }
        match status.code() {
            // Members before 0.2 used FailedPrecondition only for "not leader".
            Code::FailedPrecondition => PeerError::NotLeader { leader_hint: None },
            Code::DeadlineExceeded => PeerError::Timeout,
            Code::Unimplemented => PeerError::Unimplemented,
            Code::InvalidArgument => PeerError::Refused(status.message().to_string()),
            _ if never_connected(status) => PeerError::NotDelivered,
            _ => PeerError::Unavailable(status.message().to_string()),
        }
    }

    /// Whether the request certainly had no effect, so it may be sent again.
    pub fn certainly_not_applied(&self) -> bool {
        matches!(
            self,
            PeerError::NotLeader { .. }
                | PeerError::NotDelivered
                | PeerError::Unimplemented
                | PeerError::Refused(_)
        )
    }

    /// The client-facing error for a write whose outcome this is.
    pub fn into_backend_error(self) -> BackendError {
        match self {
            PeerError::NotLeader { .. } | PeerError::NotDelivered => BackendError::NoLeader,
            PeerError::LeaderChanged => BackendError::LeaderChanged,
            PeerError::Timeout | PeerError::Unavailable(_) => BackendError::Timeout,
            PeerError::Removed => BackendError::Stopped,
            PeerError::Unimplemented | PeerError::Refused(_) => {
                BackendError::Corrupt(format!("a member refused a peer request: {self:?}"))
            }
        }
    }
}

impl From<Status> for PeerError {
    fn from(status: Status) -> PeerError {
        PeerError::from_status(&status)
    }
}

/// Whether the transport failed before the request was sent: the connection was refused or
/// could not be made. The status keeps the transport error as its source; a connection that
/// broke later (reset, timeout) may have delivered the request and is not this.
/// The handshake failure that kept the transport from connecting, if that is what happened.
fn handshake_failure(status: &Status) -> Option<&HandshakeError> {
    let mut source = status.source();
    while let Some(e) = source {
        if let Some(failed) = e.downcast_ref::<HandshakeError>() {
            return Some(failed);
        }
        // `io::Error` hides the error it wraps from `source()`.
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(failed) = inner.downcast_ref::<HandshakeError>() {
                return Some(failed);
            }
        }
        source = e.source();
    }
    None
}

fn never_connected(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(
                io.kind(),
                ConnectionRefused | AddrNotAvailable | NetworkUnreachable | HostUnreachable
            );
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_the_status() {
        for e in [
            PeerError::NotLeader { leader_hint: Some(7) },
            PeerError::NotLeader { leader_hint: None },
            PeerError::LeaderChanged,
            PeerError::Refused("bad".into()),
            PeerError::Unavailable("stopping".into()),
        ] {
            assert_eq!(PeerError::from_status(&e.clone().into_status()), e);
        }
    }

    #[test]
    fn statuses_of_older_members_are_classified_by_code() {
        assert_eq!(
            PeerError::from_status(&Status::failed_precondition("cairn: not leader")),
            PeerError::NotLeader { leader_hint: None }
        );
        assert_eq!(PeerError::from_status(&Status::deadline_exceeded("slow")), PeerError::Timeout);
        assert_eq!(PeerError::from_status(&Status::unimplemented("no")), PeerError::Unimplemented);
        // A text that once meant something is not matched any more.
        assert_eq!(
            PeerError::from_status(&Status::unavailable("etcdserver: leader changed")),
            PeerError::Unavailable("etcdserver: leader changed".into())
        );
    }

    #[tokio::test]
    async fn a_refused_connection_was_never_delivered() {
        // A port nobody listens on: bind, take the port, drop the listener.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let channels = crate::network::PeerChannels::new(None, &crate::ClusterKey::none());
        let mut client = channels.client(&addr.to_string()).unwrap();
        let status = client.read_index(crate::pb::ReadIndexRequest {}).await.unwrap_err();
        assert_eq!(PeerError::from_status(&status), PeerError::NotDelivered, "{status:?}");
    }
}
