//! The MVCC storage interface ([`cairn_mvcc::Engine`]) on SQL tables: the six families are
//! six tables of (key, value) rows. Every etcd rule stays in `cairn-mvcc`; this module only
//! moves rows. Two engines:
//! - [`SqlEngine`]: the shared reader. `snapshot()` is a read-only transaction that sees one
//!   point in time (PostgreSQL and MySQL: repeatable read; SQLite: a deferred transaction in
//!   WAL mode), `latest()` reads in autocommit.
//! - [`Session`]: the writer. It opens a transaction that first takes the one serialising
//!   lock (a row lock on `cairn_lock`, or SQLite's write lock), so that every read it makes
//!   and every revision it writes follow the previous writer's commit, from any member.
//!
//! The storage interface is synchronous: its calls run on blocking threads and wait for the
//! driver's futures there (`Handle::block_on`), never on the async workers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cairn_mvcc::{Batch, BatchOp, Durability, Engine, EngineRead, Family, MvccError, Row, Visit};
use futures::TryStreamExt;
use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row as _};
use tokio::runtime::Handle;

use crate::dialect::{Dialect, RowsOp, MAX_ROWS_LOG2};
use crate::error::{Context, SqlError};

/// A pool of connections to one database and how to speak to it.
#[derive(Clone)]
pub struct Database {
    pub pool: AnyPool,
    pub sql: Arc<Dialect>,
    pub rt: Exec,
    /// The tables' size, refreshed in the background (`Status` must not touch storage).
    pub size: Arc<AtomicU64>,
    /// Whether a write session sends several statements as one text (one round trip):
    /// PostgreSQL, and MySQL unless the server is a Galera node, which can abort a
    /// transaction between the statements of one text and then run the rest in autocommit.
    pub one_text: bool,
}

type Conn = PoolConnection<Any>;

/// Where a database's driver futures run.
#[derive(Clone)]
pub enum Exec {
    /// The member's runtime: waited for on blocking threads, I/O driven by its workers.
    Shared(Handle),
    /// A current-thread runtime of one thread's own (the applier's): its I/O is driven by
    /// the thread that waits, so a reply needs no wake-up from another thread.
    Own(Arc<tokio::runtime::Runtime>),
}

impl Exec {
    fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        match self {
            Exec::Shared(handle) => handle.block_on(fut),
            Exec::Own(rt) => rt.block_on(fut),
        }
    }

    /// Enter the runtime's context (a pooled connection dropped here goes back through it).
    pub fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        match self {
            Exec::Shared(handle) => handle.enter(),
            Exec::Own(rt) => rt.enter(),
        }
    }

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, fut: F) {
        match self {
            Exec::Shared(handle) => drop(handle.spawn(fut)),
            Exec::Own(rt) => drop(rt.spawn(fut)),
        }
    }
}

