//! The coordination recipes a product needs, each with an example that runs (as a doc test)
//! on a member started in the same process. They work the same on a remote
//! [`Client`](crate::Client) (`Client::connect`), on etcd too.
//!
//! Every example starts from this member (hidden in the examples below):
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let node = cairn::Node::builder()
//!     .data_dir(dir.path())
//!     .client_addr("127.0.0.1:0")
//!     .peer_addr("127.0.0.1:0")
//!     .start()
//!     .await
//!     .unwrap();
//! let client = node.client();
//! # node.shutdown().await;
//! # });
//! ```
//!
//! # Typed configuration: [`TypedKey`](crate::TypedKey)
//! A serde value under a key, with a schema version: compare-and-swap against the
//! revision you read, and a watch of every change. A replica that reads a value written
//! with a newer schema gets [`ClientError::NewerSchema`](crate::ClientError::NewerSchema)
//! rather than a misread.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let dir = tempfile::tempdir().unwrap();
//! # let node = cairn::Node::builder().data_dir(dir.path()).client_addr("127.0.0.1:0")
//! #     .peer_addr("127.0.0.1:0").start().await.unwrap();
//! # let client = node.client();
//! use futures::StreamExt;
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct Feeds { retention_days: u32 }
//!
//! let feeds = cairn::TypedKey::<Feeds>::with_schema(&client, "config/feeds", 2);
//! feeds.put(&Feeds { retention_days: 30 }).await.unwrap();
//! let current = feeds.get().await.unwrap().unwrap();
//! // The current value, then every change.
//! let mut changes = Box::pin(feeds.watch());
//! assert_eq!(changes.next().await.unwrap().unwrap().unwrap().value, Feeds { retention_days: 30 });
//!
//! // Had another replica changed it since our read, the swap would be refused with what is there.
//! let swapped = feeds.compare_and_swap(Some(current.mod_revision), &Feeds { retention_days: 60 });
//! assert!(matches!(swapped.await.unwrap(), cairn::CasOutcome::Swapped { .. }));
//! assert_eq!(changes.next().await.unwrap().unwrap().unwrap().value, Feeds { retention_days: 60 });
//!
//! // A replica that only knows schema 1 refuses the value instead of misreading it.
//! let old = cairn::TypedKey::<Feeds>::new(&client, "config/feeds");
//! assert!(matches!(old.get().await, Err(cairn::ClientError::NewerSchema { found: 2, .. })));
//! # node.shutdown().await;
//! # });
//! ```
//!
//! # Component registry: [`Registry`](crate::Registry)
//! Each server registers its components with a version and a lease heartbeat; the list
//! shows each one's heartbeat age, the stale ones and a version mismatch (the product's
//! Cluster Overview).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let dir = tempfile::tempdir().unwrap();
//! # let node = cairn::Node::builder().data_dir(dir.path()).client_addr("127.0.0.1:0")
//! #     .peer_addr("127.0.0.1:0").start().await.unwrap();
//! # let client = node.client();
//! use std::time::Duration;
//!
//! let registry = cairn::Registry::new(&client, "product/components/");
//! let every = Duration::from_secs(1);
//! let _web1 = registry.register("web", "server-1", "2.3.0", Default::default(), 10, every).await.unwrap();
//! let _web2 = registry.register("web", "server-2", "2.3.0", Default::default(), 10, every).await.unwrap();
//! let _web3 = registry.register("web", "server-3", "2.2.1", Default::default(), 10, every).await.unwrap();
//!
//! let listed = registry.list(Duration::from_secs(30)).await.unwrap();
//! assert_eq!(listed.len(), 3);
//! assert!(listed.iter().all(|c| !c.stale));
//! let behind: Vec<_> = listed.iter().filter(|c| !c.version_in_sync).map(|c| &c.registration.server).collect();
//! assert_eq!(behind, ["server-3"]);
//! # node.shutdown().await;
//! # });
//! ```
//!
//! # Single-runner jobs: [`SingleRunner`](crate::SingleRunner)
//! A scheduled job runs on exactly one server at a time and moves when that server dies
//! (after the lease TTL). Its turn carries a fencing token: writes made with
//! [`Turn::fenced_put`](crate::Turn::fenced_put) are refused once a later turn exists, so a
//! runner that was paused past its lease cannot overwrite its successor's work.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let dir = tempfile::tempdir().unwrap();
//! # let node = cairn::Node::builder().data_dir(dir.path()).client_addr("127.0.0.1:0")
//! #     .peer_addr("127.0.0.1:0").start().await.unwrap();
//! # let client = node.client();
//! let indexer = cairn::SingleRunner::new(&client, "jobs/indexer", 5);
//! let turn = indexer.acquire("server-1").await.unwrap();
//! let token = turn.fencing_token();
//! turn.fenced_put("index/last-run", "server-1").await.unwrap();
//! turn.release().await.unwrap();
//!
//! let next = indexer.acquire("server-2").await.unwrap();
//! assert!(next.fencing_token() > token, "each turn's token is larger");
//! next.release().await.unwrap();
//! # node.shutdown().await;
//! # });
//! ```
//!
//! # Service messenger: [`Messenger`](crate::Messenger)
//! Node-to-node messages: to one server or to all, each in the receiver's lease-bound
//! inbox until acknowledged (at least once; [`Message::id`](crate::Message) lets a receiver
//! drop a repeat).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let dir = tempfile::tempdir().unwrap();
//! # let node = cairn::Node::builder().data_dir(dir.path()).client_addr("127.0.0.1:0")
//! #     .peer_addr("127.0.0.1:0").start().await.unwrap();
//! # let client = node.client();
//! use futures::StreamExt;
//!
//! let server2 = cairn::Messenger::new(&client, "product/messages/", "server-2");
//! let inbox = server2.open_inbox(10).await.unwrap();
//! let mut received = Box::pin(inbox.messages());
//!
//! let server1 = cairn::Messenger::new(&client, "product/messages/", "server-1");
//! server1.send("server-2", r#"{"reindex":"feed-a"}"#).await.unwrap();
//!
//! let message = received.next().await.unwrap().unwrap();
//! assert_eq!((message.from.as_str(), message.body.as_str()), ("server-1", r#"{"reindex":"feed-a"}"#));
//! inbox.ack(&message.id).await.unwrap();
//! # node.shutdown().await;
//! # });
//! ```
//!
//! # Locks and elections: [`Lock`](crate::Lock), [`Election`](crate::Election)
//! etcd's own recipes, with the same keys as etcd's `clientv3/concurrency` (so they
//! interoperate with `etcdctl lock` and `etcdctl elect`), each under a
//! [`Lease`](crate::Lease) kept alive in the background.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let dir = tempfile::tempdir().unwrap();
//! # let node = cairn::Node::builder().data_dir(dir.path()).client_addr("127.0.0.1:0")
//! #     .peer_addr("127.0.0.1:0").start().await.unwrap();
//! # let client = node.client();
//! let lease = cairn::Lease::grant(&client, 10).await.unwrap();
//!
//! let guard = cairn::Lock::new(&client, "locks/migrations").lock(&lease).await.unwrap();
//! // Hand guard.fencing_token() to the storage the lock protects.
//! guard.unlock().await.unwrap();
//!
//! let election = cairn::Election::new(&client, "elections/scheduler");
//! let leading = election.campaign(&lease, "server-1").await.unwrap();
//! assert_eq!(election.leader().await.unwrap().unwrap().value, b"server-1");
//! leading.resign().await.unwrap();
//! lease.revoke().await.unwrap();
//! # node.shutdown().await;
//! # });
//! ```
