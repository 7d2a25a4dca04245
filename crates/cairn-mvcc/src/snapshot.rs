//! State snapshots of the MVCC families, streamed as a flat file of rows.
//!
//! Format: `MAGIC`, then rows `family (u8) | key len (u32 BE) | key | value len (u32 BE) | value`,
//! then `END` and the row count (u64 BE) as a trailer, so that a truncated file is detected.
//! A snapshot is taken from an engine snapshot, so it is one consistent point in time and
//! includes the metadata rows (the replication layer's last applied log id among them).

use std::io::{Read, Write};

use crate::engine::{Batch, Durability, Family};
use crate::error::MvccError;
use crate::store::MvccStore;

/// The values of the requested metadata rows, in request order (`None`: absent).
pub type MetaRows = Vec<Option<Vec<u8>>>;

const MAGIC: &[u8; 8] = b"CAIRNSS1";
const END: u8 = 0xFF;

fn io(e: std::io::Error) -> MvccError {
    MvccError::SnapshotIo(std::sync::Arc::new(e))
}

impl MvccStore {
    /// Write a consistent snapshot of the whole state to `out`. Returns the number of rows
    /// and the values of `meta_keys` (see [`crate::ApplyBatch::put_meta`]) as of the snapshot.
    pub fn write_snapshot(
        &self,
        out: &mut dyn Write,
        meta_keys: &[&[u8]],
    ) -> Result<(u64, MetaRows), MvccError> {
        write_snapshot_of(&*self.engine().snapshot(), out, meta_keys)
    }

    /// Replace the whole state with the snapshot read from `input`, atomically: either the
    /// old state or the complete new one survives a crash. The snapshot is checked
    /// completely before anything is written.
    pub fn install_snapshot(&self, input: &mut dyn Read) -> Result<u64, MvccError> {
        self.install_snapshot_rows(input, &|_, _| true)
    }

    /// [`MvccStore::install_snapshot`] keeping only the rows `keep` accepts (family, key).
    pub fn install_snapshot_rows(
        &self,
        input: &mut dyn Read,
        keep: &dyn Fn(Family, &[u8]) -> bool,
    ) -> Result<u64, MvccError> {
        let mut batch = Batch::default();
        for fam in Family::ALL {
            batch.clear(fam);
        }
        let rows = read_snapshot_rows(input, &mut |fam, key, value| {
            if keep(fam, &key) {
                batch.put(fam, key, value);
            }
            Ok(())
        })?;
        self.engine().write(batch, Durability::Synced)?;
        Ok(rows)
    }
}

/// Read a snapshot stream (as [`MvccStore::write_snapshot`] writes it) row by row, handing
/// each to `visit`; checks the trailer (a truncated stream is an error, after the rows before
/// the damage were visited: a caller that must not act on a partial stream buffers them, or
/// verifies a backup's digest first). Returns the number of rows.
pub fn read_snapshot_rows(
    input: &mut dyn Read,
    visit: &mut dyn FnMut(Family, Vec<u8>, Vec<u8>) -> Result<(), MvccError>,
) -> Result<u64, MvccError> {
    let corrupt = |what: &str| MvccError::Corrupt(format!("snapshot: {what}"));
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic).map_err(io)?;
    if &magic != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let mut rows = 0u64;
    loop {
        let mut tag = [0u8; 1];
        input.read_exact(&mut tag).map_err(io)?;
        let fam = match tag[0] {
            END => break,
            t => *Family::ALL.get(t as usize).ok_or_else(|| corrupt("unknown family"))?,
        };
        let key = read_chunk(input)?;
        let value = read_chunk(input)?;
        rows += 1;
        visit(fam, key, value)?;
    }
    let mut count = [0u8; 8];
    input.read_exact(&mut count).map_err(io)?;
    if u64::from_be_bytes(count) != rows {
        return Err(corrupt("row count mismatch"));
    }
    Ok(rows)
}

/// [`MvccStore::write_snapshot`] of a given engine snapshot.
pub(crate) fn write_snapshot_of(
    snapshot: &dyn crate::engine::EngineRead,
    out: &mut dyn Write,
    meta_keys: &[&[u8]],
) -> Result<(u64, MetaRows), MvccError> {
    let meta = meta_keys.iter().map(|k| snapshot.get(Family::Meta, k)).collect::<Result<Vec<_>, _>>()?;
    out.write_all(MAGIC).map_err(io)?;
    let mut rows = 0u64;
    for fam in Family::ALL {
        snapshot.scan(fam, &[], None, &mut |k, v| {
            out.write_all(&[fam as u8]).map_err(io)?;
            out.write_all(&(k.len() as u32).to_be_bytes()).map_err(io)?;
            out.write_all(k).map_err(io)?;
            out.write_all(&(v.len() as u32).to_be_bytes()).map_err(io)?;
            out.write_all(v).map_err(io)?;
            rows += 1;
            Ok(true)
        })?;
    }
    out.write_all(&[END]).map_err(io)?;
    out.write_all(&rows.to_be_bytes()).map_err(io)?;
    out.flush().map_err(io)?;
    Ok((rows, meta))
}

/// One length-prefixed chunk. The length comes from the stream: the buffer grows only as
/// bytes arrive (fuzzing found that allocating the length up front lets a few bytes ask for
/// 4 GiB).
fn read_chunk(input: &mut dyn Read) -> Result<Vec<u8>, MvccError> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).map_err(io)?;
    let len = u64::from(u32::from_be_bytes(len));
    let mut buf = Vec::with_capacity(len.min(64 * 1024) as usize);
    input.take(len).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 != len {
        return Err(io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)));
    }
    Ok(buf)
}
