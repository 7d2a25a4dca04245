//! An unreplicated backend: etcd's semantics (`cairn-mvcc`) in one process, on any engine,
//! behind `cairn-core`'s backend traits. It is the smallest complete [`cairn_core::Backend`]:
//! one applier, one lease clock, one member. Use it where replication is not wanted — a
//! single process embedding the etcd API, deterministic tests on [`cairn_mvcc::MemEngine`],
//! the conformance suite on a second engine.
//!
//! **Architecture invariant:** this crate never depends on openraft, tonic or RocksDB (a
//! test at the workspace root checks it): the caller brings the engine.
//!
//! Every write is made durable ([`cairn_mvcc::ApplyBatch::commit_synced`]) before it is
//! acknowledged and published: there is no log besides the store.
//!
//! ```
//! # async fn demo() -> Result<(), cairn_core::BackendError> {
//! use cairn_core::{KvBackend, WriteRequest};
//! use cairn_core::proto::etcdserverpb::{PutRequest, RangeRequest};
//! let backend = cairn_local::LocalBackend::start(cairn_mvcc::MvccStore::in_memory(), Default::default())?;
//! backend.write(WriteRequest::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() })).await?;
//! let got = backend.range(RangeRequest { key: b"k".to_vec(), ..Default::default() }).await?;
//! assert_eq!(got.kvs[0].value, b"v");
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use cairn_core::auth::{AuthChange, AuthState, Tokens, ROW_PREFIX};
use cairn_core::lessor::{LeaseError, Lessor};
use cairn_core::{
    is_read_only, Alarm, BackendError, BackupStream, ClusterBackend, KvBackend, KvHash, LeaseBackend,
    LeaseTime, MaintenanceBackend, Member, MemberStatus, RequestError, RevisionEvents, Revisions,
    WatchSource, WriteRequest, WriteResponse,
};
use cairn_mvcc::MvccStore;
use cairn_proto::etcdserverpb::{LeaseGrantResponse, LeaseRevokeRequest, RangeRequest, RangeResponse};
use tokio::sync::watch;

/// How often expired leases are looked for, and how many are revoked per look (etcd:
/// every 500 ms, at most 1000 revokes a second).
const EXPIRY_INTERVAL: Duration = Duration::from_millis(500);
const MAX_REVOKES_PER_INTERVAL: usize = 500;
/// etcd's default `--auth-token-ttl`.
const TOKEN_TTL: Duration = Duration::from_secs(300);

/// Who this backend says it is, and its lease clock's settings.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub name: String,
    pub member_id: u64,
    pub cluster_id: u64,
    /// Where clients reach it (reported by MemberList).
    pub client_urls: Vec<String>,
    /// The lease clock's tick; with `election_timeout` it gives etcd's minimum TTL, and the
    /// grace every lease gets when the backend starts (see [`Lessor::new`]).
    pub heartbeat: Duration,
    pub election_timeout: Duration,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            name: "default".into(),
            member_id: 1,
            cluster_id: 1,
            client_urls: Vec::new(),
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
        }
    }
}

/// The backend. Dropping it stops its lease clock.
pub struct LocalBackend {
    inner: Arc<Inner>,
    expiry: tokio::task::JoinHandle<()>,
}

struct Inner {
    store: MvccStore,
    /// The single applier: one batch at a time, in acknowledgement order.
    applier: Mutex<()>,
    /// The newest revision readable (published after its batch is written).
    revision: watch::Sender<i64>,
    lessor: Lessor,
    config: LocalConfig,
    /// Raised alarms: this process's only (an unreplicated member has no one to tell).
    alarms: Mutex<std::collections::BTreeSet<Alarm>>,
    /// The auth state (its rows live in the store's metadata) and the simple tokens.
    auth: std::sync::RwLock<Arc<AuthState>>,
    tokens: Tokens,
}

impl LocalBackend {
    /// Open the backend on `store` (which may hold data from an earlier run: its leases get
    /// their full TTL plus the grace again, as on an etcd restart). Needs a tokio runtime.
    pub fn start(store: MvccStore, config: LocalConfig) -> Result<LocalBackend, BackendError> {
        let lessor = Lessor::new(config.heartbeat, config.election_timeout);
        lessor.promote();
        lessor.reload(&store.leases()?);
        let (current, _) = store.revisions()?;
        let auth =
            AuthState::from_rows(store.meta_with_prefix(ROW_PREFIX)?).map_err(BackendError::Corrupt)?;
        let inner = Arc::new(Inner {
            auth: std::sync::RwLock::new(Arc::new(auth)),
            tokens: Tokens::new(TOKEN_TTL),
            store,
            applier: Mutex::new(()),
            revision: watch::Sender::new(current),
            lessor,
            config,
            alarms: Mutex::default(),
        });
        let expiry = tokio::spawn(expire_leases(Arc::downgrade(&inner)));
        Ok(LocalBackend { inner, expiry })
    }

