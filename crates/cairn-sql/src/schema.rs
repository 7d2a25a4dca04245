//! The schema: created on first start, versioned in `cairn_schema`, migrated at start under
//! a lock so that members starting together do it once; a newer version is refused.

use sqlx::{AnyConnection, Executor, Row};

use crate::dialect::{placeholders, Kind, SCHEMA_VERSION};
use crate::engine::Database;
use crate::error::{Context, Failure, SqlError};
use crate::OpenError;

/// What the schema row says about this database.
#[derive(Debug, Clone, Copy)]
pub struct SchemaInfo {
    pub version: i64,
    /// Made at creation: the cluster id every member reports.
    pub cluster_id: u64,
}

/// Conflicting schema creations are tried again this many times.
const MAX_SCHEMA_TRIES: u32 = 10;

const MIGRATION_LOCK: i64 = 0x6361_6972_6e00; // "cairn\0"

/// Create or check the schema.
pub async fn migrate(db: &Database) -> Result<SchemaInfo, OpenError> {
    let mut conn = db.pool.acquire().await.during("connecting").map_err(OpenError::Unreachable)?;
    let kind = db.sql.kind;
    match kind {
        Kind::Postgres => conn.execute(sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK)).await,
        Kind::MySql => conn.execute("SELECT GET_LOCK('cairn_schema', 60)").await,
        Kind::Sqlite => conn.execute("BEGIN IMMEDIATE").await,
    }
    .during("locking the schema")
    .map_err(OpenError::Database)?;
    // Members starting together on different Galera nodes each hold only their node's
    // GET_LOCK: their inserts of the schema rows can conflict in certification (1213).
    // The loser tries again and finds the winner's rows.
    let mut tries = 0;
    let result = loop {
        match create_or_check(&mut conn, db).await {
            Err(OpenError::Database(e)) if e.failure == Failure::Conflict && tries < MAX_SCHEMA_TRIES => {
                tries += 1;
                tracing::debug!(error = %e, "creating the schema conflicted; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(tries))).await;
            }
            other => break other,
        }
    };
    let unlock = match kind {
        Kind::Postgres => "SELECT pg_advisory_unlock_all()",
        Kind::MySql => "SELECT RELEASE_LOCK('cairn_schema')",
        Kind::Sqlite if result.is_ok() => "COMMIT",
        Kind::Sqlite => "ROLLBACK",
    };
    let unlocked = conn.execute(unlock).await.during("unlocking the schema");
    let info = result?;
    unlocked.map_err(OpenError::Database)?;
    Ok(info)
}

async fn create_or_check(conn: &mut AnyConnection, db: &Database) -> Result<SchemaInfo, OpenError> {
    let kind = db.sql.kind;
    let suffix = if kind == Kind::MySql { " ENGINE=InnoDB" } else { "" };
    let ddl = |e: SqlError| OpenError::Database(e);
    conn.execute(&*format!(
        "CREATE TABLE IF NOT EXISTS cairn_schema (id BIGINT NOT NULL PRIMARY KEY, version BIGINT NOT NULL, \
         cluster_id BIGINT NOT NULL){suffix}"
    ))
    .await
    .during("creating cairn_schema")
    .map_err(ddl)?;
    let row = conn
        .fetch_optional("SELECT version, cluster_id FROM cairn_schema WHERE id = 1")
        .await
        .during("reading the schema version")
        .map_err(ddl)?;
    if let Some(row) = row {
        let version: i64 = row.try_get(0).during("reading the schema version").map_err(ddl)?;
        let cluster_id: i64 = row.try_get(1).during("reading the cluster id").map_err(ddl)?;
        if version > SCHEMA_VERSION {
            return Err(OpenError::NewerSchema { found: version, supported: SCHEMA_VERSION });
        }
        // Version 1 is the first: nothing to migrate from yet. A later version adds its
        // steps here, each in order from `version`.
        return Ok(SchemaInfo { version, cluster_id: cluster_id as u64 });
    }
    for statement in db.sql.create_tables() {
        conn.execute(&*statement).await.during("creating the tables").map_err(ddl)?;
    }
    // Members starting together on different Galera nodes each hold only their node's
    // GET_LOCK: both may get here. The rows are then inserted once, and everyone reads back
    // the one that stayed.
    let insert_once = |table_and_values: &str| match kind {
        Kind::MySql => format!("INSERT IGNORE INTO {table_and_values}"),
        _ => format!("INSERT INTO {table_and_values} ON CONFLICT DO NOTHING"),
    };
    conn.execute(&*insert_once("cairn_lock (id) VALUES (1)"))
        .await
        .during("creating the revision lock")
        .map_err(ddl)?;
    let cluster_id = (rand::random::<u64>() >> 1).max(1) as i64;
    conn.execute(
        sqlx::query(&placeholders(
            kind,
            &insert_once("cairn_schema (id, version, cluster_id) VALUES (1, ?, ?)"),
        ))
        .bind(SCHEMA_VERSION)
        .bind(cluster_id),
    )
    .await
    .during("writing the schema version")
    .map_err(ddl)?;
    let row = conn
        .fetch_one("SELECT cluster_id FROM cairn_schema WHERE id = 1")
        .await
        .during("reading the cluster id")
        .map_err(ddl)?;
    let cluster_id: i64 = row.try_get(0).during("reading the cluster id").map_err(ddl)?;
    tracing::info!(version = SCHEMA_VERSION, "created Cairn's tables");
    Ok(SchemaInfo { version: SCHEMA_VERSION, cluster_id: cluster_id as u64 })
}
