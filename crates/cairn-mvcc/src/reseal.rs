//! Re-sealing stored values after a cluster key rotation: every `kv` and `history` row under
//! the secret prefixes that is not sealed with the current key — sealed with a previous key,
//! or stored in the clear before its prefix was made secret — is written again, sealed with
//! the current key, in bounded steps. The data does not change (HashKV hashes unsealed rows),
//! so this is local to each member and never replicated.

use cairn_core::seal::Sealer;

use crate::encoding::{
    decode_history_key, decode_kv, decode_version, encode_kv, encode_user_key_prefix, encode_version,
};
use crate::engine::{Batch, Durability, Family};
use crate::error::MvccError;
use crate::store::MvccStore;

/// Where a re-seal pass has got to. A new pass starts from `ResealCursor::default()`.
#[derive(Debug, Clone, Default)]
pub struct ResealCursor {
    /// Index into the sealer's prefixes.
    prefix: usize,
    /// `false`: the `kv` family of that prefix; `true`: its `history` family.
    history: bool,
    /// The last row key looked at in that family and prefix.
    after: Option<Vec<u8>>,
}

/// What one step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResealStep {
    /// Rows under a secret prefix looked at.
    pub scanned: u64,
    /// Rows written again, sealed with the current key.
    pub resealed: u64,
    /// The pass has looked at every row.
    pub done: bool,
}

impl MvccStore {
    /// Looks at up to `limit` rows from `cursor` on and re-seals those not sealed with the
    /// current key, in one batch. Without a sealer there is nothing to do (`done`).
    ///
    /// The caller must keep this from running beside an apply (the state machine calls it
    /// between batches): a row read here and written back must not be one that an apply
    /// (a compaction, a snapshot install) removes in between.
    pub fn reseal_step(&self, cursor: &mut ResealCursor, limit: usize) -> Result<ResealStep, MvccError> {
        let mut step = ResealStep::default();
        let Some(sealer) = self.sealer() else {
            step.done = true;
            return Ok(step);
        };
        let mut batch = Batch::default();
        let read = self.engine().latest();
        while (step.scanned as usize) < limit {
            let Some(prefix) = sealer.prefixes().get(cursor.prefix) else {
                step.done = true;
                break;
            };
            let family = if cursor.history { Family::History } else { Family::Kv };
            let stored_prefix = if cursor.history { encode_user_key_prefix(prefix) } else { prefix.clone() };
            let start = match &cursor.after {
                Some(after) => {
                    let mut next = after.clone();
                    next.push(0);
                    next
                }
                None => stored_prefix.clone(),
            };
            let end = scan_end(&stored_prefix);
            let mut finished = true;
            read.scan(family, &start, end.as_deref(), &mut |row_key, value| {
                if step.scanned as usize >= limit {
                    finished = false;
                    return Ok(false);
                }
                step.scanned += 1;
                cursor.after = Some(row_key.to_vec());
                if let Some(again) = resealed_row(sealer, family, row_key, value)? {
                    batch.put(family, row_key.to_vec(), again);
                    step.resealed += 1;
                }
                Ok(true)
            })?;
            if finished {
                cursor.after = None;
                if cursor.history {
                    cursor.history = false;
                    cursor.prefix += 1;
                } else {
                    cursor.history = true;
                }
            }
        }
        drop(read);
        if !batch.is_empty() {
            // Not the durable record of anything: lost in a crash, the next pass redoes it.
            self.engine().write(batch, Durability::Deferred)?;
        }
        Ok(step)
    }
}

/// The row sealed with the current key, when it is not already (the seal of a value is
/// deterministic for one key, revision and plaintext, so an equal encoding means current).
fn resealed_row(
    sealer: &Sealer,
    family: Family,
    row_key: &[u8],
    value: &[u8],
) -> Result<Option<Vec<u8>>, MvccError> {
    let again = match family {
        Family::Kv => {
            let mut kv = decode_kv(row_key, value, Some(sealer))?;
            kv.key.clear();
            encode_kv(row_key, &kv, Some(sealer))
        }
        _ => {
            let (key, _) = decode_history_key(row_key)?;
            encode_version(&key, &decode_version(&key, value, Some(sealer))?, Some(sealer))
        }
    };
    Ok((again != value).then_some(again))
}