    /// The store below (for reads outside the traits, e.g. a test's checks).
    pub fn store(&self) -> &MvccStore {
        &self.inner.store
    }

    /// Run a blocking store operation off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let inner = self.inner.clone();
        cairn_core::blocking(move || work(&inner)).await
    }
}

impl Drop for LocalBackend {
    fn drop(&mut self) {
        self.expiry.abort();
    }
}

impl Inner {
    /// Apply one write, make it durable, then tell the lease clock and the watchers.
    fn apply(&self, req: &WriteRequest) -> Result<WriteResponse, BackendError> {
        let _applying = self.applier.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = self.store.begin_apply()?;
        // A refused request wrote nothing: there is nothing to commit.
        let response = batch.apply(req)?;
        let events = batch.commit_synced()?;
        match req {
            WriteRequest::LeaseGrant(g) => self.lessor.granted(g.id, g.ttl),
            WriteRequest::LeaseRevoke(r) => self.lessor.revoked(r.id),
            _ => {}
        }
        if let Some(last) = events.last() {
            self.revision.send_replace(last.revision);
        }
        Ok(response)
    }
}

/// Turn expired leases into revokes until the backend is dropped.
async fn expire_leases(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(strong) = inner.upgrade() else { return };
        let expired = strong.lessor.take_expired(MAX_REVOKES_PER_INTERVAL);
        if expired.is_empty() {
            continue;
        }
        let revoked = tokio::task::spawn_blocking(move || {
            for id in expired {
                let revoke = WriteRequest::LeaseRevoke(LeaseRevokeRequest { id });
                match strong.apply(&revoke) {
                    Ok(_) | Err(BackendError::Request(RequestError::LeaseNotFound)) => {}
                    // The lessor proposes it again after its retry interval.
                    Err(e) => tracing::warn!(lease = format!("{id:x}"), error = %e, "revoking an expired lease failed"),
                }
            }
        })
        .await;
        if revoked.is_err() {
            return;
        }
    }
}

impl KvBackend for LocalBackend {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, BackendError> {
        // One process, one store: every read is linearizable.
        self.blocking(move |inner| Ok(inner.store.range(&req)?)).await
    }

    async fn write(&self, req: WriteRequest) -> Result<WriteResponse, BackendError> {
        match req {
            WriteRequest::Txn(t) if is_read_only(&t) => {
                self.blocking(move |inner| Ok(WriteResponse::Txn(inner.store.read_txn(&t)?))).await
            }
            req => self.blocking(move |inner| inner.apply(&req)).await,
        }
    }

    async fn revisions(&self) -> Result<Revisions, BackendError> {
        let (current, compacted) = self.blocking(|inner| Ok(inner.store.revisions()?)).await?;
        Ok(Revisions { current, compacted })
    }
}

impl WatchSource for LocalBackend {
    fn revision_updates(&self) -> watch::Receiver<i64> {
        self.inner.revision.subscribe()
    }

    async fn events(
        &self,
        from: i64,
        to: i64,
        max_revisions: usize,
        with_prev_kv: bool,
    ) -> Result<Vec<RevisionEvents>, BackendError> {
        self.blocking(move |inner| Ok(inner.store.events(from, to, max_revisions, with_prev_kv)?)).await
    }
}

impl LeaseBackend for LocalBackend {
    async fn lease_grant(&self, id: i64, ttl: i64) -> Result<LeaseGrantResponse, BackendError> {
        cairn_core::lessor::grant(id, ttl, self.inner.lessor.min_ttl(), |grant| {
            self.blocking(move |inner| inner.apply(&grant))
        })
        .await
    }

    async fn lease_renew(&self, id: i64) -> Result<i64, BackendError> {
        match self.inner.lessor.renew(id) {
            Ok(ttl) => Ok(ttl),
            Err(LeaseError::NotFound) => Ok(0),
            // The lessor is promoted at start and never demoted.
            Err(LeaseError::NotPrimary) => Err(BackendError::NoLeader),
        }
    }

    async fn lease_time(&self, id: i64) -> Result<Option<LeaseTime>, BackendError> {
        match self.inner.lessor.remaining(id) {
            Ok((remaining, granted)) => Ok(Some(LeaseTime { remaining, granted })),
            Err(LeaseError::NotFound) => Ok(None),
            Err(LeaseError::NotPrimary) => Err(BackendError::NoLeader),
        }
    }

    async fn leases(&self) -> Result<Vec<i64>, BackendError> {
        self.blocking(|inner| Ok(inner.store.leases()?.into_iter().map(|l| l.id).collect())).await
    }

    async fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, BackendError> {
        self.blocking(move |inner| Ok(inner.store.lease_keys(id)?)).await
    }
}

