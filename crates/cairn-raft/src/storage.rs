//! Opening a node's data directory: the directory lock, the format marker, one RocksDB with
//! the log families and the MVCC families, and the snapshot directory beside it.
//!
//! Layout of `<data-dir>`:
//! - `cairn.lock`: held (flock) while a member runs; a second process gets [`OpenError::Locked`].
//! - `FORMAT`: the data format version, one decimal number. A directory without it was
//!   written by 0.1, whose layout is format 1. A number above [`DATA_FORMAT`] is refused
//!   before anything is opened, so that an older binary never damages a newer directory.
//! - `db/`: the RocksDB; `snapshots/`: Raft snapshots.
//!
//! Damage is refused, never skipped: RocksDB replays its WAL tolerating only a record torn
//! at the tail by a crash (`TolerateCorruptedTailRecords`); a bad record before the tail, a
//! damaged MANIFEST or a damaged table file is [`OpenError::Corrupt`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_mvcc::{Family, RocksEngine};
use rocksdb::{ColumnFamilyDescriptor, DBRecoveryMode, ErrorKind, IteratorMode, Options, ReadOptions, DB};

use crate::log_store::{CF_LOG, CF_META};

/// The data format this version writes and the newest it reads.
/// 1: the layout of 0.1 (column families kv, history, events, sm_meta, leases, lease_keys,
/// raft_log, raft_meta; every stored value starts with a format byte).
pub const DATA_FORMAT: u32 = 1;

const FORMAT_FILE: &str = "FORMAT";
const LOCK_FILE: &str = "cairn.lock";

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data directory {0} is in use by another process")]
    Locked(PathBuf),
    #[error("data directory {path} is corrupted: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "data directory {path} has data format {found}, written by a newer Cairn; this binary reads formats up to {supported}. Run the newer version (the directory was not touched)"
    )]
    NewerFormat { path: PathBuf, found: u32, supported: u32 },
    #[error("cannot open data directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot open data directory {path}: {source}")]
    Storage { path: PathBuf, source: rocksdb::Error },
}

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

pub fn snapshot_path(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// An open data directory. The lock is held as long as this lives.
pub struct DataDir {
    pub db: Arc<DB>,
    _lock: File,
}

/// Open (creating if needed) the node's data directory: lock it, check its format, open
/// the database and check every table file's checksums.
pub fn open_data_dir(data_dir: &Path) -> Result<DataDir, OpenError> {
    let io = |source| OpenError::Io { path: data_dir.to_path_buf(), source };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join(LOCK_FILE))
        .map_err(io)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::Locked(data_dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    let db_dir = db_path(data_dir);
    let existing = db_dir.join("CURRENT").exists();
    match read_format(data_dir)? {
        Some(found) if found > DATA_FORMAT => {
            return Err(OpenError::NewerFormat {
                path: data_dir.to_path_buf(),
                found,
                supported: DATA_FORMAT,
            })
        }
        Some(_) => {}
        // A new directory, or one written by 0.1 (format 1, no marker): mark it.
        None => write_format(data_dir, DATA_FORMAT).map_err(io)?,
    }
    std::fs::create_dir_all(&db_dir).map_err(io)?;
    let db = open_db(&db_dir).map_err(|e| classify(data_dir, e, &wal_files(&db_dir)))?;
    if existing {
        verify_tables(&db).map_err(|e| classify(data_dir, e, &[]))?;
    }
    Ok(DataDir { db: Arc::new(db), _lock: lock })
}

fn open_db(db_dir: &Path) -> Result<DB, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_paranoid_checks(true);
    // A record torn at the WAL's tail by a crash is normal; anything else is damage.
    opts.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
    opts.increase_parallelism(2);
    opts.set_max_background_jobs(2);
    // A flush or compaction hands its table file to the disk a megabyte at a time
    // (sync_file_range) instead of all at its end: one 64 MiB burst on the disk the WAL syncs
    // on stalls every commit behind it.
    opts.set_bytes_per_sync(1 << 20);
    // Per family: `DB::open_cf` with names gives every family RocksDB's default options, and
    // the memtables that fill (the log, history, kv) are the families' own.
    let jitter = jitter();
    let families: Vec<ColumnFamilyDescriptor> = RocksEngine::column_families()
        .chain([CF_LOG, CF_META])
        .map(|name| {
            let mut family_opts = Options::default();
            let size = write_buffer_size(name, jitter);
            family_opts.set_write_buffer_size(size);
            family_opts.set_arena_block_size(arena_block_size(size));
            ColumnFamilyDescriptor::new(name, family_opts)
        })
        .collect();
    DB::open_cf_descriptors(&opts, db_dir, families)
}

