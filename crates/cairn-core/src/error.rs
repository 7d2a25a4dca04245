//! The two error enums every backend speaks: [`RequestError`] (etcd refused the request;
//! nothing happened) and [`BackendError`] (the umbrella a backend operation returns). The
//! API crate turns each variant into etcd's gRPC code and text in one place, with an
//! exhaustive `match`: a new variant does not compile until it has its status.

use std::sync::Arc;

/// A request refused by etcd's semantics: by validation before it is proposed, or by the
/// state machine when it is applied (deterministically: every member refuses it alike).
/// Nothing was written. Each variant's text is etcd's, without the `etcdserver: ` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The requested revision was compacted away (etcd: OutOfRange).
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is greater than the current one (etcd: OutOfRange).
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// A request without a key (etcd: InvalidArgument).
    #[error("key is not provided")]
    EmptyKey,
    /// A txn with more operations than allowed (etcd: InvalidArgument).
    #[error("too many operations in txn request")]
    TooManyOps,
    /// A txn writes one key twice (etcd: InvalidArgument).
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist (etcd: InvalidArgument).
    #[error("key not found")]
    KeyNotFound,
    /// `ignore_value` together with a value (etcd: InvalidArgument).
    #[error("value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease (etcd: InvalidArgument).
    #[error("lease is provided")]
    LeaseProvided,
    /// The encoded request is larger than the configured maximum (etcd: InvalidArgument).
    #[error("request is too large")]
    RequestTooLarge,
    /// A Range with an unknown sort order or target (etcd 3.5: InvalidArgument).
    #[error("invalid sort option")]
    InvalidSortOption,
    /// A lease that does not exist (etcd: NotFound).
    #[error("requested lease not found")]
    LeaseNotFound,
    /// A grant with the ID of an existing lease (etcd: FailedPrecondition).
    #[error("lease already exists")]
    LeaseExists,
    /// A grant with a TTL above [`crate::MAX_LEASE_TTL`] (etcd: OutOfRange).
    #[error("too large lease TTL")]
    LeaseTtlTooLarge,
    /// No member has that id (etcd: NotFound).
    #[error("member not found")]
    MemberNotFound,
    /// The change would leave too few started voters for a quorum (etcd: Unknown).
    #[error("re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// Promote of a member that is already a voter (etcd: FailedPrecondition).
    #[error("can only promote a learner member")]
    MemberNotLearner,
    /// Promote of a learner that has not caught up (etcd: FailedPrecondition).
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// A request only the leader serves (MoveLeader) sent to another member (etcd:
    /// FailedPrecondition).
    #[error("not leader")]
    NotLeader,
    /// MoveLeader to a member that cannot lead: unknown, or a learner (etcd:
    /// FailedPrecondition).
    #[error("bad leader transferee")]
    BadLeaderTransferee,
    /// MoveLeader did not complete in time (etcd: Unknown, the code of unmapped errors).
    #[error("request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    /// MemberAdd/MemberUpdate with a peer URL another member has (etcd: FailedPrecondition).
    #[error("Peer URLs already exists")]
    PeerUrlExists,
    /// MemberAdd of a learner beyond the learner limit (etcd: FailedPrecondition).
    #[error("too many learner members in cluster")]
    TooManyLearners,
    /// Peer URLs that are not one `http://host:port` (etcd: InvalidArgument).
    #[error("given member URLs are invalid")]
    BadMemberUrls,
    /// A membership change asked of a backend whose membership cannot change (one
    /// unreplicated member; etcd has no such case: FailedPrecondition).
    #[error("membership cannot change on this backend")]
    FixedMembership,
    /// MemberAdd while a voter is out of contact (etcd's strict reconfiguration check:
    /// Unavailable).
    #[error("unhealthy cluster")]
    Unhealthy,
    /// A write that adds data while the space quota is exceeded (a NOSPACE alarm is
    /// raised) (etcd: ResourceExhausted).
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// A user without the permission the request needs (etcd: PermissionDenied).
    #[error("permission denied")]
    PermissionDenied,
    /// Auth is enabled and the request names no user, or a user without a name is added (etcd: InvalidArgument).
    #[error("user name is empty")]
    UserEmpty,
    /// Authenticate with an unknown user or a wrong password (etcd: InvalidArgument).
    #[error("authentication failed, invalid user ID or password")]
    AuthFailed,
    /// A token that is unknown or expired (etcd: Unauthenticated).
    #[error("invalid auth token")]
    InvalidAuthToken,
    /// UserAdd of an existing user (etcd: FailedPrecondition).
    #[error("user name already exists")]
    UserAlreadyExist,
    /// A user that does not exist (etcd: FailedPrecondition).
    #[error("user name not found")]
    UserNotFound,
    /// RoleAdd of an existing role (etcd: FailedPrecondition).
    #[error("role name already exists")]
    RoleAlreadyExist,
    /// A role that does not exist (etcd: FailedPrecondition).
    #[error("role name not found")]
    RoleNotFound,
    /// RoleAdd without a name (etcd: InvalidArgument).
    #[error("role name is empty")]
    RoleEmpty,
    /// AuthEnable without a root user (etcd: FailedPrecondition).
    #[error("root user does not exist")]
    RootUserNotExist,
    /// AuthEnable while root lacks the root role (etcd: FailedPrecondition).
    #[error("root user does not have root role")]
    RootRoleNotExist,
    /// RoleRevokePermission of a permission the role does not have (etcd: FailedPrecondition).
    #[error("permission is not granted to the role")]
    PermissionNotGranted,
    /// UserRevokeRole of a role the user does not have (etcd: FailedPrecondition).
    #[error("role is not granted to the user")]
    RoleNotGranted,
    /// Authenticate while auth is disabled (etcd: FailedPrecondition).
    #[error("authentication is not enabled")]
    AuthNotEnabled,
    /// Deleting root, its role, or revoking root from root while auth is enabled (etcd: InvalidArgument).
    #[error("invalid auth management")]
    InvalidAuthMgmt,
    /// The auth state changed under a request checked against an older one (etcd: InvalidArgument).
    #[error("revision of auth store is old")]
    AuthOldRevision,
    /// A write while a CORRUPT alarm is raised: members' data diverged (etcd: DataLoss).
    #[error("corrupt cluster")]
    Corrupt,
}

