//! Request validation done before a request is proposed, exactly as etcd's gRPC layer
//! (`v3rpc/key.go`) does it, so that bad input never reaches the log.

use std::collections::HashSet;

use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

use crate::error::RequestError;

pub fn check_range(r: &RangeRequest) -> Result<(), RequestError> {
    if r.key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    // etcd 3.5's check; it also keeps a txn from failing half-way through its ranges.
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(RequestError::InvalidSortOption);
    }
    Ok(())
}

pub fn check_put(r: &PutRequest) -> Result<(), RequestError> {
    if r.key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(RequestError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(RequestError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(r: &DeleteRangeRequest) -> Result<(), RequestError> {
    if r.key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` followed by its `checkIntervals` on both branches.
pub fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), RequestError> {
    check_txn_ops(r, max_txn_ops as i64)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

fn check_txn_ops(r: &TxnRequest, max_txn_ops: i64) -> Result<(), RequestError> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len()) as i64;
    if ops > max_txn_ops {
        return Err(RequestError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(RequestError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        check_request_op(op, max_txn_ops - ops)?;
    }
    Ok(())
}

fn check_request_op(op: &RequestOp, max_txn_ops: i64) -> Result<(), RequestError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(r)) => check_put(r),
        Some(Request::RequestDeleteRange(r)) => check_delete(r),
        Some(Request::RequestTxn(r)) => check_txn_ops(r, max_txn_ops),
        // etcd answers an empty op with "key not found".
        None => Err(RequestError::KeyNotFound),
    }
}

/// A deleted interval `[start, end)`; a point delete is `[key, key]`.
struct Deleted {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Deleted {
    fn contains(&self, k: &[u8]) -> bool {
        match &self.end {
            None => k == self.start.as_slice(),
            // etcd treats range_end as a plain string bound here, so "\0" (from-key) selects
            // nothing; that is its behaviour and ours.
            Some(end) => k >= self.start.as_slice() && k < end.as_slice(),
        }
    }
}

/// etcd's `checkIntervals`: no key may be put twice, or put and deleted, by the ops one
/// execution of a txn can run (the two branches of a nested txn exclude each other).
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Deleted>), RequestError> {
    let mut dels: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Deleted {
                start: d.key.clone(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.clone()),
            }),
            _ => None,
        })
        .collect();
    let mut puts = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.iter().any(|d| d.contains(k)) {
                return Err(RequestError::DuplicateKey);
            }
        }
        puts.extend(puts_then.iter().cloned());
        for k in puts_else {
            if (puts.contains(&k) && !puts_then.contains(&k)) || dels.iter().any(|d| d.contains(&k)) {
                return Err(RequestError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || dels.iter().any(|d| d.contains(&p.key)) {
            return Err(RequestError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

/// MemberAdd's and MemberUpdate's peer URLs: exactly one `http://host:port` (a Cairn member
/// serves peers on one address, without TLS); returns `host:port`.
pub fn peer_url(urls: &[String]) -> Result<String, RequestError> {
    let [url] = urls else { return Err(RequestError::BadMemberUrls) };
    let addr = url.strip_prefix("http://").ok_or(RequestError::BadMemberUrls)?;
    let addr = addr.strip_suffix('/').unwrap_or(addr);
    match addr.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty() && !host.contains(['/', '?', '#', '@']) && port.parse::<u16>().is_ok() =>
        {
            Ok(addr.to_string())
        }
        _ => Err(RequestError::BadMemberUrls),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_are_one_http_address() {
        let one = |u: &str| peer_url(&[u.to_string()]);
        assert_eq!(one("http://127.0.0.1:2380"), Ok("127.0.0.1:2380".into()));
        assert_eq!(one("http://node-4.example:33237/"), Ok("node-4.example:33237".into()));
        assert_eq!(one("http://[::1]:2380"), Ok("[::1]:2380".into()));
        for bad in [
            "127.0.0.1:2380",
            "https://127.0.0.1:2380",
            "http://127.0.0.1",
            "http://:2380",
            "http://h:99999",
            "http://h:1/x",
            "",
        ] {
            assert_eq!(one(bad), Err(RequestError::BadMemberUrls), "{bad:?}");
        }
        assert_eq!(peer_url(&[]), Err(RequestError::BadMemberUrls));
        let two = ["http://a:1".to_string(), "http://b:2".to_string()];
        assert_eq!(peer_url(&two), Err(RequestError::BadMemberUrls));
    }
    use cairn_proto::etcdserverpb::Compare;

    fn put(k: &str) -> RequestOp {
        RequestOp { request: Some(Request::RequestPut(PutRequest { key: k.into(), ..Default::default() })) }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest { compare: vec![], success, failure }
    }
    fn nested(t: TxnRequest) -> RequestOp {
        RequestOp { request: Some(Request::RequestTxn(t)) }
    }

    #[test]
    fn txn_checks_follow_etcd() {
        let cases: Vec<(&str, TxnRequest, Result<(), RequestError>)> = vec![
            ("two puts of one key", txn(vec![put("a"), put("a")], vec![]), Err(RequestError::DuplicateKey)),
            (
                "put inside a deleted range",
                txn(vec![del("a", "c"), put("b")], vec![]),
                Err(RequestError::DuplicateKey),
            ),
            (
                "put of a point-deleted key",
                txn(vec![del("a", ""), put("a")], vec![]),
                Err(RequestError::DuplicateKey),
            ),
            ("put beside a deleted range", txn(vec![del("a", "c"), put("c")], vec![]), Ok(())),
            ("same key in both branches", txn(vec![put("a")], vec![put("a")]), Ok(())),
            (
                "same key in both nested branches",
                txn(vec![nested(txn(vec![put("a")], vec![put("a")]))], vec![]),
                Ok(()),
            ),
            (
                "nested put against outer put",
                txn(vec![put("a"), nested(txn(vec![put("a")], vec![]))], vec![]),
                Err(RequestError::DuplicateKey),
            ),
            (
                "outer put against nested delete",
                txn(vec![put("b"), nested(txn(vec![del("a", "z")], vec![]))], vec![]),
                Err(RequestError::DuplicateKey),
            ),
            ("overlapping deletes", txn(vec![del("a", "c"), del("b", "")], vec![]), Ok(())),
            ("empty op", txn(vec![RequestOp { request: None }], vec![]), Err(RequestError::KeyNotFound)),
            ("empty key in a put", txn(vec![put("")], vec![]), Err(RequestError::EmptyKey)),
        ];
        for (name, t, want) in cases {
            assert_eq!(check_txn(&t, 128), want, "{name}");
        }
    }

    #[test]
    fn txn_op_limit_counts_the_largest_list() {
        let ops: Vec<RequestOp> = (0..128).map(|i| put(&format!("k{i}"))).collect();
        assert_eq!(check_txn(&txn(ops.clone(), ops.clone()), 128), Ok(()));
        let mut more = ops.clone();
        more.push(put("extra"));
        assert_eq!(check_txn(&txn(more, vec![]), 128), Err(RequestError::TooManyOps));
        let compares = vec![Compare { key: b"k".to_vec(), ..Default::default() }; 129];
        assert_eq!(
            check_txn(&TxnRequest { compare: compares, success: vec![], failure: vec![] }, 128),
            Err(RequestError::TooManyOps)
        );
        let empty_compare =
            TxnRequest { compare: vec![Compare::default()], success: vec![], failure: vec![] };
        assert_eq!(check_txn(&empty_compare, 128), Err(RequestError::EmptyKey));
    }

    #[test]
    fn put_checks_follow_etcd() {
        assert_eq!(check_put(&PutRequest::default()), Err(RequestError::EmptyKey));
        let p =
            PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ignore_value: true, ..Default::default() };
        assert_eq!(check_put(&p), Err(RequestError::ValueProvided));
        let p = PutRequest { key: b"k".to_vec(), lease: 5, ignore_lease: true, ..Default::default() };
        assert_eq!(check_put(&p), Err(RequestError::LeaseProvided));
        assert_eq!(check_range(&RangeRequest::default()), Err(RequestError::EmptyKey));
        let bad_sort = RangeRequest { key: b"k".to_vec(), sort_order: 7, ..Default::default() };
        assert_eq!(check_range(&bad_sort), Err(RequestError::InvalidSortOption));
        let bad_target = RangeRequest { key: b"k".to_vec(), sort_target: -1, ..Default::default() };
        assert_eq!(check_range(&bad_target), Err(RequestError::InvalidSortOption));
        assert_eq!(check_delete(&DeleteRangeRequest::default()), Err(RequestError::EmptyKey));
    }
}
