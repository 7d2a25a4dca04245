//! [`SqlBackend`]: the backend traits over the SQL engine, for one stateless member among
//! any number on the same database.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use cairn_core::auth::{AuthChange, AuthState, Tokens, ROW_PREFIX};
use cairn_core::lessor::Lessor;
use cairn_core::{
    is_read_only, Alarm, BackendError, BackupStream, ClusterBackend, KvBackend, KvHash, LeaseBackend,
    LeaseTime, MaintenanceBackend, Member, MemberStatus, RequestError, RevisionEvents, Revisions,
    WatchSource, WriteRequest, WriteResponse,
};
use cairn_mvcc::{MvccError, MvccStore};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{
    LeaseGrantResponse, LeaseRevokeRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest,
};
use sqlx::any::AnyPoolOptions;
use sqlx::{Executor, Row};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::dialect::{Dialect, Kind, NOTIFY_CHANNEL};
use crate::engine::{CommitError, Database, Exec, Session, SqlEngine};
use crate::error::{Context, Failure, SqlError};
use crate::{parse_url, redact, OpenError, SqlConfig};

/// How often expired leases are looked for, and how many are revoked per look (as etcd).
const EXPIRY_INTERVAL: Duration = Duration::from_millis(500);
const MAX_REVOKES_PER_INTERVAL: i64 = 500;
/// Members heartbeat this often; one silent for `LIVE_WINDOW` is not listed, and its row
/// is dropped after `FORGET_AFTER`.
const HEARTBEAT: Duration = Duration::from_secs(1);
const LIVE_WINDOW: Duration = Duration::from_secs(5);
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// etcd's default `--auth-token-ttl`.
const TOKEN_TTL: Duration = Duration::from_secs(300);
/// A write that keeps conflicting is given up after this many tries.
const MAX_CONFLICT_RETRIES: u32 = 20;

/// A member on a SQL database. Dropping it stops its background tasks; [`SqlBackend::leave`]
/// also takes it off the member list at once.
pub struct SqlBackend {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

struct Inner {
    db: Database,
    store: MvccStore,
    /// One local writer at a time (the applier thread, pruning, auth changes): the others
    /// wait here rather than each holding a pooled connection while waiting for the
    /// database's lock.
    applier: Mutex<()>,
    /// Writes for the applier thread (see [`run_applier`]).
    writes: std::sync::mpsc::Sender<Queued>,
    /// The newest revision known committed (all below it are readable: commits are ordered).
    revision: watch::Sender<i64>,
    config: SqlConfig,
    member_id: u64,
    cluster_id: u64,
    min_ttl: i64,
    auth: RwLock<Arc<AuthState>>,
    tokens: Tokens,
    alarms: RwLock<Vec<Alarm>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The backend error for a database failure: unreachable is retryable (nothing happened).
fn sql_error(e: SqlError) -> BackendError {
    match e.failure {
        Failure::Unreachable => BackendError::Unavailable(Arc::new(e)),
        _ => BackendError::storage(e),
    }
}

fn failure_of(e: &MvccError) -> Option<Failure> {
    match e {
        MvccError::Storage(source) => source.downcast_ref::<SqlError>().map(|s| s.failure),
        _ => None,
    }
}

fn mvcc_error(e: MvccError) -> BackendError {
    match e {
        MvccError::Storage(source) => match source.downcast_ref::<SqlError>() {
            Some(s) => sql_error(s.clone()),
            None => BackendError::Storage(source),
        },
        e => e.into(),
    }
}

/// A write waiting for its group's commit.
struct Queued {
    req: WriteRequest,
    auth_revision: u64,
    expiring: bool,
    answer: tokio::sync::oneshot::Sender<Result<Option<WriteResponse>, BackendError>>,
}

/// The single keys `group` reads the latest value of when applied (puts, deletes and
/// compares of one key, in a Txn too): read ahead in one statement rather than one by one.
fn keys_written(group: &[Queued]) -> Vec<&[u8]> {
    fn of_op<'a>(op: &'a RequestOp, keys: &mut Vec<&'a [u8]>) {
        match &op.request {
            Some(Op::RequestPut(p)) => keys.push(&p.key),
            Some(Op::RequestDeleteRange(d)) if d.range_end.is_empty() => keys.push(&d.key),
            Some(Op::RequestRange(r)) if r.range_end.is_empty() => keys.push(&r.key),
            Some(Op::RequestTxn(t)) => of_txn(t, keys),
            _ => {}
        }
    }
    fn of_txn<'a>(t: &'a TxnRequest, keys: &mut Vec<&'a [u8]>) {
        keys.extend(t.compare.iter().filter(|c| c.range_end.is_empty()).map(|c| &c.key[..]));
        for op in t.success.iter().chain(&t.failure) {
            of_op(op, keys);
        }
    }
    let mut keys = Vec::new();
    for q in group {
        match &q.req {
            WriteRequest::Put(p) => keys.push(&p.key[..]),
            WriteRequest::DeleteRange(d) if d.range_end.is_empty() => keys.push(&d.key[..]),
            WriteRequest::Txn(t) => of_txn(t, &mut keys),
            _ => {}
        }
    }
    keys
}

