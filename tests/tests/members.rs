//! The Cluster API's member list: every member with its name, peer and client URLs, from
//! the replicated state, so that a member that is down is still listed with where it serves
//! (etcd's behaviour: members publish their attributes through Raft).

mod common;

use anyhow::{ensure, Context, Result};
use cairn_tests::{eventually, Cluster};
use common::*;

/// Checks node `i`'s member list: one entry per member, with the URLs the harness gave it.
async fn check_member_list(cluster: &Cluster, asked: usize) -> Result<()> {
    let mut c = cluster.client(asked).await?;
    let list = c.member_list().await.with_context(|| format!("member list from node {asked}"))?;
    ensure!(
        list.members().len() == cluster.len(),
        "{} members listed: {:?}",
        list.members().len(),
        list.members()
    );
    for i in 0..cluster.len() {
        let name = cluster.node_name(i);
        let m = list
            .members()
            .iter()
            .find(|m| m.name() == name)
            .with_context(|| format!("node {asked} does not list {name}: {:?}", list.members()))?;
        let client = format!("http://{}", cluster.client_addr(i));
        let peer = format!("http://{}", cluster.advertised_peer_addr(i));
        ensure!(
            m.client_urls() == [client.clone()],
            "{name}: client URLs {:?}, want [{client}]",
            m.client_urls()
        );
        ensure!(m.peer_urls() == [peer.clone()], "{name}: peer URLs {:?}, want [{peer}]", m.peer_urls());
        ensure!(!m.is_learner(), "{name} is a voter");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn member_list_shows_every_member_even_one_that_is_down() {
    let cluster = start_nodes(3).await;
    for i in 0..cluster.len() {
        eventually(CONVERGE, &format!("node {i} lists every member"), || check_member_list(&cluster, i))
            .await
            .unwrap();
    }
    cluster.kill(2).unwrap();
    for i in 0..2 {
        check_member_list(&cluster, i).await.unwrap();
    }
}

/// etcd's HashKV compares members: every member gives the same hash for the same revision
/// (the values differ between Cairn and etcd; the agreement is what counts).
#[tokio::test(flavor = "multi_thread")]
async fn every_member_hashes_a_revision_alike() {
    let cluster = start_nodes(3).await;
    let mut c = cluster.client(0).await.unwrap();
    let mut revision = 0;
    for i in 0..50 {
        revision = c
            .put(format!("hash/{}", i % 7), format!("v{i}"), None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
    }
    c.compact(revision - 10, None).await.unwrap();
    let mut hashes = Vec::new();
    for i in 0..cluster.len() {
        let got = eventually(CONVERGE, &format!("node {i} hashes revision {revision}"), || async {
            let mut c = cluster.client(i).await?;
            Ok(c.hash_kv(revision).await?)
        })
        .await
        .unwrap();
        assert_eq!(got.compact_version(), revision - 10, "node {i}'s compact revision");
        hashes.push(got.hash());
    }
    assert!(hashes.iter().all(|h| *h == hashes[0]), "members disagree: {hashes:x?}");
}
