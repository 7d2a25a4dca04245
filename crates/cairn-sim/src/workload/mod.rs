//! The simulated clients: each workload is `cairn-jepsen`'s (the same operations over etcd
//! gRPC, the same history format, the same checker), driven by the seed.

pub mod append;
pub mod lease;
pub mod lock;
pub mod member;
pub mod register;
pub mod watch;

use std::time::Duration;

use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::v3lockpb::lock_client::LockClient;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tonic::transport::Channel;

use cairn_jepsen::history::Kind;
use serde_json::Value;

use crate::{member_name, net, World, CLIENT_PORT};

/// Which clients a seed runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WorkloadKind {
    /// Read / write / compare-and-set on a few keys, checked for linearizability.
    Register,
    /// Leases granted, kept alive, revoked or abandoned, with a key each: no key vanishes
    /// while its lease is promised, none outlives it by more than the bound.
    Lease,
    /// Elle list-append transactions, checked for strict serializability.
    Append,
    /// The etcd Lock service with leases: fenced writes to each lock's resource, checked
    /// with fencing tokens.
    Lock,
    /// Puts under a prefix and one watcher per member: ordered, gap-free, agreeing event
    /// streams with every acknowledged write.
    Watch,
    /// The membership changes of the `member` fault: recorded and checked like a workload's
    /// operations, but never chosen as a workload.
    Member,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 5] = [
        WorkloadKind::Register,
        WorkloadKind::Lease,
        WorkloadKind::Append,
        WorkloadKind::Lock,
        WorkloadKind::Watch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Register => "register",
            WorkloadKind::Lease => "lease",
            WorkloadKind::Append => "append",
            WorkloadKind::Lock => "lock",
            WorkloadKind::Watch => "watch",
            WorkloadKind::Member => "member",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// How long a client waits for one operation.
const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// What every client knows about the run.
#[derive(Clone, Copy)]
pub(crate) struct Plan {
    pub members: usize,
    /// When clients stop issuing operations.
    pub duration: Duration,
    /// When the final reads start: every fault has healed and every lease has had time to
    /// expire.
    pub final_at: Duration,
}

/// A client's connection to one member, moved to the next member after an error.
pub(crate) struct Conn {
    pub node: usize,
    members: usize,
    pub kv: KvClient<Channel>,
    pub lease: LeaseClient<Channel>,
    pub lock: LockClient<Channel>,
    pub cluster: ClusterClient<Channel>,
}

impl Conn {
    pub fn new(node: usize, members: usize) -> Conn {
        let channel = net::channel(&member_name(node), CLIENT_PORT);
        Conn {
            node,
            members,
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel.clone()),
            lock: LockClient::new(channel.clone()),
            cluster: ClusterClient::new(channel),
        }
    }

    pub fn next_member(&mut self) {
        *self = Conn::new((self.node + 1) % self.members, self.members);
    }
}

/// A client's own generator, drawn from the seed.
pub(crate) fn client_rng() -> SmallRng {
    SmallRng::seed_from_u64(cairn_core::sim::random_u64())
}

pub(crate) fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// A client process of one workload: it records every operation in its workload's history
/// and moves to the next member after an error.
pub(crate) struct Client<'a> {
    world: &'a World,
    workload: WorkloadKind,
    pub process: u64,
    conn: Conn,
}

impl<'a> Client<'a> {
    pub fn new(
        world: &'a World,
        workload: WorkloadKind,
        process: u64,
        node: usize,
        members: usize,
    ) -> Client<'a> {
        Client { world, workload, process, conn: Conn::new(node, members) }
    }

    pub fn world(&self) -> &'a World {
        self.world
    }

    pub fn members(&self) -> usize {
        self.conn.members
    }

    /// Talk to member `m` from now on.
    pub fn at(&mut self, m: usize) {
        if self.conn.node != m {
            self.conn = Conn::new(m, self.conn.members);
        }
    }

    /// Talk to any member but `m` from now on.
    pub fn avoid(&mut self, m: usize) {
        if self.conn.node == m {
            self.conn.next_member();
        }
    }

    /// Runs one operation on `key` ("": none) and records it; its value when `ok`.
    /// `idempotent`: a failed attempt changed nothing (a read), so it is a `fail`, not an
    /// `info`.
    pub async fn op<F, Fut>(
        &mut self,
        f: &str,
        key: &str,
        input: Value,
        idempotent: bool,
        call: F,
    ) -> Option<Value>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = (Conn, Result<Value, tonic::Status>)>,
    {
        let (kind, value) = self
            .op_refusable(f, key, input, idempotent, |conn| async move {
                let (conn, r) = call(conn).await;
                (conn, r.map(Ok))
            })
            .await;
        (kind == Kind::Ok).then_some(value)
    }

    /// [`Client::op`] for operations the server may refuse without effect (`Ok(Err(v))`: a
    /// txn whose compare failed), recorded as `fail` with `v`. Returns the completion.
    pub async fn op_refusable<F, Fut>(
        &mut self,
        f: &str,
        key: &str,
        input: Value,
        idempotent: bool,
        call: F,
    ) -> (Kind, Value)
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = (Conn, Result<Result<Value, Value>, tonic::Status>)>,
    {
        let history = self.world.history(self.workload);
        let node = self.conn.node;
        history.record(Kind::Invoke, self.process, f, key, input.clone(), node, None);
        let members = self.conn.members;
        let conn = std::mem::replace(&mut self.conn, Conn::new(node, members));
        let (kind, value, error) = match tokio::time::timeout(OP_TIMEOUT, call(conn)).await {
            Ok((conn, Ok(result))) => {
                self.conn = conn;
                match result {
                    Ok(value) => (Kind::Ok, value, None),
                    Err(value) => (Kind::Fail, value, None),
                }
            }
            Ok((_, Err(status))) if idempotent => (Kind::Fail, Value::Null, Some(status_text(&status))),
            Ok((_, Err(status))) => (Kind::Info, input, Some(status_text(&status))),
            Err(_) if idempotent => (Kind::Fail, Value::Null, Some("timed out".to_string())),
            Err(_) => (Kind::Info, input, Some("timed out".to_string())),
        };
        history.record(kind, self.process, f, key, value.clone(), node, error.clone());
        if error.is_some() {
            if kind == Kind::Info {
                // Its outcome is unknown: this process never issues another operation.
                self.process += 1000;
            }
            self.conn.next_member();
        }
        (kind, value)
    }
}