/// The most writes one transaction commits.
const MAX_GROUP: usize = 256;

/// How one attempt at a write ended.
enum Attempt<T> {
    Done(T),
    /// A conflict: rolled back, try again.
    Conflict(SqlError),
}

impl SqlBackend {
    /// Connect, create or check the schema, register this member, and start its clocks.
    pub async fn open(config: SqlConfig) -> Result<SqlBackend, OpenError> {
        let db =
            connect(&config.url, config.password.as_deref(), config.max_connections, config.connect_timeout)
                .await?;
        let (_, url) = parse_url(&config.url, config.password.as_deref())?;
        let schema = crate::schema::migrate(&db).await?;
        tracing::info!(
            schema = schema.version,
            cluster = format!("{:x}", schema.cluster_id),
            "schema checked"
        );
        let store = MvccStore::new(Arc::new(SqlEngine { db: db.clone() }));
        let blocking_store = store.clone();
        let (current, auth) = tokio::task::spawn_blocking(move || {
            let (current, _) = blocking_store.revisions()?;
            let auth = AuthState::from_rows(blocking_store.meta_with_prefix(ROW_PREFIX)?)
                .map_err(MvccError::Corrupt)?;
            Ok::<_, MvccError>((current, auth))
        })
        .await
        .expect("startup reads do not panic")
        .map_err(|e| {
            OpenError::Database(SqlError::new("reading the store", sqlx::Error::Protocol(e.to_string())))
        })?;
        let min_ttl = Lessor::new(config.heartbeat, config.election_timeout).min_ttl();
        let (writes, queue) = std::sync::mpsc::channel();
        let inner = Arc::new(Inner {
            db,
            store,
            applier: Mutex::new(()),
            writes,
            revision: watch::Sender::new(current),
            member_id: (rand::random::<u64>() >> 1).max(1),
            cluster_id: schema.cluster_id,
            min_ttl,
            auth: RwLock::new(Arc::new(auth)),
            tokens: Tokens::new(TOKEN_TTL),
            alarms: RwLock::default(),
            config,
        });
        inner.join().await.map_err(OpenError::Database)?;
        start_applier(Arc::downgrade(&inner), queue).await?;
        let tasks = vec![
            tokio::spawn(follow_revisions(Arc::downgrade(&inner), url)),
            tokio::spawn(expire_leases(Arc::downgrade(&inner))),
            tokio::spawn(housekeeping(Arc::downgrade(&inner))),
            tokio::spawn(prune_history(Arc::downgrade(&inner))),
        ];
        Ok(SqlBackend { inner, tasks })
    }

    /// The database kind.
    pub fn kind(&self) -> Kind {
        self.inner.db.sql.kind
    }

    /// The store below (for reads outside the traits, e.g. a test's checks).
    pub fn store(&self) -> &MvccStore {
        &self.inner.store
    }

    /// Take this member off the member list now (rather than when its heartbeat goes stale).
    pub async fn leave(&self) {
        let db = &self.inner.db;
        let _ = sqlx::query(&db.sql.member_leave).bind(self.inner.member_id as i64).execute(&db.pool).await;
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let inner = self.inner.clone();
        cairn_core::blocking(move || work(&inner)).await
    }
}

impl Drop for SqlBackend {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A pool of connections to the database `url` names, each set up for the adapter.
pub(crate) async fn connect(
    url: &str,
    password: Option<&str>,
    max_connections: u32,
    connect_timeout: Duration,
) -> Result<Database, OpenError> {
    sqlx::any::install_default_drivers();
    let (kind, driver_url) = parse_url(url, password)?;
    let sql = Arc::new(Dialect::new(kind));
    let pool = pool_options(kind, max_connections, connect_timeout)
        .connect(&driver_url)
        .await
        .during("connecting")
        .map_err(|e| match e.failure {
            Failure::Unreachable => OpenError::Unreachable(e),
            _ => OpenError::Database(e),
        })?;
    let one_text = match kind {
        Kind::Postgres => true,
        // Not a Galera node: no such variable (MySQL), or off (MariaDB).
        Kind::MySql => {
            !sqlx::query_scalar::<_, i64>("SELECT @@wsrep_on").fetch_one(&pool).await.is_ok_and(|on| on != 0)
        }
        Kind::Sqlite => false,
    };
    tracing::info!(database = %redact(url), one_text, "connected");
    Ok(Database {
        pool,
        sql,
        rt: Exec::Shared(tokio::runtime::Handle::current()),
        size: Default::default(),
        one_text,
    })
}

/// How every connection is made: the per-connection settings first.
fn pool_options(kind: Kind, max_connections: u32, connect_timeout: Duration) -> AnyPoolOptions {
    AnyPoolOptions::new().max_connections(max_connections).acquire_timeout(connect_timeout).after_connect(
        move |conn, _meta| {
            Box::pin(async move {
                for s in session_settings(kind) {
                    conn.execute(*s).await?;
                }

                if kind == Kind::MySql {
                    // Galera: a read waits until this node has applied what the cluster
                    // committed before it (causal reads). Not a Galera server: no such
                    // variable, nothing to wait for.
                    let _ = conn.execute("SET SESSION wsrep_sync_wait = 1").await;
                }
                Ok(())
            })
        },
    )
}

/// Per-connection settings.
fn session_settings(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Postgres => &[],
        // Deadlines and heartbeats use the database's clock in UTC.
        Kind::MySql => {
            &["SET time_zone = '+00:00'", "SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')"]
        }
        // WAL: readers keep their snapshot while a writer commits; FULL: a commit is on
        // disk before it returns (power loss included).
        Kind::Sqlite => {
            &["PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL", "PRAGMA busy_timeout = 10000"]
        }
    }
}