/// RocksDB's memtable size (its default, 64 MiB), except for the live rows (`kv`): 8 MiB.
/// Every put searches the `kv` memtable twice (the read of its key's live row, then the
/// insert of the new one), and in a memtable holding every recent version of every key each
/// level of that skip list is a cache miss (a quarter of a member's CPU at 256 clients was
/// skip-list searches). A flush of `kv` keeps only each key's newest row, so flushing it
/// more often costs little (docs/benchmarks.md, session 22).
fn write_buffer_size(family: &str, jitter: f64) -> usize {
    let base: f64 = if family == Family::Kv.name() { (8 << 20) as f64 } else { (64 << 20) as f64 };
    (base * jitter) as usize
}

/// The memtable's allocation unit. RocksDB's default, min(1 MiB, size / 8), is also the
/// step at which it decides a memtable is full: with 1 MiB steps the `kv` memtable's
/// ±25 % (6–10 MiB) left four flush points, and two members of one cluster were seen flushing
/// `kv` at the same byte and moment. A 32nd of its size (at most RocksDB's 1 MiB, which
/// already gives the 64 MiB families 32 steps) gives `kv` 16 steps within its band.
fn arena_block_size(write_buffer_size: usize) -> usize {
    // RocksDB rounds it to a multiple of 4 KiB.
    (write_buffer_size / 32).min(1 << 20).next_multiple_of(4096)
}

/// A factor in [0.75, 1.25), chosen afresh at each start, for the memtable sizes. Members
/// receive the same writes, so with equal memtables they all flush at about the same moment,
/// and a quorum waits on disks busy flushing: in a 60-s put run at 256 clients the worst
/// seconds were exactly those flushes (docs/benchmarks.md).
fn jitter() -> f64 {
    0.75 + (cairn_core::sim::random_u64() % 1000) as f64 / 2000.0
}

/// Read every row of every family with checksums verified: RocksDB checks a table block
/// only when it reads it, and a damaged block must stop the member at start, not surface
/// as a failed read (or a skipped row) later. Costs one sequential read of the database.
fn verify_tables(db: &DB) -> Result<(), rocksdb::Error> {
    for family in RocksEngine::column_families().chain([CF_LOG, CF_META]) {
        let Some(cf) = db.cf_handle(family) else { continue };
        let mut ro = ReadOptions::default();
        ro.set_verify_checksums(true);
        ro.fill_cache(false);
        ro.set_readahead_size(2 << 20);
        for row in db.iterator_cf_opt(cf, ro, IteratorMode::Start) {
            row?;
        }
    }
    Ok(())
}

/// Damage is [`OpenError::Corrupt`] by RocksDB's status kind. RocksDB names a damaged
/// table file or MANIFEST in its message, but not a damaged write-ahead log: the detail then
/// lists the logs the open replayed (`replayed`), and points at RocksDB's own log, which
/// says which one and where.
fn classify(data_dir: &Path, e: rocksdb::Error, replayed: &[String]) -> OpenError {
    match e.kind() {
        ErrorKind::Corruption => {
            let logs = match replayed {
                [] => String::new(),
                names => format!("; write-ahead log replayed at open: {}", names.join(", ")),
            };
            let account = db_path(data_dir).join("LOG");
            OpenError::Corrupt {
                path: data_dir.to_path_buf(),
                detail: format!("{e}{logs} (RocksDB's account of the damage is in {})", account.display()),
            }
        }
        _ => OpenError::Storage { path: data_dir.to_path_buf(), source: e },
    }
}

