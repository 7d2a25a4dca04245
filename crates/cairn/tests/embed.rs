//! The library facade: a node in-process, driven by the in-process client.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use cairn::proto::etcdserverpb::{compare, request_op, Compare, PutRequest, RequestOp, TxnRequest};

/// A single-member node on ephemeral ports, its data in a temp dir (kept with the node).
async fn start_node() -> (tempfile::TempDir, cairn::Node) {
    let dir = tempfile::tempdir().unwrap();
    let config = cairn::Config {
        data_dir: dir.path().join("data"),
        client_addr: "127.0.0.1:0".into(),
        peer_addr: "127.0.0.1:0".into(),
        ..Default::default()
    };
    let node = cairn::Node::start(config).await.unwrap();
    (dir, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_node_serves_the_in_process_client() {
    let (_dir, node) = start_node().await;
    let client = node.client();
    let put = client.put("k", "v1").await.unwrap();
    let header = put.header.unwrap();
    assert_eq!(header.revision, 2);
    assert_eq!(header.member_id, node.member_id());
    assert!(header.raft_term >= 1);
    let got = client.get("k").await.unwrap();
    assert_eq!(got.kvs[0].value, b"v1");

    // Same validation and error texts as over gRPC.
    let err = client.put_request(PutRequest::default()).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::InvalidArgument, "etcdserver: key is not provided")
    );

    // A compare-and-swap.
    let cas = |expect: &str, new: &str| TxnRequest {
        compare: vec![Compare {
            key: b"k".to_vec(),
            target: compare::CompareTarget::Value as i32,
            result: compare::CompareResult::Equal as i32,
            target_union: Some(compare::TargetUnion::Value(expect.into())),
            range_end: vec![],
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"k".to_vec(),
                value: new.into(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    assert!(client.txn(cas("v1", "v2")).await.unwrap().succeeded);
    assert!(!client.txn(cas("v1", "v3")).await.unwrap().succeeded);
    assert_eq!(client.get("k").await.unwrap().kvs[0].value, b"v2");

    // Over the network too.
    let mut remote =
        etcd_client::Client::connect([format!("http://{}", node.client_addr())], None).await.unwrap();
    assert_eq!(remote.get("k", None).await.unwrap().kvs()[0].value(), b"v2");
    node.stop().await;
}

/// The recipes run on the in-process client exactly as on a remote one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipes_run_on_the_in_process_client() {
    use futures::StreamExt;

    let (_dir, node) = start_node().await;
    let client = node.client();

    let lease = cairn::Lease::grant(&client, 5).await.unwrap();
    let first = cairn::Lock::new(&client, "jobs").lock(&lease).await.unwrap();
    let token = first.fencing_token();
    first.unlock().await.unwrap();
    let second = cairn::Lock::new(&client, "jobs").lock(&lease).await.unwrap();
    assert!(second.fencing_token() > token, "fencing tokens must grow");
    second.unlock().await.unwrap();

    let election = cairn::Election::new(&client, "leader");
    let mut observed = Box::pin(election.observe());
    let leading = election.campaign(&lease, "me").await.unwrap();
    let (_, kv) = observed.next().await.unwrap().unwrap();
    assert_eq!(kv.value, b"me");
    leading.resign().await.unwrap();
    assert!(election.leader().await.unwrap().is_none());

    let limit: cairn::TypedKey<u32> = cairn::TypedKey::new(&client, "config/limit");
    limit.put(&7).await.unwrap();
    let current = limit.get().await.unwrap().unwrap();
    assert_eq!(current.value, 7);
    assert!(matches!(
        limit.compare_and_swap(Some(current.mod_revision), &8).await.unwrap(),
        cairn::CasOutcome::Swapped { .. }
    ));
    lease.revoke().await.unwrap();
    node.stop().await;
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// Three members built in this process (named `<prefix>0..2`, on 127.0.0.1-3), one cluster;
/// their data lives in the returned directory.
async fn start_three(prefix: &str) -> (tempfile::TempDir, Vec<cairn::Node>) {
    let dir = tempfile::tempdir().unwrap();
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let peers: Vec<(String, String)> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| (format!("{prefix}{i}"), format!("{ip}:{}", free_port(ip))))
        .collect();
    let mut starting = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let builder = cairn::Node::builder()
            .name(&peers[i].0)
            .data_dir(dir.path().join(&peers[i].0))
            .client_addr(format!("{ip}:0"))
            .peer_addr(&peers[i].1)
            .initial_cluster(peers.iter().map(|(n, a)| (n.as_str(), a.as_str())));
        starting.push(tokio::spawn(builder.start()));
    }
    let mut nodes = Vec::new();
    for n in starting {
        nodes.push(n.await.unwrap().unwrap());
    }
    (dir, nodes)
}

/// The index of the member that leads, once one does (within 20 s).
async fn leader_of(nodes: &[cairn::Node]) -> usize {
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            if let Some(l) = nodes.iter().position(|n| n.status().role == cairn::Role::Leader) {
                return l;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap()
}

/// Waits until `node`'s role is `want` (the roles stream, not polling).
async fn role_becomes(node: &cairn::Node, want: cairn::Role) {
    let mut roles = node.roles();
    tokio::time::timeout(std::time::Duration::from_secs(20), roles.wait_for(|r| *r == want))
        .await
        .unwrap_or_else(|_| {
            panic!("{:?} never became {want:?} (status {:?})", node.member_id(), node.status())
        })
        .unwrap();
}

/// Three members in one process, built with `Node::builder()`: one leads; when it shuts
/// down (handing over), another reports `Leader` on its roles stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_members_report_their_roles() {
    let (_dir, mut started) = start_three("m").await;
    let leader = leader_of(&started).await;
    role_becomes(&started[leader], cairn::Role::Leader).await;
    let leader_id = started[leader].member_id();
    for (i, n) in started.iter().enumerate() {
        let s = n.status();
        assert_eq!(s.leader, Some(leader_id), "member {i}: {s:?}");
        if i != leader {
            role_becomes(n, cairn::Role::Follower).await;
        }
    }
    started[0].client().put("k", "v").await.unwrap();
    let old = started.remove(leader);
    old.shutdown().await;
    // The hand-over makes one of the others leader (its roles stream says so).
    let a = started[0].roles();
    let b = started[1].roles();
    let became = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let (mut a, mut b) = (a, b);
        loop {
            if *a.borrow() == cairn::Role::Leader || *b.borrow() == cairn::Role::Leader {
                return;
            }
            tokio::select! {
                _ = a.changed() => {}
                _ = b.changed() => {}
            }
        }
    })
    .await;
    assert!(became.is_ok(), "no member became leader: {:?} {:?}", started[0].status(), started[1].status());
    assert_eq!(started[1].client().get("k").await.unwrap().kvs[0].value, b"v");
    for n in started {
        n.shutdown().await;
    }
}

