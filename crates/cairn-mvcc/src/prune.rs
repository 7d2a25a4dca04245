//! Compaction in bounded steps, for engines where one compaction must not be one huge
//! transaction (the SQL adapter: it holds the revision lock while it writes). A store made
//! [`MvccStore::with_deferred_pruning`] applies a Compaction as the compaction point and the
//! events below it only; [`MvccStore::prune_step`] then deletes the history rows no read can
//! see any more, a bounded number of keys per step, from a cursor, as often as the caller
//! likes — a step that fails or never runs loses nothing (those rows are invisible to every
//! read and to HashKV, which hashes a store the same before and after pruning).

use crate::encoding::{decode_history_key, is_tombstone};
use crate::engine::{Batch, Durability, Family};
use crate::error::MvccError;
use crate::store::{revisions, MvccStore};
use crate::view::View;

/// Where the next [`MvccStore::prune_step`] starts (a history row key; empty: the start).
pub type PruneCursor = Vec<u8>;

impl MvccStore {
    /// Delete the history rows made invisible by the compaction point, from `cursor` over at
    /// least `limit` rows (a key's rows are never split between two steps). Returns where to
    /// go on from, or `None` once the end of the history is reached, and the rows deleted.
    pub fn prune_step(&self, cursor: &[u8], limit: usize) -> Result<(Option<PruneCursor>, u64), MvccError> {
        let base = self.engine().latest();
        let view = View::of(&*base);
        let (_, compacted) = revisions(&view)?;
        let mut doomed = Doomed::new(compacted);
        let mut seen = 0usize;
        let mut next: Option<Vec<u8>> = None;
        view.scan(Family::History, cursor, None, &mut |k, v| {
            if !doomed.push(k, v, seen >= limit)? {
                next = Some(k.to_vec());
                return Ok(false);
            }
            seen += 1;
            Ok(true)
        })?;
        // Stopped at a key's first row, the last key's group was complete too.
        let doomed = doomed.finish();
        drop(base);
        let deleted = doomed.len() as u64;
        if !doomed.is_empty() {
            let mut batch = Batch::default();
            for row in doomed {
                batch.delete(Family::History, row);
            }
            self.engine().write(batch, Durability::Synced)?;
        }
        Ok((next, deleted))
    }
}

/// The history rows a compaction at `compacted` makes invisible, from the history's rows
/// fed in key order: for each key, every row ≤ `compacted` but its newest, and that one too
/// if it is a tombstone (no read at or after the compaction point can see them).
pub(crate) struct Doomed {
    compacted: i64,
    group: Option<Vec<u8>>,
    /// The group's newest row ≤ compacted so far (row key, is tombstone).
    last: Option<(Vec<u8>, bool)>,
    rows: Vec<Vec<u8>>,
}

impl Doomed {
    pub(crate) fn new(compacted: i64) -> Doomed {
        Doomed { compacted, group: None, last: None, rows: Vec::new() }
    }

    /// Take the next row, unless it starts a new key and `stop_at_new_key`: then the rows
    /// fed so far are complete, and it returns false without taking this one.
    pub(crate) fn push(&mut self, k: &[u8], v: &[u8], stop_at_new_key: bool) -> Result<bool, MvccError> {
        let (key, row_rev) = decode_history_key(k)?;
        if self.group.as_deref() != Some(key.as_slice()) {
            if let Some((row, true)) = self.last.take() {
                self.rows.push(row);
            }
            if stop_at_new_key {
                return Ok(false);
            }
            self.group = Some(key);
        }
        if row_rev <= self.compacted {
            if let Some((row, _)) = self.last.take() {
                self.rows.push(row);
            }
            self.last = Some((k.to_vec(), is_tombstone(v)?));
        }
        Ok(true)
    }

    /// The rows to delete, the last key's group taken as complete.
    pub(crate) fn finish(mut self) -> Vec<Vec<u8>> {
        if let Some((row, true)) = self.last.take() {
            self.rows.push(row);
        }
        self.rows
    }
}

/// Receives a surviving history row (key, value).
pub(crate) type Emit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), MvccError> + 'a;

