//! Read views over the engine: a consistent snapshot (or the latest state) for readers, and
//! the same plus a write overlay for the applier, so that later operations of one apply
//! batch see the writes of earlier ones before the batch is written.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::engine::{EngineRead, Family, Row, Visit};
use crate::error::MvccError;

/// Pending writes of one apply batch per family: `None` is a delete.
pub(crate) type Overlay = [BTreeMap<Vec<u8>, Option<Vec<u8>>>; Family::COUNT];

/// An engine state plus an optional overlay of pending writes that takes precedence.
pub(crate) struct View<'a> {
    pub base: &'a dyn EngineRead,
    pub overlay: Option<&'a Overlay>,
    /// Opens sealed values (secrets at rest); `None`: this store holds no key.
    pub sealer: Option<&'a cairn_core::seal::Sealer>,
}

impl<'a> View<'a> {
    /// A view with no overlay and no key (enough for revisions and raw rows).
    pub fn of(base: &'a dyn EngineRead) -> View<'a> {
        View { base, overlay: None, sealer: None }
    }

    fn overlay(&self, fam: Family) -> Option<&'a BTreeMap<Vec<u8>, Option<Vec<u8>>>> {
        self.overlay.map(|o| &o[fam as usize])
    }

    pub fn get(&self, fam: Family, key: &[u8]) -> Result<Option<Vec<u8>>, MvccError> {
        if let Some(v) = self.overlay(fam).and_then(|o| o.get(key)) {
            return Ok(v.clone());
        }
        self.base.get(fam, key)
    }

