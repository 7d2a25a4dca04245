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
