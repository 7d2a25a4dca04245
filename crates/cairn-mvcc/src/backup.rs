//! Backups (etcd's `Maintenance.Snapshot`, `cairn snapshot save|restore`): a state snapshot
//! in `snapshot.rs`'s format followed by the SHA-256 of every byte before it — etcd appends
//! one to its snapshot stream too — so that a damaged or truncated backup is refused before
//! anything is restored from it. The snapshot part is zero-padded to a multiple of 512 bytes,
//! as etcd's own file is, because `etcdctl snapshot save` checks that shape.

use std::io::{Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

use crate::engine::Family;
use crate::error::MvccError;
use crate::store::MvccStore;

/// Bytes of the trailing digest.
pub const DIGEST_LEN: u64 = 32;

/// The snapshot part is padded with zeros to a multiple of this (after its own trailer,
/// where a reader stops).
const PAD_TO: u64 = 512;

fn io(e: std::io::Error) -> MvccError {
    MvccError::SnapshotIo(std::sync::Arc::new(e))
}

/// Passes writes on while hashing and counting them.
struct Hashing<'a> {
    out: &'a mut dyn Write,
    hash: Sha256,
    written: u64,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl MvccStore {
    /// Write a backup of the whole state (one consistent point in time) to `out`; returns
    /// the bytes written and the revision the backup is at.
    pub fn write_backup(&self, out: &mut dyn Write) -> Result<(u64, i64), MvccError> {
        let snapshot = self.engine().snapshot();
        let (revision, _) = crate::store::revisions(&crate::view::View::of(&*snapshot))?;
        let mut hashing = Hashing { out, hash: Sha256::new(), written: 0 };
        crate::snapshot::write_snapshot_of(&*snapshot, &mut hashing, &[])?;
        // Zeros up to a multiple of 512 bytes before the digest: etcdctl's `snapshot save`
        // takes a file for whole only if its size is that plus a SHA-256 (etcd's pages).
        let padding = (PAD_TO - hashing.written % PAD_TO) % PAD_TO;
        hashing.write_all(&vec![0u8; padding as usize]).map_err(io)?;
        let Hashing { out, hash, written } = hashing;
        out.write_all(&hash.finalize()).map_err(io)?;
        out.flush().map_err(io)?;
        Ok((written + DIGEST_LEN, revision))
    }

    /// Write a backup into an unnamed temporary file in `dir` (it disappears once closed);
    /// returns the file, positioned at its start, its size and its revision.
    pub fn backup_file(&self, dir: &std::path::Path) -> Result<(std::fs::File, u64, i64), MvccError> {
        let file = tempfile::tempfile_in(dir).map_err(io)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let (size, revision) = self.write_backup(&mut out)?;
        let mut file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        Ok((file, size, revision))
    }

    /// Replace the whole state with the backup in `file` (checked by [`verify_backup`]
    /// first), keeping only the rows `keep` accepts; returns the rows restored.
    pub fn restore_backup<F: Read + Seek>(
        &self,
        file: &mut F,
        keep: &dyn Fn(Family, &[u8]) -> bool,
    ) -> Result<u64, MvccError> {
        let len = verify_backup(file)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut snapshot = std::io::BufReader::new(file.take(len));
        self.install_snapshot_rows(&mut snapshot, keep)
    }
}

/// Check that `file` is a whole backup: its digest matches its contents. Returns the
/// length of the snapshot part.
pub fn verify_backup<F: Read + Seek>(file: &mut F) -> Result<u64, MvccError> {
    let corrupt = |what: &str| MvccError::Corrupt(format!("backup: {what}"));
    let total = file.seek(SeekFrom::End(0)).map_err(io)?;
    let len = total.checked_sub(DIGEST_LEN).ok_or_else(|| corrupt("too short"))?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut hash = Sha256::new();
    let mut body = std::io::BufReader::with_capacity(1 << 20, (&mut *file).take(len));
    std::io::copy(&mut body, &mut hash).map_err(io)?;
    let mut digest = [0u8; DIGEST_LEN as usize];
    file.seek(SeekFrom::Start(len)).map_err(io)?;
    file.read_exact(&mut digest).map_err(io)?;
    if hash.finalize().as_slice() != digest {
        return Err(corrupt("SHA-256 mismatch: the file is damaged or incomplete"));
    }
    Ok(len)
}
