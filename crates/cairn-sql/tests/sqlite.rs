//! The conformance suite on SQLite (bundled: no server), one member and two members on
//! one database file.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use cairn_sql::{SqlBackend, SqlConfig};

fn report(where_: &str, failures: Vec<cairn_conformance::Failure>) {
    let text: Vec<String> = failures.iter().map(|f| format!("{}: {}", f.test, f.detail)).collect();
    assert!(text.is_empty(), "{where_}: {} conformance failures:\n{}", text.len(), text.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/cairn.db", dir.path().display());
    let backend = SqlBackend::open(SqlConfig { url, ..Default::default() }).await.unwrap();
    report("sqlite", cairn_conformance::run_all(&backend, "conformance/sqlite/").await);
}
