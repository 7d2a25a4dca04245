//! Reading the event log back: the events of a span of revisions, rebuilt from the
//! `events` index and the `history` rows it points at (watch catch-up and resume).

use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};

use crate::encoding::{
    decode_events, decode_revision, decode_version, encode_revision, history_key, Version,
};
use cairn_core::RequestError;

use crate::engine::Family;
use crate::error::MvccError;
use crate::range::version_at;
use crate::store::{revisions, MvccStore};
use crate::view::View;
use cairn_core::RevisionEvents;

impl MvccStore {
    /// The events of revisions `from..=to` (at most `max_revisions` revisions), from one
    /// consistent snapshot, each with its previous version when `with_prev_kv`.
    /// `from` below the compacted revision is `RequestError::Compacted` (watch semantics:
    /// starting exactly at the compacted revision is allowed).
    pub fn events(
        &self,
        from: i64,
        to: i64,
        max_revisions: usize,
        with_prev_kv: bool,
    ) -> Result<Vec<RevisionEvents>, MvccError> {
        self.with_snapshot(|view| events_in(view, from, to, max_revisions, with_prev_kv))
    }
}

fn events_in(
    view: &View<'_>,
    from: i64,
    to: i64,
    max_revisions: usize,
    with_prev_kv: bool,
) -> Result<Vec<RevisionEvents>, MvccError> {
    let (_, compacted) = revisions(view)?;
    if from < compacted {
        return Err(RequestError::Compacted.into());
    }
    let mut out = Vec::new();
    if to < from {
        return Ok(out);
    }
    let mut failure = None;
    view.scan(Family::Events, &encode_revision(from.max(0)), Some(&encode_revision(to + 1)), &mut |k, v| {
        let revision = decode_revision(k)?;
        let mut events = Vec::new();
        for e in decode_events(v)? {
            let prev_kv = if with_prev_kv { version_at(view, &e.key, revision - 1)? } else { None };
            let event = if e.deleted {
                let kv = KeyValue { key: e.key, mod_revision: revision, ..Default::default() };
                Event { r#type: EventType::Delete as i32, kv: Some(kv), prev_kv }
            } else {
                let row = view.get(Family::History, &history_key(&e.key, revision))?;
                let Some(Version::Put(mut kv)) =
                    row.map(|r| decode_version(&e.key, &r, view.sealer)).transpose()?
                else {
                    failure =
                        Some(MvccError::Corrupt(format!("event at {revision} without its history row")));
                    return Ok(false);
                };
                kv.key = e.key;
                Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv }
            };
            events.push(event);
        }
        out.push(RevisionEvents { revision, events });
        Ok(out.len() < max_revisions)
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