/// etcd re-checks permissions when a write applies: a write checked at an auth revision
/// that is no longer current when it applies is refused with "revision of auth store is
/// old" on every member (whether this member leads or forwards it), and changes nothing;
/// one checked at the current revision applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_checked_before_an_auth_change_is_refused_at_apply() {
    use cairn::core::auth::AuthChange;
    use cairn::core::proto::etcdserverpb::PutRequest;
    use cairn::core::{AuthBackend, BackendError, KvBackend, RequestError, WriteRequest};

    let (_dir, nodes) = start_three("m").await;
    // Auth commands wait until every member has published its attributes.
    let changes = [
        AuthChange::UserAdd { name: "root".into(), password_hash: String::new(), no_password: true },
        AuthChange::UserGrantRole { user: "root".into(), role: "root".into() },
        AuthChange::Enable,
    ];
    for change in changes {
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                match nodes[0].raft_backend().unwrap().auth_change(change.clone()).await {
                    Ok(()) => return,
                    Err(BackendError::Request(refused)) => panic!("{change:?} refused: {refused}"),
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{change:?} did not apply"));
    }
    let put = |key: &str| {
        WriteRequest::Put(PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() })
    };
    let current = nodes[0].raft_backend().unwrap().auth_state().revision;
    for (i, node) in nodes.iter().enumerate() {
        let backend = node.raft_backend().unwrap();
        let stale = backend.write_checked(put(&format!("stale-{i}")), current - 1).await;
        assert!(
            matches!(stale, Err(BackendError::Request(RequestError::AuthOldRevision))),
            "member {i} (leader: {:?}): {stale:?}",
            node.status().role
        );
        backend.write_checked(put(&format!("fresh-{i}")), current).await.unwrap();
    }
    // The refused writes changed nothing, anywhere.
    for node in &nodes {
        let all = node.raft_backend().unwrap().range(cairn::core::proto::etcdserverpb::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            serializable: true,
            ..Default::default()
        });
        let keys: Vec<String> =
            all.await.unwrap().kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect();
        assert!(keys.iter().all(|k| !k.starts_with("stale")), "{keys:?}");
    }
    for n in nodes {
        n.shutdown().await;
    }
}