impl Inner {
    /// Run `attempt` in a write session until it does not conflict; the session reads
    /// ahead the rows of `prefetch` ([`Session::begin_prefetching`]). The caller holds the
    /// applier.
    fn in_session<T>(
        &self,
        db: &Database,
        prefetch: Option<&[&[u8]]>,
        mut attempt: impl FnMut(&Arc<Session>) -> Result<Attempt<T>, BackendError>,
    ) -> Result<T, BackendError> {
        let mut tries = 0;
        loop {
            let begun = match prefetch {
                Some(keys) => Session::begin_prefetching(db, keys),
                None => Session::begin(db),
            };
            let session = match begun {
                Ok(s) => Arc::new(s),
                Err(e) if e.failure == Failure::Conflict && tries < MAX_CONFLICT_RETRIES => {
                    tries += 1;
                    backoff(tries);
                    continue;
                }
                Err(e) => return Err(sql_error(e)),
            };
            match attempt(&session)? {
                Attempt::Done(value) => return Ok(value),
                Attempt::Conflict(e) if tries < MAX_CONFLICT_RETRIES => {
                    tracing::debug!(error = %e, "write conflicted; trying again");
                    tries += 1;
                    backoff(tries);
                }
                Attempt::Conflict(e) => return Err(sql_error(e)),
            }
        }
    }

