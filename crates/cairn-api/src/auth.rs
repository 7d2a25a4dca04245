//! etcd's `Auth` service, and the permission gate every other service passes its requests
//! through ([`authorize`]). The rules are `cairn_core::auth`'s; this layer reads the token
//! from the request (etcd's `token` metadata, or `authorization` from the JSON gateway),
//! hashes and checks passwords with bcrypt (etcd's hash, cost 10), and speaks the protocol.

use std::sync::Arc;

use cairn_core::auth::{AuthChange, AuthState};
use cairn_core::RequestError;
use cairn_proto::etcdserverpb::auth_server::Auth;
use cairn_proto::etcdserverpb::*;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::errors::{backend_status, request_status};
use crate::lease::current_header;
use crate::Backend;

/// etcd's default `--bcrypt-cost`.
pub const BCRYPT_COST: u32 = 10;

/// Whether a service checks permissions. The services behind Lock and Election's
/// in-process channel are `Trusted`: those two check the caller themselves, and the channel
/// is not reachable from outside the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforce {
    Checked,
    Trusted,
}

/// The token a request carries: etcd's clients send `token`; the JSON gateway passes the
/// `Authorization` header on as `authorization`.
pub fn token_of(metadata: &MetadataMap) -> Option<&str> {
    metadata.get("token").or_else(|| metadata.get("authorization")).and_then(|v| v.to_str().ok())
}

/// What the permission gate needs of a backend, object-safe (Lock and Election hold one
/// without knowing the backend's type).
pub trait Permissions: Send + Sync + 'static {
    fn auth_state(&self) -> Arc<AuthState>;
    fn token_user(&self, token: &str) -> Option<String>;
}

impl<B: Backend> Permissions for B {
    fn auth_state(&self) -> Arc<AuthState> {
        cairn_core::AuthBackend::auth_state(self)
    }

    fn token_user(&self, token: &str) -> Option<String> {
        cairn_core::AuthBackend::token_user(self, token)
    }
}

/// The user a request comes from: its token's user; without a token, the common name of
/// its verified client certificate (etcd's certificate auth, set by
/// [`crate::listener::with_common_name`] from the connection alone); `Ok(None)` with neither
/// (the checks then refuse it with "user name is empty"). An unknown or expired token is
/// "invalid auth token".
pub fn caller<P: Permissions + ?Sized>(
    backend: &P,
    metadata: &MetadataMap,
) -> Result<Option<String>, Status> {
    match token_of(metadata) {
        None => Ok(metadata
            .get(crate::listener::COMMON_NAME_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|cn| !cn.is_empty())
            .map(str::to_string)),
        Some(token) => match backend.token_user(token) {
            Some(user) => Ok(Some(user)),
            None => Err(request_status(RequestError::InvalidAuthToken)),
        },
    }
}

/// Run `check` for the request's caller when auth is enabled (and the service checks).
/// Returns the auth revision it checked against (0: nothing checked), for a write to be
/// refused at apply if the auth state changes before ([`KvBackend::write_checked`]).
///
/// [`KvBackend::write_checked`]: cairn_core::KvBackend::write_checked
pub fn authorize<P: Permissions + ?Sized>(
    backend: &P,
    enforce: Enforce,
    metadata: &MetadataMap,
    check: impl FnOnce(&AuthState, Option<&str>) -> Result<(), RequestError>,
) -> Result<u64, Status> {
    if enforce == Enforce::Trusted {
        return Ok(0);
    }
    let state = Permissions::auth_state(backend);
    if !state.enabled {
        return Ok(0);
    }
    let user = caller(backend, metadata)?;
    check(&state, user.as_deref()).map_err(request_status)?;
    Ok(state.revision)
}

