//! The MVCC layer's one error enum: a request refused by etcd's semantics, stored data
//! that cannot be decoded, or a failure of the storage below, with its source kept.

use std::sync::Arc;

use cairn_core::{BackendError, RequestError, StorageSource};

/// An error from reading or applying an etcd request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MvccError {
    /// etcd's semantics refused the request (compacted revision, missing lease, …); nothing
    /// was written. Deterministic: every replica refuses it alike.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Stored data cannot be decoded: a bug or a damaged disk.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The storage engine failed (its own error kept as the source).
    #[error("storage: {0}")]
    Storage(StorageSource),
    /// Reading or writing a snapshot stream failed.
    #[error("snapshot i/o: {0}")]
    SnapshotIo(Arc<std::io::Error>),
    /// A sealed value does not open (see [`cairn_core::seal`]).
    #[error(transparent)]
    Sealed(#[from] cairn_core::seal::SealError),
}

impl From<MvccError> for BackendError {
    fn from(e: MvccError) -> BackendError {
        match e {
            MvccError::Request(r) => BackendError::Request(r),
            MvccError::Corrupt(detail) => BackendError::Corrupt(detail),
            MvccError::Storage(source) => BackendError::Storage(source),
            MvccError::SnapshotIo(source) => BackendError::Storage(source),
            MvccError::Sealed(e) => BackendError::Sealed(e),
        }
    }
}

impl MvccError {
    /// A failure of the storage engine below.
    pub fn storage(source: impl std::error::Error + Send + Sync + 'static) -> MvccError {
        MvccError::Storage(Arc::new(source))
    }
}

impl PartialEq for MvccError {
    /// Equal when of the same kind with the same detail (I/O errors compare by kind, engine errors by identity).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (MvccError::Request(a), MvccError::Request(b)) => a == b,
            (MvccError::Corrupt(a), MvccError::Corrupt(b)) => a == b,
            (MvccError::Storage(a), MvccError::Storage(b)) => Arc::ptr_eq(a, b),
            (MvccError::SnapshotIo(a), MvccError::SnapshotIo(b)) => a.kind() == b.kind(),
            (MvccError::Sealed(a), MvccError::Sealed(b)) => a == b,
            _ => false,
        }
    }
}
