//! etcd's HashKV: a CRC-32 of the history rows (key and stored version) up to a revision.
//! The rows are the same on every member that applied the same writes — whatever the
//! engine — so the hash compares members (`etcdctl endpoint hashkv --cluster`). A sealed
//! row is hashed as it would be stored unsealed, so that the hash does not depend on
//! which values a member seals or with which key.

use cairn_core::{KvHash, RequestError};

use crate::encoding::{decode_history_key, unsealed_history_row};
use crate::engine::Family;
use crate::error::MvccError;
use crate::store::{revisions, MvccStore};

impl MvccStore {
    /// The hash of the history up to `revision` (≤ 0: the current revision), from one
    /// consistent snapshot.
    pub fn hash_kv(&self, revision: i64) -> Result<KvHash, MvccError> {
        self.with_snapshot(|view| {
            let (current, compacted) = revisions(view)?;
            let rev = if revision <= 0 { current } else { revision };
            if rev > current {
                return Err(RequestError::FutureRevision.into());
            }
            if rev < compacted {
                return Err(RequestError::Compacted.into());
            }
            let mut hasher = crc32fast::Hasher::new();
            // Rows the compaction made invisible but a deferred prune has not deleted yet
            // are skipped: the hash is the same before and after pruning.
            let mut survivors = crate::prune::Survivors::new(compacted);
            let mut hash = |k: &[u8], v: &[u8]| {
                let (key, row_rev) = decode_history_key(k)?;
                if row_rev <= rev {
                    hasher.update(k);
                    hasher.update(&unsealed_history_row(&key, v, view.sealer)?);
                }
                Ok(())
            };
            view.scan(Family::History, &[], None, &mut |k, v| {
                survivors.push(k, v, &mut hash)?;
                Ok(true)
            })?;
            survivors.flush(&mut hash)?;
            Ok(KvHash { hash: hasher.finalize(), compact_revision: compacted, revision: rev })
        })
    }
}
