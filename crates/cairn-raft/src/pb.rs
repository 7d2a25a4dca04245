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
        WriteRequest { request: Some(request), auth_revision: 0 }
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
        let write = |w| match w {
            cairn_core::WriteRequest::Put(p) => C::Put(p),
            cairn_core::WriteRequest::DeleteRange(d) => C::DeleteRange(d),
            cairn_core::WriteRequest::Txn(t) => C::Txn(t),
            cairn_core::WriteRequest::Compact(c) => C::Compaction(c),
            cairn_core::WriteRequest::LeaseGrant(g) => C::LeaseGrant(g),
            cairn_core::WriteRequest::LeaseRevoke(r) => C::LeaseRevoke(r),
        };
        let (command, format, auth_revision) = match c {
            crate::types::Command::Write(w) => (write(w), 1, 0),
            crate::types::Command::CheckedWrite { write: w, auth_revision } => (write(w), 4, auth_revision),
            crate::types::Command::SetMember(m) => (C::MemberAttributes(m), 1, 0),
            crate::types::Command::SetAlarm(a) => (C::Alarm(a), 2, 0),
            crate::types::Command::Auth(a) => (C::Auth(a.into()), 3, 0),
        };
        Command { command: Some(command), format, auth_revision }
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
        let auth_revision = c.auth_revision;
        let write = |write| {
            Ok(match auth_revision {
                0 => crate::types::Command::Write(write),
                auth_revision => crate::types::Command::CheckedWrite { write, auth_revision },
            })
        };
        match c.command.ok_or_else(|| "an empty command".to_string())? {
            C::Put(p) => write(cairn_core::WriteRequest::Put(p)),
            C::DeleteRange(d) => write(cairn_core::WriteRequest::DeleteRange(d)),
            C::Txn(t) => write(cairn_core::WriteRequest::Txn(t)),
            C::Compaction(c) => write(cairn_core::WriteRequest::Compact(c)),
            C::LeaseGrant(g) => write(cairn_core::WriteRequest::LeaseGrant(g)),
            C::LeaseRevoke(r) => write(cairn_core::WriteRequest::LeaseRevoke(r)),
            C::MemberAttributes(m) => Ok(crate::types::Command::SetMember(m)),
            C::Alarm(a) => Ok(crate::types::Command::SetAlarm(a)),
            C::Auth(a) => Ok(crate::types::Command::Auth(a.try_into()?)),
        }
    }
}

impl From<crate::types::AuthCommand> for AuthCommand {
    fn from(c: crate::types::AuthCommand) -> Self {
        use auth_command::Command as A;
        use cairn_core::auth::AuthChange as Ch;
        use cairn_proto::authpb::{User, UserAddOptions};
        let user = |name: String, hash: String, no_password: bool| User {
            name: name.into_bytes(),
            password: hash.into_bytes(),
            roles: Vec::new(),
            options: Some(UserAddOptions { no_password }),
        };
        let command = match c {
            crate::types::AuthCommand::AssignToken { user, token } => {
                A::AssignToken(UserToken { user, token })
            }
            crate::types::AuthCommand::Change(change) => match change {
                Ch::Enable => A::Enable(true),
                Ch::Disable => A::Enable(false),
                Ch::UserAdd { name, password_hash, no_password } => {
                    A::UserAdd(user(name, password_hash, no_password))
                }
                Ch::UserDelete { name } => A::UserDelete(name),
                Ch::UserChangePassword { name, password_hash } => {
                    A::UserChangePassword(user(name, password_hash, false))
                }
                Ch::UserGrantRole { user, role } => A::UserGrantRole(UserRole { user, role }),
                Ch::UserRevokeRole { user, role } => A::UserRevokeRole(UserRole { user, role }),
                Ch::RoleAdd { name } => A::RoleAdd(name),
                Ch::RoleDelete { name } => A::RoleDelete(name),
                Ch::RoleGrantPermission { role, perm } => {
                    A::RoleGrantPermission(RolePermission { role, perm: Some(perm) })
                }
                Ch::RoleRevokePermission { role, key, range_end } => {
                    let perm = cairn_proto::authpb::Permission { perm_type: 0, key, range_end };
                    A::RoleRevokePermission(RolePermission { role, perm: Some(perm) })
                }
            },
        };
        AuthCommand { command: Some(command) }
    }
}

impl TryFrom<AuthCommand> for crate::types::AuthCommand {
    type Error = String;
    fn try_from(c: AuthCommand) -> Result<Self, Self::Error> {
        use auth_command::Command as A;
        use cairn_core::auth::AuthChange as Ch;
        let text =
            |b: Vec<u8>| String::from_utf8(b).map_err(|_| "an auth name that is not UTF-8".to_string());
        let change = match c.command.ok_or_else(|| "an empty auth command".to_string())? {
            A::AssignToken(UserToken { user, token }) => {
                return Ok(crate::types::AuthCommand::AssignToken { user, token })
            }
            A::Enable(true) => Ch::Enable,
            A::Enable(false) => Ch::Disable,
            A::UserAdd(u) => Ch::UserAdd {
                name: text(u.name)?,
                password_hash: text(u.password)?,
                no_password: u.options.is_some_and(|o| o.no_password),
            },
            A::UserDelete(name) => Ch::UserDelete { name },
            A::UserChangePassword(u) => {
                Ch::UserChangePassword { name: text(u.name)?, password_hash: text(u.password)? }
            }
            A::UserGrantRole(UserRole { user, role }) => Ch::UserGrantRole { user, role },
            A::UserRevokeRole(UserRole { user, role }) => Ch::UserRevokeRole { user, role },
            A::RoleAdd(name) => Ch::RoleAdd { name },
            A::RoleDelete(name) => Ch::RoleDelete { name },
            A::RoleGrantPermission(RolePermission { role, perm }) => {
                Ch::RoleGrantPermission { role, perm: perm.ok_or("a grant without a permission")? }
            }
            A::RoleRevokePermission(RolePermission { role, perm }) => {
                let perm = perm.ok_or("a revoke without a permission")?;
                Ch::RoleRevokePermission { role, key: perm.key, range_end: perm.range_end }
            }
        };
        Ok(crate::types::AuthCommand::Change(change))
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