impl Database {
    /// Wait for `fut` on this (blocking) thread.
    pub fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        self.rt.block_on(fut)
    }

    fn key_of(&self, row: &AnyRow) -> Result<Vec<u8>, sqlx::Error> {
        self.key_at(row, 0)
    }

    /// The key in column `i` (hex-encoded by MySQL's statements).
    fn key_at(&self, row: &AnyRow, i: usize) -> Result<Vec<u8>, sqlx::Error> {
        if self.sql.hex_keys {
            let text: String = row.try_get(i)?;
            hex::decode(&text)
                .map_err(|_| sqlx::Error::Decode(format!("a key came back as {text:?}, not hex").into()))
        } else {
            row.try_get(i)
        }
    }

    async fn get(
        &self,
        conn: &mut AnyConnection,
        fam: Family,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, sqlx::Error> {
        let row = sqlx::query(&self.sql.family(fam).get).bind(key).fetch_optional(conn).await?;
        row.map(|r| r.try_get::<Vec<u8>, _>(0)).transpose()
    }

    async fn page(
        &self,
        conn: &mut AnyConnection,
        fam: Family,
        from: &[u8],
        inclusive: bool,
        end: Option<&[u8]>,
        limit: i64,
    ) -> Result<Vec<Row>, sqlx::Error> {
        let f = self.sql.family(fam);
        let sql = match (inclusive, end.is_some()) {
            (true, false) => &f.scan_from,
            (false, false) => &f.scan_after,
            (true, true) => &f.scan_from_to,
            (false, true) => &f.scan_after_to,
        };
        let mut q = sqlx::query(sql).bind(from);
        if let Some(end) = end {
            q = q.bind(end);
        }
        let mut rows = q.bind(limit).fetch(conn);
        let mut out = Vec::new();
        while let Some(row) = rows.try_next().await? {
            out.push((self.key_of(&row)?, row.try_get::<Vec<u8>, _>(1)?));
        }
        Ok(out)
    }

    async fn last_in(
        &self,
        conn: &mut AnyConnection,
        fam: Family,
        lower: &[u8],
        upper: &[u8],
    ) -> Result<Option<Row>, sqlx::Error> {
        let row =
            sqlx::query(&self.sql.family(fam).last_in).bind(lower).bind(upper).fetch_optional(conn).await?;
        row.map(|r| Ok((self.key_of(&r)?, r.try_get::<Vec<u8>, _>(1)?))).transpose()
    }

    /// Write `batch` now, in prepared statements (see [`plan`]).
    async fn write_ops(&self, conn: &mut AnyConnection, batch: &Batch) -> Result<(), sqlx::Error> {
        for step in plan(batch) {
            match step {
                Step::Rows { fam, op, rows } => {
                    let mut at = 0;
                    for (n, room, sql) in self.sql.rows_statements(fam, op, rows.len()) {
                        let mut q = sqlx::query(&sql);
                        for i in 0..room {
                            let (k, v) = rows[at + i.min(n - 1)];
                            q = q.bind(k);
                            if let RowsOp::Put = op {
                                q = q.bind(v.unwrap_or_default());
                            }
                        }
                        q.execute(&mut *conn).await?;
                        at += n;
                    }
                }
                Step::DeleteRange { fam, start, end } => {
                    sqlx::query(&self.sql.family(fam).delete_range)
                        .bind(start)
                        .bind(end)
                        .execute(&mut *conn)
                        .await?;
                }
                Step::Clear(fam) => {
                    conn.execute(sqlx::query(&self.sql.family(fam).clear)).await?;
                }
            }
        }
        Ok(())
    }

    /// `batch` as statements with their rows written out (see [`plan`]), to send later as
    /// one text with others.
    fn write_text(&self, batch: &Batch, out: &mut Vec<String>) {
        for step in plan(batch) {
            out.push(match step {
                Step::Rows { fam, op, rows } => self.sql.rows_text(fam, op, rows),
                Step::DeleteRange { fam, start, end } => self.sql.delete_range_text(fam, start, end),
                Step::Clear(fam) => self.sql.family(fam).clear.clone(),
            });
        }
    }

    /// The `keys` of `fam` that exist, with their values, in few statements (a statement's
    /// key list is padded with its last key to a power of two: duplicates are harmless).
    async fn get_many(
        &self,
        conn: &mut AnyConnection,
        fam: Family,
        keys: &[&[u8]],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, sqlx::Error> {
        let mut found = Vec::new();
        for chunk in keys.chunks(1 << MAX_ROWS_LOG2) {
            let log = chunk.len().next_power_of_two().trailing_zeros() as usize;
            let mut q = sqlx::query(&self.sql.family(fam).get_many[log]);
            for i in 0..(1usize << log) {
                q = q.bind(chunk[i.min(chunk.len() - 1)]);
            }
            for row in q.fetch_all(&mut *conn).await? {
                found.push((self.key_of(&row)?, row.try_get::<Vec<u8>, _>(1)?));
            }
        }
        Ok(found)
    }

    async fn run_all(conn: &mut AnyConnection, statements: &[String]) -> Result<(), sqlx::Error> {
        for s in statements {
            conn.execute(&**s).await?;
        }
        Ok(())
    }

    /// Give a connection back to the pool once its open transaction is rolled back (in the
    /// background: this may run anywhere, an async worker included).
    fn release_rolled_back(&self, mut conn: Conn) {
        self.rt.spawn(async move {
            if conn.execute("ROLLBACK").await.is_err() {
                // A connection in an unknown state is closed, not reused.
                drop(conn.detach());
            }
        });
    }
}

fn storage(e: SqlError) -> MvccError {
    MvccError::storage(e)
}

/// One statement's worth of a batch.
enum Step<'b> {
    /// Puts or deletes of distinct keys.
    Rows {
        fam: Family,
        op: RowsOp,
        rows: Vec<(&'b [u8], Option<&'b [u8]>)>,
    },
    DeleteRange {
        fam: Family,
        start: &'b [u8],
        end: &'b [u8],
    },
    Clear(Family),
}

