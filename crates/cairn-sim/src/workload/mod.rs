//! The simulated clients: each workload is `cairn-jepsen`'s (the same operations over etcd
//! gRPC, the same history format, the same checker), driven by the seed.

pub mod append;
pub mod lease;
pub mod register;

use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tonic::transport::Channel;

use crate::{member_name, net, CLIENT_PORT};

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
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 3] = [WorkloadKind::Register, WorkloadKind::Lease, WorkloadKind::Append];

    pub fn from_name(name: &str) -> Option<WorkloadKind> {
        WorkloadKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Register => "register",
            WorkloadKind::Lease => "lease",
            WorkloadKind::Append => "append",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// How long a client waits for one operation.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(3);

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
}

impl Conn {
    pub fn new(node: usize, members: usize) -> Conn {
        let channel = net::channel(&member_name(node), CLIENT_PORT);
        Conn { node, members, kv: KvClient::new(channel.clone()), lease: LeaseClient::new(channel) }
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

pub(crate) fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