/// A leader whose followers are gone reports `LostQuorum` on its roles stream (it can no
/// longer commit; a product stops its leader-only work).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_quorum_says_so() {
    let (_dir, mut nodes) = start_three("q").await;
    let leader = leader_of(&nodes).await;
    nodes[leader].client().put("k", "v").await.unwrap();
    let leader = nodes.remove(leader);
    for follower in nodes {
        follower.stop().await;
    }
    role_becomes(&leader, cairn::Role::LostQuorum).await;
    leader.stop().await;
}

/// The builder's SQL choice: two members built on one SQLite database serve the same data,
/// the recipes run on their in-process clients, and their status says there is no leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_members_share_a_sql_database() {
    use cairn::proto::etcdserverpb::{cluster_client::ClusterClient, MemberListRequest, WatchCreateRequest};

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cairn.db").display());
    let build = |name: &str| {
        cairn::Node::builder()
            .name(name)
            .client_addr("127.0.0.1:0")
            .backend(url.clone())
            .configure(|c| c.sql_poll_interval = 10)
            .start()
    };
    let a = build("a").await.unwrap();
    let b = build("b").await.unwrap();
    for node in [&a, &b] {
        let status = node.status();
        assert_eq!((status.role, status.leader), (cairn::Role::SharedDatabase, None));
        assert_eq!(*node.roles().borrow(), cairn::Role::SharedDatabase);
        assert!(node.raft_backend().is_none() && node.sql_backend().is_some());
    }
    assert_eq!(a.status().cluster_id, b.status().cluster_id);
    assert_ne!(a.member_id(), b.member_id());

    // A write through one is read and watched through the other.
    let (ca, cb) = (a.client(), b.client());
    let prefix =
        WatchCreateRequest { key: b"config/".to_vec(), range_end: b"config0".to_vec(), ..Default::default() };
    let mut watch = cb.watch(prefix).await.unwrap();
    let put = ca.put("config/x", "1").await.unwrap().header.unwrap();
    assert_eq!(cb.get("config/x").await.unwrap().kvs[0].value, b"1");
    let events = watch.next_events().await.unwrap();
    assert_eq!(events.events[0].kv.as_ref().unwrap().mod_revision, put.revision);
    assert!(b.status().applied_index >= put.revision as u64);

    // A lock held through one member keeps the other waiting until it is released.
    let lease_a = cairn::Lease::grant(&ca, 10).await.unwrap();
    let lease_b = cairn::Lease::grant(&cb, 10).await.unwrap();
    let held = cairn::Lock::new(&ca, "job").lock(&lease_a).await.unwrap();
    let waiting = tokio::spawn({
        let cb = cb.clone();
        async move { cairn::Lock::new(&cb, "job").lock(&lease_b).await.map(|g| g.fencing_token()) }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the lock is held through the other member");
    let token = held.fencing_token();
    held.unlock().await.unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await.unwrap().unwrap();
    assert!(next.unwrap() > token);

    // Both are listed while they run; one that stops leaves the list.
    let listed = || async {
        let mut cluster = ClusterClient::new(ca.transport().clone());
        cluster.member_list(MemberListRequest::default()).await.unwrap().into_inner().members.len()
    };
    assert_eq!(listed().await, 2);
    b.shutdown().await;
    assert_eq!(listed().await, 1);
    a.shutdown().await;
}
