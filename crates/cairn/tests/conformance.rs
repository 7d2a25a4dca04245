//! The backend conformance suite (`cairn-conformance`) on the Raft-replicated store: one
//! member alone, and the leader and a follower of a three-member cluster (so forwarded
//! writes and read barriers go through the peer protocol).
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::time::{Duration, Instant};

use cairn::core::ClusterBackend;

/// A free port on `ip`, below Linux's ephemeral range (32768+), so that no member's
/// outgoing connection takes it between this check and the member binding it.
fn free_port(ip: &str) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() % 1000) as u16 * 10;
    loop {
        let port = 20_000 + (seed + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

fn report(where_: &str, failures: Vec<cairn_conformance::Failure>) {
    let text: Vec<String> = failures.iter().map(|f| format!("{}: {}", f.test, f.detail)).collect();
    assert!(text.is_empty(), "{where_}: {} conformance failures:\n{}", text.len(), text.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let node = cairn::Node::start(cairn::Config {
        data_dir: dir.path().join("data"),
        client_addr: "127.0.0.1:0".into(),
        peer_addr: format!("127.0.0.1:{}", free_port("127.0.0.1")),
        ..Default::default()
    })
    .await
    .unwrap();
    wait_for_leader(&[&node]).await;
    report("one member", cairn_conformance::run_all(node.raft_backend().unwrap(), "conformance/one/").await);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_conform_on_leader_and_follower() {
    let dir = tempfile::tempdir().unwrap();
    // Each member on its own loopback address, as in the cluster harness.
    let peers: Vec<String> = (1..=3)
        .map(|i| {
            let ip = format!("127.0.0.{i}");
            format!("{ip}:{}", free_port(&ip))
        })
        .collect();
    let initial: Vec<String> = peers.iter().enumerate().map(|(i, p)| format!("n{}={p}", i + 1)).collect();
    let mut nodes = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        let config = cairn::Config {
            name: format!("n{}", i + 1),
            data_dir: dir.path().join(format!("n{}", i + 1)),
            client_addr: format!("{}:0", peer.split(':').next().unwrap()),
            peer_addr: peer.clone(),
            initial_cluster: Some(initial.join(",")),
            ..Default::default()
        };
        nodes.push(cairn::Node::start(config).await.unwrap());
    }
    let all: Vec<&cairn::Node> = nodes.iter().collect();
    let leader_id = wait_for_leader(&all).await;
    let leader = nodes.iter().find(|n| n.member_id() == leader_id).unwrap();
    let follower = nodes.iter().find(|n| n.member_id() != leader_id).unwrap();
    report(
        "follower of three",
        cairn_conformance::run_all(follower.raft_backend().unwrap(), "conformance/follower/").await,
    );
    report(
        "leader of three",
        cairn_conformance::run_all(leader.raft_backend().unwrap(), "conformance/leader/").await,
    );
    for node in &nodes {
        node.stop().await;
    }
}

/// Wait until every node agrees on a leader; returns its member id.
async fn wait_for_leader(nodes: &[&cairn::Node]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leaders: Vec<u64> = nodes.iter().map(|n| n.raft_backend().unwrap().status().leader).collect();
        if leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]) {
            return leaders[0];
        }
        assert!(Instant::now() < deadline, "no agreed leader: {leaders:x?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
