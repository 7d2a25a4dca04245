//! etcd's auth in the replicated state: the rows of [`cairn_core::auth`] (`auth/…`) in the
//! state machine's metadata, so that every member applies the same changes and they travel
//! in snapshots; mirrored in memory, since every request is checked against them. Simple
//! tokens are assigned through the log too (every member then knows them, as in etcd) and
//! live in memory only.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use cairn_core::auth::{AuthState, Tokens, Touched, ROW_PREFIX};
use cairn_core::{BackendError, RequestError};
use cairn_mvcc::{ApplyBatch, MvccError, MvccStore};

use crate::types::AuthCommand;

/// etcd's default `--auth-token-ttl`: a simple token unused this long stops standing.
pub const TOKEN_TTL: Duration = Duration::from_secs(300);

/// The applied auth state and this member's tokens.
pub struct AuthMirror {
    state: RwLock<Arc<AuthState>>,
    tokens: Tokens,
}

pub type Auth = Arc<AuthMirror>;

impl AuthMirror {
    /// The mirror of what `store` holds.
    pub(crate) fn load(store: &MvccStore) -> Result<Auth, MvccError> {
        let mirror = AuthMirror { state: RwLock::default(), tokens: Tokens::new(TOKEN_TTL) };
        mirror.reload(store)?;
        Ok(Arc::new(mirror))
    }

    /// Read the state again (after a snapshot replaced the store's contents).
    pub(crate) fn reload(&self, store: &MvccStore) -> Result<(), MvccError> {
        let state = AuthState::from_rows(store.meta_with_prefix(ROW_PREFIX)?).map_err(MvccError::Corrupt)?;
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
        Ok(())
    }

    pub fn state(&self) -> Arc<AuthState> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn token_user(&self, token: &str) -> Option<String> {
        self.tokens.user(token)
    }
}

/// What auth commands of one applied batch do, in log order, once the batch is committed.
enum Effect {
    Changed(Touched),
    Assigned { token: String, user: String },
}

/// The auth commands of a batch being applied: they change a working copy, write its rows
/// into the batch, and reach the mirror only once the batch commits.
#[derive(Default)]
pub(crate) struct Pending {
    working: Option<AuthState>,
    effects: Vec<Effect>,
}

impl Pending {
    /// Apply `command` to the working state and `batch`; its deterministic result.
    pub(crate) fn apply(
        &mut self,
        mirror: &AuthMirror,
        batch: &mut ApplyBatch<'_>,
        command: &AuthCommand,
    ) -> Result<(), RequestError> {
        let working = self.working.get_or_insert_with(|| (*mirror.state()).clone());
        match command {
            AuthCommand::Change(change) => {
                let touched = working.apply(change)?;
                for (key, value) in working.rows(&touched) {
                    match value {
                        Some(value) => batch.put_meta(&key, &value),
                        None => batch.delete_meta(&key),
                    }
                }
                self.effects.push(Effect::Changed(touched));
            }
            AuthCommand::AssignToken { user, token } => {
                // The user may have been deleted, or auth turned off, since the password was
                // checked.
                if !working.enabled || working.user(user).is_none() {
                    return Err(RequestError::AuthFailed);
                }
                self.effects.push(Effect::Assigned { token: token.clone(), user: user.clone() });
            }
        }
        Ok(())
    }

    /// Whether a write checked at auth revision `checked_at` must be refused at this point
    /// of the batch: auth is on and has changed since (etcd's `isOpPermitted`).
    pub(crate) fn changed_since(&self, mirror: &AuthMirror, checked_at: u64) -> bool {
        let changed = |state: &AuthState| state.enabled && checked_at < state.revision;
        match &self.working {
            Some(working) => changed(working),
            None => changed(&mirror.state()),
        }
    }

    /// The batch committed: make its changes visible.
    pub(crate) fn publish(self, mirror: &AuthMirror) {
        if let Some(state) = self.working {
            *mirror.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
        }
        for effect in self.effects {
            match effect {
                Effect::Changed(touched) => mirror.tokens.invalidate(&touched),
                Effect::Assigned { token, user } => mirror.tokens.assign(token, user),
            }
        }
    }
}

impl crate::RaftNode {
    /// The auth state as this member applied it.
    pub fn auth_state(&self) -> Arc<AuthState> {
        self.auth.state()
    }

    /// The user `token` stands for on this member.
    pub fn token_user(&self, token: &str) -> Option<String> {
        self.auth.token_user(token)
    }

    /// Replicate an auth command through the leader, and answer once this member applied it
    /// too (so that a token is good here as soon as it is returned).
    pub async fn auth(&self, command: AuthCommand) -> Result<(), BackendError> {
        let published = self.published_ids().await?;
        if self.membership().nodes().any(|(id, _)| !published.contains(id)) {
            // A member of 0.1 would not know the command: refuse until every member upgraded.
            return Err(BackendError::NoLeader);
        }
        let command = &command;
        let started = tokio::time::Instant::now();
        let (result, log_index) = self
            .on_leader(
                crate::route::Repeat::IfNotApplied,
                |_| crate::leader::auth(&self.raft, command.clone()),
                |addr, remaining| async move {
                    let mut client =
                        self.channels.client(&addr).map_err(|_| crate::PeerError::NotDelivered)?;
                    let mut request = tonic::Request::new(crate::pb::AuthCommand::from(command.clone()));
                    request.set_timeout(remaining);
                    let answer = client.auth(request).await.map_err(crate::PeerError::from)?.into_inner();
                    let result = match answer.error {
                        None => Ok(()),
                        Some(e) => Err(RequestError::from_code(e.code).ok_or_else(|| {
                            crate::PeerError::Unavailable(format!(
                                "an auth error this member does not know: {}",
                                e.message
                            ))
                        })?),
                    };
                    Ok((result, answer.log_index))
                },
            )
            .await?;
        let deadline = started + self.request_timeout;
        let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
        let _ = self.applied.wait_for(log_index, timeout).await;
        result.map_err(BackendError::Request)
    }
}
