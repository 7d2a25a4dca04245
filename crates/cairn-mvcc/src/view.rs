//! Read views over the MVCC column families: a consistent RocksDB snapshot for readers, and
//! the same plus a write overlay for the applier (so that later operations of one apply
//! batch see the writes of earlier ones before the batch is written).

use std::collections::BTreeMap;
use std::ops::Bound;

use rocksdb::{ColumnFamily, ReadOptions, Snapshot, DB};

use crate::error::MvccError;

/// The column families the MVCC engine owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// user key → latest version of a live key.
    Kv = 0,
    /// memcomparable(user key) ++ revision → that version (or a tombstone).
    History = 1,
    /// revision → the keys changed at that revision.
    Events = 2,
    /// named metadata rows: current revision, compacted revision, and the replication
    /// layer's own rows (last applied log id, membership) written in the same batch.
    Meta = 3,
    /// lease id → the lease's granted TTL.
    Leases = 4,
    /// lease id ++ user key → (): the keys attached to each lease.
    LeaseKeys = 5,
}

impl Family {
    pub const COUNT: usize = 6;
    pub const ALL: [Family; Family::COUNT] =
        [Family::Kv, Family::History, Family::Events, Family::Meta, Family::Leases, Family::LeaseKeys];

    pub fn name(self) -> &'static str {
        match self {
            Family::Kv => "kv",
            Family::History => "history",
            Family::Events => "events",
            Family::Meta => "sm_meta",
            Family::Leases => "leases",
            Family::LeaseKeys => "lease_keys",
        }
    }

    pub(crate) fn handle(self, db: &DB) -> &ColumnFamily {
        db.cf_handle(self.name()).unwrap_or_else(|| panic!("column family {} was not opened", self.name()))
    }
}

/// Pending writes of one apply batch: `None` is a delete.
/// A row (key, value).
pub(crate) type Row = (Vec<u8>, Vec<u8>);

/// A scan callback: return `Ok(false)` to stop.
pub(crate) type Visit<'v> = dyn FnMut(&[u8], &[u8]) -> Result<bool, MvccError> + 'v;

pub(crate) type Overlay = [BTreeMap<Vec<u8>, Option<Vec<u8>>>; Family::COUNT];

/// A read view: the database as of a snapshot (or live, for the single applier), plus an
/// optional overlay of pending writes that takes precedence.
pub(crate) struct View<'a> {
    pub db: &'a DB,
    pub snapshot: Option<&'a Snapshot<'a>>,
    pub overlay: Option<&'a Overlay>,
}

impl<'a> View<'a> {
    fn read_options(&self) -> ReadOptions {
        let mut ro = ReadOptions::default();
        if let Some(s) = self.snapshot {
            ro.set_snapshot(s);
        }
        ro
    }

    fn overlay(&self, fam: Family) -> Option<&'a BTreeMap<Vec<u8>, Option<Vec<u8>>>> {
        self.overlay.map(|o| &o[fam as usize])
    }

    pub fn get(&self, fam: Family, key: &[u8]) -> Result<Option<Vec<u8>>, MvccError> {
        if let Some(v) = self.overlay(fam).and_then(|o| o.get(key)) {
            return Ok(v.clone());
        }
        Ok(self.db.get_cf_opt(fam.handle(self.db), key, &self.read_options())?)
    }

    /// Visit the rows of `[start, end)` (`end = None`: to the end of the family) in key
    /// order until `visit` returns `false`.
    pub fn scan(
        &self,
        fam: Family,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), MvccError> {
        let mut ro = self.read_options();
        if let Some(end) = end {
            if end <= start {
                return Ok(());
            }
            ro.set_iterate_upper_bound(end.to_vec());
        }
        let mut it = self.db.raw_iterator_cf_opt(fam.handle(self.db), ro);
        it.seek(start);
        let empty = BTreeMap::new();
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let mut pending =
            self.overlay(fam).unwrap_or(&empty).range::<[u8], _>((Bound::Included(start), upper)).peekable();
        loop {
            if !it.valid() {
                it.status()?;
            }
            let from_db = it.valid().then(|| it.key().zip(it.value())).flatten();
            let from_overlay = pending.peek().map(|(k, v)| (k.as_slice(), v.as_deref()));
            let keep_going = match (from_db, from_overlay) {
                (None, None) => return Ok(()),
                (Some((k, v)), None) => {
                    let go = visit(k, v)?;
                    it.next();
                    go
                }
                (None, Some((k, v))) => {
                    let go = match v {
                        Some(v) => visit(k, v)?,
                        None => true,
                    };
                    pending.next();
                    go
                }
                (Some((dk, dv)), Some((ok, ov))) => match dk.cmp(ok) {
                    std::cmp::Ordering::Less => {
                        let go = visit(dk, dv)?;
                        it.next();
                        go
                    }
                    ord => {
                        let go = match ov {
                            Some(v) => visit(ok, v)?,
                            None => true,
                        };
                        if ord == std::cmp::Ordering::Equal {
                            it.next();
                        }
                        pending.next();
                        go
                    }
                },
            };
            if !keep_going {
                return Ok(());
            }
        }
    }

    /// The row with the greatest key in `[lower, target]`, if any.
    pub fn seek_prev(&self, fam: Family, lower: &[u8], target: &[u8]) -> Result<Option<Row>, MvccError> {
        let overlay = self.overlay(fam);
        let mut it = self.db.raw_iterator_cf_opt(fam.handle(self.db), self.read_options());
        it.seek_for_prev(target);
        let mut from_db = None;
        while it.valid() {
            let k = it.key().expect("valid iterator has a key");
            if k < lower {
                break;
            }
            // A row deleted by this batch is not there: keep looking further back.
            if !matches!(overlay.and_then(|o| o.get(k)), Some(None)) {
                from_db = Some((k.to_vec(), it.value().expect("valid iterator has a value").to_vec()));
                break;
            }
            it.prev();
        }
        it.status()?;
        let from_overlay = overlay.and_then(|o| {
            o.range::<[u8], _>((Bound::Included(lower), Bound::Included(target)))
                .rev()
                .find_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
        });
        Ok(match (from_db, from_overlay) {
            (Some(d), Some(o)) => Some(if o.0 >= d.0 { o } else { d }),
            (d, o) => o.or(d),
        })
    }
}
