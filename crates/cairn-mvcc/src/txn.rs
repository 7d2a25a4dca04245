//! Txn compares and branch selection. etcd decides the whole path of a txn (including the
//! branches of nested txns) against the state before the txn writes anything; so do we.

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{Compare, RequestOp, TxnRequest};
use cairn_proto::mvccpb::KeyValue;

use crate::error::MvccError;
use crate::range::current_kvs;
use crate::view::View;
use cairn_core::KeyRange;

/// The branch a txn takes and, in order, the paths of the nested txns of that branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnPath {
    pub succeeded: bool,
    pub nested: Vec<TxnPath>,
}

impl TxnPath {
    pub fn decide(view: &View<'_>, txn: &TxnRequest, current: i64) -> Result<TxnPath, MvccError> {
        let mut succeeded = true;
        for c in &txn.compare {
            if !compare(view, c, current)? {
                succeeded = false;
                break;
            }
        }
        let mut nested = Vec::new();
        for op in branch(txn, succeeded) {
            if let Some(Request::RequestTxn(inner)) = &op.request {
                nested.push(TxnPath::decide(view, inner, current)?);
            }
        }
        Ok(TxnPath { succeeded, nested })
    }
}

pub(crate) fn branch(txn: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &txn.success
    } else {
        &txn.failure
    }
}

/// One compare, as etcd's `applyCompare`: every key of the range must satisfy it; an empty
/// range compares against a zero `KeyValue`, except that a VALUE compare then fails.
///
/// Unknown enum values behave as in etcd: an unknown target compares as equal, an unknown
/// result holds.
fn compare(view: &View<'_>, c: &Compare, current: i64) -> Result<bool, MvccError> {
    let target = CompareTarget::try_from(c.target).ok();
    let result = CompareResult::try_from(c.result).ok();
    let kvs = current_kvs(view, KeyRange::new(&c.key, &c.range_end), current)?;
    if kvs.is_empty() {
        return Ok(
            target != Some(CompareTarget::Value) && compare_kv(c, target, result, &KeyValue::default())
        );
    }
    Ok(kvs.iter().all(|kv| compare_kv(c, target, result, kv)))
}

fn compare_kv(
    c: &Compare,
    target: Option<CompareTarget>,
    result: Option<CompareResult>,
    kv: &KeyValue,
) -> bool {
    let int = |want: Option<i64>, have: i64| have.cmp(&want.unwrap_or(0));
    let Some(target) = target else { return true };
    let ord = match target {
        CompareTarget::Value => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        CompareTarget::Create => int(
            match c.target_union {
                Some(TargetUnion::CreateRevision(r)) => Some(r),
                _ => None,
            },
            kv.create_revision,
        ),
        CompareTarget::Mod => int(
            match c.target_union {
                Some(TargetUnion::ModRevision(r)) => Some(r),
                _ => None,
            },
            kv.mod_revision,
        ),
        CompareTarget::Version => int(
            match c.target_union {
                Some(TargetUnion::Version(r)) => Some(r),
                _ => None,
            },
            kv.version,
        ),
        CompareTarget::Lease => int(
            match c.target_union {
                Some(TargetUnion::Lease(r)) => Some(r),
                _ => None,
            },
            kv.lease,
        ),
    };
    match result {
        Some(CompareResult::Equal) => ord.is_eq(),
        Some(CompareResult::NotEqual) => ord.is_ne(),
        Some(CompareResult::Greater) => ord.is_gt(),
        Some(CompareResult::Less) => ord.is_lt(),
        None => true,
    }
}
