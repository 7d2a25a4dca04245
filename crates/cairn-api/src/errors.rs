//! The one place where errors become gRPC statuses with etcd's codes and texts (clients
//! match on the text, so it must be exact).

use cairn_mvcc::MvccError;
use tonic::{Code, Status};

use crate::backend::BackendError;

pub fn mvcc_status(e: &MvccError) -> Status {
    let (code, text) = match e {
        MvccError::Compacted => (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted"),
        MvccError::FutureRevision => {
            (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision")
        }
        MvccError::EmptyKey => (Code::InvalidArgument, "etcdserver: key is not provided"),
        MvccError::TooManyOps => (Code::InvalidArgument, "etcdserver: too many operations in txn request"),
        MvccError::DuplicateKey => (Code::InvalidArgument, "etcdserver: duplicate key given in txn request"),
        MvccError::KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found"),
        MvccError::ValueProvided => (Code::InvalidArgument, "etcdserver: value is provided"),
        MvccError::LeaseProvided => (Code::InvalidArgument, "etcdserver: lease is provided"),
        MvccError::RequestTooLarge => (Code::InvalidArgument, "etcdserver: request is too large"),
        MvccError::InvalidSortOption => (Code::InvalidArgument, "etcdserver: invalid sort option"),
        MvccError::LeaseNotFound => (Code::NotFound, "etcdserver: requested lease not found"),
        MvccError::LeaseExists => (Code::FailedPrecondition, "etcdserver: lease already exists"),
        MvccError::LeaseTtlTooLarge => (Code::OutOfRange, "etcdserver: too large lease TTL"),
        MvccError::Corrupt(_) => (Code::DataLoss, "etcdserver: corrupt cluster"),
        MvccError::Storage(detail) => {
            return Status::internal(format!("etcdserver: storage error: {detail}"))
        }
        _ => return Status::unknown(e.to_string()),
    };
    Status::new(code, text)
}

pub fn backend_status(e: &BackendError) -> Status {
    match e {
        BackendError::Mvcc(m) => mvcc_status(m),
        BackendError::NoLeader => Status::unavailable("etcdserver: no leader"),
        BackendError::Timeout => Status::unavailable("etcdserver: request timed out"),
        BackendError::LeaderChanged => Status::unavailable("etcdserver: leader changed"),
        BackendError::Stopped => Status::unavailable("etcdserver: server stopped"),
    }
}

impl From<BackendError> for Status {
    fn from(e: BackendError) -> Status {
        backend_status(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_texts_are_exact() {
        let s = mvcc_status(&MvccError::Compacted);
        assert_eq!(
            (s.code(), s.message()),
            (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted")
        );
        let s = mvcc_status(&MvccError::EmptyKey);
        assert_eq!((s.code(), s.message()), (Code::InvalidArgument, "etcdserver: key is not provided"));
        let s = backend_status(&BackendError::NoLeader);
        assert_eq!((s.code(), s.message()), (Code::Unavailable, "etcdserver: no leader"));
    }
}