/// What `batch` writes: each key's last operation per table, in multi-row steps (a range
/// delete or a clear comes after what came before it, which it may remove). One key
/// appears once per table between two range steps, so its deletes and puts may go in any
/// order.
fn plan(batch: &Batch) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    let mut pending: Vec<BTreeMap<&[u8], Option<&[u8]>>> = vec![BTreeMap::new(); Family::ALL.len()];
    fn gather<'b>(pending: &mut [BTreeMap<&'b [u8], Option<&'b [u8]>>], steps: &mut Vec<Step<'b>>) {
        for (fam, rows) in Family::ALL.iter().zip(pending.iter_mut()) {
            let (deletes, puts): (Vec<_>, Vec<_>) =
                std::mem::take(rows).into_iter().partition(|(_, v)| v.is_none());
            if !deletes.is_empty() {
                steps.push(Step::Rows { fam: *fam, op: RowsOp::Delete, rows: deletes });
            }
            if !puts.is_empty() {
                steps.push(Step::Rows { fam: *fam, op: RowsOp::Put, rows: puts });
            }
        }
    }
    for op in &batch.ops {
        match op {
            BatchOp::Put(fam, k, v) => {
                pending[*fam as usize].insert(k, Some(v));
            }
            BatchOp::Delete(fam, k) => {
                pending[*fam as usize].insert(k, None);
            }
            BatchOp::DeleteRange(fam, start, end) => {
                gather(&mut pending, &mut steps);
                if end > start {
                    steps.push(Step::DeleteRange { fam: *fam, start, end });
                }
            }
            BatchOp::Clear(fam) => {
                gather(&mut pending, &mut steps);
                steps.push(Step::Clear(*fam));
            }
        }
    }
    gather(&mut pending, &mut steps);
    steps
}

/// How a reader holds its connection.
enum Slot<'e> {
    /// Its own, taken from the pool at the first read; `snapshot` opens a read-only
    /// transaction on it first.
    Own { conn: Mutex<Option<Conn>>, snapshot: bool },
    /// A session's, inside its transaction.
    Session(&'e Session),
}

struct Reader<'e> {
    db: &'e Database,
    slot: Slot<'e>,
}