impl ClusterBackend for LocalBackend {
    fn status(&self) -> MemberStatus {
        let c = &self.inner.config;
        // No log: the revision stands in for the log index (both count applied writes).
        let revision = *self.inner.revision.borrow();
        MemberStatus {
            cluster_id: c.cluster_id,
            member_id: c.member_id,
            raft_term: 1,
            leader: c.member_id,
            raft_index: revision as u64,
            raft_applied_index: revision as u64,
            is_learner: false,
        }
    }

    async fn members(&self) -> Result<Vec<Member>, BackendError> {
        let c = &self.inner.config;
        Ok(vec![Member {
            id: c.member_id,
            name: c.name.clone(),
            peer_urls: Vec::new(),
            client_urls: c.client_urls.clone(),
            is_learner: false,
        }])
    }

    /// One unreplicated member: nothing can join it.
    async fn member_add(
        &self,
        _peer_url: String,
        _is_learner: bool,
    ) -> Result<(Member, Vec<Member>), BackendError> {
        Err(RequestError::FixedMembership.into())
    }

    async fn member_update(&self, id: u64, _peer_url: String) -> Result<Vec<Member>, BackendError> {
        if id == self.inner.config.member_id {
            return Err(RequestError::FixedMembership.into());
        }
        Err(RequestError::MemberNotFound.into())
    }

    /// The only member cannot be removed (no voter would remain).
    async fn member_remove(&self, id: u64) -> Result<Vec<Member>, BackendError> {
        if id == self.inner.config.member_id {
            return Err(RequestError::NotEnoughStartedMembers.into());
        }
        Err(RequestError::MemberNotFound.into())
    }

    /// The only member leads already; nobody else can.
    async fn move_leader(&self, target: u64) -> Result<(), BackendError> {
        if target == self.inner.config.member_id {
            return Ok(());
        }
        Err(RequestError::BadLeaderTransferee.into())
    }

    /// The only member is a voter already.
    async fn member_promote(&self, id: u64) -> Result<Vec<Member>, BackendError> {
        if id == self.inner.config.member_id {
            return Err(RequestError::MemberNotLearner.into());
        }
        Err(RequestError::MemberNotFound.into())
    }
}

impl MaintenanceBackend for LocalBackend {
    fn db_size(&self) -> i64 {
        i64::try_from(self.inner.store.engine().approximate_size()).unwrap_or(i64::MAX)
    }

    async fn hash_kv(&self, revision: i64) -> Result<KvHash, BackendError> {
        self.blocking(move |inner| Ok(inner.store.hash_kv(revision)?)).await
    }

    /// One unreplicated member shares no secret with anyone.
    fn key_fingerprint(&self) -> String {
        "none".to_string()
    }

    fn space_used(&self) -> u64 {
        self.inner.store.engine().approximate_size()
    }

    fn alarms(&self) -> Vec<Alarm> {
        self.inner.alarms.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect()
    }

    async fn set_alarm(&self, alarm: Alarm, activate: bool) -> Result<(), BackendError> {
        let mut alarms = self.inner.alarms.lock().unwrap_or_else(|e| e.into_inner());
        if activate {
            alarms.insert(alarm);
        } else {
            alarms.remove(&alarm);
        }
        Ok(())
    }

    async fn defragment(&self) -> Result<(), BackendError> {
        self.blocking(move |inner| Ok(inner.store.engine().compact_storage()?)).await
    }

    /// Staged in the system's temporary directory.
    async fn backup(&self) -> Result<BackupStream, BackendError> {
        let (file, size, revision) =
            self.blocking(move |inner| Ok(inner.store.backup_file(&std::env::temp_dir())?)).await?;
        Ok(BackupStream::from_file(file, size, revision))
    }
}

impl cairn_core::AuthBackend for LocalBackend {
    fn auth_state(&self) -> Arc<AuthState> {
        self.inner.auth.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn auth_change(&self, change: AuthChange) -> Result<(), BackendError> {
        self.blocking(move |inner| {
            let _applying = inner.applier.lock().unwrap_or_else(|e| e.into_inner());
            let mut state = (**inner.auth.read().unwrap_or_else(|e| e.into_inner())).clone();
            let touched = state.apply(&change)?;
            let mut batch = inner.store.begin_apply()?;
            for (key, value) in state.rows(&touched) {
                match value {
                    Some(value) => batch.put_meta(&key, &value),
                    None => batch.delete_meta(&key),
                }
            }
            batch.commit_synced()?;
            *inner.auth.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
            inner.tokens.invalidate(&touched);
            Ok(())
        })
        .await
    }

    async fn assign_token(&self, user: String) -> Result<String, BackendError> {
        let state = self.auth_state();
        if !state.enabled || state.user(&user).is_none() {
            return Err(RequestError::AuthFailed.into());
        }
        let token = Tokens::mint(state.revision);
        self.inner.tokens.assign(token.clone(), user);
        Ok(token)
    }

    fn token_user(&self, token: &str) -> Option<String> {
        self.inner.tokens.user(token)
    }
}