    /// Apply one write, in the next group the applier thread commits. `expiring`: a lease
    /// expiry, done only if the lease's deadline (read under the lock) has passed.
    async fn apply(
        &self,
        req: WriteRequest,
        auth_revision: u64,
        expiring: bool,
    ) -> Result<Option<WriteResponse>, BackendError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.writes
            .send(Queued { req, auth_revision, expiring, answer })
            .map_err(|_| BackendError::Stopped)?;
        answered.await.unwrap_or(Err(BackendError::Stopped))
    }

    /// Apply `group` in one transaction; an answer per write.
    fn apply_group(
        &self,
        db: &Database,
        group: &[Queued],
    ) -> Vec<Result<Option<WriteResponse>, BackendError>> {
        let sql = &self.db.sql;
        let keys = keys_written(group);
        let outcome = self.in_session(db, Some(&keys), |session| {
            let store = MvccStore::new(session.clone()).with_deferred_pruning();
            let auth_now = if group.iter().any(|q| q.auth_revision != 0) {
                match store.meta_with_prefix(ROW_PREFIX) {
                    Ok(rows) => AuthState::from_rows(rows).map_err(BackendError::Corrupt)?.revision,
                    Err(e) => return mvcc_conflict_or(e),
                }
            } else {
                0
            };
            let mut batch = match store.begin_apply() {
                Ok(b) => b,
                Err(e) => return mvcc_conflict_or(e),
            };
            let mut answers = Vec::with_capacity(group.len());
            // Rows beside the keyspace, written once the keyspace's rows are: (statement, ids).
            let mut deadlines: Vec<(&str, [i64; 3], usize)> = Vec::new();
            for q in group {
                if q.expiring {
                    let WriteRequest::LeaseRevoke(r) = &q.req else { unreachable!("only revokes expire") };
                    match session.query_int("checking a lease's deadline", &sql.lease_deadline_lock, &[r.id])
                    {
                        Ok(Some(left)) if left < 0 => {}
                        Ok(_) => {
                            answers.push(Ok(None));
                            continue;
                        }
                        Err(e) => return conflict_or(e),
                    }
                }
                if q.auth_revision != 0 && q.auth_revision != auth_now {
                    answers.push(Err(RequestError::AuthOldRevision.into()));
                    continue;
                }
                let answer = match batch.apply(&q.req) {
                    Ok(r) => Some(r),
                    // An expired lease another member revoked already: drop its deadline only.
                    Err(MvccError::Request(RequestError::LeaseNotFound)) if q.expiring => None,
                    // Refused: nothing of it was applied; the others go on.
                    Err(MvccError::Request(e)) => {
                        answers.push(Err(e.into()));
                        continue;
                    }
                    Err(e) => return mvcc_conflict_or(e),
                };
                match &q.req {
                    WriteRequest::LeaseGrant(g) => {
                        deadlines.push((&sql.lease_deadline_put, [g.id, g.ttl, g.ttl], 3))
                    }
                    WriteRequest::LeaseRevoke(r) => {
                        deadlines.push((&sql.lease_deadline_delete, [r.id, 0, 0], 1))
                    }
                    _ => {}
                }
                answers.push(Ok(answer));
            }
            let events = match batch.commit_synced() {
                Ok(events) => events,
                Err(e) => return mvcc_conflict_or(e),
            };
            drop(store);
            for (statement, ids, n) in &deadlines {
                if let Err(e) = session.execute("writing a lease's deadline", statement, &ids[..*n]) {
                    return conflict_or(e);
                }
            }
            let notify = sql.notify.as_deref().filter(|_| !events.is_empty());
            match session.commit_after(notify) {
                Ok(()) => Ok(Attempt::Done((answers, events))),
                Err(CommitError::NotCommitted(e)) => conflict_or(e),
                // The commit may or may not have happened: say so, never retry it.
                Err(CommitError::Unknown(e)) => {
                    tracing::warn!(error = %e, "the outcome of a commit is unknown");
                    Err(BackendError::Timeout)
                }
            }
        });
        match outcome {
            Ok((answers, events)) => {
                self.published(&events);
                answers
            }
            // The database refused something of the group (e.g. a key too long for its
            // index) and rolled all of it back: apply each write alone, so that only the
            // one it refuses fails.
            Err(BackendError::Storage(_)) if group.len() > 1 => {
                group.chunks(1).flat_map(|one| self.apply_group(db, one)).collect()
            }
            // Unreachable, or an unknown commit outcome: each of its writes gets the same.
            Err(e) => group.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    fn published(&self, events: &[RevisionEvents]) {
        if let Some(last) = events.last() {
            self.revision.send_if_modified(|r| {
                let newer = last.revision > *r;
                if newer {
                    *r = last.revision;
                }
                newer
            });
        }
    }

    /// Register this member. When no other member is alive, the cluster is starting from
    /// nothing: every lease gets its full TTL again (nobody could renew while none served;
    /// etcd's new leader does the same).
    async fn join(&self) -> Result<(), SqlError> {
        let db = &self.db;
        let others = sqlx::query(&db.sql.members_live)
            .bind(LIVE_WINDOW.as_millis() as i64)
            .fetch_all(&db.pool)
            .await
            .during("listing members")?;
        if others.is_empty() {
            let extended = db.pool.execute(&*db.sql.lease_extend_all).await.during("extending leases")?;
            tracing::info!(
                leases = extended.rows_affected(),
                "first member up: leases get their full TTL again"
            );
        }
        self.heartbeat().await
    }

    /// Upsert this member's row, again on a conflict: members starting at once upsert
    /// together, and Galera refuses all but one of them as deadlocks (seen in CI: a member
    /// failed to open on "1213 Deadlock found when trying to get lock").
    async fn heartbeat(&self) -> Result<(), SqlError> {
        let mut tries = 0;
        loop {
            match self.heartbeat_once().await {
                Err(e) if e.failure == Failure::Conflict && tries < MAX_CONFLICT_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(backoff_delay(tries)).await;
                }
                done => return done,
            }
        }
    }

    async fn heartbeat_once(&self) -> Result<(), SqlError> {
        let db = &self.db;
        let c = &self.config;
        sqlx::query(&db.sql.member_heartbeat)
            .bind(self.member_id as i64)
            .bind(c.name.clone())
            .bind(c.client_urls.join(","))
            .bind(c.version.clone())
            .execute(&db.pool)
            .await
            .during("heartbeating")
            .map(drop)
    }

    /// Reload the auth state if another member changed it; forget the tokens it made stale.
    fn refresh_auth(&self) -> Result<(), MvccError> {
        let rows = self.store.meta_with_prefix(ROW_PREFIX)?;
        let fresh = AuthState::from_rows(rows).map_err(MvccError::Corrupt)?;
        let old = self.auth.read().unwrap_or_else(|e| e.into_inner()).clone();
        if fresh.revision == old.revision {
            return Ok(());
        }
        let mut touched =
            cairn_core::auth::Touched { enabled: fresh.enabled != old.enabled, ..Default::default() };
        for (name, user) in &old.users {
            if fresh.users.get(name) != Some(user) {
                touched.invalidate_tokens_of.push(name.clone());
            }
        }
        self.tokens.invalidate(&touched);
        *self.auth.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(())
    }
}

/// Connections the applier keeps: one transaction at a time, and one spare while a
/// rolled-back one goes back to the pool.
const APPLIER_CONNECTIONS: u32 = 2;

