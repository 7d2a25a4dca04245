//! etcd's authentication model, without storage or transport: users, roles and their key
//! permissions ([`AuthState`]), the replicated changes to them ([`AuthChange`], applied
//! deterministically on every member with etcd 3.4's rules and errors), and the permission
//! check every request goes through ([`AuthState::check`]).
//!
//! Passwords arrive here already hashed (the member that takes the request hashes it, so the
//! plaintext is never replicated or stored); tokens are the backends' business.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use cairn_proto::authpb::{permission::Type as PermType, Permission, Role, User, UserAddOptions};
use cairn_proto::etcdserverpb::{request_op, DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest};
use prost::Message;

use crate::error::RequestError;

/// The user and the role that hold every permission once auth is enabled.
pub const ROOT: &str = "root";

/// One replicated change of the auth state (etcd's auth management requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthChange {
    Enable,
    Disable,
    /// `password_hash` is a bcrypt hash; empty with `no_password`.
    UserAdd {
        name: String,
        password_hash: String,
        no_password: bool,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password_hash: String,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        role: String,
        perm: Permission,
    },
    RoleRevokePermission {
        role: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

impl AuthChange {
    /// The change's name, for logs (never a password hash).
    pub fn kind(&self) -> &'static str {
        match self {
            AuthChange::Enable => "enable",
            AuthChange::Disable => "disable",
            AuthChange::UserAdd { .. } => "user_add",
            AuthChange::UserDelete { .. } => "user_delete",
            AuthChange::UserChangePassword { .. } => "user_change_password",
            AuthChange::UserGrantRole { .. } => "user_grant_role",
            AuthChange::UserRevokeRole { .. } => "user_revoke_role",
            AuthChange::RoleAdd { .. } => "role_add",
            AuthChange::RoleDelete { .. } => "role_delete",
            AuthChange::RoleGrantPermission { .. } => "role_grant_permission",
            AuthChange::RoleRevokePermission { .. } => "role_revoke_permission",
        }
    }
}

/// What an applied change touched, so that a backend rewrites exactly those rows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Touched {
    pub users: Vec<String>,
    pub roles: Vec<String>,
    /// The enabled flag changed.
    pub enabled: bool,
    /// Users whose tokens no longer stand (deleted, new password); with `enabled`, all.
    pub invalidate_tokens_of: Vec<String>,
}

/// The whole auth state of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthState {
    pub enabled: bool,
    /// etcd's auth revision: 1 at first, up by one with every change of users, roles and
    /// permissions and with disabling (not with enabling, as in etcd).
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState { enabled: false, revision: 1, users: BTreeMap::new(), roles: BTreeMap::new() }
    }
}

/// What a request needs on a key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Write,
}

