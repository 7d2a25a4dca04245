//! `ClusterBackend` and `MaintenanceBackend`: who this member is, and what it reports.

use cairn_core::Backend;

use crate::check::*;

/// `status()` names a member (non-zero id) that `members()` lists.
pub(crate) async fn status_and_members<B: Backend>(b: &B, _base: &str) -> Outcome {
    let status = b.status();
    ensure!(status.member_id != 0, "status().member_id is 0: {status:?}");
    let members = b.members().await.map_err(|e| failed("members()", &e))?;
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    ensure!(
        ids.contains(&status.member_id),
        "members() does not list this member {}: it lists {ids:?}",
        status.member_id
    );
    Ok(())
}

/// `db_size()` is a size: never negative.
pub(crate) async fn db_size<B: Backend>(b: &B, _base: &str) -> Outcome {
    let size = b.db_size();
    ensure!(size >= 0, "db_size() is negative: {size}");
    Ok(())
}

/// `hash_kv(r)` is fixed once `r` is written: a later write changes the hash at the new
/// revision, not at `r`; 0 means the current revision; a future revision is refused.
pub(crate) async fn hash_kv<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    let first = put_value(b, &sp.key("a"), "1").await?;
    let at_first = b.hash_kv(first).await.map_err(|e| failed("hash_kv(first)", &e))?;
    ensure_eq!(at_first.revision, first, "hash_kv(first).revision");
    let current = b.hash_kv(0).await.map_err(|e| failed("hash_kv(0)", &e))?;
    ensure_eq!(current, at_first, "hash_kv(0) right after the write");
    let second = put_value(b, &sp.key("a"), "2").await?;
    let again = b.hash_kv(first).await.map_err(|e| failed("hash_kv(first) again", &e))?;
    ensure_eq!(again, at_first, "hash_kv(first) after a later write");
    let at_second = b.hash_kv(second).await.map_err(|e| failed("hash_kv(second)", &e))?;
    ensure!(at_second.hash != at_first.hash, "a write did not change the hash: {at_second:?}");
    match b.hash_kv(second + 1000).await {
        Err(cairn_core::BackendError::Request(cairn_core::RequestError::FutureRevision)) => {}
        other => return Err(format!("hash_kv(future): expected FutureRevision, got {other:?}")),
    }
    Ok(())
}
