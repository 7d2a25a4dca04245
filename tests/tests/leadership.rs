//! Moving leadership: etcd's MoveLeader (served by the leader only, to a voter), and a
//! leader that is stopped gracefully handing over first (Cairn).

mod common;

use anyhow::ensure;
use cairn_tests::{eventually, Code};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn move_leader_moves_it_and_refuses_as_etcd_does() {
    let cluster = start_nodes(3).await;
    let leader = cluster.leader().await.unwrap();
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let follower_id = cluster.member_id(follower).await.unwrap();

    let mut on_follower = cluster.client(follower).await.unwrap();
    let not_leader = "etcdserver: not leader";
    expect_grpc_err(
        on_follower.move_leader(follower_id).await,
        Code::FailedPrecondition,
        not_leader,
        "on a follower",
    )
    .unwrap();
    let mut on_leader = cluster.client(leader).await.unwrap();
    let bad = "etcdserver: bad leader transferee";
    expect_grpc_err(on_leader.move_leader(42).await, Code::FailedPrecondition, bad, "to nobody").unwrap();

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