fn name_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl AuthState {
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Whether `user` holds the root role.
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.iter().any(|r| r == ROOT))
    }

    /// Apply `change` with etcd's rules: either it is refused with etcd's error and nothing
    /// changes, or it changes the state and the revision goes up by one. A change that
    /// changes nothing etcd accepts silently (granting a role twice, enabling twice) is
    /// accepted, and the revision still goes up only where etcd's does.
    pub fn apply(&mut self, change: &AuthChange) -> Result<Touched, RequestError> {
        let mut touched = Touched::default();
        match change {
            AuthChange::Enable => {
                if self.enabled {
                    return Ok(touched);
                }
                let root = self.users.get(ROOT).ok_or(RequestError::RootUserNotExist)?;
                if !root.roles.iter().any(|r| r == ROOT) {
                    return Err(RequestError::RootRoleNotExist);
                }
                self.enabled = true;
                touched.enabled = true;
                // etcd does not count enabling as a revision.
                return Ok(touched);
            }
            AuthChange::Disable => {
                if !self.enabled {
                    return Ok(touched);
                }
                self.enabled = false;
                touched.enabled = true;
            }
            AuthChange::UserAdd { name, password_hash, no_password } => {
                if name.is_empty() {
                    return Err(RequestError::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(RequestError::UserAlreadyExist);
                }
                let options = Some(UserAddOptions { no_password: *no_password });
                let user = User {
                    name: name.clone().into_bytes(),
                    password: password_hash.clone().into_bytes(),
                    roles: Vec::new(),
                    options,
                };
                self.users.insert(name.clone(), user);
                touched.users.push(name.clone());
            }
            AuthChange::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(RequestError::InvalidAuthMgmt);
                }
                if self.users.remove(name).is_none() {
                    return Err(RequestError::UserNotFound);
                }
                touched.users.push(name.clone());
                touched.invalidate_tokens_of.push(name.clone());
            }
            AuthChange::UserChangePassword { name, password_hash } => {
                let user = self.users.get_mut(name).ok_or(RequestError::UserNotFound)?;
                user.password = password_hash.clone().into_bytes();
                touched.users.push(name.clone());
                touched.invalidate_tokens_of.push(name.clone());
            }
            AuthChange::UserGrantRole { user, role } => {
                if !self.users.contains_key(user) {
                    return Err(RequestError::UserNotFound);
                }
                if role != ROOT && !self.roles.contains_key(role) {
                    return Err(RequestError::RoleNotFound);
                }
                let u = self.users.get_mut(user).expect("checked above");
                match u.roles.binary_search(role) {
                    // etcd ignores a second grant, without a new revision.
                    Ok(_) => return Ok(touched),
                    Err(at) => u.roles.insert(at, role.clone()),
                }
                touched.users.push(user.clone());
            }
            AuthChange::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(RequestError::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(user).ok_or(RequestError::UserNotFound)?;
                let at = u.roles.iter().position(|r| r == role).ok_or(RequestError::RoleNotGranted)?;
                u.roles.remove(at);
                touched.users.push(user.clone());
            }
            AuthChange::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(RequestError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(RequestError::RoleAlreadyExist);
                }
                self.roles.insert(
                    name.clone(),
                    Role { name: name.clone().into_bytes(), key_permission: Vec::new() },
                );
                touched.roles.push(name.clone());
            }
            AuthChange::RoleDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(RequestError::InvalidAuthMgmt);
                }
                if self.roles.remove(name).is_none() {
                    return Err(RequestError::RoleNotFound);
                }
                touched.roles.push(name.clone());
                for (user_name, user) in self.users.iter_mut() {
                    if let Some(at) = user.roles.iter().position(|r| r == name) {
                        user.roles.remove(at);
                        touched.users.push(user_name.clone());
                    }
                }
            }
            AuthChange::RoleGrantPermission { role, perm } => {
                let r = self.roles.get_mut(role).ok_or(RequestError::RoleNotFound)?;
                // A key alone, a range [key, end) with key < end, or every key from key on.
                let valid = match perm.range_end.as_slice() {
                    [] => !perm.key.is_empty(),
                    [0] => true,
                    end => perm.key.as_slice() < end,
                };
                if !valid {
                    return Err(RequestError::InvalidAuthMgmt);
                }
                // Sorted by key, as etcd keeps them; the same range again changes its type.
                let at = r.key_permission.partition_point(|p| p.key < perm.key);
                let same = r.key_permission[at..]
                    .iter()
                    .take_while(|p| p.key == perm.key)
                    .position(|p| p.range_end == perm.range_end);
                match same {
                    Some(i) => r.key_permission[at + i].perm_type = perm.perm_type,
                    None => r.key_permission.insert(at, perm.clone()),
                }
                touched.roles.push(role.clone());
            }
            AuthChange::RoleRevokePermission { role, key, range_end } => {
                let r = self.roles.get_mut(role).ok_or(RequestError::RoleNotFound)?;
                let at = r
                    .key_permission
                    .iter()
                    .position(|p| &p.key == key && &p.range_end == range_end)
                    .ok_or(RequestError::PermissionNotGranted)?;
                r.key_permission.remove(at);
                touched.roles.push(role.clone());
            }
        }
        self.revision += 1;
        Ok(touched)
    }

    /// Whether `user` (`None`: the request named nobody) may do `need` on `[key, range_end)`
    /// (`range_end` empty: the key alone; `"\0"`: every key from `key` on). Always allowed
    /// while auth is disabled; the root role may do anything.
    pub fn check(
        &self,
        user: Option<&str>,
        need: Need,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), RequestError> {
        if !self.enabled {
            return Ok(());
        }
        let user = self.known_user(user)?;
        if user.roles.iter().any(|r| r == ROOT) {
            return Ok(());
        }
        let wanted = Span::of(key, range_end);
        let mut granted: Vec<Span> = user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.key_permission.iter())
            .filter(|p| grants(p, need))
            .map(|p| Span::of(&p.key, &p.range_end))
            .collect();
        granted.sort_by(|a, b| a.start.cmp(&b.start));
        if covered(&granted, &wanted) {
            Ok(())
        } else {
            Err(RequestError::PermissionDenied)
        }
    }

    /// A Range: read on its range.
    pub fn check_range(&self, user: Option<&str>, r: &RangeRequest) -> Result<(), RequestError> {
        self.check(user, Need::Read, &r.key, &r.range_end)
    }

    /// A Put: write on its key, and read too when it returns the previous value.
    pub fn check_put(&self, user: Option<&str>, r: &PutRequest) -> Result<(), RequestError> {
        self.check(user, Need::Write, &r.key, b"")?;
        if r.prev_kv {
            self.check(user, Need::Read, &r.key, b"")?;
        }
        Ok(())
    }

    /// A DeleteRange: write on its range, and read too when it returns what it deleted.
    pub fn check_delete(&self, user: Option<&str>, r: &DeleteRangeRequest) -> Result<(), RequestError> {
        self.check(user, Need::Write, &r.key, &r.range_end)?;
        if r.prev_kv {
            self.check(user, Need::Read, &r.key, &r.range_end)?;
        }
        Ok(())
    }

    /// A Txn: read on every compare, and every operation of both branches as if alone.
    pub fn check_txn(&self, user: Option<&str>, t: &TxnRequest) -> Result<(), RequestError> {
        if !self.enabled {
            return Ok(());
        }
        for c in &t.compare {
            self.check(user, Need::Read, &c.key, &c.range_end)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) => self.check_range(user, r)?,
                Some(request_op::Request::RequestPut(r)) => self.check_put(user, r)?,
                Some(request_op::Request::RequestDeleteRange(r)) => self.check_delete(user, r)?,
                Some(request_op::Request::RequestTxn(r)) => self.check_txn(user, r)?,
                None => {}
            }
        }
        Ok(())
    }

    /// Requests only root may make (cluster and maintenance changes, auth management).
    pub fn check_admin(&self, user: Option<&str>) -> Result<(), RequestError> {
        if !self.enabled {
            return Ok(());
        }
        let user = match user {
            None | Some("") => return Err(RequestError::UserEmpty),
            Some(name) => self.users.get(name).ok_or(RequestError::UserNotFound)?,
        };
        if user.roles.iter().any(|r| r == ROOT) {
            Ok(())
        } else {
            Err(RequestError::PermissionDenied)
        }
    }

    fn known_user(&self, user: Option<&str>) -> Result<&User, RequestError> {
        match user {
            None | Some("") => Err(RequestError::UserEmpty),
            Some(name) => self.users.get(name).ok_or(RequestError::PermissionDenied),
        }
    }

    /// Names of every user, sorted.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// Names of every role, sorted.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// A user's name as stored (for messages built from rows).
    pub fn name(user: &User) -> String {
        name_of(&user.name)
    }
}

