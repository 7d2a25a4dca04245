//! Replication for Cairn: the openraft type config, the RocksDB log store with group
//! commit, the state machine over `cairn-mvcc`, snapshots, and the peer transport.
//!
//! **Architecture invariant:** this crate knows nothing of the etcd client API (no KV
//! service, no client gRPC): it replicates `cairn_core::WriteRequest`s and offers a read
//! barrier. The API crate builds the etcd services on [`RaftNode`].

pub mod alarms;
pub mod applied;
pub mod auth;
pub mod autopilot;
pub mod cluster_key;
pub mod codec;
mod corruption;
pub mod disk;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod forward;
pub mod join;
pub mod leader;
mod leases;
pub mod log_store;
pub mod members;
pub mod metrics;
pub mod network;
pub mod node;
pub mod pb;
pub mod peer_auth;
pub mod peer_error;
pub mod probe;
pub mod reconfigure;
pub mod recover;
mod reseal;
mod route;
pub mod runtime;
pub mod server;
pub mod state_machine;
pub mod storage;
pub mod transport;
pub mod types;

pub use autopilot::{DeadMembers, Promotion};
pub use cluster_key::ClusterKey;
pub use node::{NodeConfig, NodeStatus, PeerTls, RaftNode, StartError, StatusChanges};
pub use peer_error::PeerError;
pub use reconfigure::MemberChange;
pub use recover::{
    force_new_cluster, read_stopped_store, restore_backup, ForcedCluster, RecoverError, Restored,
};
pub use storage::OpenError;
pub use types::{node_id_of, NodeId, PeerNode};

#[cfg(test)]
mod storage_suite;