/// Whether a history row survives compaction at `compacted`, given the group's rows in
/// order: HashKV's filter, so that a pruned and an unpruned store hash alike. Feed it every
/// row of the history in key order; it hands back the surviving rows in the same order.
pub(crate) struct Survivors {
    compacted: i64,
    group: Option<Vec<u8>>,
    /// The group's newest row ≤ compacted so far (key, value), held back until it is known
    /// to be the newest.
    pending: Option<(Vec<u8>, Vec<u8>)>,
}

impl Survivors {
    pub(crate) fn new(compacted: i64) -> Survivors {
        Survivors { compacted, group: None, pending: None }
    }

    /// Take the next row; `emit` receives the rows known to survive.
    pub(crate) fn push(&mut self, k: &[u8], v: &[u8], emit: &mut Emit<'_>) -> Result<(), MvccError> {
        let (key, row_rev) = decode_history_key(k)?;
        if self.group.as_deref() != Some(key.as_slice()) {
            self.flush(emit)?;
            self.group = Some(key);
        }
        if row_rev <= self.compacted {
            self.pending = Some((k.to_vec(), v.to_vec()));
        } else {
            self.flush(emit)?;
            emit(k, v)?;
        }
        Ok(())
    }

    /// The end of the rows: hand back what was held.
    pub(crate) fn flush(&mut self, emit: &mut Emit<'_>) -> Result<(), MvccError> {
        if let Some((k, v)) = self.pending.take() {
            if !is_tombstone(&v)? {
                emit(&k, &v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use cairn_core::WriteRequest;
    use cairn_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest};

    use crate::engine::Family;
    use crate::MvccStore;

    fn apply(store: &MvccStore, req: WriteRequest) {
        let mut batch = store.begin_apply().unwrap();
        batch.apply(&req).unwrap();
        batch.commit_synced().unwrap();
    }

    fn history_rows(store: &MvccStore) -> Vec<Vec<u8>> {
        let mut rows = Vec::new();
        store
            .engine()
            .latest()
            .scan(Family::History, &[], None, &mut |k, _| {
                rows.push(k.to_vec());
                Ok(true)
            })
            .unwrap();
        rows
    }

    /// The same writes on an eagerly compacting store and a deferred one: the same reads and
    /// HashKV before pruning, the same history rows once pruned in small steps.
    #[test]
    fn deferred_pruning_ends_where_eager_compaction_does() {
        let eager = MvccStore::in_memory();
        let deferred = MvccStore::in_memory().with_deferred_pruning();
        for store in [&eager, &deferred] {
            for i in 0..60 {
                let key = format!("k{}", i % 7).into_bytes();
                apply(
                    store,
                    WriteRequest::Put(PutRequest { key, value: vec![i as u8], ..Default::default() }),
                );
                if i % 11 == 10 {
                    let key = format!("k{}", i % 3).into_bytes();
                    apply(store, WriteRequest::DeleteRange(DeleteRangeRequest { key, ..Default::default() }));
                }
            }
            apply(store, WriteRequest::Compact(CompactionRequest { revision: 40, ..Default::default() }));
        }
        assert!(history_rows(&deferred).len() > history_rows(&eager).len(), "nothing pruned yet");
        assert_eq!(eager.hash_kv(0).unwrap(), deferred.hash_kv(0).unwrap());
        assert_eq!(eager.hash_kv(50).unwrap(), deferred.hash_kv(50).unwrap());
        for rev in [40, 45, 0] {
            let req = RangeRequest {
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
                revision: rev,
                ..Default::default()
            };
            assert_eq!(eager.range(&req).unwrap(), deferred.range(&req).unwrap(), "range at {rev}");
        }
        let mut cursor = Vec::new();
        let mut steps = 0;
        loop {
            let (next, _) = deferred.prune_step(&cursor, 3).unwrap();
            steps += 1;
            match next {
                Some(c) => cursor = c,
                None => break,
            }
        }
        assert!(steps > 1, "bounded steps");
        assert_eq!(history_rows(&deferred), history_rows(&eager));
        assert_eq!(eager.hash_kv(0).unwrap(), deferred.hash_kv(0).unwrap());
        // Another pass finds nothing more.
        assert_eq!(deferred.prune_step(&[], 1000).unwrap(), (None, 0));
    }
}