/// Start the thread that commits this member's writes. It owns a current-thread runtime
/// and its own connections, so the replies to its statements wake no other thread, and
/// the writers wait for it as tasks rather than each on a blocking thread.
async fn start_applier(
    inner: Weak<Inner>,
    queue: std::sync::mpsc::Receiver<Queued>,
) -> Result<(), OpenError> {
    let Some(strong) = inner.upgrade() else { return Ok(()) };
    let (_, driver_url) = parse_url(&strong.config.url, strong.config.password.as_deref())?;
    let (sql, size, one_text) = (strong.db.sql.clone(), strong.db.size.clone(), strong.db.one_text);
    let timeout = strong.config.connect_timeout;
    drop(strong);
    let failed =
        |e: std::io::Error| OpenError::Database(SqlError::new("starting the applier", sqlx::Error::Io(e)));
    let (ready, started) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cairn-sql-applier".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => Arc::new(rt),
                Err(e) => return drop(ready.send(Err(failed(e)))),
            };
            // Pooled connections go back through this runtime, from wherever they are dropped here.
            let _context = rt.enter();
            let pool = match pool_options(sql.kind, APPLIER_CONNECTIONS, timeout).connect_lazy(&driver_url) {
                Ok(pool) => pool,
                Err(e) => return drop(ready.send(Err(OpenError::Database(SqlError::new("connecting", e))))),
            };
            let db = Database { pool, sql, rt: Exec::Own(rt.clone()), size, one_text };
            let _ = ready.send(Ok(()));
            run_applier(&inner, &db, &queue);
        })
        .map_err(failed)?;
    started.await.unwrap_or_else(|_| Err(failed(std::io::Error::other("the applier thread ended"))))
}

/// Commit the queued writes in groups: the writes that arrive while one group is being
/// committed go together in the next transaction (one commit, one fsync, for all of them:
/// the database's group commit, done here because every write holds the one lock). Ends
/// when the member is dropped.
fn run_applier(inner: &Weak<Inner>, db: &Database, queue: &std::sync::mpsc::Receiver<Queued>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        group.extend(queue.try_iter().take(MAX_GROUP - 1));
        let Some(inner) = inner.upgrade() else { return };
        let started = Instant::now();
        let answers = {
            let _one = lock(&inner.applier);
            inner.apply_group(db, &group)
        };
        tracing::trace!(
            writes = group.len(),
            took_us = started.elapsed().as_micros() as u64,
            "group committed"
        );
        for (item, answer) in group.into_iter().zip(answers) {
            let _ = item.answer.send(answer);
        }
    }
}

fn backoff(tries: u32) {
    std::thread::sleep(backoff_delay(tries));
}

/// How long to wait before try number `tries` after a conflict: doubling up to 64 ms, with
/// a few ms of jitter so that the members that collided do not collide again.
fn backoff_delay(tries: u32) -> Duration {
    Duration::from_millis((1u64 << tries.min(6)) + rand::random::<u64>() % 5)
}

fn conflict_or<T>(e: SqlError) -> Result<Attempt<T>, BackendError> {
    match e.failure {
        Failure::Conflict => Ok(Attempt::Conflict(e)),
        _ => Err(sql_error(e)),
    }
}

fn mvcc_conflict_or<T>(e: MvccError) -> Result<Attempt<T>, BackendError> {
    match (failure_of(&e), e) {
        (Some(Failure::Conflict), MvccError::Storage(source)) => {
            Ok(Attempt::Conflict(source.downcast_ref::<SqlError>().expect("classified above").clone()))
        }
        (_, e) => Err(mvcc_error(e)),
    }
}

/// Publish other members' commits: woken by PostgreSQL's NOTIFY, else by polling.
async fn follow_revisions(inner: Weak<Inner>, url: String) {
    let mut listener = None;
    if let Some(strong) = inner.upgrade() {
        if strong.db.sql.kind == Kind::Postgres {
            match sqlx::postgres::PgListener::connect(&url).await {
                Ok(mut l) => match l.listen(NOTIFY_CHANNEL).await {
                    Ok(()) => listener = Some(l),
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed; polling instead"),
                },
                Err(e) => tracing::warn!(error = %e, "LISTEN connection failed; polling instead"),
            }
        }
    }
    let mut since_auth_check = Duration::ZERO;
    let mut tokens_from_ms = 0i64;
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let interval = strong.config.poll_interval;
        drop(strong);
        match &mut listener {
            // A lost LISTEN connection reconnects inside `recv`; the timeout is the fallback.
            Some(l) => {
                let _ = tokio::time::timeout(interval.max(Duration::from_millis(500)), l.try_recv()).await;
            }
            None => tokio::time::sleep(interval).await,
        }
        let Some(strong) = inner.upgrade() else { return };
        since_auth_check += interval;
        let check_auth = since_auth_check >= Duration::from_millis(500);
        if check_auth {
            since_auth_check = Duration::ZERO;
        }
        let result = tokio::task::spawn_blocking(move || {
            let (current, _) = strong.store.revisions()?;
            strong.revision.send_if_modified(|r| {
                let newer = current > *r;
                if newer {
                    *r = current;
                }
                newer
            });
            if check_auth {
                strong.refresh_auth()?;
            }
            Ok::<_, MvccError>(strong)
        })
        .await;
        let strong = match result {
            Ok(Ok(strong)) => strong,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "looking for new revisions failed");
                continue;
            }
            Err(_) => return,
        };
        if check_auth && strong.auth.read().unwrap_or_else(|e| e.into_inner()).enabled {
            tokens_from_ms = sync_tokens(&strong, tokens_from_ms).await.unwrap_or(tokens_from_ms);
        }
    }
}