impl RequestError {
    /// A stable number for each variant: apply results cross the peer protocol with it
    /// (`cairnpb.WriteError`). Never renumber; 10, 11, 12 and 17 are retired.
    pub fn code(self) -> u32 {
        match self {
            RequestError::Compacted => 1,
            RequestError::FutureRevision => 2,
            RequestError::EmptyKey => 3,
            RequestError::TooManyOps => 4,
            RequestError::DuplicateKey => 5,
            RequestError::KeyNotFound => 6,
            RequestError::ValueProvided => 7,
            RequestError::LeaseProvided => 8,
            RequestError::RequestTooLarge => 9,
            RequestError::InvalidSortOption => 13,
            RequestError::LeaseNotFound => 14,
            RequestError::LeaseExists => 15,
            RequestError::LeaseTtlTooLarge => 16,
            RequestError::MemberNotFound => 18,
            RequestError::NotEnoughStartedMembers => 19,
            RequestError::MemberNotLearner => 20,
            RequestError::LearnerNotReady => 21,
            RequestError::NotLeader => 22,
            RequestError::BadLeaderTransferee => 23,
            RequestError::LeaderTransferTimeout => 24,
            RequestError::PeerUrlExists => 25,
            RequestError::TooManyLearners => 26,
            RequestError::BadMemberUrls => 27,
            RequestError::FixedMembership => 28,
            RequestError::Unhealthy => 29,
            RequestError::NoSpace => 30,
            RequestError::PermissionDenied => 31,
            RequestError::UserEmpty => 32,
            RequestError::AuthFailed => 33,
            RequestError::InvalidAuthToken => 34,
            RequestError::UserAlreadyExist => 35,
            RequestError::UserNotFound => 36,
            RequestError::RoleAlreadyExist => 37,
            RequestError::RoleNotFound => 38,
            RequestError::RoleEmpty => 39,
            RequestError::RootUserNotExist => 40,
            RequestError::RootRoleNotExist => 41,
            RequestError::PermissionNotGranted => 42,
            RequestError::RoleNotGranted => 43,
            RequestError::AuthNotEnabled => 44,
            RequestError::InvalidAuthMgmt => 45,
            RequestError::AuthOldRevision => 46,
            RequestError::Corrupt => 47,
        }
    }

    /// The inverse of [`RequestError::code`]; `None` for a code this version does not know.
    pub fn from_code(code: u32) -> Option<RequestError> {
        Some(match code {
            1 => RequestError::Compacted,
            2 => RequestError::FutureRevision,
            3 => RequestError::EmptyKey,
            4 => RequestError::TooManyOps,
            5 => RequestError::DuplicateKey,
            6 => RequestError::KeyNotFound,
            7 => RequestError::ValueProvided,
            8 => RequestError::LeaseProvided,
            9 => RequestError::RequestTooLarge,
            13 => RequestError::InvalidSortOption,
            14 => RequestError::LeaseNotFound,
            15 => RequestError::LeaseExists,
            16 => RequestError::LeaseTtlTooLarge,
            18 => RequestError::MemberNotFound,
            19 => RequestError::NotEnoughStartedMembers,
            20 => RequestError::MemberNotLearner,
            21 => RequestError::LearnerNotReady,
            22 => RequestError::NotLeader,
            23 => RequestError::BadLeaderTransferee,
            24 => RequestError::LeaderTransferTimeout,
            25 => RequestError::PeerUrlExists,
            26 => RequestError::TooManyLearners,
            27 => RequestError::BadMemberUrls,
            28 => RequestError::FixedMembership,
            29 => RequestError::Unhealthy,
            30 => RequestError::NoSpace,
            31 => RequestError::PermissionDenied,
            32 => RequestError::UserEmpty,
            33 => RequestError::AuthFailed,
            34 => RequestError::InvalidAuthToken,
            35 => RequestError::UserAlreadyExist,
            36 => RequestError::UserNotFound,
            37 => RequestError::RoleAlreadyExist,
            38 => RequestError::RoleNotFound,
            39 => RequestError::RoleEmpty,
            40 => RequestError::RootUserNotExist,
            41 => RequestError::RootRoleNotExist,
            42 => RequestError::PermissionNotGranted,
            43 => RequestError::RoleNotGranted,
            44 => RequestError::AuthNotEnabled,
            45 => RequestError::InvalidAuthMgmt,
            46 => RequestError::AuthOldRevision,
            47 => RequestError::Corrupt,
            _ => return None,
        })
    }

