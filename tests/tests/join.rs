//! Growing a running cluster with `cairn serve --join` (Cairn only; etcd's own flow is
//! `member add` + `--initial-cluster-state existing`): a joining node is added as a learner
//! through any member, catches up, and is promoted to voter by the leader's autopilot once
//! caught up; `--auto-promote=false` keeps it a learner; joining again is a no-op; a node
//! that clashes with a member is refused with a clear error.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cairn_tests::{eventually, Cluster, ClusterOptions, Target};
use common::*;

/// The member list as node `asked` reports it: (name, is_learner), by name.
async fn members(cluster: &Cluster, asked: usize) -> Result<Vec<(String, bool)>> {
    let mut c = cluster.client(asked).await?;
    let list = c.member_list().await.with_context(|| format!("member list from node {asked}"))?;
    let mut out: Vec<(String, bool)> =
        list.members().iter().map(|m| (m.name().to_string(), m.is_learner())).collect();
    out.sort();
    Ok(out)
}

async fn wait_members(cluster: &Cluster, asked: usize, want: &[(&str, bool)]) -> Result<()> {
    let want: Vec<(String, bool)> = want.iter().map(|(n, l)| (n.to_string(), *l)).collect();
    eventually(CONVERGE, &format!("node {asked} lists {want:?}"), || async {
        let got = members(cluster, asked).await?;
        ensure!(got == want, "members {got:?}");
        Ok(())
    })
    .await
}

fn cairn_only() -> Option<Target> {
    let target = Target::from_env();
    if !target.is_cairn() {
        eprintln!("skipped: --join is Cairn's (etcd joins with member add)");
        return None;
    }
    Some(target)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_grows_by_join_while_a_client_writes() {
    let Some(target) = cairn_only() else { return };
    let opts = ClusterOptions {
        nodes: 4,
        founders: Some(1),
        // Promote after 2 s caught up (default 10 s), to keep the test short.
        extra_args: vec!["--promote-after".into(), "2000".into()],
        ..Default::default()
    };
    let cluster = Cluster::start(target, opts).await.unwrap();
    let writers = Writers::start(&cluster, &[0], "join/", 4).await.unwrap();
    writers.wait_for(50, CONVERGE).await.unwrap();

    // n2 joins through the founder, n3 through n2 first (the harness lists the most recent
    // node first): a follower passes the request on to the leader.
    cluster.join(1).unwrap();
    cluster.wait_node_ready(1, CONVERGE).await.unwrap();
    wait_members(&cluster, 0, &[("n1", false), ("n2", false)]).await.unwrap();
    cluster.join(2).unwrap();
    cluster.wait_node_ready(2, CONVERGE).await.unwrap();
    wait_members(&cluster, 1, &[("n1", false), ("n2", false), ("n3", false)]).await.unwrap();

    // A learner that stays one. It serves only Status and serializable reads, as in etcd.
    cluster.set_node_args(3, vec!["--auto-promote=false".into()]);
    cluster.join(3).unwrap();
    wait_members(&cluster, 0, &[("n1", false), ("n2", false), ("n3", false), ("n4", true)]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = cluster.status(3).await.unwrap();
    ensure_learner(&status).unwrap();
    check_learner_refuses(&cluster, 3).await.unwrap();
    assert_eq!(
        members(&cluster, 2).await.unwrap(),
        vec![("n1".into(), false), ("n2".into(), false), ("n3".into(), false), ("n4".into(), true)],
        "n4 asked to stay a learner"
    );

    // Joining again (a restart with the same --join and data) changes nothing.
    cluster.restart(1).unwrap();
    cluster.wait_node_ready(1, CONVERGE).await.unwrap();
    assert_eq!(members(&cluster, 1).await.unwrap().len(), 4);

    // The voters count: with the founder gone, n2 and n3 are a quorum of three.
    writers.wait_for(writers.acked_count() + 50, CONVERGE).await.unwrap();
    let acked = writers.stop().await.unwrap();
    cluster.kill(0).unwrap();
    let mut c = cluster.client_with(&[1, 2], cairn_tests::default_connect_options()).await.unwrap();
    let deadline = std::time::Instant::now() + CONVERGE;
    assert!(put_retrying(&mut c, "join/after-founder", "ok", deadline, None).await, "no quorum without n1");
    for i in 1..4 {
        wait_caught_up(&cluster, i, "join/", &acked, CONVERGE).await.unwrap();
    }
}

/// A learner answers serializable reads (from its own, caught-up state) and refuses the
/// rest with etcd's error.
async fn check_learner_refuses(cluster: &Cluster, i: usize) -> Result<()> {
    use cairn_tests::etcd_client::{GetOptions, LeaseGrantOptions};
    let mut c = cluster.client(i).await?;
    eventually(CONVERGE, "the learner serves serializable reads", || async {
        let mut c = cluster.client(i).await?;
        let got = c.get("join/w0/000000", Some(GetOptions::new().with_serializable())).await?;
        ensure!(got.kvs().len() == 1, "serializable get on the learner: {:?}", got.kvs());
        Ok(())
    })
    .await?;
    let refused = "etcdserver: rpc not supported for learner";
    let linearizable = c.get("join/w0/000000", None).await;
    let put = c.put("join/on-learner", "x", None).await;
    let lease = c.lease_grant(10, None::<LeaseGrantOptions>).await;
    let members = c.member_list().await;
    for (what, err) in [
        ("linearizable get", linearizable.err()),
        ("put", put.err()),
        ("lease grant", lease.err()),
        ("member list", members.err()),
    ] {
        let err = err.with_context(|| format!("{what} on a learner succeeded"))?;
        let (code, message) = cairn_tests::grpc_code(&err).with_context(|| format!("{what}: {err}"))?;
        ensure!(
            code == cairn_tests::Code::Unavailable && message == refused,
            "{what} on a learner: {code:?} {message:?}"
        );
    }
    Ok(())
}

fn ensure_learner(status: &cairn_tests::etcd_client::StatusResponse) -> Result<()> {
    ensure!(status.is_learner(), "n4 reports is_learner = false");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clashing_node_is_refused() {
    let Some(target) = cairn_only() else { return };
    let cluster = Cluster::start(target.clone(), ClusterOptions::nodes(1)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ip = std::net::Ipv4Addr::new(127, 0, 0, 9);
    let port = || cairn_tests::free_port(ip).unwrap();
    let run = |name: &str, peer: String| {
        std::process::Command::new(target.bin())
            .args(["serve", "--name", name, "--data-dir"])
            .arg(dir.path().join(name))
            .args(["--client-addr", &format!("{ip}:{}", port()), "--peer-addr", &peer])
            .args(["--join", &cluster.advertised_peer_addr(0).to_string()])
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    // The founder's name with another address.
    let out = run(cluster.node_name(0), format!("{ip}:{}", port()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("member ID already exist"), "stderr: {stderr}");
    // Another name with the founder's peer address.
    let out = run("other", cluster.advertised_peer_addr(0).to_string());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // It cannot even listen there (the founder does): exit 5, before asking anyone.
    assert_eq!(out.status.code(), Some(5), "stderr: {stderr}");
    assert_eq!(members(&cluster, 0).await.unwrap(), vec![("n1".into(), false)], "nothing was added");
}