/// Learn the tokens other members assigned since `from_ms`; returns where to go on from.
async fn sync_tokens(inner: &Inner, from_ms: i64) -> Result<i64, SqlError> {
    let db = &inner.db;
    let rows = sqlx::query(&db.sql.tokens_since)
        .bind(from_ms)
        .bind(TOKEN_TTL.as_millis() as i64)
        .fetch_all(&db.pool)
        .await
        .during("reading tokens")?;
    for row in rows {
        let token: String = row.try_get(0).during("reading tokens")?;
        let user: String = row.try_get(1).during("reading tokens")?;
        if inner.tokens.user(&token).is_none() {
            inner.tokens.assign(token, user);
        }
    }
    // Overlap a little: the clock may step between two members' inserts.
    let now: i64 = sqlx::query_scalar(&format!("SELECT {}", db.sql.now_ms))
        .fetch_one(&db.pool)
        .await
        .during("reading the clock")?;
    Ok(now - 5_000)
}

/// Turn leases whose deadline passed into revokes, on whichever member looks first.
async fn expire_leases(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(strong) = inner.upgrade() else { return };
        let db = &strong.db;
        let expired: Vec<i64> = match sqlx::query_scalar(&db.sql.lease_expired)
            .bind(MAX_REVOKES_PER_INTERVAL)
            .fetch_all(&db.pool)
            .await
        {
            Ok(ids) => ids,
            Err(e) => {
                tracing::debug!(error = %e, "looking for expired leases failed");
                continue;
            }
        };
        if expired.is_empty() {
            continue;
        }
        for id in expired {
            let revoke = WriteRequest::LeaseRevoke(LeaseRevokeRequest { id });
            match strong.apply(revoke, 0, true).await {
                Ok(_) => {}
                Err(BackendError::Stopped) => return,
                Err(e) => {
                    tracing::warn!(lease = format!("{id:x}"), error = %e, "revoking an expired lease failed")
                }
            }
        }
    }
}

/// History rows per pruning step (each its own short transaction under the revision lock).
const PRUNE_STEP_ROWS: usize = 1000;

/// Delete the history rows compactions made invisible, in bounded steps between writes:
/// after each compaction, and once at start (so a pass cut short by an outage or a restart
/// is finished). Any member may do it; a second finds nothing left.
async fn prune_history(inner: Weak<Inner>) {
    let mut done_for = 0i64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(strong) = inner.upgrade() else { return };
        let pass = tokio::task::spawn_blocking(move || {
            let (_, compacted) = strong.store.revisions().map_err(mvcc_error)?;
            if compacted <= done_for {
                return Ok(done_for);
            }
            let mut cursor = Vec::new();
            let mut deleted = 0u64;
            loop {
                let _one = lock(&strong.applier);
                let (next, n) = strong.in_session(&strong.db, None, |session| {
                    let store = MvccStore::new(session.clone());
                    let step = match store.prune_step(&cursor, PRUNE_STEP_ROWS) {
                        Ok(step) => step,
                        Err(e) => return mvcc_conflict_or(e),
                    };
                    drop(store);
                    match session.commit() {
                        Ok(()) => Ok(Attempt::Done(step)),
                        Err(CommitError::NotCommitted(e)) => conflict_or(e),
                        Err(CommitError::Unknown(_)) => Err(BackendError::Timeout),
                    }
                })?;
                deleted += n;
                match next {
                    Some(c) => cursor = c,
                    None => break,
                }
                // Let waiting writers in between steps.
                std::thread::sleep(Duration::from_millis(1));
            }
            if deleted > 0 {
                tracing::info!(rows = deleted, compacted, "pruned compacted history");
            }
            Ok::<_, BackendError>(compacted)
        })
        .await;
        match pass {
            Ok(Ok(compacted)) => done_for = compacted,
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning compacted history failed; trying again"),
            Err(_) => return,
        }
    }
}

/// Heartbeat, forget long-dead members, refresh the size and the alarms.
async fn housekeeping(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(strong) = inner.upgrade() else { return };
        let db = &strong.db;
        if let Err(e) = strong.heartbeat().await {
            tracing::warn!(error = %e, "heartbeat failed");
            continue;
        }
        let _ =
            sqlx::query(&db.sql.members_forget).bind(FORGET_AFTER.as_millis() as i64).execute(&db.pool).await;
        let _ =
            sqlx::query(&db.sql.tokens_forget).bind(TOKEN_TTL.as_millis() as i64 * 2).execute(&db.pool).await;
        if let Ok(size) = sqlx::query_scalar::<_, i64>(&db.sql.size).fetch_one(&db.pool).await {
            db.size.store(size.max(0) as u64, Ordering::Relaxed);
        }
        if let Ok(alarms) = read_alarms(db).await {
            *strong.alarms.write().unwrap_or_else(|e| e.into_inner()) = alarms;
        }
    }
}

async fn read_alarms(db: &Database) -> Result<Vec<Alarm>, SqlError> {
    let rows = sqlx::query(&db.sql.alarms_all).fetch_all(&db.pool).await.during("reading alarms")?;
    rows.iter()
        .map(|r| {
            let member_id: i64 = r.try_get(0)?;
            let alarm: i64 = r.try_get(1)?;
            Ok(Alarm { member_id: member_id as u64, alarm: alarm as i32 })
        })
        .collect::<Result<_, sqlx::Error>>()
        .during("reading alarms")
}

