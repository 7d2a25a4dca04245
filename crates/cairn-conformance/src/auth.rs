//! etcd's auth through `AuthBackend`: changes apply with etcd's rules and errors, the state
//! shows them once `auth_change` returns, permission checks follow the grants, and tokens
//! stand for their user until a new password (or disabling auth) invalidates them.
//!
//! The test turns auth on and off again, and removes every user and role it added.

use cairn_core::auth::{AuthChange, Need, ROOT};
use cairn_core::proto::authpb::{permission::Type as PermType, Permission};
use cairn_core::{prefix_end, Backend, BackendError, RequestError};

async fn change<B: Backend>(b: &B, change: AuthChange) -> Result<(), String> {
    let what = format!("auth_change({})", change.kind());
    b.auth_change(change).await.map_err(|e| format!("{what}: {e}"))
}

async fn refused<B: Backend>(b: &B, change: AuthChange, want: RequestError) -> Result<(), String> {
    let what = format!("auth_change({})", change.kind());
    match b.auth_change(change).await {
        Err(BackendError::Request(got)) if got == want => Ok(()),
        other => Err(format!("{what}: expected {want:?}, got {other:?}")),
    }
}

pub(crate) async fn users_roles_and_tokens<B: Backend>(b: &B, base: &str) -> Result<(), String> {
    let user = format!("{base}user");
    let role = format!("{base}role");
    let root_was_there = b.auth_state().user(ROOT).is_some();
    let outcome = run(b, base, &user, &role, root_was_there).await;
    // Leave no trace, whatever failed.
    let _ = b.auth_change(AuthChange::Disable).await;
    let _ = b.auth_change(AuthChange::UserDelete { name: user }).await;
    let _ = b.auth_change(AuthChange::RoleDelete { name: role }).await;
    if !root_was_there {
        let _ = b.auth_change(AuthChange::UserDelete { name: ROOT.into() }).await;
    }
    outcome
}

async fn run<B: Backend>(
    b: &B,
    base: &str,
    user: &str,
    role: &str,
    root_was_there: bool,
) -> Result<(), String> {
    ensure!(!b.auth_state().enabled, "auth is enabled before the test");
    let start = b.auth_state().revision;
    let add = |name: &str| AuthChange::UserAdd {
        name: name.into(),
        password_hash: "h1".into(),
        no_password: false,
    };
    change(b, add(user)).await?;
    refused(b, add(user), RequestError::UserAlreadyExist).await?;
    refused(b, add(""), RequestError::UserEmpty).await?;
    change(b, AuthChange::RoleAdd { name: role.into() }).await?;
    let grant = AuthChange::UserGrantRole { user: user.into(), role: format!("{role}-missing") };
    refused(b, grant, RequestError::RoleNotFound).await?;
    let perm = Permission {
        perm_type: PermType::Readwrite as i32,
        key: base.as_bytes().to_vec(),
        range_end: prefix_end(base.as_bytes()),
    };
    change(b, AuthChange::RoleGrantPermission { role: role.into(), perm: perm.clone() }).await?;
    change(b, AuthChange::UserGrantRole { user: user.into(), role: role.into() }).await?;
    let state = b.auth_state();
    ensure_eq!(state.user(user).map(|u| u.roles.clone()), Some(vec![role.to_string()]), "roles of the user");
    ensure_eq!(
        state.role(role).map(|r| r.key_permission.clone()),
        Some(vec![perm]),
        "permissions of the role"
    );
    ensure_eq!(state.revision, start + 4, "auth revision after four changes");

    if !root_was_there {
        refused(b, AuthChange::Enable, RequestError::RootUserNotExist).await?;
        change(b, add(ROOT)).await?;
        refused(b, AuthChange::Enable, RequestError::RootRoleNotExist).await?;
    }
    change(b, AuthChange::UserGrantRole { user: ROOT.into(), role: ROOT.into() }).await?;
    change(b, AuthChange::Enable).await?;
    let state = b.auth_state();
    ensure!(state.enabled, "enabled once root has the root role");
    let inside = format!("{base}k");
    ensure_eq!(
        state.check(Some(user), Need::Write, inside.as_bytes(), b""),
        Ok(()),
        "write inside the grant"
    );
    ensure_eq!(
        state.check(Some(user), Need::Read, b"\0", b"\0"),
        Err(RequestError::PermissionDenied),
        "read of every key"
    );
    ensure_eq!(
        state.check(None, Need::Read, inside.as_bytes(), b""),
        Err(RequestError::UserEmpty),
        "no user"
    );
    refused(b, AuthChange::UserDelete { name: ROOT.into() }, RequestError::InvalidAuthMgmt).await?;

    let token = b.assign_token(user.into()).await.map_err(|e| format!("assign_token: {e}"))?;
    ensure_eq!(b.token_user(&token), Some(user.to_string()), "the token's user");
    ensure_eq!(b.token_user("nobody.1"), None, "an unknown token");
    let new_password = AuthChange::UserChangePassword { name: user.into(), password_hash: "h2".into() };
    change(b, new_password).await?;
    ensure_eq!(b.token_user(&token), None, "the token after a new password");
    let token = b.assign_token(user.into()).await.map_err(|e| format!("assign_token: {e}"))?;
    change(b, AuthChange::Disable).await?;
    ensure!(!b.auth_state().enabled, "disabled");
    ensure_eq!(b.token_user(&token), None, "a token after disabling");
    match b.assign_token(user.into()).await {
        Err(BackendError::Request(RequestError::AuthFailed)) => Ok(()),
        other => Err(format!("assign_token while disabled: expected AuthFailed, got {other:?}")),
    }
}