/// Where a backend keeps the auth state among its metadata rows: `auth/enabled`,
/// `auth/revision`, `auth/user/<name>` (an `authpb.User`) and `auth/role/<name>` (an
/// `authpb.Role`), each value led by a format byte ([`ROW_FORMAT`]).
pub const ROW_PREFIX: &[u8] = b"auth/";
/// The format of the auth rows; a row of another format is refused, not guessed at.
pub const ROW_FORMAT: u8 = 1;
const ENABLED_ROW: &[u8] = b"auth/enabled";
const REVISION_ROW: &[u8] = b"auth/revision";
const USER_ROWS: &[u8] = b"auth/user/";
const ROLE_ROWS: &[u8] = b"auth/role/";

fn row_key(prefix: &[u8], name: &str) -> Vec<u8> {
    [prefix, name.as_bytes()].concat()
}

fn row_value(body: &[u8]) -> Vec<u8> {
    [&[ROW_FORMAT][..], body].concat()
}

impl AuthState {
    /// The metadata rows to write after a change that `touched` these: `(key, Some(value))`
    /// to put, `(key, None)` to delete.
    pub fn rows(&self, touched: &Touched) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let mut rows = vec![(REVISION_ROW.to_vec(), Some(row_value(&self.revision.to_be_bytes())))];
        if touched.enabled {
            rows.push((ENABLED_ROW.to_vec(), Some(row_value(&[u8::from(self.enabled)]))));
        }
        for name in &touched.users {
            let value = self.users.get(name).map(|u| row_value(&u.encode_to_vec()));
            rows.push((row_key(USER_ROWS, name), value));
        }
        for name in &touched.roles {
            let value = self.roles.get(name).map(|r| row_value(&r.encode_to_vec()));
            rows.push((row_key(ROLE_ROWS, name), value));
        }
        rows
    }

    /// The state the rows under [`ROW_PREFIX`] hold; a row that cannot be read is an error.
    pub fn from_rows(rows: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<AuthState, String> {
        let mut state = AuthState::default();
        for (key, value) in rows {
            let body = match value.split_first() {
                Some((&ROW_FORMAT, body)) => body,
                _ => return Err(format!("auth row {} has an unknown format", String::from_utf8_lossy(&key))),
            };
            let bad = |what: &str| format!("auth row {}: {what}", String::from_utf8_lossy(&key));
            if key == ENABLED_ROW {
                state.enabled = body == [1];
            } else if key == REVISION_ROW {
                state.revision = u64::from_be_bytes(body.try_into().map_err(|_| bad("not 8 bytes"))?);
            } else if let Some(name) = key.strip_prefix(USER_ROWS) {
                let user = User::decode(body).map_err(|e| bad(&e.to_string()))?;
                state.users.insert(name_of(name), user);
            } else if let Some(name) = key.strip_prefix(ROLE_ROWS) {
                let role = Role::decode(body).map_err(|e| bad(&e.to_string()))?;
                state.roles.insert(name_of(name), role);
            } else {
                return Err(bad("unknown row"));
            }
        }
        Ok(state)
    }
}