/// The end of the rows that start with `prefix` (`None`: to the end of the family).
fn scan_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cairn_core::seal::{DataKey, Sealer};
    use cairn_core::WriteRequest;
    use cairn_proto::etcdserverpb::{CompactionRequest, PutRequest, RangeRequest};

    use super::*;

    fn key(n: u8) -> DataKey {
        DataKey::new([n; 8], [n; 32], [n.wrapping_add(100); 32])
    }

    fn put(store: &MvccStore, k: &str, v: &str) {
        let mut b = store.begin_apply().unwrap();
        b.apply(&WriteRequest::Put(PutRequest { key: k.into(), value: v.into(), ..Default::default() }))
            .unwrap();
        b.commit().unwrap();
    }

    /// The value of `k` at `revision` (0: the latest).
    fn value_at(store: &MvccStore, k: &str, revision: i64) -> Vec<u8> {
        let req = RangeRequest { key: k.into(), revision, ..Default::default() };
        store.range(&req).unwrap().kvs.pop().expect("the key exists").value
    }

    /// Every stored row's bytes, by family and key.
    fn rows(store: &MvccStore, family: Family) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        store
            .engine()
            .latest()
            .scan(family, &[], None, &mut |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                Ok(true)
            })
            .unwrap();
        out
    }

    fn mentions(rows: &[(Vec<u8>, Vec<u8>)], needle: &[u8]) -> bool {
        rows.iter().any(|(_, v)| v.windows(needle.len()).any(|w| w == needle))
    }

    fn pass(store: &MvccStore, limit: usize) -> (u64, u64, usize) {
        let (mut cursor, mut resealed, mut scanned, mut steps) = (ResealCursor::default(), 0, 0, 0);
        loop {
            let step = store.reseal_step(&mut cursor, limit).unwrap();
            assert!(step.scanned as usize <= limit);
            resealed += step.resealed;
            scanned += step.scanned;
            steps += 1;
            if step.done {
                return (scanned, resealed, steps);
            }
        }
    }

    #[test]
    fn a_pass_reseals_old_keys_and_clear_values_and_leaves_the_rest() {
        let engine = Arc::new(crate::MemEngine::new());
        // The second prefix, all 0xff, is scanned to the end of each family.
        let prefixes = vec![b"/s/".to_vec(), b"\xff\xff".to_vec()];
        let old = Arc::new(Sealer::new(key(1), Vec::new(), vec![b"/s/".to_vec()]));
        let before = MvccStore::new(engine.clone()).with_sealer(Some(old));
        for n in 0..25 {
            put(&before, &format!("/s/{n:02}"), &format!("old-secret-{n}"));
        }
        put(&before, "/s/00", "old-secret-again");
        put(&before, "/config", "plain");
        // The new key becomes current; the old one stays for reading.
        let rotated = Arc::new(Sealer::new(key(2), vec![key(1)], prefixes));
        let store = MvccStore::new(engine.clone()).with_sealer(Some(rotated.clone()));
        put(&store, "/s/new", "new-secret");
        let history_before = store.hash_kv(0).unwrap();

        let (scanned, resealed, steps) = pass(&store, 7);
        // 26 kv rows + 27 history rows under /s/, none under \xff\xff.
        assert_eq!(scanned, 26 + 27);
        assert_eq!(resealed, 25 + 26, "every row but the new key's");
        assert!(steps >= 53 / 7);
        assert_eq!(store.hash_kv(0).unwrap(), history_before, "re-sealing changes no data");

        // Nothing under the old key is left: the new key alone opens every version.
        let only_new = MvccStore::new(engine.clone()).with_sealer(Some(Arc::new(Sealer::new(
            key(2),
            Vec::new(),
            rotated.prefixes().to_vec(),
        ))));
        for family in [Family::Kv, Family::History] {
            assert!(!mentions(&rows(&only_new, family), b"old-secret"), "plaintext left");
        }
        assert_eq!(value_at(&only_new, "/s/00", 2), b"old-secret-0");
        assert_eq!(value_at(&only_new, "/s/00", 0), b"old-secret-again");
        assert_eq!(value_at(&only_new, "/config", 0), b"plain");
        // A second pass finds nothing to do.
        assert_eq!(pass(&store, 1000).1, 0);
    }

    #[test]
    fn values_stored_before_their_prefix_became_secret_are_sealed() {
        let engine = Arc::new(crate::MemEngine::new());
        let plain = MvccStore::new(engine.clone());
        put(&plain, "/s/a", "was-clear");
        put(&plain, "/s/a", "was-clear-2");
        let store = MvccStore::new(engine).with_sealer(Some(Arc::new(Sealer::new(
            key(3),
            Vec::new(),
            vec![b"/s/".to_vec()],
        ))));
        assert!(mentions(&rows(&store, Family::History), b"was-clear"));
        assert_eq!(pass(&store, 1).1, 3, "the kv row and both versions");
        for family in [Family::Kv, Family::History] {
            assert!(!mentions(&rows(&store, family), b"was-clear"), "plaintext left in {family:?}");
        }
        assert_eq!(value_at(&store, "/s/a", 0), b"was-clear-2");
    }

    #[test]
    fn compacted_rows_are_not_brought_back() {
        let engine = Arc::new(crate::MemEngine::new());
        let old = MvccStore::new(engine.clone()).with_sealer(Some(Arc::new(Sealer::new(
            key(1),
            Vec::new(),
            vec![b"/s/".to_vec()],
        ))));
        for n in 0..10 {
            put(&old, "/s/k", &format!("v{n}"));
        }
        let store = MvccStore::new(engine).with_sealer(Some(Arc::new(Sealer::new(
            key(2),
            vec![key(1)],
            vec![b"/s/".to_vec()],
        ))));
        let mut cursor = ResealCursor::default();
        store.reseal_step(&mut cursor, 3).unwrap();
        let mut b = store.begin_apply().unwrap();
        b.apply(&WriteRequest::Compact(CompactionRequest { revision: 9, physical: true })).unwrap();
        b.commit().unwrap();
        let kept: Vec<_> = rows(&store, Family::History).into_iter().map(|(k, _)| k).collect();
        assert!(kept.len() < 10);
        while !store.reseal_step(&mut cursor, 3).unwrap().done {}
        let after: Vec<_> = rows(&store, Family::History).into_iter().map(|(k, _)| k).collect();
        assert_eq!(after, kept, "the pass wrote back no compacted version");
    }
}
