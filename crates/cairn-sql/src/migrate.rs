//! Offline moves of a whole keyspace into a SQL database: every revision, the compaction
//! point, the leases (with their full TTL from the import on) and the auth state. The other
//! direction (SQL → embedded store) needs only [`open_store`] and the store's backup.

use std::io::{Read, Seek};
use std::sync::Arc;

use cairn_mvcc::{Batch, Durability, Engine, Family, MvccError, MvccStore};

use crate::engine::{CommitError, Database, Session, SqlEngine};
use crate::error::SqlError;
use crate::{parse_url, OpenError};

/// Why an import failed. Nothing was written unless the commit's outcome is unknown.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the target database already holds a Cairn keyspace: import into an empty one")]
    NotEmpty,
    #[error("the backup cannot be read: {0}")]
    Backup(MvccError),
    #[error("the database failed: {0}")]
    Database(SqlError),
    #[error("the connection was lost while committing: the import may or may not have happened")]
    Unknown(SqlError),
}

/// Connect to `url` and create or check the schema, for an offline tool: no member is
/// registered and no clock runs. Call from a tokio runtime; use the store from blocking
/// threads only.
pub async fn open_store(url: &str, password: Option<&str>) -> Result<(MvccStore, Database), OpenError> {
    let db = crate::backend::connect(url, password, 4, std::time::Duration::from_secs(10)).await?;
    crate::schema::migrate(&db).await?;
    Ok((MvccStore::new(Arc::new(SqlEngine { db: db.clone() })), db))
}

/// Rows written per statement batch (the whole import is one transaction).
const CHUNK: usize = 1000;

/// Copy the backup in `file` (checked whole by its digest first) into the empty database
/// `db`, in one transaction; `keep` filters rows (the embedded store's Raft rows stay
/// behind); `progress` hears the rows copied so far. Returns the rows copied. Blocking.
pub fn import_backup<F: Read + Seek>(
    db: &Database,
    file: &mut F,
    keep: &dyn Fn(Family, &[u8]) -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, ImportError> {
    let len = cairn_mvcc::verify_backup(file).map_err(ImportError::Backup)?;
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| ImportError::Backup(MvccError::SnapshotIo(Arc::new(e))))?;
    let session = Arc::new(Session::begin(db).map_err(ImportError::Database)?);
    let store = MvccStore::new(session.clone());
    if !is_empty(&store).map_err(ImportError::Backup)? {
        return Err(ImportError::NotEmpty);
    }
    let mut input = std::io::BufReader::with_capacity(1 << 20, file.take(len));
    let mut batch = Batch::default();
    let mut copied = 0u64;
    cairn_mvcc::read_snapshot_rows(&mut input, &mut |fam, key, value| {
        if !keep(fam, &key) {
            return Ok(());
        }
        batch.put(fam, key, value);
        copied += 1;
        if batch.ops.len() >= CHUNK {
            session.write(std::mem::take(&mut batch), Durability::Synced)?;
            progress(copied);
        }
        Ok(())
    })
    .map_err(|e| match sql_source(&e) {
        Some(s) => ImportError::Database(s),
        None => ImportError::Backup(e),
    })?;
    session.write(batch, Durability::Synced).map_err(ImportError::Backup)?;
    progress(copied);
    // Every lease gets its full TTL from now, as on a member's restart.
    for lease in store.leases().map_err(ImportError::Backup)? {
        session
            .execute(
                "writing a lease's deadline",
                &db.sql.lease_deadline_put,
                &[lease.id, lease.ttl, lease.ttl],
            )
            .map_err(ImportError::Database)?;
    }
    drop(store);
    match session.commit() {
        Ok(()) => Ok(copied),
        Err(CommitError::NotCommitted(e)) => Err(ImportError::Database(e)),
        Err(CommitError::Unknown(e)) => Err(ImportError::Unknown(e)),
    }
}

fn sql_source(e: &MvccError) -> Option<SqlError> {
    match e {
        MvccError::Storage(source) => source.downcast_ref::<SqlError>().cloned(),
        _ => None,
    }
}

/// Whether no family holds a row.
fn is_empty(store: &MvccStore) -> Result<bool, MvccError> {
    let reader = store.engine().latest();
    for fam in Family::ALL {
        let mut any = false;
        reader.scan(fam, &[], None, &mut |_, _| {
            any = true;
            Ok(false)
        })?;
        if any {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The database kind of a URL (for messages).
pub fn kind_of(url: &str) -> Result<crate::Kind, OpenError> {
    parse_url(url, None).map(|(kind, _)| kind)
}
