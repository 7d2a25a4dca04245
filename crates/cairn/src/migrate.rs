//! `cairn migrate`: move a whole keyspace between the embedded store (a stopped member's data
//! directory) and a SQL database, keeping every revision, the compaction point, the leases
//! and the auth state; both sides' HashKV are compared at the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_mvcc::Family;

/// Where from and where to: exactly one of each pair.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// Copy from this SQL database (postgres://…, mysql://…, mariadb://…, sqlite:///path)
    #[arg(long, conflicts_with = "from_data_dir", required_unless_present = "from_data_dir")]
    pub from: Option<String>,
    /// Copy from this stopped member's data directory
    #[arg(long)]
    pub from_data_dir: Option<PathBuf>,
    /// Copy into this SQL database (it must hold no Cairn keyspace yet)
    #[arg(long, conflicts_with = "to_data_dir", required_unless_present = "to_data_dir")]
    pub to: Option<String>,
    /// Copy into this new data directory (it must not exist or be empty)
    #[arg(long)]
    pub to_data_dir: Option<PathBuf>,
    /// A file holding the database password (or CAIRN_BACKEND_PASSWORD)
    #[arg(long, env = "CAIRN_BACKEND_PASSWORD_FILE")]
    pub backend_password_file: Option<PathBuf>,
}

/// Rows of the embedded store that stay behind: its Raft position, membership and members.
fn keyspace_only(family: Family, key: &[u8]) -> bool {
    !(family == Family::Meta && (key.starts_with(b"raft/") || key.starts_with(b"member/")))
}

fn password(args: &MigrateArgs) -> Result<Option<String>, String> {
    match (&args.backend_password_file, std::env::var("CAIRN_BACKEND_PASSWORD").ok()) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map(|p| Some(p.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|e| format!("cannot read --backend-password-file {}: {e}", path.display())),
        (None, p) => Ok(p),
    }
}

/// A progress line on stderr, at most once a second.
struct Progress {
    what: &'static str,
    last: Instant,
}

impl Progress {
    fn new(what: &'static str) -> Progress {
        Progress { what, last: Instant::now() }
    }

    fn show(&mut self, n: u64, force: bool) {
        if force || self.last.elapsed() >= Duration::from_secs(1) {
            self.last = Instant::now();
            eprint!("\r{}: {n}", self.what);
            let _ = std::io::stderr().flush();
            if force {
                eprintln!();
            }
        }
    }
}

/// Counts the bytes written through it, showing progress.
struct Counting<W> {
    out: W,
    written: u64,
    progress: Progress,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.written += n as u64;
        self.progress.show(self.written, false);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Run the migration; returns the report printed on success.
pub async fn run(args: MigrateArgs) -> Result<String, String> {
    let password = password(&args)?;
    match (&args.from, &args.from_data_dir, &args.to, &args.to_data_dir) {
        (Some(url), None, None, Some(dir)) => sql_to_data_dir(url, password.as_deref(), dir).await,
        (None, Some(dir), Some(url), None) => data_dir_to_sql(dir, url, password.as_deref()).await,
        _ => Err("give --from URL with --to-data-dir DIR, or --from-data-dir DIR with --to URL".into()),
    }
}

async fn sql_to_data_dir(url: &str, password: Option<&str>, dir: &Path) -> Result<String, String> {
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(format!("{} is not empty: migrate into a new data directory", dir.display()));
    }
    let (store, _db) = cairn_sql::migrate::open_store(url, password).await.map_err(|e| e.to_string())?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let staged = tempfile::NamedTempFile::new().map_err(|e| format!("cannot stage the copy: {e}"))?;
        let mut out = Counting {
            out: std::io::BufWriter::with_capacity(1 << 20, staged.as_file()),
            written: 0,
            progress: Progress::new("bytes read from the database"),
        };
        // One consistent point in time: the backup reads one snapshot.
        let (_, revision) = store.write_backup(&mut out).map_err(|e| e.to_string())?;
        out.progress.show(out.written, true);
        drop(out);
        let source_hash = store.hash_kv(revision).map_err(|e| e.to_string())?;
        let restored = cairn_raft::restore_backup(staged.path(), &dir).map_err(|e| e.to_string())?;
        let target_hash =
            cairn_raft::read_stopped_store(&dir, |s| s.hash_kv(revision)).map_err(|e| e.to_string())?;
        if source_hash.hash != target_hash.hash {
            return Err(format!(
                "HashKV differs after the copy: database {:08x}, data directory {:08x}",
                source_hash.hash, target_hash.hash
            ));
        }
        Ok(format!(
            "Copied {} rows into {} (revision {}, compacted at {}); HashKV {:08x} on both sides.\n\
             Start a member on it with --initial-cluster to found a new cluster.\n",
            restored.rows,
            dir.display(),
            restored.revision,
            restored.compacted,
            target_hash.hash
        ))
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn data_dir_to_sql(dir: &Path, url: &str, password: Option<&str>) -> Result<String, String> {
    let (store, db) = cairn_sql::migrate::open_store(url, password).await.map_err(|e| e.to_string())?;
    let dir = dir.to_path_buf();
    let shown = cairn_sql::redact(url);
    tokio::task::spawn_blocking(move || {
        let mut staged = tempfile::tempfile().map_err(|e| format!("cannot stage the copy: {e}"))?;
        let (revision, source_hash) = cairn_raft::read_stopped_store(&dir, |s| {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, &staged);
            let (_, revision) = s.write_backup(&mut out)?;
            Ok((revision, s.hash_kv(revision)?))
        })
        .map_err(|e| e.to_string())?;
        let mut progress = Progress::new("rows written to the database");
        let rows = cairn_sql::migrate::import_backup(&db, &mut staged, &keyspace_only, &mut |n| progress.show(n, false))
            .map_err(|e| e.to_string())?;
        progress.show(rows, true);
        let target_hash = store.hash_kv(revision).map_err(|e| e.to_string())?;
        if source_hash.hash != target_hash.hash {
            return Err(format!(
                "HashKV differs after the copy: data directory {:08x}, database {:08x}",
                source_hash.hash, target_hash.hash
            ));
        }
        let (current, compacted) = store.revisions().map_err(|e| e.to_string())?;
        Ok(format!(
            "Copied {rows} rows into {} (revision {current}, compacted at {compacted}); HashKV {:08x} on both sides.\n\
             Start members with --backend on it.\n",
            shown,
            target_hash.hash
        ))
    })
    .await
    .map_err(|e| e.to_string())?
}
