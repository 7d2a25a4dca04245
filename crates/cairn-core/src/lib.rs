//! Cairn's core: the etcd request/response model, key ranges, etcd's request validation,
//! the error enums, the backend traits and the lease clock — everything the API and every
//! backend share.
//!
//! **Architecture invariant:** this crate never depends on a storage engine (RocksDB, SQL
//! drivers), a transport (tonic, HTTP) or Raft (openraft); `tests/invariants.rs` at the
//! workspace root fails the build's tests if it does. It may use `cairn-proto`'s messages
//! (without the gRPC stubs), `tokio::sync` and `rand`. So a SQL backend or an in-memory simulation
//! can implement [`Backend`] without linking RocksDB.
//!
//! ```
//! use cairn_core::{validate, KeyRange, RequestError};
//! use cairn_core::proto::etcdserverpb::PutRequest;
//! assert_eq!(validate::check_put(&PutRequest::default()), Err(RequestError::EmptyKey));
//! assert!(KeyRange::new(b"a", b"c").contains(b"b"));
//! ```

pub mod auth;
pub mod backend;
pub mod error;
pub mod key_range;
pub mod lessor;
pub mod request;
pub mod seal;
pub mod sim;
pub mod validate;

pub use backend::{
    blocking, AuthBackend, Backend, ClusterBackend, KvBackend, LeaseBackend, MaintenanceBackend, WatchSource,
};
pub use cairn_proto as proto;
pub use error::{BackendError, RequestError, StorageSource};
pub use key_range::{prefix_end, KeyRange};
pub use request::{
    is_read_only, is_serializable, Alarm, BackupStream, KvHash, Lease, LeaseTime, Member, MemberStatus,
    RevisionEvents, Revisions, WriteRequest, WriteResponse, INITIAL_REVISION, MAX_LEASE_TTL,
};