    /// Every variant, for exhaustive tests of code and status tables.
    pub const ALL: [RequestError; 43] = [
        RequestError::Compacted,
        RequestError::FutureRevision,
        RequestError::EmptyKey,
        RequestError::TooManyOps,
        RequestError::DuplicateKey,
        RequestError::KeyNotFound,
        RequestError::ValueProvided,
        RequestError::LeaseProvided,
        RequestError::RequestTooLarge,
        RequestError::InvalidSortOption,
        RequestError::LeaseNotFound,
        RequestError::LeaseExists,
        RequestError::LeaseTtlTooLarge,
        RequestError::MemberNotFound,
        RequestError::NotEnoughStartedMembers,
        RequestError::MemberNotLearner,
        RequestError::LearnerNotReady,
        RequestError::NotLeader,
        RequestError::BadLeaderTransferee,
        RequestError::LeaderTransferTimeout,
        RequestError::PeerUrlExists,
        RequestError::TooManyLearners,
        RequestError::BadMemberUrls,
        RequestError::FixedMembership,
        RequestError::Unhealthy,
        RequestError::NoSpace,
        RequestError::PermissionDenied,
        RequestError::UserEmpty,
        RequestError::AuthFailed,
        RequestError::InvalidAuthToken,
        RequestError::UserAlreadyExist,
        RequestError::UserNotFound,
        RequestError::RoleAlreadyExist,
        RequestError::RoleNotFound,
        RequestError::RoleEmpty,
        RequestError::RootUserNotExist,
        RequestError::RootRoleNotExist,
        RequestError::PermissionNotGranted,
        RequestError::RoleNotGranted,
        RequestError::AuthNotEnabled,
        RequestError::InvalidAuthMgmt,
        RequestError::AuthOldRevision,
        RequestError::Corrupt,
    ];
}

/// A storage failure below a backend, with its source kept (RocksDB, a database driver,
/// the file system). Cheap to clone: one failure may be reported to many waiters.
pub type StorageSource = Arc<dyn std::error::Error + Send + Sync>;

/// Why a backend operation failed. The variants say what the caller may assume:
///
/// | variant | happened? | retry? |
/// |---|---|---|
/// | [`Request`](BackendError::Request) | no (refused) | no: the same request fails again |
/// | [`NoLeader`](BackendError::NoLeader) | no (never proposed) | yes, later |
/// | [`Timeout`](BackendError::Timeout), [`LeaderChanged`](BackendError::LeaderChanged) | maybe | only if idempotent |
/// | [`Stopped`](BackendError::Stopped) | maybe (a write) | on another member |
/// | [`Corrupt`](BackendError::Corrupt), [`Storage`](BackendError::Storage), [`Sealed`](BackendError::Sealed) | maybe | no: an operator must look |
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// etcd's semantics refused the request; nothing was written.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// No leader is known: the cluster has no quorum right now. Nothing was proposed.
    #[error("no leader")]
    NoLeader,
    /// The storage below cannot be reached right now (the SQL adapter's database is down or
    /// unreachable); nothing was written. Retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(StorageSource),
    /// The cluster did not answer in time; a write may or may not have happened.
    #[error("request timed out")]
    Timeout,
    /// A proposal was lost to a leader change; it may or may not have happened.
    #[error("leader changed")]
    LeaderChanged,
    /// This member is shutting down.
    #[error("server stopped")]
    Stopped,
    /// Stored data cannot be decoded: a bug or a damaged disk (etcd: DataLoss).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The storage below failed (I/O, the database); the source says how.
    #[error("storage: {0}")]
    Storage(StorageSource),
    /// A stored secret does not open: this member lacks the cluster key it was sealed with
    /// (the text says which), or the sealed bytes were damaged.
    #[error(transparent)]
    Sealed(#[from] crate::seal::SealError),
}

impl BackendError {
    /// A storage failure from any error type, keeping it as the source.
    pub fn storage(e: impl std::error::Error + Send + Sync + 'static) -> BackendError {
        BackendError::Storage(Arc::new(e))
    }

    /// Whether the operation certainly did not happen, so that retrying cannot repeat it.
    pub fn certainly_not_applied(&self) -> bool {
        matches!(self, BackendError::Request(_) | BackendError::NoLeader | BackendError::Unavailable(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for e in RequestError::ALL {
            assert!(seen.insert(e.code()), "code {} used twice", e.code());
            assert_eq!(RequestError::from_code(e.code()), Some(e));
        }
        for retired in [0, 10, 11, 12, 17] {
            assert_eq!(RequestError::from_code(retired), None);
        }
    }
}
