//! The operator's subcommands of the `cairn` binary against a running cluster: `status`,
//! `member list|promote|remove`, `move-leader` (Cairn only).

mod common;

use std::process::Output;

use cairn_tests::{eventually, Cluster, ClusterOptions, Target};
use common::*;

fn cairn(cluster: &Cluster, args: &[&str]) -> Output {
    std::process::Command::new(cluster.target().bin())
        .args(args)
        .args(["--endpoints", &cluster.client_addr(0).to_string()])
        .env_remove("CAIRN_ENDPOINTS")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The hex id in the row of `name` of `cairn member list`.
fn id_of(list: &str, name: &str) -> String {
    list.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {name} in\n{list}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_subcommands_show_and_change_the_cluster() {
    let target = Target::from_env();
    if !target.is_cairn() {
        eprintln!("skipped: the cairn binary's own subcommands");
        return;
    }
    let cluster =
        Cluster::start(target, ClusterOptions { nodes: 4, founders: Some(3), ..Default::default() })
            .await
            .unwrap();
    cluster.set_node_args(3, vec!["--auto-promote=false".into()]);
    cluster.join(3).unwrap();
    let list = eventually(CONVERGE, "n4 listed with its URLs", || async {
        let out = cairn(&cluster, &["member", "list"]);
        let t = text(&out);
        anyhow::ensure!(
            out.status.success()
                && t.contains("n4")
                && t.contains("learner")
                && t.contains(&cluster.client_addr(3).to_string()),
            "{t}"
        );
        Ok(t)
    })
    .await
    .unwrap();

    let out = cairn(&cluster, &["status"]);
    let status = text(&out);
    assert!(out.status.success(), "{status}");
    let rows: Vec<&str> = status.lines().skip(1).take_while(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 4, "{status}");
    assert!(rows.iter().all(|r| r.contains(" none ")), "no member has a key:\n{status}");
    assert!(status.contains("WARNING: the cluster runs without a cluster key"), "said plainly:\n{status}");
    assert_eq!(rows.iter().filter(|r| r.contains(" leader ")).count(), 1, "{status}");
    assert!(rows.iter().any(|r| r.starts_with("n4") && r.contains(" learner ")), "{status}");
    assert!(
        rows.iter().all(|r| r.contains(env!("CARGO_PKG_VERSION"))),
        "every member reports its version:\n{status}"
    );

    let n4 = id_of(&list, "n4");
    let out = cairn(&cluster, &["member", "promote", &n4]);
    assert!(out.status.success(), "{}", text(&out));
    let list = text(&cairn(&cluster, &["member", "list"]));
    assert!(list.lines().any(|l| l.contains("n4") && l.contains("voter")), "{list}");

    // Move leadership to n4, then remove it: it exits with 7.
    let out = cairn(&cluster, &["move-leader", &n4]);
    assert!(out.status.success(), "{}", text(&out));
    eventually(CONVERGE, "n4 leads", || async {
        let s = cluster.status(3).await?;
        anyhow::ensure!(s.leader() == u64::from_str_radix(&n4, 16)?, "leader {:x}", s.leader());
        Ok(())
    })
    .await
    .unwrap();
    let out = cairn(&cluster, &["move-leader", &id_of(&list, "n1")]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cairn(&cluster, &["member", "remove", &n4]);
    assert!(out.status.success(), "{}", text(&out));

    let out = cairn(&cluster, &["member", "remove", "n4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("is not a member id"), "{}", text(&out));
    let out = cairn(&cluster, &["member", "promote", "42"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("etcdserver: member not found"), "{}", text(&out));
}