    /// Visit the rows of `[start, end)` (`end = None`: to the end of the family) in key
    /// order until `visit` returns `false`: the engine's rows merged with the overlay's.
    pub fn scan(
        &self,
        fam: Family,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), MvccError> {
        let Some(overlay) = self.overlay(fam).filter(|o| !o.is_empty()) else {
            return self.base.scan(fam, start, end, visit);
        };
        if end.is_some_and(|end| end <= start) {
            return Ok(());
        }
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let mut pending = overlay.range::<[u8], _>((Bound::Included(start), upper)).peekable();
        let mut stopped = false;
        self.base.scan(fam, start, end, &mut |k, v| {
            // Pending rows before this one first; a pending row for this key replaces it.
            while let Some((pk, pv)) = pending.peek() {
                match pk.as_slice().cmp(k) {
                    std::cmp::Ordering::Less => {
                        let go = match pv {
                            Some(pv) => visit(pk, pv)?,
                            None => true,
                        };
                        pending.next();
                        if !go {
                            stopped = true;
                            return Ok(false);
                        }
                    }
                    std::cmp::Ordering::Equal => {
                        let go = match pv {
                            Some(pv) => visit(pk, pv)?,
                            None => true,
                        };
                        pending.next();
                        stopped = !go;
                        return Ok(go);
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            let go = visit(k, v)?;
            stopped = !go;
            Ok(go)
        })?;
        if stopped {
            return Ok(());
        }
        for (pk, pv) in pending {
            if let Some(pv) = pv {
                if !visit(pk, pv)? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The row with the greatest key in `[lower, upper)`, if any.
    pub fn last_in(&self, fam: Family, lower: &[u8], upper: &[u8]) -> Result<Option<Row>, MvccError> {
        if lower >= upper {
            return Ok(None);
        }
        let overlay = self.overlay(fam);
        // A row this batch deleted is not there: keep looking further back.
        let mut bound = upper.to_vec();
        let from_base = loop {
            match self.base.last_in(fam, lower, &bound)? {
                Some((k, _)) if matches!(overlay.and_then(|o| o.get(&k)), Some(None)) => bound = k,
                found => break found,
            }
        };
        let from_overlay = overlay.and_then(|o| {
            o.range::<[u8], _>((Bound::Included(lower), Bound::Excluded(upper)))
                .rev()
                .find_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
        });
        Ok(match (from_base, from_overlay) {
            (Some(b), Some(o)) => Some(if o.0 >= b.0 { o } else { b }),
            (b, o) => o.or(b),
        })
    }
}

/// The merge of engine rows and overlay, and each engine's reads, against a plain
/// `BTreeMap` model, over pseudo-random keys, writes and bounds.
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::{Overlay, View};
    use crate::engine::{Batch, Durability, Engine, Family};

    /// A small deterministic generator (no seed to chase when a case fails).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
        fn key(&mut self) -> Vec<u8> {
            let len = self.next(3) as usize;
            (0..len).map(|_| b'a' + self.next(4) as u8).collect()
        }
    }

    fn check(engine: Arc<dyn Engine>) {
        let fam = Family::Kv;
        let mut rng = Lcg(7);
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for round in 0..60 {
            // Commit a batch (puts, deletes, a range delete now and then).
            let mut batch = Batch::default();
            for _ in 0..rng.next(6) {
                let (k, v) = (rng.key(), vec![round as u8]);
                if rng.next(3) == 0 {
                    model.remove(&k);
                    batch.delete(fam, k);
                } else {
                    model.insert(k.clone(), v.clone());
                    batch.put(fam, k, v);
                }
            }
            if rng.next(8) == 0 {
                let (a, b) = (rng.key(), rng.key());
                model.retain(|k, _| !(a <= *k && *k < b));
                batch.delete_range(fam, a, b);
            }
            engine.write(batch, Durability::Deferred).unwrap();

            // An overlay of pending writes on top, and the model of both together.
            let mut overlay: Overlay = Default::default();
            let mut merged = model.clone();
            for _ in 0..rng.next(5) {
                let k = rng.key();
                if rng.next(2) == 0 {
                    merged.remove(&k);
                    overlay[fam as usize].insert(k, None);
                } else {
                    merged.insert(k.clone(), b"o".to_vec());
                    overlay[fam as usize].insert(k, Some(b"o".to_vec()));
                }
            }
            let base = engine.snapshot();
            for (view, want) in [
                (View::of(&*base), &model),
                (View { base: &*base, overlay: Some(&overlay), sealer: None }, &merged),
            ] {
                for _ in 0..8 {
                    let (start, end) = (rng.key(), rng.key());
                    let limit = 1 + rng.next(4) as usize;
                    let end_opt = (rng.next(3) != 0).then_some(end.as_slice());
                    let mut got = Vec::new();
                    view.scan(fam, &start, end_opt, &mut |k, v| {
                        got.push((k.to_vec(), v.to_vec()));
                        Ok(got.len() < limit)
                    })
                    .unwrap();
                    let expected: Vec<_> = want
                        .iter()
                        .filter(|(k, _)| **k >= start && end_opt.is_none_or(|e| k.as_slice() < e))
                        .take(limit)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    assert_eq!(got, expected, "scan [{start:?}, {end_opt:?}) limit {limit}");

                    let last = view.last_in(fam, &start, &end).unwrap();
                    let expected = want
                        .iter()
                        .rfind(|(k, _)| **k >= start && **k < end)
                        .map(|(k, v)| (k.clone(), v.clone()));
                    assert_eq!(last, expected, "last in [{start:?}, {end:?})");

                    let k = rng.key();
                    assert_eq!(view.get(fam, &k).unwrap(), want.get(&k).cloned());
                }
            }
        }
    }

    #[test]
    fn the_memory_engine_and_overlay_read_like_a_map() {
        check(Arc::new(crate::MemEngine::new()));
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn the_rocksdb_engine_and_overlay_read_like_a_map() {
        let dir = tempfile::tempdir().unwrap();
        check(Arc::new(crate::RocksEngine::open(dir.path(), &[]).unwrap()));
    }

    #[test]
    fn a_crash_keeps_synced_batches_and_what_came_before() {
        let engine = crate::MemEngine::new();
        let put = |k: &[u8], d| {
            let mut b = Batch::default();
            b.put(Family::Kv, k.to_vec(), b"v".to_vec());
            engine.write(b, d).unwrap();
        };
        put(b"a", Durability::Deferred);
        put(b"b", Durability::Synced);
        put(b"c", Durability::Deferred);
        let after = engine.crashed();
        let read = after.snapshot();
        assert!(read.get(Family::Kv, b"a").unwrap().is_some(), "written before a synced batch");
        assert!(read.get(Family::Kv, b"b").unwrap().is_some());
        assert!(read.get(Family::Kv, b"c").unwrap().is_none(), "never synced");
        assert!(engine.snapshot().get(Family::Kv, b"c").unwrap().is_some(), "the engine itself is unchanged");
    }
}