/// The same check, refused as etcd's maintenance server refuses it: with the auth store's
/// own error text and code Unknown (etcd 3.4 does not convert these).
pub fn authorize_admin_raw<P: Permissions + ?Sized>(
    backend: &P,
    enforce: Enforce,
    metadata: &MetadataMap,
) -> Result<(), Status> {
    if enforce == Enforce::Trusted || !Permissions::auth_state(backend).enabled {
        return Ok(());
    }
    let refused = |e: RequestError| {
        let text = match e {
            RequestError::UserEmpty => "auth: user name is empty",
            RequestError::InvalidAuthToken => "auth: invalid auth token",
            RequestError::UserNotFound => "auth: user not found",
            _ => "auth: permission denied",
        };
        Status::unknown(text)
    };
    let user = caller(backend, metadata).map_err(|_| refused(RequestError::InvalidAuthToken))?;
    Permissions::auth_state(backend).check_admin(user.as_deref()).map_err(refused)
}

/// Only root may (once auth is enabled).
pub fn authorize_admin<P: Permissions + ?Sized>(
    backend: &P,
    enforce: Enforce,
    metadata: &MetadataMap,
) -> Result<(), Status> {
    authorize(backend, enforce, metadata, |state, user| state.check_admin(user)).map(|_| ())
}

pub struct AuthService<B> {
    pub backend: Arc<B>,
}

/// Hash a password off the async workers (bcrypt takes tens of milliseconds on purpose).
async fn hash(password: String) -> Result<String, Status> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, BCRYPT_COST))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("hashing the password: {e}")))
}

/// The hash to store for a request: etcd 3.5 clients may send one made already.
async fn hash_of(password: String, hashed: String) -> Result<String, Status> {
    if hashed.is_empty() {
        hash(password).await
    } else if bcrypt::verify("", &hashed).is_err() {
        Err(Status::invalid_argument("etcdserver: the hashed password is not a bcrypt hash"))
    } else {
        Ok(hashed)
    }
}

impl<B: Backend> AuthService<B> {
    async fn change(
        &self,
        metadata: &MetadataMap,
        change: AuthChange,
    ) -> Result<Option<ResponseHeader>, Status> {
        authorize_admin(&*self.backend, Enforce::Checked, metadata)?;
        self.backend.auth_change(change).await.map_err(backend_status)?;
        Ok(current_header(&*self.backend))
    }
}

#[tonic::async_trait]
impl<B: Backend> Auth for AuthService<B> {
    async fn auth_enable(
        &self,
        req: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let header = self.change(req.metadata(), AuthChange::Enable).await?;
        Ok(Response::new(AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        req: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let header = self.change(req.metadata(), AuthChange::Disable).await?;
        Ok(Response::new(AuthDisableResponse { header }))
    }

    async fn auth_status(
        &self,
        _req: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let state = Permissions::auth_state(&*self.backend);
        Ok(Response::new(AuthStatusResponse {
            header: current_header(&*self.backend),
            enabled: state.enabled,
            auth_revision: state.revision,
        }))
    }

    async fn authenticate(
        &self,
        req: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let AuthenticateRequest { name, password } = req.into_inner();
        self.backend.auth_read_point().await.map_err(backend_status)?;
        let state = Permissions::auth_state(&*self.backend);
        if !state.enabled {
            return Err(request_status(RequestError::AuthNotEnabled));
        }
        let failed = || request_status(RequestError::AuthFailed);
        let user = state.user(&name).ok_or_else(failed)?;
        if user.options.as_ref().is_some_and(|o| o.no_password) {
            // etcd 3.4 sends its internal error here, unmapped.
            return Err(Status::unknown(
                "auth: authentication failed, password was given for no password user",
            ));
        }
        let stored = String::from_utf8(user.password.clone()).map_err(|_| failed())?;
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &stored).unwrap_or(false))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        if !matches {
            return Err(failed());
        }
        let token = self.backend.assign_token(name).await.map_err(backend_status)?;
        Ok(Response::new(AuthenticateResponse { header: current_header(&*self.backend), token }))
    }

