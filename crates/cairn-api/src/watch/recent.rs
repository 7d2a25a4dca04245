//! The newest revisions' events, read from the event log once for every stream of a member
//! (etcd's synced group fans out from memory the same way): with 10,000 watchers on 100
//! streams, a put costs one event-log read, not one per watcher or per stream.

use std::collections::VecDeque;
use std::sync::Arc;

use cairn_core::RevisionEvents;
use prost::Message;

use crate::{Backend, BackendError};

/// Revisions read from the event log per step (of a catching-up watcher, or of the window).
const READ_REVISIONS: usize = 256;
/// Most revisions the window keeps: a stream that falls further behind reads the event log
/// itself until it is back within them.
const WINDOW_REVISIONS: usize = 1024;
/// Most encoded bytes of events the window keeps (beyond its newest read).
const WINDOW_BYTES: usize = 16 << 20;

/// Events of a stretch of revisions, and the revision up to which they are complete (every
/// revision with events in `from..=complete_to` is in `revisions`).
pub(super) struct Events {
    pub revisions: Vec<Arc<RevisionEvents>>,
    pub complete_to: i64,
    /// Whether the events carry their previous key-values.
    pub with_prev_kv: bool,
}

#[derive(Default)]
pub(crate) struct RecentEvents {
    /// Held across an event-log read that extends the window, so that the streams that
    /// want the same new revisions wait for one read instead of each doing it.
    extending: tokio::sync::Mutex<()>,
    window: std::sync::Mutex<Window>,
}

/// Consecutive revisions `from..=to` (those without events are simply absent), read with
/// previous key-values. Empty while `to < from`.
#[derive(Default)]
struct Window {
    from: i64,
    to: i64,
    revisions: VecDeque<(Arc<RevisionEvents>, usize)>,
    bytes: usize,
}

impl Window {
    fn hit(&self, from: i64, to: i64) -> Option<Events> {
        if self.to < self.from || from < self.from || from > self.to {
            return None;
        }
        let complete_to = to.min(self.to);
        let start = self.revisions.partition_point(|(r, _)| r.revision < from);
        let revisions = self
            .revisions
            .range(start..)
            .take_while(|(r, _)| r.revision <= complete_to)
            .map(|(r, _)| r.clone())
            .collect();
        Some(Events { revisions, complete_to, with_prev_kv: true })
    }

    /// Append what was read from `from` (right after the window, or anywhere after it, which
    /// starts a new window) and drop the oldest revisions beyond the bounds.
    fn extend(&mut self, from: i64, read: &Events) {
        if self.to < self.from || from != self.to + 1 {
            *self = Window { from, to: from - 1, ..Default::default() };
        }
        for r in &read.revisions {
            let bytes = r.events.iter().map(|e| e.encoded_len()).sum::<usize>();
            self.bytes += bytes;
            self.revisions.push_back((r.clone(), bytes));
        }
        self.to = read.complete_to;
        while self.revisions.len() > WINDOW_REVISIONS
            || (self.bytes > WINDOW_BYTES && self.revisions.front().is_some_and(|(r, _)| r.revision < from))
        {
            let Some((oldest, bytes)) = self.revisions.pop_front() else { break };
            self.bytes -= bytes;
            self.from = oldest.revision + 1;
        }
    }
}

impl RecentEvents {
    /// Events of revisions `from..=to` (at most [`READ_REVISIONS`] of them; fewer when the
    /// answer is partial, see [`Events::complete_to`]). Revisions in the window come from
    /// memory; the revisions right after it are read once and kept; older ones are read for
    /// this caller alone, with previous key-values only if it asks.
    pub(super) async fn get<B: Backend>(
        &self,
        backend: &B,
        from: i64,
        to: i64,
        prev_kv: bool,
    ) -> Result<Events, BackendError> {
        if let Some(hit) = self.lock().hit(from, to) {
            return Ok(hit);
        }
        if self.is_before(from) {
            return read(backend, from, to, prev_kv).await;
        }
        let _extending = self.extending.lock().await;
        // Another stream may have read these revisions while this one waited.
        if let Some(hit) = self.lock().hit(from, to) {
            return Ok(hit);
        }
        if self.is_before(from) {
            return read(backend, from, to, prev_kv).await;
        }
        let events = read(backend, from, to, true).await?;
        self.lock().extend(from, &events);
        Ok(events)
    }

    /// Whether `from` is older than the window (so reading it must not replace the window).
    fn is_before(&self, from: i64) -> bool {
        let w = self.lock();
        w.to >= w.from && from < w.from
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn read<B: Backend>(backend: &B, from: i64, to: i64, prev_kv: bool) -> Result<Events, BackendError> {
    let revisions = backend.events(from, to, READ_REVISIONS, prev_kv).await?;
    let complete_to =
        if revisions.len() < READ_REVISIONS { to } else { revisions.last().map_or(to, |r| r.revision) };
    Ok(Events {
        revisions: revisions.into_iter().map(Arc::new).collect(),
        complete_to,
        with_prev_kv: prev_kv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::mvccpb::{Event, KeyValue};

    fn revs(range: std::ops::RangeInclusive<i64>) -> Events {
        let revisions = range
            .clone()
            .map(|r| {
                let kv = KeyValue { key: b"k".to_vec(), mod_revision: r, ..Default::default() };
                Arc::new(RevisionEvents {
                    revision: r,
                    events: vec![Event { kv: Some(kv), ..Default::default() }],
                })
            })
            .collect();
        Events { revisions, complete_to: *range.end(), with_prev_kv: true }
    }

    fn revisions_of(e: &Events) -> Vec<i64> {
        e.revisions.iter().map(|r| r.revision).collect()
    }

    #[test]
    fn a_window_answers_what_it_holds_and_says_where_it_ends() {
        let mut w = Window::default();
        assert!(w.hit(1, 5).is_none(), "an empty window holds nothing");
        w.extend(3, &revs(3..=6));
        assert!(w.hit(2, 6).is_none(), "before the window");
        assert!(w.hit(7, 9).is_none(), "after the window");
        let hit = w.hit(4, 9).unwrap();
        assert_eq!((revisions_of(&hit), hit.complete_to), (vec![4, 5, 6], 6));
        let hit = w.hit(3, 4).unwrap();
        assert_eq!((revisions_of(&hit), hit.complete_to), (vec![3, 4], 4));
    }

    #[test]
    fn revisions_without_events_count_as_covered() {
        let mut w = Window::default();
        // Revisions 1..=10 read, only 2 and 9 had events.
        let mut read = revs(2..=2);
        read.revisions.extend(revs(9..=9).revisions);
        read.complete_to = 10;
        w.extend(1, &read);
        let hit = w.hit(3, 10).unwrap();
        assert_eq!((revisions_of(&hit), hit.complete_to), (vec![9], 10));
    }

    #[test]
    fn a_read_that_does_not_follow_starts_a_new_window_and_old_revisions_leave() {
        let mut w = Window::default();
        w.extend(1, &revs(1..=3));
        w.extend(10, &revs(10..=12));
        assert!(w.hit(2, 3).is_none(), "a gap: the old stretch is gone");
        assert_eq!(revisions_of(&w.hit(10, 20).unwrap()), vec![10, 11, 12]);
        let total = WINDOW_REVISIONS as i64 + 10;
        w.extend(13, &revs(13..=12 + total));
        assert_eq!(w.revisions.len(), WINDOW_REVISIONS);
        assert!(w.hit(12, 12).is_none());
        assert_eq!(w.to, 12 + total);
        assert_eq!(w.from, 13 + total - WINDOW_REVISIONS as i64);
    }
}
