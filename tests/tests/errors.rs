//! Exact gRPC codes and messages of the etcd v3 API's errors, checked through every node.
//! The texts are etcd 3.4's (`etcdserver/api/v3rpc/rpctypes`), verified against Debian's etcd.

mod common;

use anyhow::{ensure, Result};
use cairn_tests::etcd_client::{DeleteOptions, GetOptions, Txn, TxnOp};
use cairn_tests::{grpc_code, Cluster, Code};
use common::*;

const KEY_NOT_PROVIDED: &str = "etcdserver: key is not provided";
const TOO_LARGE: &str = "etcdserver: request is too large";
const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// Requests rejected before they reach the store: empty keys, oversized requests, too many txn
/// ops, duplicate keys in a txn.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_requests() {
    let cluster = start_nodes(3).await;
    invalid_requests_body(&cluster).await.unwrap();
}

async fn invalid_requests_body(cluster: &Cluster) -> Result<()> {
    for i in 0..cluster.len() {
        let mut c = cluster.client(i).await?;
        let node = |what: &str| format!("node {i}: {what}");

        // Empty key.
        let res = c.put("", "v", None).await;
        expect_grpc_err(res, Code::InvalidArgument, KEY_NOT_PROVIDED, &node("put with an empty key"))?;
        let res = c.get("", None).await;
        expect_grpc_err(res, Code::InvalidArgument, KEY_NOT_PROVIDED, &node("get with an empty key"))?;
        let res = c.delete("", None).await;
        expect_grpc_err(res, Code::InvalidArgument, KEY_NOT_PROVIDED, &node("delete with an empty key"))?;
        let res = c.txn(Txn::new().and_then([TxnOp::put("", "v", None)])).await;
        expect_grpc_err(res, Code::InvalidArgument, KEY_NOT_PROVIDED, &node("txn put with an empty key"))?;

        // Request size: etcd's --max-request-bytes defaults to 1.5 MiB, checked by etcd itself;
        // its gRPC server accepts messages up to max-request-bytes + 512 KiB = 2 MiB. So a
        // 1.75 MiB value is "request is too large" (InvalidArgument), while a 2 MiB value is
        // refused by the gRPC layer with ResourceExhausted before etcd sees it.
        let value = vec![b'x'; 1_835_008]; // 1.75 MiB
        let res = c.put("errors/large", value, None).await;
        expect_grpc_err(res, Code::InvalidArgument, TOO_LARGE, &node("put of a 1.75 MiB value"))?;
        let value = vec![b'x'; 2 * 1024 * 1024];
        match c.put("errors/large", value, None).await {
            Ok(r) => anyhow::bail!("{}: a 2 MiB put succeeded: {r:?}", node("")),
            Err(e) => {
                let got = grpc_code(&e);
                ensure!(
                    matches!(&got, Some((Code::ResourceExhausted, m)) if m.contains("received message larger than max")),
                    "node {i}: a 2 MiB put: expected ResourceExhausted \"grpc: received message larger than max (...)\", got {got:?} ({e})"
                );
            }
        }
        // Just under the limit is fine.
        let value = vec![b'x'; 1024 * 1024 + 512 * 1024 - 1024];
        c.put("errors/large", value, None).await?;

        // Too many operations in a txn (default --max-txn-ops 128), in either branch.
        let ops = |n: usize| -> Vec<TxnOp> {
            (0..n).map(|j| TxnOp::put(format!("errors/ops/{j}"), "v", None)).collect()
        };
        let res = c.txn(Txn::new().and_then(ops(129))).await;
        expect_grpc_err(res, Code::InvalidArgument, TOO_MANY_OPS, &node("txn with 129 success ops"))?;
        let res = c.txn(Txn::new().or_else(ops(129))).await;
        expect_grpc_err(res, Code::InvalidArgument, TOO_MANY_OPS, &node("txn with 129 failure ops"))?;
        ensure!(c.txn(Txn::new().and_then(ops(128))).await?.succeeded(), "128 ops are fine");

        // Duplicate keys in one branch.
        let res = c
            .txn(
                Txn::new()
                    .and_then([TxnOp::put("errors/dup", "1", None), TxnOp::put("errors/dup", "2", None)]),
            )
            .await;
        expect_grpc_err(res, Code::InvalidArgument, DUPLICATE_KEY, &node("two puts of one key in a txn"))?;
        // A put and a delete range covering it, in one branch.
        let res = c
            .txn(Txn::new().and_then([
                TxnOp::put("errors/dup/a", "1", None),
                TxnOp::delete("errors/dup/", Some(DeleteOptions::new().with_prefix())),
            ]))
            .await;
        expect_grpc_err(res, Code::InvalidArgument, DUPLICATE_KEY, &node("put + delete over it in a txn"))?;
        // ...but the same key in both branches, or deleted twice, is fine.
        let resp = c
            .txn(Txn::new().and_then([TxnOp::put("errors/dup", "1", None)]).or_else([TxnOp::put(
                "errors/dup",
                "2",
                None,
            )]))
            .await?;
        ensure!(resp.succeeded(), "same key in both branches");
        c.txn(Txn::new().and_then([TxnOp::delete("errors/dup", None), TxnOp::delete("errors/dup", None)]))
            .await?;
        // Two gets of one key are fine too.
        c.txn(Txn::new().and_then([TxnOp::get("errors/dup", None), TxnOp::get("errors/dup", None)])).await?;
    }
    Ok(())
}