    async fn user_add(
        &self,
        req: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        authorize_admin(&*self.backend, Enforce::Checked, req.metadata())?;
        let metadata = req.metadata().clone();
        let AuthUserAddRequest { name, password, options, hashed_password } = req.into_inner();
        if name.is_empty() {
            return Err(request_status(RequestError::UserEmpty));
        }
        let no_password = options.is_some_and(|o| o.no_password);
        let password_hash =
            if no_password { String::new() } else { hash_of(password, hashed_password).await? };
        let change = AuthChange::UserAdd { name, password_hash, no_password };
        let header = self.change(&metadata, change).await?;
        Ok(Response::new(AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        req: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let name = &req.get_ref().name;
        // A user may read its own entry.
        authorize(&*self.backend, Enforce::Checked, req.metadata(), |state, user| {
            state.check_admin(user).or_else(|e| if user == Some(name.as_str()) { Ok(()) } else { Err(e) })
        })?;
        let state = Permissions::auth_state(&*self.backend);
        let user = state.user(name).ok_or_else(|| request_status(RequestError::UserNotFound))?;
        Ok(Response::new(AuthUserGetResponse {
            header: current_header(&*self.backend),
            roles: user.roles.clone(),
        }))
    }

    async fn user_list(
        &self,
        req: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        authorize_admin(&*self.backend, Enforce::Checked, req.metadata())?;
        let users = Permissions::auth_state(&*self.backend).user_names();
        Ok(Response::new(AuthUserListResponse { header: current_header(&*self.backend), users }))
    }

    async fn user_delete(
        &self,
        req: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let name = req.get_ref().name.clone();
        let header = self.change(req.metadata(), AuthChange::UserDelete { name }).await?;
        Ok(Response::new(AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        req: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        authorize_admin(&*self.backend, Enforce::Checked, req.metadata())?;
        let metadata = req.metadata().clone();
        let AuthUserChangePasswordRequest { name, password, hashed_password } = req.into_inner();
        if Permissions::auth_state(&*self.backend).user(&name).is_none() {
            return Err(request_status(RequestError::UserNotFound));
        }
        let password_hash = hash_of(password, hashed_password).await?;
        let header = self.change(&metadata, AuthChange::UserChangePassword { name, password_hash }).await?;
        Ok(Response::new(AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        req: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let AuthUserGrantRoleRequest { user, role } = req.get_ref().clone();
        let header = self.change(req.metadata(), AuthChange::UserGrantRole { user, role }).await?;
        Ok(Response::new(AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let AuthUserRevokeRoleRequest { name, role } = req.get_ref().clone();
        let header = self.change(req.metadata(), AuthChange::UserRevokeRole { user: name, role }).await?;
        Ok(Response::new(AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        req: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let name = req.get_ref().name.clone();
        let header = self.change(req.metadata(), AuthChange::RoleAdd { name }).await?;
        Ok(Response::new(AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        req: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let role = &req.get_ref().role;
        // A user may read the roles it has.
        authorize(&*self.backend, Enforce::Checked, req.metadata(), |state, user| {
            state.check_admin(user).or_else(|e| {
                let has = user.and_then(|u| state.user(u)).is_some_and(|u| u.roles.iter().any(|r| r == role));
                if has {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        })?;
        let state = Permissions::auth_state(&*self.backend);
        let perm = state
            .role(role)
            .ok_or_else(|| request_status(RequestError::RoleNotFound))?
            .key_permission
            .clone();
        Ok(Response::new(AuthRoleGetResponse { header: current_header(&*self.backend), perm }))
    }

    async fn role_list(
        &self,
        req: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        authorize_admin(&*self.backend, Enforce::Checked, req.metadata())?;
        let roles = Permissions::auth_state(&*self.backend).role_names();
        Ok(Response::new(AuthRoleListResponse { header: current_header(&*self.backend), roles }))
    }

    async fn role_delete(
        &self,
        req: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let name = req.get_ref().role.clone();
        let header = self.change(req.metadata(), AuthChange::RoleDelete { name }).await?;
        Ok(Response::new(AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let AuthRoleGrantPermissionRequest { name, perm } = req.get_ref().clone();
        let perm = perm.ok_or_else(|| Status::invalid_argument("etcdserver: permission not given"))?;
        let header =
            self.change(req.metadata(), AuthChange::RoleGrantPermission { role: name, perm }).await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse { header }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let AuthRoleRevokePermissionRequest { role, key, range_end } = req.get_ref().clone();
        let change = AuthChange::RoleRevokePermission { role, key, range_end };
        let header = self.change(req.metadata(), change).await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse { header }))
    }
}
