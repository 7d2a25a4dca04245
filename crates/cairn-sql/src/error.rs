//! The adapter's one error type: a database error, classified once (by the driver's error
//! codes, never by message text) into what the caller must do about it.

use std::sync::Arc;

/// What a failed database call means for the request that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database could not be reached (connection refused or lost, pool exhausted, the
    /// server shutting down): nothing of an uncommitted transaction stays.
    Unreachable,
    /// A conflict with a concurrent transaction (serialization failure, deadlock, a Galera
    /// certification failure, SQLite busy): the transaction was rolled back; run it again.
    Conflict,
    /// Anything else the database refused.
    Refused,
}

/// A failed database call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {source}")]
pub struct SqlError {
    pub failure: Failure,
    /// What the adapter was doing.
    pub what: &'static str,
    #[source]
    pub source: Arc<sqlx::Error>,
}

impl SqlError {
    pub fn new(what: &'static str, source: sqlx::Error) -> SqlError {
        SqlError { failure: classify(&source), what, source: Arc::new(source) }
    }
}

/// Classify a driver error by its kind and its database's error code.
pub fn classify(e: &sqlx::Error) -> Failure {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Failure::Unreachable,
        sqlx::Error::Database(db) => {
            if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                return match my.number() {
                    // ER_LOCK_DEADLOCK (also Galera's certification failure), lock wait timeout.
                    1213 | 1205 => Failure::Conflict,
                    // ER_UNKNOWN_COM_ERROR: a Galera node not yet synced ("WSREP has not yet
                    // prepared node for application use"); server shutdown; connection killed.
                    1047 | 1053 | 1927 | 2006 | 2013 => Failure::Unreachable,
                    _ => Failure::Refused,
                };
            }
            let code = db.code().unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes (low byte).
                return match code.parse::<i32>().map(|c| c & 0xff) {
                    Ok(5) | Ok(6) => Failure::Conflict,
                    _ => Failure::Refused,
                };
            }
            // PostgreSQL's SQLSTATEs.
            match &*code {
                "40001" | "40P01" => Failure::Conflict,
                c if c.starts_with("08") => Failure::Unreachable,
                "57P01" | "57P02" | "57P03" | "53300" => Failure::Unreachable,
                _ => Failure::Refused,
            }
        }
        _ => Failure::Refused,
    }
}

/// The adapter's error for a database call that failed, for `?` on driver results.
pub trait Context<T> {
    fn during(self, what: &'static str) -> Result<T, SqlError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn during(self, what: &'static str) -> Result<T, SqlError> {
        self.map_err(|e| SqlError::new(what, e))
    }
}