/// Revision errors: future revisions (range and compact) and compacted revisions.
#[tokio::test(flavor = "multi_thread")]
async fn revision_errors() {
    let cluster = start_nodes(3).await;
    revision_errors_body(&cluster).await.unwrap();
}

async fn revision_errors_body(cluster: &Cluster) -> Result<()> {
    for i in 0..cluster.len() {
        let mut c = cluster.client(i).await?;
        let node = |what: &str| format!("node {i}: {what}");
        let key = format!("errors/rev/n{i}");
        let r1 = header_rev(c.put(key.as_str(), "1", None).await?.header())?;
        let r2 = header_rev(c.put(key.as_str(), "2", None).await?.header())?;
        header_rev(c.put(key.as_str(), "3", None).await?.header())?;
        let now = current_rev(&mut c).await?;

        // Reading the current revision is fine; one past it is the future.
        c.get(key.as_str(), Some(GetOptions::new().with_revision(now))).await?;
        let res = c.get(key.as_str(), Some(GetOptions::new().with_revision(now + 1))).await;
        expect_grpc_err(res, Code::OutOfRange, FUTURE_REV, &node("get at current + 1"))?;
        let res = c.get(key.as_str(), Some(GetOptions::new().with_revision(now + 1000))).await;
        expect_grpc_err(res, Code::OutOfRange, FUTURE_REV, &node("get at current + 1000"))?;
        // Same inside a txn.
        let res = c
            .txn(
                Txn::new()
                    .and_then([TxnOp::get(key.as_str(), Some(GetOptions::new().with_revision(now + 1)))]),
            )
            .await;
        expect_grpc_err(res, Code::OutOfRange, FUTURE_REV, &node("txn get at current + 1"))?;

        // Compacting the future.
        let res = c.compact(now + 1, None).await;
        expect_grpc_err(res, Code::OutOfRange, FUTURE_REV, &node("compact at current + 1"))?;

        // Compact, then the same revision again, then an older one: compacted.
        c.compact(r2, None).await?;
        let res = c.compact(r2, None).await;
        expect_grpc_err(res, Code::OutOfRange, COMPACTED, &node("compact twice at one revision"))?;
        let res = c.compact(r1, None).await;
        expect_grpc_err(res, Code::OutOfRange, COMPACTED, &node("compact below the compacted revision"))?;
        let res = c.get(key.as_str(), Some(GetOptions::new().with_revision(r1))).await;
        expect_grpc_err(res, Code::OutOfRange, COMPACTED, &node("get below the compacted revision"))?;
        let res = c
            .txn(Txn::new().and_then([TxnOp::get(key.as_str(), Some(GetOptions::new().with_revision(r1)))]))
            .await;
        expect_grpc_err(res, Code::OutOfRange, COMPACTED, &node("txn get below the compacted revision"))?;
    }
    Ok(())
}