impl KvBackend for SqlBackend {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, BackendError> {
        // Every member reads the one database: linearizable and serializable alike.
        self.blocking(move |inner| inner.store.range(&req).map_err(mvcc_error)).await
    }

    async fn write(&self, req: WriteRequest) -> Result<WriteResponse, BackendError> {
        self.write_checked(req, 0).await
    }

    async fn write_checked(
        &self,
        req: WriteRequest,
        auth_revision: u64,
    ) -> Result<WriteResponse, BackendError> {
        match req {
            WriteRequest::Txn(t) if is_read_only(&t) => {
                self.blocking(move |inner| {
                    inner.store.read_txn(&t).map(WriteResponse::Txn).map_err(mvcc_error)
                })
                .await
            }
            req => self
                .inner
                .apply(req, auth_revision, false)
                .await?
                .ok_or_else(|| BackendError::Corrupt("a write answered nothing".into())),
        }
    }

    async fn revisions(&self) -> Result<Revisions, BackendError> {
        let (current, compacted) = self.blocking(|inner| inner.store.revisions().map_err(mvcc_error)).await?;
        Ok(Revisions { current, compacted })
    }
}

impl WatchSource for SqlBackend {
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
        self.blocking(move |inner| {
            inner.store.events(from, to, max_revisions, with_prev_kv).map_err(mvcc_error)
        })
        .await
    }
}

impl LeaseBackend for SqlBackend {
    async fn lease_grant(&self, id: i64, ttl: i64) -> Result<LeaseGrantResponse, BackendError> {
        cairn_core::lessor::grant(id, ttl, self.inner.min_ttl, |grant| async move {
            self.inner
                .apply(grant, 0, false)
                .await?
                .ok_or_else(|| BackendError::Corrupt("a grant answered nothing".into()))
        })
        .await
    }

    async fn lease_renew(&self, id: i64) -> Result<i64, BackendError> {
        let db = &self.inner.db;
        let renewed = sqlx::query(&db.sql.lease_renew)
            .bind(id)
            .execute(&db.pool)
            .await
            .during("renewing a lease")
            .map_err(sql_error)?;
        if renewed.rows_affected() == 0 {
            // Unknown, or expired and about to be revoked (etcd: not found either way).
            return Ok(0);
        }
        Ok(self.lease_time(id).await?.map_or(0, |t| t.granted))
    }

    async fn lease_time(&self, id: i64) -> Result<Option<LeaseTime>, BackendError> {
        let db = &self.inner.db;
        let row = sqlx::query(&db.sql.lease_deadline_get)
            .bind(id)
            .fetch_optional(&db.pool)
            .await
            .during("reading a lease's deadline")
            .map_err(sql_error)?;
        let Some(row) = row else { return Ok(None) };
        let granted: i64 = row.try_get(0).during("reading a lease's deadline").map_err(sql_error)?;
        let left_ms: i64 = row.try_get(1).during("reading a lease's deadline").map_err(sql_error)?;
        Ok(Some(LeaseTime { remaining: left_ms.max(0) / 1000, granted }))
    }

    async fn leases(&self) -> Result<Vec<i64>, BackendError> {
        self.blocking(|inner| {
            Ok(inner.store.leases().map_err(mvcc_error)?.into_iter().map(|l| l.id).collect())
        })
        .await
    }

    async fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, BackendError> {
        self.blocking(move |inner| inner.store.lease_keys(id).map_err(mvcc_error)).await
    }
}

impl ClusterBackend for SqlBackend {
    fn status(&self) -> MemberStatus {
        let inner = &self.inner;
        // No log and no leader: each member writes through the database's lock, so each
        // reports itself as leading; the revision stands in for the log index.
        let revision = *inner.revision.borrow() as u64;
        MemberStatus {
            cluster_id: inner.cluster_id,
            member_id: inner.member_id,
            raft_term: 1,
            leader: inner.member_id,
            raft_index: revision,
            raft_applied_index: revision,
            is_learner: false,
        }
    }

    async fn members(&self) -> Result<Vec<Member>, BackendError> {
        let db = &self.inner.db;
        let rows = sqlx::query(&db.sql.members_live)
            .bind(LIVE_WINDOW.as_millis() as i64)
            .fetch_all(&db.pool)
            .await
            .during("listing members")
            .map_err(sql_error)?;
        let mut members = Vec::new();
        for row in rows {
            let id: i64 = row.try_get(0).during("listing members").map_err(sql_error)?;
            let name: String = row.try_get(1).during("listing members").map_err(sql_error)?;
            let urls: String = row.try_get(2).during("listing members").map_err(sql_error)?;
            members.push(Member {
                id: id as u64,
                name,
                peer_urls: Vec::new(),
                client_urls: urls.split(',').filter(|u| !u.is_empty()).map(String::from).collect(),
                is_learner: false,
            });
        }
        Ok(members)
    }

