//! Opening a node's data directory: one RocksDB with the log families and the MVCC
//! families, and the snapshot directory beside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_mvcc::MvccStore;
use rocksdb::{Options, DB};

use crate::log_store::{CF_LOG, CF_META};

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data directory {0} is in use by another process (its RocksDB LOCK is held)")]
    Locked(PathBuf),
    #[error("data directory {path} is corrupted: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot open data directory {path}: {detail}")]
    Io { path: PathBuf, detail: String },
}

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

pub fn snapshot_path(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// Open (creating if needed) the node's database.
pub fn open_db(data_dir: &Path) -> Result<Arc<DB>, OpenError> {
    let path = db_path(data_dir);
    std::fs::create_dir_all(&path)
        .map_err(|e| OpenError::Io { path: path.clone(), detail: e.to_string() })?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_paranoid_checks(true);
    opts.increase_parallelism(2);
    opts.set_max_background_jobs(2);
    let families: Vec<&str> = MvccStore::column_families().chain([CF_LOG, CF_META]).collect();
    DB::open_cf(&opts, &path, families).map(Arc::new).map_err(|e| {
        let detail = e.into_string();
        if detail.contains("lock") || detail.contains("LOCK") {
            OpenError::Locked(data_dir.to_path_buf())
        } else if detail.contains("Corruption")
            || detail.contains("corrupt")
            || detail.contains("CURRENT")
            || detail.contains("MANIFEST")
        {
            OpenError::Corrupt { path: data_dir.to_path_buf(), detail }
        } else {
            OpenError::Io { path: data_dir.to_path_buf(), detail }
        }
    })
}
