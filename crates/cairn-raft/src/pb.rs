//! The generated peer protocol and its conversions to the MVCC engine's request types.

#![allow(clippy::all)]
tonic::include_proto!("cairnpb");

use cairn_mvcc::MvccError;

impl From<cairn_mvcc::WriteRequest> for WriteRequest {
    fn from(r: cairn_mvcc::WriteRequest) -> Self {
        use write_request::Request;
        let request = match r {
            cairn_mvcc::WriteRequest::Put(p) => Request::Put(p),
            cairn_mvcc::WriteRequest::DeleteRange(d) => Request::DeleteRange(d),
            cairn_mvcc::WriteRequest::Txn(t) => Request::Txn(t),
            cairn_mvcc::WriteRequest::Compact(c) => Request::Compaction(c),
            cairn_mvcc::WriteRequest::LeaseGrant(g) => Request::LeaseGrant(g),
            cairn_mvcc::WriteRequest::LeaseRevoke(r) => Request::LeaseRevoke(r),
        };
        WriteRequest { request: Some(request) }
    }
}

impl TryFrom<WriteRequest> for cairn_mvcc::WriteRequest {
    type Error = &'static str;
    fn try_from(r: WriteRequest) -> Result<Self, Self::Error> {
        use write_request::Request;
        Ok(match r.request.ok_or("empty write request")? {
            Request::Put(p) => cairn_mvcc::WriteRequest::Put(p),
            Request::DeleteRange(d) => cairn_mvcc::WriteRequest::DeleteRange(d),
            Request::Txn(t) => cairn_mvcc::WriteRequest::Txn(t),
            Request::Compaction(c) => cairn_mvcc::WriteRequest::Compact(c),
            Request::LeaseGrant(g) => cairn_mvcc::WriteRequest::LeaseGrant(g),
            Request::LeaseRevoke(r) => cairn_mvcc::WriteRequest::LeaseRevoke(r),
        })
    }
}

impl From<Result<cairn_mvcc::WriteResponse, MvccError>> for WriteResponse {
    fn from(r: Result<cairn_mvcc::WriteResponse, MvccError>) -> Self {
        use write_response::Response;
        let response = match r {
            Ok(cairn_mvcc::WriteResponse::Put(p)) => Response::Put(p),
            Ok(cairn_mvcc::WriteResponse::DeleteRange(d)) => Response::DeleteRange(d),
            Ok(cairn_mvcc::WriteResponse::Txn(t)) => Response::Txn(t),
            Ok(cairn_mvcc::WriteResponse::Compact(c)) => Response::Compaction(c),
            Ok(cairn_mvcc::WriteResponse::LeaseGrant(g)) => Response::LeaseGrant(g),
            Ok(cairn_mvcc::WriteResponse::LeaseRevoke(r)) => Response::LeaseRevoke(r),
            Err(e) => Response::Error(WriteError { code: e.code(), message: e.to_string() }),
        };
        WriteResponse { response: Some(response) }
    }
}

impl TryFrom<WriteResponse> for Result<cairn_mvcc::WriteResponse, MvccError> {
    type Error = &'static str;
    fn try_from(r: WriteResponse) -> Result<Self, Self::Error> {
        use write_response::Response;
        Ok(match r.response.ok_or("empty write response")? {
            Response::Put(p) => Ok(cairn_mvcc::WriteResponse::Put(p)),
            Response::DeleteRange(d) => Ok(cairn_mvcc::WriteResponse::DeleteRange(d)),
            Response::Txn(t) => Ok(cairn_mvcc::WriteResponse::Txn(t)),
            Response::Compaction(c) => Ok(cairn_mvcc::WriteResponse::Compact(c)),
            Response::LeaseGrant(g) => Ok(cairn_mvcc::WriteResponse::LeaseGrant(g)),
            Response::LeaseRevoke(r) => Ok(cairn_mvcc::WriteResponse::LeaseRevoke(r)),
            Response::Error(e) => Err(MvccError::from_code(e.code, e.message)),
        })
    }
}