    /// Members join by starting on the same database; there is nothing to add.
    async fn member_add(
        &self,
        _peer_url: String,
        _is_learner: bool,
    ) -> Result<(Member, Vec<Member>), BackendError> {
        Err(RequestError::FixedMembership.into())
    }

    async fn member_update(&self, _id: u64, _peer_url: String) -> Result<Vec<Member>, BackendError> {
        Err(RequestError::FixedMembership.into())
    }

    async fn member_remove(&self, _id: u64) -> Result<Vec<Member>, BackendError> {
        Err(RequestError::FixedMembership.into())
    }

    async fn member_promote(&self, _id: u64) -> Result<Vec<Member>, BackendError> {
        Err(RequestError::FixedMembership.into())
    }

    /// Every member leads already (see [`ClusterBackend::status`]).
    async fn move_leader(&self, target: u64) -> Result<(), BackendError> {
        if target == self.inner.member_id {
            return Ok(());
        }
        Err(RequestError::BadLeaderTransferee.into())
    }
}

impl MaintenanceBackend for SqlBackend {
    fn db_size(&self) -> i64 {
        i64::try_from(self.inner.db.size.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
    }

    async fn hash_kv(&self, revision: i64) -> Result<KvHash, BackendError> {
        self.blocking(move |inner| inner.store.hash_kv(revision).map_err(mvcc_error)).await
    }

    async fn backup(&self) -> Result<BackupStream, BackendError> {
        let (file, size, revision) = self
            .blocking(move |inner| inner.store.backup_file(&std::env::temp_dir()).map_err(mvcc_error))
            .await?;
        Ok(BackupStream::from_file(file, size, revision))
    }

    async fn defragment(&self) -> Result<(), BackendError> {
        self.blocking(move |inner| inner.store.engine().compact_storage().map_err(mvcc_error)).await
    }

    /// The members share a database, not a key.
    fn key_fingerprint(&self) -> String {
        "none".to_string()
    }

    fn space_used(&self) -> u64 {
        self.inner.db.size.load(Ordering::Relaxed)
    }

    fn alarms(&self) -> Vec<Alarm> {
        self.inner.alarms.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn set_alarm(&self, alarm: Alarm, activate: bool) -> Result<(), BackendError> {
        let db = &self.inner.db;
        let sql = if activate { &db.sql.alarm_put } else { &db.sql.alarm_delete };
        sqlx::query(sql)
            .bind(alarm.member_id as i64)
            .bind(i64::from(alarm.alarm))
            .execute(&db.pool)
            .await
            .during("writing an alarm")
            .map_err(sql_error)?;
        let alarms = read_alarms(db).await.map_err(sql_error)?;
        *self.inner.alarms.write().unwrap_or_else(|e| e.into_inner()) = alarms;
        Ok(())
    }
}

impl cairn_core::AuthBackend for SqlBackend {
    fn auth_state(&self) -> Arc<AuthState> {
        self.inner.auth.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn auth_change(&self, change: AuthChange) -> Result<(), BackendError> {
        self.blocking(move |inner| {
            let _one = lock(&inner.applier);
            let (state, touched) = inner.in_session(&inner.db, None, |session| {
                let store = MvccStore::new(session.clone());
                let rows = match store.meta_with_prefix(ROW_PREFIX) {
                    Ok(rows) => rows,
                    Err(e) => return mvcc_conflict_or(e),
                };
                let mut state = AuthState::from_rows(rows).map_err(BackendError::Corrupt)?;
                let touched = state.apply(&change)?;
                let mut batch = match store.begin_apply() {
                    Ok(b) => b,
                    Err(e) => return mvcc_conflict_or(e),
                };
                for (key, value) in state.rows(&touched) {
                    match value {
                        Some(value) => batch.put_meta(&key, &value),
                        None => batch.delete_meta(&key),
                    }
                }
                if let Err(e) = batch.commit_synced() {
                    return mvcc_conflict_or(e);
                }
                drop(store);
                match session.commit() {
                    Ok(()) => Ok(Attempt::Done((state, touched))),
                    Err(CommitError::NotCommitted(e)) => conflict_or(e),
                    Err(CommitError::Unknown(_)) => Err(BackendError::Timeout),
                }
            })?;
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
        let token = Tokens::mint(*self.inner.revision.borrow() as u64);
        let db = &self.inner.db;
        sqlx::query(&db.sql.token_put)
            .bind(token.clone())
            .bind(user.clone())
            .execute(&db.pool)
            .await
            .during("writing a token")
            .map_err(sql_error)?;
        self.inner.tokens.assign(token.clone(), user);
        Ok(token)
    }

    fn token_user(&self, token: &str) -> Option<String> {
        self.inner.tokens.user(token)
    }

    /// Read the auth state and the alarms from the database now: another member may have
    /// changed them.
    async fn auth_read_point(&self) -> Result<(), BackendError> {
        let alarms = read_alarms(&self.inner.db).await.map_err(sql_error)?;
        *self.inner.alarms.write().unwrap_or_else(|e| e.into_inner()) = alarms;
        self.blocking(|inner| inner.refresh_auth().map_err(mvcc_error)).await
    }
}