/// The write-ahead log files in RocksDB's directory (`NNNNNN.log`), in order.
fn wal_files(db_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(db_dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".log"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn read_format(data_dir: &Path) -> Result<Option<u32>, OpenError> {
    let path = data_dir.join(FORMAT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| OpenError::Corrupt {
            path: data_dir.to_path_buf(),
            detail: format!("{} does not hold a format number: {:?}", path.display(), text.trim()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(OpenError::Io { path: data_dir.to_path_buf(), source }),
    }
}

/// Write the format marker atomically (temporary file, fsync, rename, fsync the directory).
fn write_format(data_dir: &Path, format: u32) -> std::io::Result<()> {
    let tmp = data_dir.join(format!("{FORMAT_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    writeln!(f, "{format}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, data_dir.join(FORMAT_FILE))?;
    File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_is_locked_out() {
        let dir = tempfile::tempdir().unwrap();
        let first = open_data_dir(dir.path()).unwrap();
        assert!(matches!(open_data_dir(dir.path()), Err(OpenError::Locked(_))));
        drop(first);
        open_data_dir(dir.path()).unwrap();
    }

    #[test]
    fn a_newer_format_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FORMAT_FILE), "99\n").unwrap();
        let err = open_data_dir(dir.path()).err().unwrap();
        assert!(matches!(err, OpenError::NewerFormat { found: 99, supported: DATA_FORMAT, .. }), "{err}");
        assert!(!db_path(dir.path()).exists(), "the database was created");
    }

    #[test]
    fn a_directory_without_a_marker_is_format_one() {
        let dir = tempfile::tempdir().unwrap();
        drop(open_data_dir(dir.path()).unwrap());
        std::fs::remove_file(dir.path().join(FORMAT_FILE)).unwrap();
        drop(open_data_dir(dir.path()).unwrap());
        assert_eq!(read_format(dir.path()).unwrap(), Some(1));
    }

    /// The memtable sizes reach the column families (RocksDB writes the options each family
    /// was opened with to its `OPTIONS-*` file): once they were set where `DB::open_cf` did
    /// not pass them on, and every family ran with the default.
    #[test]
    fn each_family_gets_its_memtable_size() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        drop(db);
        let mut options: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("OPTIONS-"))
            .collect();
        options.sort();
        let text = std::fs::read_to_string(options.last().expect("an OPTIONS file")).unwrap();
        let option = |family: &str, name: &str| -> usize {
            let section = text.split(&format!("[CFOptions \"{family}\"]")).nth(1).expect(family);
            let prefix = format!("{name}=");
            let line = section.lines().find(|l| l.trim().starts_with(&prefix)).expect(name);
            line.trim()[prefix.len()..].parse().unwrap()
        };
        let size_of = |family: &str| option(family, "write_buffer_size");
        let arena_of = |family: &str| option(family, "arena_block_size");
        let mib = 1 << 20;
        let kv = size_of("kv");
        // The flush decision moves in arena blocks: small ones keep the members' sizes apart.
        for family in ["kv", "history", "raft_log"] {
            let (size, arena) = (size_of(family), arena_of(family));
            assert!(arena > 0 && arena <= size / 16, "{family}: arena {arena} for {size}");
        }
        assert!((6 * mib..10 * mib).contains(&kv), "kv: {kv}");
        for family in ["history", "raft_log"] {
            let size = size_of(family);
            assert!((48 * mib..80 * mib).contains(&size), "{family}: {size}");
            // One factor for all families of a member: their proportions stay.
            assert_eq!(size / 8 / 1024, kv / 1024, "{family}: {size}, kv: {kv}");
        }
    }
}
