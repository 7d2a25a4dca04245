//! The one place where errors become gRPC statuses with etcd's codes and texts (clients
//! match on the text, so it must be exact). Every variant is matched by name: a new one
//! does not compile until it has its status.

use cairn_core::{BackendError, RequestError};
use tonic::{Code, Status};

/// etcd's code and text for a refused request.
pub fn request_status(e: RequestError) -> Status {
    let (code, text) = match e {
        RequestError::Compacted => {
            (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted")
        }
        RequestError::FutureRevision => {
            (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision")
        }
        RequestError::EmptyKey => (Code::InvalidArgument, "etcdserver: key is not provided"),
        RequestError::TooManyOps => (Code::InvalidArgument, "etcdserver: too many operations in txn request"),
        RequestError::DuplicateKey => {
            (Code::InvalidArgument, "etcdserver: duplicate key given in txn request")
        }
        RequestError::KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found"),
        RequestError::ValueProvided => (Code::InvalidArgument, "etcdserver: value is provided"),
        RequestError::LeaseProvided => (Code::InvalidArgument, "etcdserver: lease is provided"),
        RequestError::RequestTooLarge => (Code::InvalidArgument, "etcdserver: request is too large"),
        RequestError::InvalidSortOption => (Code::InvalidArgument, "etcdserver: invalid sort option"),
        RequestError::LeaseNotFound => (Code::NotFound, "etcdserver: requested lease not found"),
        RequestError::LeaseExists => (Code::FailedPrecondition, "etcdserver: lease already exists"),
        RequestError::LeaseTtlTooLarge => (Code::OutOfRange, "etcdserver: too large lease TTL"),
        RequestError::MemberNotFound => (Code::NotFound, "etcdserver: member not found"),
        // etcd maps this one to a client-side error value instead of a status, which gRPC
        // sends as Unknown (etcd 3.4 answers so).
        RequestError::NotEnoughStartedMembers => {
            (Code::Unknown, "etcdserver: re-configuration failed due to not enough started members")
        }
        RequestError::MemberNotLearner => {
            (Code::FailedPrecondition, "etcdserver: can only promote a learner member")
        }
        RequestError::LearnerNotReady => (
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member which is in sync with leader",
        ),
        RequestError::NotLeader => (Code::FailedPrecondition, "etcdserver: not leader"),
        RequestError::BadLeaderTransferee => (Code::FailedPrecondition, "etcdserver: bad leader transferee"),
        // etcd maps no gRPC code to this one: it goes out as Unknown.
        RequestError::LeaderTransferTimeout => {
            (Code::Unknown, "etcdserver: request timed out, leader transfer took too long")
        }
        RequestError::PeerUrlExists => (Code::FailedPrecondition, "etcdserver: Peer URLs already exists"),
        RequestError::TooManyLearners => {
            (Code::FailedPrecondition, "etcdserver: too many learner members in cluster")
        }
        RequestError::BadMemberUrls => (Code::InvalidArgument, "etcdserver: given member URLs are invalid"),
        RequestError::FixedMembership => {
            (Code::FailedPrecondition, "etcdserver: membership cannot change on this backend")
        }
        RequestError::Unhealthy => (Code::Unavailable, "etcdserver: unhealthy cluster"),
        RequestError::NoSpace => (Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded"),
        RequestError::PermissionDenied => (Code::PermissionDenied, "etcdserver: permission denied"),
        RequestError::UserEmpty => (Code::InvalidArgument, "etcdserver: user name is empty"),
        RequestError::AuthFailed => {
            (Code::InvalidArgument, "etcdserver: authentication failed, invalid user ID or password")
        }
        RequestError::InvalidAuthToken => (Code::Unauthenticated, "etcdserver: invalid auth token"),
        RequestError::UserAlreadyExist => (Code::FailedPrecondition, "etcdserver: user name already exists"),
        RequestError::UserNotFound => (Code::FailedPrecondition, "etcdserver: user name not found"),
        RequestError::RoleAlreadyExist => (Code::FailedPrecondition, "etcdserver: role name already exists"),
        RequestError::RoleNotFound => (Code::FailedPrecondition, "etcdserver: role name not found"),
        RequestError::RoleEmpty => (Code::InvalidArgument, "etcdserver: role name is empty"),
        RequestError::RootUserNotExist => (Code::FailedPrecondition, "etcdserver: root user does not exist"),
        RequestError::RootRoleNotExist => {
            (Code::FailedPrecondition, "etcdserver: root user does not have root role")
        }
        RequestError::PermissionNotGranted => {
            (Code::FailedPrecondition, "etcdserver: permission is not granted to the role")
        }
        RequestError::RoleNotGranted => {
            (Code::FailedPrecondition, "etcdserver: role is not granted to the user")
        }
        RequestError::AuthNotEnabled => {
            (Code::FailedPrecondition, "etcdserver: authentication is not enabled")
        }
        RequestError::InvalidAuthMgmt => (Code::InvalidArgument, "etcdserver: invalid auth management"),
        RequestError::AuthOldRevision => (Code::InvalidArgument, "etcdserver: revision of auth store is old"),
        RequestError::Corrupt => (Code::DataLoss, "etcdserver: corrupt cluster"),
    };
    Status::new(code, text)
}

/// etcd's code and text for any backend failure (`map_err(backend_status)`).
pub fn backend_status(e: BackendError) -> Status {
    match e {
        BackendError::Request(r) => request_status(r),
        BackendError::NoLeader => Status::unavailable("etcdserver: no leader"),
        BackendError::Unavailable(source) => {
            Status::unavailable(format!("cairn: database unavailable: {source}"))
        }
        BackendError::Timeout => Status::unavailable("etcdserver: request timed out"),
        BackendError::LeaderChanged => Status::unavailable("etcdserver: leader changed"),
        BackendError::Stopped => Status::unavailable("etcdserver: server stopped"),
        BackendError::Corrupt(_) => Status::data_loss("etcdserver: corrupt cluster"),
        BackendError::Storage(source) => Status::internal(format!("etcdserver: storage error: {source}")),
        // Not etcd's (it seals nothing): the member says which key it lacks.
        BackendError::Sealed(e) => Status::failed_precondition(format!("cairn: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_texts_are_exact() {
        let s = request_status(RequestError::Compacted);
        assert_eq!(
            (s.code(), s.message()),
            (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted")
        );
        let s = request_status(RequestError::EmptyKey);
        assert_eq!((s.code(), s.message()), (Code::InvalidArgument, "etcdserver: key is not provided"));
        let s = backend_status(BackendError::NoLeader);
        assert_eq!((s.code(), s.message()), (Code::Unavailable, "etcdserver: no leader"));
    }

    #[test]
    fn every_refusal_has_an_etcd_text() {
        for e in RequestError::ALL {
            let s = request_status(e);
            assert_eq!(s.message(), format!("etcdserver: {e}"), "{e:?}");
            // etcd maps no code to a leader transfer timeout, and sends "not enough started
            // members" as a client-side error value: both go out as Unknown, and so do ours.
            if !matches!(e, RequestError::LeaderTransferTimeout | RequestError::NotEnoughStartedMembers) {
                assert_ne!(s.code(), Code::Unknown, "{e:?}");
            }
        }
    }
}
