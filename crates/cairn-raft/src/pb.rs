//! The generated peer protocol and its conversions to the MVCC engine's request types.

#![allow(clippy::all)]
tonic::include_proto!("cairnpb");

use cairn_core::RequestError;

impl From<cairn_core::WriteRequest> for WriteRequest {
    fn from(r: cairn_core::WriteRequest) -> Self {
        use write_request::Request;
        let request = match r {
            cairn_core::WriteRequest::Put(p) => Request::Put(p),
            cairn_core::WriteRequest::DeleteRange(d) => Request::DeleteRange(d),
            cairn_core::WriteRequest::Txn(t) => Request::Txn(t),
            cairn_core::WriteRequest::Compact(c) => Request::Compaction(c),
            cairn_core::WriteRequest::LeaseGrant(g) => Request::LeaseGrant(g),
            cairn_core::WriteRequest::LeaseRevoke(r) => Request::LeaseRevoke(r),
        };
        WriteRequest { request: Some(request) }
    }
}

impl TryFrom<WriteRequest> for cairn_core::WriteRequest {
    type Error = &'static str;
    fn try_from(r: WriteRequest) -> Result<Self, Self::Error> {
        use write_request::Request;
        Ok(match r.request.ok_or("empty write request")? {
            Request::Put(p) => cairn_core::WriteRequest::Put(p),
            Request::DeleteRange(d) => cairn_core::WriteRequest::DeleteRange(d),
            Request::Txn(t) => cairn_core::WriteRequest::Txn(t),
            Request::Compaction(c) => cairn_core::WriteRequest::Compact(c),
            Request::LeaseGrant(g) => cairn_core::WriteRequest::LeaseGrant(g),
            Request::LeaseRevoke(r) => cairn_core::WriteRequest::LeaseRevoke(r),
        })
    }
}

impl From<crate::types::Command> for Command {
    fn from(c: crate::types::Command) -> Self {
        use command::Command as C;
        let command = match c {
            crate::types::Command::Write(cairn_core::WriteRequest::Put(p)) => C::Put(p),
            crate::types::Command::Write(cairn_core::WriteRequest::DeleteRange(d)) => C::DeleteRange(d),
            crate::types::Command::Write(cairn_core::WriteRequest::Txn(t)) => C::Txn(t),
            crate::types::Command::Write(cairn_core::WriteRequest::Compact(c)) => C::Compaction(c),
            crate::types::Command::Write(cairn_core::WriteRequest::LeaseGrant(g)) => C::LeaseGrant(g),
            crate::types::Command::Write(cairn_core::WriteRequest::LeaseRevoke(r)) => C::LeaseRevoke(r),
            crate::types::Command::SetMember(m) => C::MemberAttributes(m),
            crate::types::Command::SetAlarm(a) => C::Alarm(a),
        };
        let format = if matches!(command, C::Alarm(_)) { 2 } else { 1 };
        Command { command: Some(command), format }
    }
}

impl TryFrom<Command> for crate::types::Command {
    type Error = String;
    fn try_from(c: Command) -> Result<Self, Self::Error> {
        use crate::types::COMMAND_FORMAT;
        use command::Command as C;
        if c.format > COMMAND_FORMAT {
            return Err(format!(
                "a log entry of command format {}, newer than this member's ({COMMAND_FORMAT}): upgrade this member",
                c.format
            ));
        }
        let write = |w| Ok(crate::types::Command::Write(w));
        match c.command.ok_or_else(|| "an empty command".to_string())? {
            C::Put(p) => write(cairn_core::WriteRequest::Put(p)),
            C::DeleteRange(d) => write(cairn_core::WriteRequest::DeleteRange(d)),
            C::Txn(t) => write(cairn_core::WriteRequest::Txn(t)),
            C::Compaction(c) => write(cairn_core::WriteRequest::Compact(c)),
            C::LeaseGrant(g) => write(cairn_core::WriteRequest::LeaseGrant(g)),
            C::LeaseRevoke(r) => write(cairn_core::WriteRequest::LeaseRevoke(r)),
            C::MemberAttributes(m) => Ok(crate::types::Command::SetMember(m)),
            C::Alarm(a) => Ok(crate::types::Command::SetAlarm(a)),
        }
    }
}

impl From<Result<cairn_core::WriteResponse, RequestError>> for WriteResponse {
    fn from(r: Result<cairn_core::WriteResponse, RequestError>) -> Self {
        use write_response::Response;
        let response = match r {
            Ok(cairn_core::WriteResponse::Put(p)) => Response::Put(p),
            Ok(cairn_core::WriteResponse::DeleteRange(d)) => Response::DeleteRange(d),
            Ok(cairn_core::WriteResponse::Txn(t)) => Response::Txn(t),
            Ok(cairn_core::WriteResponse::Compact(c)) => Response::Compaction(c),
            Ok(cairn_core::WriteResponse::LeaseGrant(g)) => Response::LeaseGrant(g),
            Ok(cairn_core::WriteResponse::LeaseRevoke(r)) => Response::LeaseRevoke(r),
            Err(e) => Response::Error(WriteError { code: e.code(), message: e.to_string() }),
        };
        WriteResponse { response: Some(response), log_index: 0 }
    }
}

impl TryFrom<WriteResponse> for Result<cairn_core::WriteResponse, RequestError> {
    type Error = String;
    fn try_from(r: WriteResponse) -> Result<Self, Self::Error> {
        use write_response::Response;
        Ok(match r.response.ok_or_else(|| "empty write response".to_string())? {
            Response::Put(p) => Ok(cairn_core::WriteResponse::Put(p)),
            Response::DeleteRange(d) => Ok(cairn_core::WriteResponse::DeleteRange(d)),
            Response::Txn(t) => Ok(cairn_core::WriteResponse::Txn(t)),
            Response::Compaction(c) => Ok(cairn_core::WriteResponse::Compact(c)),
            Response::LeaseGrant(g) => Ok(cairn_core::WriteResponse::LeaseGrant(g)),
            Response::LeaseRevoke(r) => Ok(cairn_core::WriteResponse::LeaseRevoke(r)),
            Response::Error(e) => Err(RequestError::from_code(e.code).ok_or_else(|| {
                format!(
                    "a write refused with an error this member does not know (code {}: {})",
                    e.code, e.message
                )
            })?),
        })
    }
}
