//! [`MemEngine`]: the MVCC families in memory, for deterministic tests and simulation. The
//! maps are persistent (`imbl`'s B-trees share structure), so a snapshot is a clone in O(1)
//! and a write after it copies only the paths it changes.
//!
//! It models a disk that loses what was not synced: [`MemEngine::crashed`] gives the state
//! a machine would find after losing power now — every [`Durability::Synced`] batch and
//! everything written before it, nothing written after the last synced batch.

use std::sync::{Arc, RwLock};

use imbl::OrdMap;

use crate::engine::{Batch, BatchOp, Durability, Engine, EngineRead, Family, Row, Visit};
use crate::error::MvccError;

type Table = OrdMap<Vec<u8>, Vec<u8>>;

#[derive(Clone, Default)]
struct Tables([Table; Family::COUNT]);

#[derive(Default)]
struct State {
    latest: Tables,
    /// Bytes of every key and value in `latest`.
    bytes: u64,
    /// `latest` as of the last synced batch.
    durable: Tables,
}

/// An in-memory engine. Cloning it shares the state (like reopening the same database).
#[derive(Clone, Default)]
pub struct MemEngine {
    state: Arc<RwLock<State>>,
}

impl MemEngine {
    pub fn new() -> MemEngine {
        MemEngine::default()
    }

    /// A new engine holding what a crash right now would leave: the state as of the last
    /// synced batch. This engine is unchanged.
    pub fn crashed(&self) -> MemEngine {
        let durable = self.read().durable.clone();
        let bytes = durable.0.iter().flat_map(|t| t.iter()).map(|(k, v)| (k.len() + v.len()) as u64).sum();
        MemEngine { state: Arc::new(RwLock::new(State { latest: durable.clone(), bytes, durable })) }
    }

    /// Make everything written so far durable, as a sync of a write-ahead log that other
    /// writers share does (the Raft log's sync covers the state machine's earlier batches).
    pub fn sync(&self) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.durable = state.latest.clone();
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A writer that panicked left the maps whole (each op is one map call).
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
}

struct MemRead(Tables);

impl EngineRead for MemRead {
    fn get(&self, fam: Family, key: &[u8]) -> Result<Option<Vec<u8>>, MvccError> {
        Ok(self.0 .0[fam as usize].get(key).cloned())
    }

    fn scan(
        &self,
        fam: Family,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<(), MvccError> {
        let table = &self.0 .0[fam as usize];
        let upper = match end {
            Some(end) if end <= start => return Ok(()),
            Some(end) => std::ops::Bound::Excluded(end),
            None => std::ops::Bound::Unbounded,
        };
        for (k, v) in table.range::<_, [u8]>((std::ops::Bound::Included(start), upper)) {
            if !visit(k, v)? {
                break;
            }
        }
        Ok(())
    }

    fn last_in(&self, fam: Family, lower: &[u8], upper: &[u8]) -> Result<Option<Row>, MvccError> {
        if lower >= upper {
            return Ok(None);
        }
        let table = &self.0 .0[fam as usize];
        Ok(table
            .range::<_, [u8]>((std::ops::Bound::Included(lower), std::ops::Bound::Excluded(upper)))
            .next_back()
            .map(|(k, v)| (k.clone(), v.clone())))
    }
}

impl Engine for MemEngine {
    fn snapshot(&self) -> Box<dyn EngineRead + '_> {
        Box::new(MemRead(self.read().latest.clone()))
    }

    fn latest(&self) -> Box<dyn EngineRead + '_> {
        // The single applier reads while nobody else writes: a snapshot is the latest state.
        self.snapshot()
    }

    fn write(&self, batch: Batch, durability: Durability) -> Result<(), MvccError> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let State { latest, bytes, durable } = &mut *state;
        let tables = &mut latest.0;
        let size = |k: &[u8], v: &[u8]| (k.len() + v.len()) as u64;
        for op in batch.ops {
            match op {
                BatchOp::Put(fam, k, v) => {
                    *bytes += size(&k, &v);
                    if let Some(old) = tables[fam as usize].insert(k.clone(), v) {
                        *bytes -= size(&k, &old);
                    }
                }
                BatchOp::Delete(fam, k) => {
                    if let Some(old) = tables[fam as usize].remove(&k) {
                        *bytes -= size(&k, &old);
                    }
                }
                BatchOp::DeleteRange(fam, start, end) => {
                    let table = &mut tables[fam as usize];
                    if start < end {
                        let doomed: Vec<Vec<u8>> = table
                            .range::<_, [u8]>((
                                std::ops::Bound::Included(start.as_slice()),
                                std::ops::Bound::Excluded(end.as_slice()),
                            ))
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in doomed {
                            if let Some(old) = table.remove(&k) {
                                *bytes -= size(&k, &old);
                            }
                        }
                    }
                }
                BatchOp::Clear(fam) => {
                    let table = std::mem::take(&mut tables[fam as usize]);
                    *bytes -= table.iter().map(|(k, v)| size(k, v)).sum::<u64>();
                }
            }
        }
        if durability == Durability::Synced {
            *durable = latest.clone();
        }
        Ok(())
    }

    fn approximate_size(&self) -> u64 {
        self.read().bytes
    }

    /// Memory holds no dead rows: nothing to give back.
    fn compact_storage(&self) -> Result<(), MvccError> {
        Ok(())
    }
}