impl Reader<'_> {
    /// Run `op` with the reader's connection.
    fn with<T>(
        &self,
        what: &'static str,
        op: impl FnOnce(&mut AnyConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, MvccError> {
        let mut guard: MutexGuard<'_, Option<Conn>> = match &self.slot {
            Slot::Own { conn, .. } => lock(conn),
            Slot::Session(session) => lock(&session.conn),
        };
        if guard.is_none() {
            let Slot::Own { snapshot, .. } = &self.slot else {
                return Err(MvccError::Corrupt("a finished write session was read".into()));
            };
            let db = self.db;
            let conn = db
                .block_on(async {
                    let mut conn = db.pool.acquire().await?;
                    if *snapshot {
                        Database::run_all(&mut conn, &db.sql.begin_snapshot).await?;
                    }
                    Ok::<_, sqlx::Error>(conn)
                })
                .during("opening a read transaction")
                .map_err(storage)?;
            *guard = Some(conn);
        }
        let conn = guard.as_mut().expect("connection just ensured");
        if let Slot::Session(session) = &self.slot {
            session.send_pending(conn).map_err(storage)?;
        }
        op(conn).during(what).map_err(storage)
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        // A pooled connection goes back through the runtime, whichever thread drops it.
        let _rt = self.db.rt.enter();
        if let Slot::Own { conn, snapshot } = &mut self.slot {
            if let Some(conn) = conn.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
                if *snapshot {
                    self.db.release_rolled_back(conn);
                } else {
                    drop(conn);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EngineRead for Reader<'_> {
    fn get(&self, fam: Family, key: &[u8]) -> Result<Option<Vec<u8>>, MvccError> {
        if let Slot::Session(session) = &self.slot {
            if let Some(known) = lock(&session.prefetched).get(&fam).and_then(|rows| rows.get(key)) {
                return Ok(known.clone());
            }
        }
        self.with("reading a row", |conn| self.db.block_on(self.db.get(conn, fam, key)))
    }

    fn scan(
        &self,
        fam: Family,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), MvccError> {
        // Pages that grow: a small range costs one small query, a large one few round trips.
        let mut limit = 64i64;
        let mut from = start.to_vec();
        let mut inclusive = true;
        loop {
            let rows = self.with("scanning rows", |conn| {
                self.db.block_on(self.db.page(conn, fam, &from, inclusive, end, limit))
            })?;
            let full = rows.len() as i64 == limit;
            for (k, v) in rows {
                if !visit(&k, &v)? {
                    return Ok(());
                }
                from = k;
            }
            if !full {
                return Ok(());
            }
            inclusive = false;
            limit = (limit * 4).min(4096);
        }
    }

    fn last_in(&self, fam: Family, lower: &[u8], upper: &[u8]) -> Result<Option<Row>, MvccError> {
        if upper <= lower {
            return Ok(None);
        }
        self.with("reading a row", |conn| self.db.block_on(self.db.last_in(conn, fam, lower, upper)))
    }
}

/// The shared reader over the database (and a writer of standalone batches).
pub struct SqlEngine {
    pub db: Database,
}

impl Engine for SqlEngine {
    fn snapshot(&self) -> Box<dyn EngineRead + '_> {
        Box::new(Reader { db: &self.db, slot: Slot::Own { conn: Mutex::new(None), snapshot: true } })
    }

    fn latest(&self) -> Box<dyn EngineRead + '_> {
        Box::new(Reader { db: &self.db, slot: Slot::Own { conn: Mutex::new(None), snapshot: false } })
    }

    /// A batch on its own, in a session of its own (it reads nothing first).
    fn write(&self, batch: Batch, durability: Durability) -> Result<(), MvccError> {
        let session = Session::begin(&self.db).map_err(storage)?;
        session.write(batch, durability)?;
        session.commit().map_err(|e| storage(e.into_error()))
    }

    fn approximate_size(&self) -> u64 {
        self.db.size.load(Ordering::Relaxed)
    }

    fn compact_storage(&self) -> Result<(), MvccError> {
        let db = &self.db;
        db.block_on(async {
            let mut conn = db.pool.acquire().await?;
            Database::run_all(&mut conn, &db.sql.defragment).await
        })
        .during("defragmenting")
        .map_err(storage)
    }
}

/// How a commit ended when it did not succeed.
#[derive(Debug)]
pub enum CommitError {
    /// The database said no: nothing was written.
    NotCommitted(SqlError),
    /// The connection failed while the commit was under way: it may or may not have
    /// happened.
    Unknown(SqlError),
}

impl CommitError {
    pub fn into_error(self) -> SqlError {
        match self {
            CommitError::NotCommitted(e) | CommitError::Unknown(e) => e,
        }
    }
}

/// Rows read ahead by a session, per family: `None` for a key known absent.
type Prefetched = HashMap<Family, HashMap<Vec<u8>, Option<Vec<u8>>>>;

/// One write transaction holding the revision lock: reads see every earlier commit, by
/// any member; nothing is visible to others before [`Session::commit`].
pub struct Session {
    db: Database,
    conn: Mutex<Option<Conn>>,
    /// Latest-value rows read ahead for the writes to apply ([`Session::prefetch`]), absent
    /// ones as `None`; forgotten when the session writes.
    prefetched: Mutex<Prefetched>,
    /// Writes not sent yet, as text: sent before the session's next read, or with the
    /// commit in one round trip.
    pending: Mutex<Vec<String>>,
}

/// Written out as text, a batch or a read-ahead up to this many bytes goes with others in
/// one round trip; a larger one goes in prepared statements (it is not worth a statement
/// twice its size, nor a risk for the server's largest packet).
const TEXT_BYTES: usize = 256 * 1024;

impl Session {
    fn new(db: &Database, conn: Conn) -> Session {
        Session {
            db: db.clone(),
            conn: Mutex::new(Some(conn)),
            prefetched: Mutex::default(),
            pending: Mutex::default(),
        }
    }

    /// Open the transaction and wait for the revision lock. Blocking.
    pub fn begin(db: &Database) -> Result<Session, SqlError> {
        let (conn, _) = Session::open(db, "")?;
        Ok(Session::new(db, conn))
    }

    /// Take a connection, open the transaction and take the revision lock; `reads` (more
    /// statements, each led by "; ") go in the same text and their rows come back. Only
    /// where the database runs one text (`Database::one_text`) may `reads` be given.
    fn open(db: &Database, reads: &str) -> Result<(Conn, Vec<AnyRow>), SqlError> {
        db.block_on(async {
            let mut conn = db.pool.acquire().await?;
            if db.sql.kind == crate::dialect::Kind::MySql {
                // Into the connection's statement cache before the transaction starts
                // (a lookup once cached; see `Dialect::write_statements`).
                for statement in db.sql.write_statements() {
                    conn.prepare(statement).await?;
                }
            }
            let begun = if db.one_text {
                conn.fetch_all(&*format!("{}{reads}", db.sql.begin_write.join("; "))).await
            } else {
                Database::run_all(&mut conn, &db.sql.begin_write).await.map(|()| Vec::new())
            };
            match begun {
                Ok(rows) => Ok((conn, rows)),
                Err(e) => {
                    // Its transaction may be open (a lock wait timed out): never reused.
                    drop(conn.detach());
                    Err(e)
                }
            }
        })
        .during("taking the revision lock")
    }

    /// [`Session::begin`], then [`Session::prefetch`]: on PostgreSQL and MySQL both in one
    /// round trip.
    pub fn begin_prefetching(db: &Database, keys: &[&[u8]]) -> Result<Session, SqlError> {
        let bytes: usize = keys.iter().map(|k| k.len()).sum();
        if !db.one_text || bytes > TEXT_BYTES {
            let session = Session::begin(db)?;
            session.prefetch(keys)?;
            return Ok(session);
        }
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        let reads = [(Family::Kv, "k", &keys[..]), (Family::Meta, "m", &cairn_mvcc::APPLY_META_KEYS[..])];
        let mut text = String::new();
        for (fam, tag, keys) in reads {
            if !keys.is_empty() {
                text.push_str("; ");
                text.push_str(&db.sql.get_many_text(fam, tag, keys));
            }
        }
        let (conn, rows) = Session::open(db, &text)?;
        let session = Session::new(db, conn);
        let mut found: [Vec<(Vec<u8>, Vec<u8>)>; 2] = Default::default();
        for row in rows {
            let tag: String = row.try_get(0).during("reading rows ahead")?;
            let key = db.key_at(&row, 1).during("reading rows ahead")?;
            let value = row.try_get::<Vec<u8>, _>(2).during("reading rows ahead")?;
            found[usize::from(tag == "m")].push((key, value));
        }
        for ((fam, _, keys), found) in reads.into_iter().zip(found) {
            session.remember(fam, keys, found);
        }
        Ok(session)
    }

    /// Note the rows of `keys` read ahead: those in `found`, the others absent.
    fn remember(&self, fam: Family, keys: &[&[u8]], found: Vec<(Vec<u8>, Vec<u8>)>) {
        let mut prefetched = lock(&self.prefetched);
        let rows = prefetched.entry(fam).or_default();
        rows.extend(keys.iter().map(|k| (k.to_vec(), None)));
        rows.extend(found.into_iter().map(|(k, v)| (k, Some(v))));
    }

    /// Send the writes held as text, if any.
    fn send_pending(&self, conn: &mut Conn) -> Result<(), SqlError> {
        let mut pending = lock(&self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let text = pending.join("; ");
        pending.clear();
        self.db.block_on(conn.execute(&*text)).map(drop).during("writing rows")
    }

    /// Read the latest-value rows of `keys`, and the meta rows every apply starts with, in
    /// a few statements, so that applying writes to them reads none of them one by one.
    pub fn prefetch(&self, keys: &[&[u8]]) -> Result<(), SqlError> {
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        let mut guard = lock(&self.conn);
        let conn = guard.as_mut().ok_or_else(finished)?;
        self.send_pending(conn)?;
        for (fam, keys) in [(Family::Kv, &keys[..]), (Family::Meta, &cairn_mvcc::APPLY_META_KEYS[..])] {
            if keys.is_empty() {
                continue;
            }
            let found = self.db.block_on(self.db.get_many(conn, fam, keys)).during("reading rows ahead")?;
            self.remember(fam, keys, found);
        }
        Ok(())
    }

    /// Run one statement with 64-bit integer and text parameters inside the transaction;
    /// returns the rows it affected.
    pub fn execute(&self, what: &'static str, sql: &str, ints: &[i64]) -> Result<u64, SqlError> {
        let mut guard = lock(&self.conn);
        let conn = guard.as_mut().ok_or_else(finished)?;
        self.send_pending(conn)?;
        let mut q = sqlx::query(sql);
        for i in ints {
            q = q.bind(*i);
        }
        self.db.block_on(q.execute(&mut **conn)).map(|r| r.rows_affected()).during(what)
    }

    /// The first column (an integer) of the first row of a query inside the transaction.
    pub fn query_int(&self, what: &'static str, sql: &str, ints: &[i64]) -> Result<Option<i64>, SqlError> {
        let mut guard = lock(&self.conn);
        let conn = guard.as_mut().ok_or_else(finished)?;
        self.send_pending(conn)?;
        let mut q = sqlx::query(sql);
        for i in ints {
            q = q.bind(*i);
        }
        let row = self.db.block_on(q.fetch_optional(&mut **conn)).during(what)?;
        row.map(|r| r.try_get::<i64, _>(0)).transpose().during(what)
    }

    /// Commit; the connection goes back to the pool.
    pub fn commit(&self) -> Result<(), CommitError> {
        self.commit_after(None)
    }

    /// Send the writes held as text, run `last` (a statement without parameters, e.g.
    /// PostgreSQL's NOTIFY) and commit, in one round trip where the database allows it.
    pub fn commit_after(&self, last: Option<&str>) -> Result<(), CommitError> {
        let _rt = self.db.rt.enter();
        let mut conn = lock(&self.conn).take().ok_or_else(|| CommitError::NotCommitted(finished()))?;
        let mut text = std::mem::take(&mut *lock(&self.pending));
        text.extend(last.map(str::to_string));
        text.push("COMMIT".to_string());
        let one_text = self.db.one_text;
        let sent = self.db.block_on(async {
            if !one_text {
                // Nothing was held as text.
                Database::run_all(&mut conn, &text).await
            } else {
                conn.execute(&*text.join("; ")).await.map(drop)
            }
        });
        match sent {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = SqlError::new("committing", e);
                drop(conn.detach());
                match e.failure {
                    crate::error::Failure::Unreachable => Err(CommitError::Unknown(e)),
                    _ => Err(CommitError::NotCommitted(e)),
                }
            }
        }
    }
}

fn finished() -> SqlError {
    SqlError::new("using a finished write session", sqlx::Error::PoolClosed)
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            self.db.release_rolled_back(conn);
        }
    }
}

