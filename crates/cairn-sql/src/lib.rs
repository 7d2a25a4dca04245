//! The SQL adapter: the etcd API's backend traits ([`cairn_core::Backend`]) on PostgreSQL,
//! MySQL/MariaDB (a Galera cluster included) or SQLite, so that Cairn members run stateless
//! on a database an organisation already runs, and any number of them serve the same data.
//!
//! How: etcd's semantics are `cairn-mvcc`'s, unchanged, over its storage interface; the six
//! MVCC families are six tables of byte-ordered (key, value) rows ([`engine`]). Every write
//! runs in one database transaction that first takes one serialising lock (a row lock on
//! `cairn_lock`; SQLite's write lock), then reads, applies and commits: revisions are dense
//! and become visible in order whichever member writes. Conflicts (deadlocks, serialization
//! and Galera certification failures, SQLite busy) are retried inside the adapter; a commit
//! whose outcome the connection lost is reported as such, never retried blindly.
//! Watches: a member publishes its own commits at once and learns of other members' from
//! PostgreSQL's LISTEN/NOTIFY, or by polling the current revision (MySQL, SQLite). Leases:
//! deadlines live in the database, on its clock; any member expires a lease, under the
//! same lock, so exactly one does.
//!
//! **Architecture invariant:** depends on cairn-core and cairn-mvcc (without RocksDB) only
//! of Cairn's crates: never openraft, tonic or RocksDB (a test at the workspace root checks it).

mod backend;
pub mod dialect;
pub mod engine;
pub mod error;
pub mod migrate;
mod schema;

use std::time::Duration;

pub use backend::SqlBackend;
pub use dialect::{Kind, SCHEMA_VERSION};
pub use error::{Failure, SqlError};

/// Where the database is and how a member takes part.
#[derive(Debug, Clone)]
pub struct SqlConfig {
    /// `postgres://…`, `mysql://…` or `mariadb://…`, `sqlite:///path` (credentials may be in it).
    pub url: String,
    /// A password that replaces the URL's (from an env var or a file; never logged).
    pub password: Option<String>,
    /// This member's name and where clients reach it (MemberList).
    pub name: String,
    pub client_urls: Vec<String>,
    /// The lease clock's tick and election timeout: they give etcd's minimum TTL.
    pub heartbeat: Duration,
    pub election_timeout: Duration,
    /// How often a member looks for other members' writes where the database cannot tell it
    /// (MySQL, SQLite; PostgreSQL's NOTIFY wakes it, and this is its fallback).
    pub poll_interval: Duration,
    pub max_connections: u32,
    /// How long to wait for a connection before a request fails as unavailable.
    pub connect_timeout: Duration,
    /// The version members report (MemberList, the cluster page).
    pub version: String,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            url: String::new(),
            password: None,
            name: "default".into(),
            client_urls: Vec::new(),
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            poll_interval: Duration::from_millis(50),
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("backend URL {0:?} is not postgres://, mysql://, mariadb:// or sqlite://")]
    BadUrl(String),
    #[error("the database is unreachable: {0}")]
    Unreachable(SqlError),
    #[error("the database refused: {0}")]
    Database(SqlError),
    #[error(
        "the database holds Cairn schema version {found}; this build reads up to {supported} (upgrade Cairn)"
    )]
    NewerSchema { found: i64, supported: i64 },
}

/// The database kind a backend URL names, and the URL the driver takes.
pub fn parse_url(url: &str, password: Option<&str>) -> Result<(Kind, String), OpenError> {
    let bad = || OpenError::BadUrl(redact(url));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let kind = match scheme {
        "postgres" | "postgresql" => Kind::Postgres,
        "mysql" | "mariadb" => Kind::MySql,
        "sqlite" => Kind::Sqlite,
        _ => return Err(bad()),
    };
    if kind == Kind::Sqlite {
        if rest.is_empty() {
            return Err(bad());
        }
        // Created when missing.
        let sep = if rest.contains('?') { '&' } else { '?' };
        return Ok((kind, format!("sqlite://{rest}{sep}mode=rwc")));
    }
    let scheme = if kind == Kind::MySql { "mysql" } else { "postgres" };
    let mut parsed = url::Url::parse(&format!("{scheme}://{rest}")).map_err(|_| bad())?;
    if let Some(password) = password {
        parsed.set_password(Some(password)).map_err(|_| bad())?;
    }
    // Room for every statement the adapter prepares (MySQL prepares the write path's at
    // connect and must not evict them: see `Dialect::write_statements`).
    if !parsed.query_pairs().any(|(k, _)| k == "statement-cache-capacity") {
        parsed.query_pairs_mut().append_pair("statement-cache-capacity", "512");
    }
    Ok((kind, parsed.to_string()))
}

/// The URL with its password hidden, for logs and errors.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_database() {
        assert_eq!(
            parse_url("sqlite:///tmp/x.db", None).unwrap(),
            (Kind::Sqlite, "sqlite:///tmp/x.db?mode=rwc".into())
        );
        let (kind, url) = parse_url("mariadb://cairn@127.0.0.1:3306/db", Some("s3cr:t")).unwrap();
        assert_eq!(kind, Kind::MySql);
        assert_eq!(url, "mysql://cairn:s3cr%3At@127.0.0.1:3306/db?statement-cache-capacity=512");
        assert_eq!(parse_url("postgresql://u:p@h/db", None).unwrap().0, Kind::Postgres);
        assert!(matches!(parse_url("redis://h", None), Err(OpenError::BadUrl(_))));
        assert!(matches!(parse_url("nonsense", None), Err(OpenError::BadUrl(_))));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:hunter2@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("sqlite:///x"), "sqlite:///x");
    }
}