/// etcd's simple tokens on one member: which user each token stands for, until it has not
/// been used for the TTL (etcd's `--auth-token-ttl`, 300 s). Tokens are assigned through the
/// log so that every member knows them; they live in memory only (after a restart clients
/// authenticate again, as with etcd).
pub struct Tokens {
    ttl: Duration,
    by_token: Mutex<HashMap<String, (String, Instant)>>,
}

/// Tokens kept before expired ones are swept on the next assignment.
const SWEEP_ABOVE: usize = 1024;

impl Tokens {
    pub fn new(ttl: Duration) -> Tokens {
        Tokens { ttl, by_token: Mutex::new(HashMap::new()) }
    }

    /// A new token in etcd's simple-token form: 16 random letters, a dot, and `index` (the
    /// log index of the assignment, which makes it unique across members).
    pub fn mint(index: u64) -> String {
        use rand::distr::{Alphabetic, SampleString};
        format!("{}.{index}", Alphabetic.sample_string(&mut crate::sim::rng(), 16))
    }

    pub fn assign(&self, token: String, user: String) {
        let mut map = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > SWEEP_ABOVE {
            let ttl = self.ttl;
            map.retain(|_, (_, used)| used.elapsed() < ttl);
        }
        map.insert(token, (user, Instant::now()));
    }

    /// The user `token` stands for, if it does (and it stands for another TTL from now).
    pub fn user(&self, token: &str) -> Option<String> {
        let mut map = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        let (user, used) = map.get_mut(token)?;
        if used.elapsed() >= self.ttl {
            map.remove(token);
            return None;
        }
        *used = Instant::now();
        Some(user.clone())
    }

