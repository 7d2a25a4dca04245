//! etcd's space quota (`--quota-backend-bytes`), checked where etcd checks it: in front of
//! the writes that add data (Put, a Txn with a Put, a lease grant). While a NOSPACE alarm is
//! raised anywhere in the cluster, or when a write would take this member's store past the
//! quota — which raises the alarm for this member — they are refused with "etcdserver: mvcc:
//! database space exceeded". Reads, deletes and compaction go on, so that space can be
//! freed; then Defragment and disarm the alarm (etcd's procedure).

use cairn_core::{Alarm, RequestError};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{AlarmType, RequestOp, TxnRequest};
use tonic::Status;

use crate::errors::request_status;
use crate::Backend;

/// etcd's default quota (2 GiB).
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

/// Refuse a write that adds `cost` bytes if space is exhausted (see the module docs).
pub(crate) async fn check<B: Backend>(backend: &B, quota: u64, cost: u64) -> Result<(), Status> {
    if raised(backend, AlarmType::Nospace) {
        return Err(request_status(RequestError::NoSpace));
    }
    if backend.space_used().saturating_add(cost) <= quota {
        return Ok(());
    }
    let alarm = Alarm { member_id: backend.status().member_id, alarm: AlarmType::Nospace as i32 };
    if let Err(e) = backend.set_alarm(alarm, true).await {
        tracing::warn!(error = %e, "could not raise the NOSPACE alarm");
    }
    Err(request_status(RequestError::NoSpace))
}

/// Refuse a write while a CORRUPT alarm is raised anywhere in the cluster: some member's
/// data diverged, and nothing more is written until an operator has looked (etcd's corrupt
/// applier; reads go on, as in etcd).
pub(crate) fn check_not_corrupt<B: Backend>(backend: &B) -> Result<(), Status> {
    if raised(backend, AlarmType::Corrupt) {
        return Err(request_status(RequestError::Corrupt));
    }
    Ok(())
}

/// Whether an alarm of type `alarm` is raised for any member.
fn raised<B: Backend>(backend: &B, alarm: AlarmType) -> bool {
    backend.alarms().iter().any(|a| a.alarm == alarm as i32)
}

/// The bytes a txn's puts (in either branch, nested txns included) would add.
pub(crate) fn txn_cost(txn: &TxnRequest) -> u64 {
    fn ops(ops: &[RequestOp]) -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(Op::RequestPut(p)) => put_cost(&p.key, &p.value),
                Some(Op::RequestTxn(t)) => txn_cost(t),
                _ => 0,
            })
            .sum()
    }
    ops(&txn.success) + ops(&txn.failure)
}

/// A put's bytes, with etcd's per-key overhead.
pub(crate) fn put_cost(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64 + 64
}
