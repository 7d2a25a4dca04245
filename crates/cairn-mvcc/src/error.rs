//! The MVCC layer's one error enum: a request refused by etcd's semantics, stored data
//! that cannot be decoded, or a failure of the storage below, with its source kept.

use std::sync::Arc;

use cairn_core::{BackendError, RequestError};

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
    /// RocksDB failed.
    #[error("storage: {0}")]
    Storage(#[from] rocksdb::Error),
    /// Reading or writing a snapshot stream failed.
    #[error("snapshot i/o: {0}")]
    SnapshotIo(Arc<std::io::Error>),
}

impl From<MvccError> for BackendError {
    fn from(e: MvccError) -> BackendError {
        match e {
            MvccError::Request(r) => BackendError::Request(r),
            MvccError::Corrupt(detail) => BackendError::Corrupt(detail),
            MvccError::Storage(source) => BackendError::storage(source),
            MvccError::SnapshotIo(source) => BackendError::Storage(source),
        }
    }
}

impl PartialEq for MvccError {
    /// Equal when of the same kind with the same detail (I/O errors compare by kind).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (MvccError::Request(a), MvccError::Request(b)) => a == b,
            (MvccError::Corrupt(a), MvccError::Corrupt(b)) => a == b,
            (MvccError::Storage(a), MvccError::Storage(b)) => a == b,
            (MvccError::SnapshotIo(a), MvccError::SnapshotIo(b)) => a.kind() == b.kind(),
            _ => false,
        }
    }
}