    /// Forget what a change made stale: the tokens of `touched`'s users, or all of them
    /// when auth was turned on or off.
    pub fn invalidate(&self, touched: &Touched) {
        let mut map = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        if touched.enabled {
            map.clear();
        } else if !touched.invalidate_tokens_of.is_empty() {
            map.retain(|_, (user, _)| !touched.invalidate_tokens_of.contains(user));
        }
    }
}

fn grants(p: &Permission, need: Need) -> bool {
    match PermType::try_from(p.perm_type) {
        Ok(PermType::Readwrite) => true,
        Ok(PermType::Read) => need == Need::Read,
        Ok(PermType::Write) => need == Need::Write,
        Err(_) => false,
    }
}

/// A half-open key interval; `end: None` runs to the end of the keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Span {
    fn of(key: &[u8], range_end: &[u8]) -> Span {
        let end = match range_end {
            [] => {
                let mut next = key.to_vec();
                next.push(0);
                Some(next)
            }
            [0] => None,
            end => Some(end.to_vec()),
        };
        Span { start: key.to_vec(), end }
    }
}

/// Whether the union of `granted` (sorted by start) covers all of `wanted`.
fn covered(granted: &[Span], wanted: &Span) -> bool {
    if wanted.end.as_ref().is_some_and(|end| *end <= wanted.start) {
        // An empty range asks for nothing; etcd still requires a permission at its start.
        return granted
            .iter()
            .any(|g| g.start <= wanted.start && g.end.as_ref().is_none_or(|e| *e > wanted.start));
    }
    let mut reached = wanted.start.clone();
    for g in granted {
        if g.start > reached {
            break;
        }
        match &g.end {
            None => return true,
            Some(end) if *end > reached => reached = end.clone(),
            Some(_) => {}
        }
        if wanted.end.as_ref().is_some_and(|want| reached >= *want) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: PermType, key: &str, end: &str) -> Permission {
        Permission { perm_type: t as i32, key: key.into(), range_end: end.into() }
    }

    fn enabled_with_alice() -> AuthState {
        let mut s = AuthState::default();
        for change in [
            AuthChange::UserAdd { name: "root".into(), password_hash: "h".into(), no_password: false },
            AuthChange::UserGrantRole { user: "root".into(), role: "root".into() },
            AuthChange::UserAdd { name: "alice".into(), password_hash: "h".into(), no_password: false },
            AuthChange::RoleAdd { name: "r".into() },
            AuthChange::RoleGrantPermission {
                role: "r".into(),
                perm: perm(PermType::Readwrite, "/a/", "/a0"),
            },
            AuthChange::RoleGrantPermission { role: "r".into(), perm: perm(PermType::Read, "/b", "") },
            AuthChange::UserGrantRole { user: "alice".into(), role: "r".into() },
            AuthChange::Enable,
        ] {
            s.apply(&change).unwrap();
        }
        s
    }

    #[test]
    fn enabling_needs_root_with_the_root_role() {
        let mut s = AuthState::default();
        assert_eq!(s.apply(&AuthChange::Enable), Err(RequestError::RootUserNotExist));
        s.apply(&AuthChange::UserAdd { name: "root".into(), password_hash: "h".into(), no_password: false })
            .unwrap();
        assert_eq!(s.apply(&AuthChange::Enable), Err(RequestError::RootRoleNotExist));
        s.apply(&AuthChange::UserGrantRole { user: "root".into(), role: "root".into() }).unwrap();
        let before = s.revision;
        s.apply(&AuthChange::Enable).unwrap();
        assert!(s.enabled);
        assert_eq!(s.revision, before, "enabling is not a revision, as in etcd");
        assert_eq!(AuthState::default().revision, 1);
        // root cannot lose root while auth is on.
        let revoke = AuthChange::UserRevokeRole { user: "root".into(), role: "root".into() };
        assert_eq!(s.apply(&revoke), Err(RequestError::InvalidAuthMgmt));
        assert_eq!(
            s.apply(&AuthChange::UserDelete { name: "root".into() }),
            Err(RequestError::InvalidAuthMgmt)
        );
    }

    #[test]
    fn management_errors_are_etcds() {
        let mut s = enabled_with_alice();
        let add =
            |n: &str| AuthChange::UserAdd { name: n.into(), password_hash: "h".into(), no_password: false };
        assert_eq!(s.apply(&add("")), Err(RequestError::UserEmpty));
        assert_eq!(s.apply(&add("alice")), Err(RequestError::UserAlreadyExist));
        assert_eq!(s.apply(&AuthChange::RoleAdd { name: "".into() }), Err(RequestError::RoleEmpty));
        assert_eq!(s.apply(&AuthChange::RoleAdd { name: "r".into() }), Err(RequestError::RoleAlreadyExist));
        let grant = AuthChange::UserGrantRole { user: "alice".into(), role: "nope".into() };
        assert_eq!(s.apply(&grant), Err(RequestError::RoleNotFound));
        let grant = AuthChange::UserGrantRole { user: "bob".into(), role: "r".into() };
        assert_eq!(s.apply(&grant), Err(RequestError::UserNotFound));
        let revoke = AuthChange::UserRevokeRole { user: "alice".into(), role: "root".into() };
        assert_eq!(s.apply(&revoke), Err(RequestError::RoleNotGranted));
        let revoke =
            AuthChange::RoleRevokePermission { role: "r".into(), key: b"/zz".to_vec(), range_end: vec![] };
        assert_eq!(s.apply(&revoke), Err(RequestError::PermissionNotGranted));
        // A second grant of the same role is accepted and changes nothing.
        let before = s.clone();
        s.apply(&AuthChange::UserGrantRole { user: "alice".into(), role: "r".into() }).unwrap();
        assert_eq!(s, before);
    }

    #[test]
    fn permissions_cover_ranges_as_etcds_merged_intervals_do() {
        let s = enabled_with_alice();
        let alice = Some("alice");
        assert_eq!(s.check(alice, Need::Read, b"/a/x", b""), Ok(()));
        assert_eq!(s.check(alice, Need::Write, b"/a/x", b""), Ok(()));
        assert_eq!(s.check(alice, Need::Read, b"/a/", b"/a0"), Ok(()));
        assert_eq!(s.check(alice, Need::Read, b"/a/", b"/a1"), Err(RequestError::PermissionDenied));
        assert_eq!(s.check(alice, Need::Read, b"/b", b""), Ok(()));
        assert_eq!(s.check(alice, Need::Write, b"/b", b""), Err(RequestError::PermissionDenied));
        assert_eq!(s.check(alice, Need::Read, b"/b0", b""), Err(RequestError::PermissionDenied));
        assert_eq!(s.check(alice, Need::Read, b"/a/", b"\0"), Err(RequestError::PermissionDenied));
        assert_eq!(s.check(None, Need::Read, b"/a/x", b""), Err(RequestError::UserEmpty));
        assert_eq!(s.check(Some("ghost"), Need::Read, b"/a/x", b""), Err(RequestError::PermissionDenied));
        assert_eq!(s.check(Some("root"), Need::Write, b"anything", b"\0"), Ok(()));
        assert_eq!(s.check_admin(alice), Err(RequestError::PermissionDenied));
        assert_eq!(s.check_admin(Some("root")), Ok(()));
        assert_eq!(s.check_admin(Some("ghost")), Err(RequestError::UserNotFound));
        assert_eq!(s.check_admin(None), Err(RequestError::UserEmpty));
    }

    #[test]
    fn adjacent_grants_merge_and_from_key_reaches_the_end() {
        let mut s = enabled_with_alice();
        for (k, e) in [("/c/a", "/c/m"), ("/c/m", "/c/z"), ("/d", "\0")] {
            let g = AuthChange::RoleGrantPermission { role: "r".into(), perm: perm(PermType::Read, k, e) };
            s.apply(&g).unwrap();
        }
        assert_eq!(s.check(Some("alice"), Need::Read, b"/c/b", b"/c/y"), Ok(()));
        assert_eq!(
            s.check(Some("alice"), Need::Read, b"/c/b", b"/c/zz"),
            Err(RequestError::PermissionDenied)
        );
        assert_eq!(s.check(Some("alice"), Need::Read, b"/e", b"\0"), Ok(()));
        assert_eq!(s.check(Some("alice"), Need::Read, b"/d", b"/z"), Ok(()));
    }

    #[test]
    fn backwards_and_empty_ranges_cannot_be_granted() {
        let mut s = enabled_with_alice();
        for (k, e) in [("/z", "/a"), ("", ""), ("/a", "/a")] {
            let g = AuthChange::RoleGrantPermission { role: "r".into(), perm: perm(PermType::Read, k, e) };
            assert_eq!(s.apply(&g), Err(RequestError::InvalidAuthMgmt), "[{k:?}, {e:?})");
        }
    }

    #[test]
    fn deleting_a_role_takes_it_from_its_users() {
        let mut s = enabled_with_alice();
        let touched = s.apply(&AuthChange::RoleDelete { name: "r".into() }).unwrap();
        assert_eq!(touched.users, vec!["alice".to_string()]);
        assert!(s.user("alice").unwrap().roles.is_empty());
        assert_eq!(s.check(Some("alice"), Need::Read, b"/a/x", b""), Err(RequestError::PermissionDenied));
    }

    #[test]
    fn rows_round_trip_and_foreign_rows_are_refused() {
        let mut s = AuthState::default();
        let mut rows: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut apply = |s: &mut AuthState, change: AuthChange| {
            let touched = s.apply(&change).unwrap();
            for (k, v) in s.rows(&touched) {
                match v {
                    Some(v) => rows.insert(k, v),
                    None => rows.remove(&k),
                };
            }
        };
        apply(
            &mut s,
            AuthChange::UserAdd { name: "root".into(), password_hash: "h".into(), no_password: false },
        );
        apply(&mut s, AuthChange::UserGrantRole { user: "root".into(), role: "root".into() });
        apply(&mut s, AuthChange::RoleAdd { name: "gone".into() });
        apply(
            &mut s,
            AuthChange::UserAdd { name: "bob".into(), password_hash: "h".into(), no_password: false },
        );
        apply(&mut s, AuthChange::UserGrantRole { user: "bob".into(), role: "gone".into() });
        apply(&mut s, AuthChange::RoleDelete { name: "gone".into() });
        apply(&mut s, AuthChange::Enable);
        let loaded = AuthState::from_rows(rows.clone()).unwrap();
        assert_eq!(loaded, s);
        let mut bad = rows.clone();
        bad.insert(b"auth/user/eve".to_vec(), vec![9, 1, 2]);
        assert!(AuthState::from_rows(bad).unwrap_err().contains("unknown format"));
        let mut bad = rows;
        bad.insert(b"auth/user/eve".to_vec(), vec![ROW_FORMAT, 0xff, 0xff]);
        assert!(AuthState::from_rows(bad).is_err());
    }

    #[test]
    fn tokens_stand_for_their_user_until_invalidated() {
        let tokens = Tokens::new(Duration::from_secs(300));
        let t = Tokens::mint(42);
        assert!(t.ends_with(".42") && t.len() == 19);
        tokens.assign(t.clone(), "alice".into());
        assert_eq!(tokens.user(&t).as_deref(), Some("alice"));
        assert_eq!(tokens.user("nope.1"), None);
        tokens.invalidate(&Touched { invalidate_tokens_of: vec!["alice".into()], ..Default::default() });
        assert_eq!(tokens.user(&t), None);
        let expired = Tokens::new(Duration::ZERO);
        expired.assign(t.clone(), "alice".into());
        assert_eq!(expired.user(&t), None);
    }

    #[test]
    fn granting_the_same_range_again_changes_its_type() {
        let mut s = enabled_with_alice();
        let g = AuthChange::RoleGrantPermission { role: "r".into(), perm: perm(PermType::Write, "/b", "") };
        s.apply(&g).unwrap();
        let perms = &s.role("r").unwrap().key_permission;
        assert_eq!(perms.len(), 2);
        assert_eq!(s.check(Some("alice"), Need::Write, b"/b", b""), Ok(()));
        assert_eq!(s.check(Some("alice"), Need::Read, b"/b", b""), Err(RequestError::PermissionDenied));
    }
}
