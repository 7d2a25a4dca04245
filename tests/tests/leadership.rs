//! Moving leadership: etcd's MoveLeader (served by the leader only, to a voter), and a
//! leader that is stopped gracefully handing over first (Cairn).

mod common;

use anyhow::{ensure, Result};
use cairn_tests::{eventually, Code};
use common::*;

fn refused<T: std::fmt::Debug>(
    got: Result<T, cairn_tests::etcd_client::Error>,
    code: Code,
    text: &str,
) -> Result<()> {
    let err = match got {
        Ok(v) => anyhow::bail!("succeeded: {v:?}"),
        Err(e) => e,
    };
    let (got_code, message) =
        cairn_tests::grpc_code(&err).ok_or_else(|| anyhow::anyhow!("not a gRPC error: {err}"))?;
    ensure!(got_code == code && message == text, "{got_code:?} {message:?}, want {code:?} {text:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn move_leader_moves_it_and_refuses_as_etcd_does() {
    let cluster = start_nodes(3).await;
    let leader = cluster.leader().await.unwrap();
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let follower_id = cluster.member_id(follower).await.unwrap();

    let mut on_follower = cluster.client(follower).await.unwrap();
    refused(on_follower.move_leader(follower_id).await, Code::FailedPrecondition, "etcdserver: not leader")
        .unwrap();
    let mut on_leader = cluster.client(leader).await.unwrap();
    refused(on_leader.move_leader(42).await, Code::FailedPrecondition, "etcdserver: bad leader transferee")
        .unwrap();

    on_leader.move_leader(follower_id).await.unwrap();
    eventually(CONVERGE, "the follower leads", || async {
        let status = cluster.status(follower).await?;
        ensure!(status.leader() == follower_id, "leader is {:x}", status.leader());
        Ok(())
    })
    .await
    .unwrap();
    let mut c = cluster.client(leader).await.unwrap();
    c.put("moved", "yes", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_stopped_gracefully_hands_over_first() {
    let cluster = start_nodes(3).await;
    if !cluster.target().is_cairn() {
        eprintln!("skipped: checks Cairn's own log line");
        return;
    }
    let leader = cluster.leader().await.unwrap();
    let status = cluster.terminate(leader).await.unwrap();
    assert!(status.success(), "graceful stop: {status}");
    let log = cluster.log_tail(leader, 40);
    assert!(log.contains("handed leadership over before stopping"), "no hand-off in the log:\n{log}");
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut c = cluster.client_with(&others, cairn_tests::default_connect_options()).await.unwrap();
    c.put("after-handoff", "ok", None).await.unwrap();
}
