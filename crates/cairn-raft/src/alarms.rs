//! Alarms (etcd's NOSPACE and CORRUPT) in the replicated state: a row `alarm/<member id><type>`
//! of the state machine's metadata per raised alarm, so every member knows them and they
//! travel in snapshots; mirrored in memory, since every write checks them.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use cairn_mvcc::{ApplyBatch, MvccError, MvccStore};

use crate::pb::AlarmChange;

const PREFIX: &[u8] = b"alarm/";
const FORMAT_V1: u8 = 1;

/// The raised alarms: (member id, etcd AlarmType number).
pub type Raised = Arc<RwLock<BTreeSet<(u64, i32)>>>;

fn key(member_id: u64, alarm: i32) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(&member_id.to_be_bytes());
    k.extend_from_slice(&alarm.to_be_bytes());
    k
}

/// Record `change` in the batch being applied.
pub(crate) fn apply(batch: &mut ApplyBatch<'_>, change: &AlarmChange) {
    let k = key(change.member_id, change.alarm);
    if change.activate {
        batch.put_meta(&k, &[FORMAT_V1]);
    } else {
        batch.delete_meta(&k);
    }
}

/// The alarms the store holds.
pub(crate) fn load(store: &MvccStore) -> Result<BTreeSet<(u64, i32)>, MvccError> {
    store
        .meta_with_prefix(PREFIX)?
        .into_iter()
        .map(|(k, _)| {
            let rest = &k[PREFIX.len()..];
            match (rest.get(..8), rest.get(8..12)) {
                (Some(id), Some(alarm)) if rest.len() == 12 => Ok((
                    u64::from_be_bytes(id.try_into().expect("8 bytes")),
                    i32::from_be_bytes(alarm.try_into().expect("4 bytes")),
                )),
                _ => Err(MvccError::Corrupt(format!("alarm row {k:x?}"))),
            }
        })
        .collect()
}

/// Refresh the in-memory mirror from the store.
pub(crate) fn reload(store: &MvccStore, raised: &Raised) -> Result<(), MvccError> {
    let now = load(store)?;
    *raised.write().unwrap_or_else(|e| e.into_inner()) = now;
    Ok(())
}

impl crate::RaftNode {
    /// The raised alarms, as this member's state holds them. Cheap: from memory.
    pub fn alarms(&self) -> Vec<(u64, i32)> {
        self.alarms.read().unwrap_or_else(|e| e.into_inner()).iter().copied().collect()
    }

    /// Raise or clear an alarm through the cluster. Only once every member has published
    /// its attributes (a member before 0.2 could not apply the command): until then the
    /// change is refused as unavailable.
    pub async fn set_alarm(
        &self,
        member_id: u64,
        alarm: i32,
        activate: bool,
    ) -> Result<(), cairn_core::BackendError> {
        let published = self.published_ids().await?;
        if self.membership().nodes().any(|(id, _)| !published.contains(id)) {
            return Err(cairn_core::BackendError::NoLeader);
        }
        let change = AlarmChange { member_id, alarm, activate };
        let change = &change;
        self.on_leader(
            crate::route::Repeat::Idempotent,
            |_| crate::leader::set_alarm(&self.raft, *change),
            |addr, remaining| async move {
                let mut client = self.channels.client(&addr).map_err(|_| crate::PeerError::NotDelivered)?;
                let mut request = tonic::Request::new(*change);
                request.set_timeout(remaining);
                client.set_alarm(request).await.map_err(crate::PeerError::from)?;
                Ok(())
            },
        )
        .await?;
        tracing::warn!(member_id = format!("{member_id:x}"), alarm, activate, "alarm changed");
        Ok(())
    }
}
