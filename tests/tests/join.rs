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
    let unavailable = cairn_tests::Code::Unavailable;
    expect_grpc_err(linearizable, unavailable, refused, "linearizable get on a learner")?;
    expect_grpc_err(put, unavailable, refused, "put on a learner")?;
    expect_grpc_err(lease, unavailable, refused, "lease grant on a learner")?;
    expect_grpc_err(members, unavailable, refused, "member list on a learner")?;
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

/// The id of the member named `name`, as node `asked` lists it.
async fn member_id_of(cluster: &Cluster, asked: usize, name: &str) -> Result<u64> {
    let mut c = cluster.client(asked).await?;
    let list = c.member_list().await?;
    list.members()
        .iter()
        .find(|m| m.name() == name)
        .map(|m| m.id())
        .with_context(|| format!("no member {name}"))
}

/// Waits until node `i`'s process exits by itself, and returns its exit code.
async fn wait_exit(cluster: &Cluster, i: usize) -> Result<Option<i32>> {
    eventually(CONVERGE, &format!("node {i} to exit"), || async {
        let exits = cluster.unexpected_exits();
        let (_, status) =
            exits.iter().find(|(n, _)| *n == i).with_context(|| format!("node {i} still runs"))?;
        Ok(status.code())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn members_are_promoted_and_removed_through_the_cluster_api() {
    use cairn_tests::Code;
    let Some(target) = cairn_only() else { return };
    let opts = ClusterOptions { nodes: 4, founders: Some(3), ..Default::default() };
    let cluster = Cluster::start(target, opts).await.unwrap();
    cluster.set_node_args(3, vec!["--auto-promote=false".into()]);
    cluster.join(3).unwrap();
    wait_members(&cluster, 0, &[("n1", false), ("n2", false), ("n3", false), ("n4", true)]).await.unwrap();
    let mut c = cluster.client(0).await.unwrap();

    // etcd's refusals.
    let n1 = member_id_of(&cluster, 0, "n1").await.unwrap();
    let n4 = member_id_of(&cluster, 0, "n4").await.unwrap();
    let not_learner = "etcdserver: can only promote a learner member";
    expect_grpc_err(c.member_promote(n1).await, Code::FailedPrecondition, not_learner, "promote a voter")
        .unwrap();
    let not_found = "etcdserver: member not found";
    expect_grpc_err(c.member_promote(42).await, Code::NotFound, not_found, "promote nobody").unwrap();
    expect_grpc_err(c.member_remove(42).await, Code::NotFound, not_found, "remove nobody").unwrap();

    // Three voters: with one of them down, removing another would leave one of two started.
    {
        let leader = cluster.leader().await.unwrap();
        let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        cluster.kill(followers[0]).unwrap();
        // Counted as started until it has not answered for an election timeout (1 s).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let victim = member_id_of(&cluster, leader, cluster.node_name(followers[1])).await.unwrap();
        let mut lc = cluster.client(leader).await.unwrap();
        let not_enough = "etcdserver: re-configuration failed due to not enough started members";
        expect_grpc_err(
            lc.member_remove(victim).await,
            Code::Unknown,
            not_enough,
            "remove with too few started",
        )
        .unwrap();
        cluster.restart(followers[0]).unwrap();
        cluster.wait_node_ready(followers[0], CONVERGE).await.unwrap();
    }

    // Promote the learner by hand (once it is in sync).
    eventually(CONVERGE, "n4 promoted", || async {
        let mut c = cluster.client(1).await?;
        let resp = c.member_promote(n4).await?;
        ensure!(resp.members().iter().any(|m| m.id() == n4 && !m.is_learner()), "{:?}", resp.members());
        Ok(())
    })
    .await
    .unwrap();

    let writers = Writers::start(&cluster, &[0, 1, 2], "members/", 2).await.unwrap();
    // n4 (a voter now) must not lead for what follows: move leadership to a founder if it does.
    let mut leader = cluster.leader().await.unwrap();
    if leader == 3 {
        let mut c = cluster.client(3).await.unwrap();
        c.move_leader(n1).await.unwrap();
        leader = cluster.leader().await.unwrap();
    }
    let founders_left: Vec<usize> = (0..3).filter(|i| *i != leader).collect();

    // Remove a follower (n4): it exits with 7; the others keep serving.
    eventually(CONVERGE, "remove n4", || async {
        let mut lc = cluster.client(leader).await?;
        lc.member_remove(n4).await?;
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(wait_exit(&cluster, 3).await.unwrap(), Some(7), "{}", cluster.log_tail(3, 20));

    // Re-add it on an empty data directory (it replays the history of its own removal).
    std::fs::remove_dir_all(cluster.data_dir(3)).unwrap();
    std::fs::create_dir(cluster.data_dir(3)).unwrap();
    cluster.restart(3).unwrap();
    wait_members(&cluster, leader, &[("n1", false), ("n2", false), ("n3", false), ("n4", true)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        cluster.unexpected_exits().is_empty(),
        "{:?}\n{}",
        cluster.unexpected_exits(),
        cluster.log_tail(3, 30)
    );

    // Remove the leader: it exits with 7; the two founders left serve.
    let leader_id = member_id_of(&cluster, founders_left[0], cluster.node_name(leader)).await.unwrap();
    let mut oc = cluster.client(founders_left[0]).await.unwrap();
    oc.member_remove(leader_id).await.unwrap();
    assert_eq!(wait_exit(&cluster, leader).await.unwrap(), Some(7), "{}", cluster.log_tail(leader, 20));
    let mut want: Vec<(&str, bool)> = founders_left.iter().map(|i| (cluster.node_name(*i), false)).collect();
    want.push(("n4", true));
    for &i in &founders_left {
        wait_members(&cluster, i, &want).await.unwrap();
    }
    let mut rc = cluster.client_with(&founders_left, cairn_tests::default_connect_options()).await.unwrap();
    let deadline = std::time::Instant::now() + CONVERGE;
    assert!(put_retrying(&mut rc, "members/after", "ok", deadline, None).await);
    let acked = writers.stop().await.unwrap();
    for &i in &founders_left {
        wait_caught_up(&cluster, i, "members/", &acked, CONVERGE).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_another_cluster_key_is_refused() {
    let Some(target) = cairn_only() else { return };
    let keys = tempfile::tempdir().unwrap();
    let (a, b) = (keys.path().join("a.key"), keys.path().join("b.key"));
    std::fs::write(&a, "the cluster's own secret, 32 bytes\n").unwrap();
    std::fs::write(&b, "somebody else's secret, 32 bytes").unwrap();
    let opts = ClusterOptions { nodes: 2, founders: Some(1), ..Default::default() };
    let cluster = Cluster::start(target.clone(), opts).await.unwrap();
    // The founder runs with key a from its restart on.
    cluster.set_node_args(0, vec!["--encryption-key-file".into(), a.display().to_string()]);
    cluster.restart(0).unwrap();
    cluster.wait_node_ready(0, CONVERGE).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ip = std::net::Ipv4Addr::new(127, 0, 0, 9);
    let join = |key: Option<&std::path::Path>, env_key: Option<&str>| {
        let mut cmd = std::process::Command::new(target.bin());
        cmd.args(["serve", "--name", "intruder", "--data-dir"])
            .arg(dir.path().join(format!("d{}", cairn_tests::free_port(ip).unwrap())))
            .args(["--client-addr", &format!("{ip}:{}", cairn_tests::free_port(ip).unwrap())])
            .args(["--peer-addr", &format!("{ip}:{}", cairn_tests::free_port(ip).unwrap())])
            .args(["--join", &cluster.advertised_peer_addr(0).to_string()])
            .env("NO_COLOR", "1")
            .env_remove("CAIRN_ENCRYPTION_KEY");
        if let Some(key) = key {
            cmd.arg("--encryption-key-file").arg(key);
        }
        if let Some(k) = env_key {
            cmd.env("CAIRN_ENCRYPTION_KEY", k);
        }
        cmd.output().unwrap()
    };
    for (what, out) in [
        ("key b", join(Some(&b), None)),
        ("no key", join(None, None)),
        ("env key", join(None, Some("another secret of enough bytes"))),
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains("cluster key mismatch: this member's key fingerprint is")
                && stderr.contains("the caller's is"),
            "{what}: {stderr}"
        );
    }
    let out = join(None, None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("the caller's is none"));
    assert_eq!(members(&cluster, 0).await.unwrap(), vec![("n1".into(), false)], "nobody was added");

    // The same key joins.
    cluster.set_node_args(1, vec!["--encryption-key-file".into(), a.display().to_string()]);
    cluster.join(1).unwrap();
    eventually(CONVERGE, "n2 joined", || async {
        let got = members(&cluster, 0).await?;
        ensure!(got.iter().any(|(n, _)| n == "n2"), "members {got:?}");
        Ok(())
    })
    .await
    .unwrap();

    // `cairn status` shows both members' keys in sync, and no warning about a missing key.
    let status = eventually(CONVERGE, "both members in the status table", || async {
        let out = std::process::Command::new(target.bin())
            .args(["status", "--endpoints", &cluster.client_addr(0).to_string()])
            .env_remove("CAIRN_ENDPOINTS")
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success() && text.lines().filter(|l| l.contains(" in sync ")).count() == 2,
            "{text}"
        );
        Ok(text)
    })
    .await
    .unwrap();
    assert!(!status.contains("WARNING"), "{status}");
}

/// Dead-member cleanup (`--remove-dead-after`, off by default): the leader removes a member
/// out of contact that long, and never goes below `--min-voters`.
#[tokio::test(flavor = "multi_thread")]
async fn dead_members_are_removed_down_to_the_minimum() {
    let Some(target) = cairn_only() else { return };
    let opts = ClusterOptions {
        nodes: 4,
        extra_args: vec!["--remove-dead-after".into(), "3".into(), "--min-voters".into(), "3".into()],
        ..Default::default()
    };
    let cluster = Cluster::start(target, opts).await.unwrap();
    let leader = cluster.leader().await.unwrap();
    let others: Vec<usize> = (0..4).filter(|i| *i != leader).collect();
    cluster.kill(others[0]).unwrap();
    let gone = cluster.node_name(others[0]).to_string();
    eventually(CONVERGE, "the dead member is removed", || async {
        let got = members(&cluster, leader).await?;
        ensure!(got.len() == 3 && !got.iter().any(|(n, _)| *n == gone), "members {got:?}");
        Ok(())
    })
    .await
    .unwrap();
    // Three voters left, the minimum: another death removes nobody.
    cluster.kill(others[1]).unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let got = members(&cluster, leader).await.unwrap();
    assert_eq!(got.len(), 3, "never below --min-voters: {got:?}");
    let mut c = cluster.client(leader).await.unwrap();
    c.put("still", "writable", None).await.unwrap();
}
