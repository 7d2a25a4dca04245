//! Peer authentication against real members (Cairn only: etcd's peers authenticate with TLS
//! client certificates, not a shared key). A cluster started with a cluster key replicates,
//! fails over and restarts as usual; on its peer port, a caller that does not hold the key —
//! one that claims another key, one that copies the public fingerprint but cannot prove the
//! key, one that skips the handshake and speaks gRPC at once — gets nothing but a refusal,
//! each refusal counted in `/metrics`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use cairn_tests::{eventually, Cluster, ClusterOptions, Target};
use common::*;

const KEY: &str = "a cluster key of at least 16 bytes";
const MAGIC: &[u8] = b"CAIRNP1\n";

fn cairn_only() -> Option<Target> {
    let target = Target::from_env();
    if !target.is_cairn() {
        eprintln!("skipped: the cluster key is Cairn's (etcd's peers use TLS client certificates)");
        return None;
    }
    Some(target)
}

async fn keyed_cluster(target: Target) -> Cluster {
    let opts = ClusterOptions {
        nodes: 3,
        env: vec![("CAIRN_ENCRYPTION_KEY".into(), KEY.into())],
        ..Default::default()
    };
    Cluster::start(target, opts).await.unwrap()
}

/// What the member answers a handshake hello claiming `fingerprint`, and the connection.
fn hello(cluster: &Cluster, node: usize, fingerprint: &[u8; 16]) -> Result<(u8, TcpStream)> {
    let mut tcp = TcpStream::connect(cluster.peer_addr(node))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut msg = MAGIC.to_vec();
    msg.extend_from_slice(fingerprint);
    msg.extend_from_slice(&[7u8; 32]);
    tcp.write_all(&msg)?;
    let mut status = [0u8; 1];
    tcp.read_exact(&mut status)?;
    Ok((status[0], tcp))
}

fn refusal_text(tcp: &mut TcpStream) -> Result<String> {
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len)?;
    let mut text = vec![0u8; u16::from_be_bytes(len) as usize];
    tcp.read_exact(&mut text)?;
    // Then the member closes the connection.
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    ensure!(rest.is_empty(), "the member sent more after refusing: {rest:?}");
    Ok(String::from_utf8(text)?)
}

/// Refusals counted for `reason` (0 before the first: the labelled sample appears then).
fn refusals(cluster: &Cluster, node: usize, reason: &str) -> Result<u64> {
    let sample = format!("cairn_peer_refusals_total{{reason=\"{reason}\"}}");
    Ok(metric_sample(cluster, node, &sample)?.map_or(0, |n| n as u64))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_without_the_cluster_key_gets_only_refusals() {
    let Some(target) = cairn_only() else { return };
    let cluster = keyed_cluster(target).await;
    let mut c = cluster.client_all().await.unwrap();
    c.put("auth/before", "1", None).await.unwrap();

    // Another key: refused, with both fingerprints (the member's is public).
    let (status, mut tcp) = hello(&cluster, 0, b"0123456789abcdef").unwrap();
    assert_eq!(status, 1, "refused");
    let why = refusal_text(&mut tcp).unwrap();
    let ours = why
        .strip_prefix("cluster key mismatch: this member's key fingerprint is ")
        .and_then(|rest| rest.split(',').next())
        .ok_or_else(|| anyhow!("unexpected refusal: {why}"))
        .unwrap()
        .to_string();
    assert!(why.contains("the caller's is 0123456789abcdef"), "{why}");
    assert_eq!(ours.len(), 16);

    // The right fingerprint, but no key to prove it with: the member answers a challenge,
    // and refuses the (made up) proof.
    let before = refusals(&cluster, 1, "bad_proof").unwrap();
    let (status, mut tcp) = hello(&cluster, 1, ours.as_bytes().try_into().unwrap()).unwrap();
    assert_eq!(status, 0, "a challenge");
    let mut member_nonce = [0u8; 32];
    tcp.read_exact(&mut member_nonce).unwrap();
    tcp.write_all(&[0x42; 32]).unwrap();
    let mut status = [0u8; 1];
    tcp.read_exact(&mut status).unwrap();
    assert_eq!(status[0], 1);
    let why = refusal_text(&mut tcp).unwrap();
    assert!(why.contains("could not prove that it holds the key"), "{why}");
    assert!(refusals(&cluster, 1, "bad_proof").unwrap() > before);

    // Plain gRPC with the fingerprint header (what a member used to check): refused, and the
    // request never reaches Raft.
    let before = refusals(&cluster, 2, "unauthenticated").unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "--http2-prior-knowledge", "-X", "POST"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["-H", &format!("cairn-key-fingerprint: {ours}")])
        .args(["--data-binary", "@/dev/null"])
        .arg(format!("http://{}/cairnpb.Peer/Vote", cluster.peer_addr(2)))
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(answer.contains("grpc-status: 3"), "{answer}");
    assert!(answer.contains("did%20not%20prove%20that%20it%20holds%20the%20cluster%20key"), "{answer}");
    assert!(refusals(&cluster, 2, "unauthenticated").unwrap() > before);

    // A connection that never speaks is dropped after the handshake timeout, and holds up
    // nobody meanwhile.
    let mut silent = TcpStream::connect(cluster.peer_addr(0)).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.put("auth/during", "2", None).await.unwrap();
    let mut buf = Vec::new();
    let closed = silent.read_to_end(&mut buf);
    assert!(closed.is_ok() && buf.is_empty(), "closed without an answer: {closed:?} {buf:?}");

    // The members themselves carried on, and still elect a leader after one is killed.
    let leader = cluster.leader().await.unwrap();
    cluster.kill(leader).unwrap();
    let mut c =
        cluster.client_with(&cluster.live_nodes(), cairn_tests::default_connect_options()).await.unwrap();
    eventually(CONVERGE, "a write after the leader's death", || {
        let mut c = c.clone();
        async move { Ok(c.put("auth/after", "3", None).await?) }
    })
    .await
    .unwrap();
    cluster.restart(leader).unwrap();
    cluster.wait_node_ready(leader, CONVERGE).await.unwrap();
    let got = c.get("auth/", Some(cairn_tests::etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(got.kvs().len(), 3);
    let mut restarted = cluster.client(leader).await.unwrap();
    eventually(CONVERGE, "the restarted member caught up", || {
        let mut restarted = restarted.clone();
        async move {
            let got = restarted
                .get("auth/after", Some(cairn_tests::etcd_client::GetOptions::new().with_serializable()))
                .await?;
            ensure!(got.kvs().len() == 1, "not yet");
            Ok(())
        }
    })
    .await
    .unwrap();
    let _ = &mut restarted;
}