impl Engine for Session {
    fn snapshot(&self) -> Box<dyn EngineRead + '_> {
        Box::new(Reader { db: &self.db, slot: Slot::Session(self) })
    }

    fn latest(&self) -> Box<dyn EngineRead + '_> {
        Box::new(Reader { db: &self.db, slot: Slot::Session(self) })
    }

    /// Written inside the transaction; durable once [`Session::commit`] returns. A small
    /// batch is held as text and sent with the commit (or before the next read).
    fn write(&self, batch: Batch, _durability: Durability) -> Result<(), MvccError> {
        lock(&self.prefetched).clear();
        let bytes: usize = batch.ops.iter().map(batch_op_bytes).sum();
        if self.db.one_text && bytes <= TEXT_BYTES {
            let mut conn = lock(&self.conn);
            let mut pending = lock(&self.pending);
            self.db.write_text(&batch, &mut pending);
            let held: usize = pending.iter().map(String::len).sum();
            drop(pending);
            // Many batches in one session (an import): send them as they add up.
            if held > 2 * TEXT_BYTES {
                let conn = conn.as_mut().ok_or_else(finished).map_err(storage)?;
                self.send_pending(conn).map_err(storage)?;
            }
            return Ok(());
        }
        let reader = Reader { db: &self.db, slot: Slot::Session(self) };
        reader.with("writing rows", |conn| self.db.block_on(self.db.write_ops(conn, &batch)))
    }

    fn approximate_size(&self) -> u64 {
        self.db.size.load(Ordering::Relaxed)
    }

    fn compact_storage(&self) -> Result<(), MvccError> {
        Ok(())
    }
}

fn batch_op_bytes(op: &BatchOp) -> usize {
    match op {
        BatchOp::Put(_, k, v) => k.len() + v.len(),
        BatchOp::Delete(_, k) => k.len(),
        BatchOp::DeleteRange(_, start, end) => start.len() + end.len(),
        BatchOp::Clear(_) => 0,
    }
}
