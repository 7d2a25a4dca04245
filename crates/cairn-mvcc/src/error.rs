//! Errors of the MVCC layer. Each variant that a client can cause carries etcd's meaning;
//! the API crate maps them to etcd's gRPC codes and texts in one place.

/// An error from validating, reading or applying an etcd request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MvccError {
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
    /// Stored data cannot be decoded: a bug or a damaged disk (etcd: DataLoss).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// RocksDB failed.
    #[error("storage: {0}")]
    Storage(String),
}

impl From<rocksdb::Error> for MvccError {
    fn from(e: rocksdb::Error) -> Self {
        MvccError::Storage(e.into_string())
    }
}

impl MvccError {
    /// A stable number for each variant, used to carry the error through the Raft log's
    /// apply results (see `cairnpb.WriteError`). Never renumber.
    pub fn code(&self) -> u32 {
        match self {
            MvccError::Compacted => 1,
            MvccError::FutureRevision => 2,
            MvccError::EmptyKey => 3,
            MvccError::TooManyOps => 4,
            MvccError::DuplicateKey => 5,
            MvccError::KeyNotFound => 6,
            MvccError::ValueProvided => 7,
            MvccError::LeaseProvided => 8,
            MvccError::RequestTooLarge => 9,
            MvccError::Corrupt(_) => 11,
            MvccError::Storage(_) => 12,
            // 10 is retired (a former generic enum error); never reuse it.
            MvccError::InvalidSortOption => 13,
            MvccError::LeaseNotFound => 14,
            MvccError::LeaseExists => 15,
            MvccError::LeaseTtlTooLarge => 16,
        }
    }

    /// The inverse of [`MvccError::code`].
    pub fn from_code(code: u32, message: String) -> MvccError {
        match code {
            1 => MvccError::Compacted,
            2 => MvccError::FutureRevision,
            3 => MvccError::EmptyKey,
            4 => MvccError::TooManyOps,
            5 => MvccError::DuplicateKey,
            6 => MvccError::KeyNotFound,
            7 => MvccError::ValueProvided,
            8 => MvccError::LeaseProvided,
            9 => MvccError::RequestTooLarge,
            11 => MvccError::Corrupt(message),
            13 => MvccError::InvalidSortOption,
            14 => MvccError::LeaseNotFound,
            15 => MvccError::LeaseExists,
            16 => MvccError::LeaseTtlTooLarge,
            _ => MvccError::Storage(message),
        }
    }
}
