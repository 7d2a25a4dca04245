//! The etcd v3 API for Cairn: Rust types generated (prost) from the `.proto`
//! files in the workspace's `proto/` directory, which are wire-identical
//! transcriptions of etcd's (v3.5, plus v3.6's additive fields): same packages,
//! services, methods, messages, field names and numbers.
//!
//! Modules mirror the protobuf packages: [`mvccpb`], [`authpb`],
//! [`etcdserverpb`], [`v3lockpb`], [`v3electionpb`].
//!
//! # Features
//!
//! * `grpc` (default): also generates the tonic client and server stubs
//!   (e.g. `etcdserverpb::kv_server::KvServer`, `etcdserverpb::kv_client::KvClient`)
//!   and pulls in `tonic` and `tonic-prost`.
//! * With `default-features = false` only the prost messages are generated and
//!   the crate depends on `prost` alone, so storage crates (MVCC) can use the
//!   messages without depending on tonic.
//! * `json`: serde `Serialize`/`Deserialize` for every message, in the JSON that etcd's
//!   grpc-gateway speaks (proto field names, 64-bit integers as strings, bytes as base64,
//!   enum names, zero values omitted; camelCase names and unknown fields accepted).

/// `mvccpb`: `KeyValue` and `Event`.
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// `authpb`: `User`, `Permission`, `Role`, `UserAddOptions`.
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// `etcdserverpb`: the KV, Watch, Lease, Cluster, Maintenance and Auth services
/// and their messages.
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// `v3lockpb`: the Lock service.
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// `v3electionpb`: the Election service.
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// Response headers (gRPC metadata) through which a Cairn member tells more than etcd's
/// messages carry; etcd and older Cairn members send none of them.
pub mod headers {
    /// On `Maintenance.Status`: Cairn's own version (the `version` field is the etcd API
    /// version that clients check).
    pub const SOFTWARE_VERSION: &str = "cairn-version";
    /// On `Maintenance.Status`: the member's cluster key fingerprint ("none" without a key).
    pub const KEY_FINGERPRINT: &str = "cairn-key-fingerprint";
    /// On `Maintenance.Status`: the member's operating system and architecture.
    pub const OS: &str = "cairn-os";
}

/// A version's release line, `major.minor` ("0.2" of "0.2.13"): members of one line may
/// run together (patch releases mix), members of two lines only during a rolling upgrade.
/// Anything after the second dot is dropped ("etcd 3.4" of "etcd 3.4.23").
pub fn release_line(version: &str) -> &str {
    match version.match_indices('.').nth(1) {
        Some((i, _)) => &version[..i],
        None => version,
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of all the `.proto` files above
/// (for gRPC server reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cairn_descriptor.bin"));

#[cfg(test)]
mod tests {
    use super::etcdserverpb::{
        compare, request_op, CompactionRequest, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
    };
    use prost::Message;

    #[test]
    fn release_lines_are_major_minor() {
        use super::release_line;
        assert_eq!(release_line("0.2.0"), "0.2");
        assert_eq!(release_line("0.2.13"), "0.2");
        assert_eq!(release_line("1.0.0-rc.1"), "1.0");
        assert_eq!(release_line("etcd 3.4.23"), "etcd 3.4");
        assert_eq!(release_line("2"), "2");
        assert_ne!(release_line("0.3.0"), release_line("0.2.9"));
    }

    #[test]
    fn range_request_round_trip() {
        let req = RangeRequest {
            key: b"foo".to_vec(),
            range_end: b"fop".to_vec(),
            limit: 10,
            revision: 42,
            sort_order: super::etcdserverpb::range_request::SortOrder::Descend as i32,
            sort_target: super::etcdserverpb::range_request::SortTarget::Mod as i32,
            serializable: true,
            keys_only: true,
            count_only: false,
            min_mod_revision: 1,
            max_mod_revision: 2,
            min_create_revision: 3,
            max_create_revision: 4,
        };
        let bytes = req.encode_to_vec();
        assert_eq!(RangeRequest::decode(bytes.as_slice()).unwrap(), req);
    }

    #[test]
    fn nested_txn_round_trip() {
        let inner = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Mod as i32,
                key: b"k".to_vec(),
                target_union: Some(compare::TargetUnion::ModRevision(7)),
                range_end: b"l".to_vec(),
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    prev_kv: true,
                    ..Default::default()
                })),
            }],
            failure: vec![],
        };
        let outer = TxnRequest {
            compare: vec![],
            success: vec![RequestOp { request: Some(request_op::Request::RequestTxn(inner)) }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: b"k".to_vec(),
                    ..Default::default()
                })),
            }],
        };
        let bytes = outer.encode_to_vec();
        assert_eq!(TxnRequest::decode(bytes.as_slice()).unwrap(), outer);
    }

    #[test]
    fn field_numbers_on_the_wire() {
        // PutRequest.prev_kv is field 4, varint: tag (4 << 3) | 0 = 0x20.
        let put = PutRequest { prev_kv: true, ..Default::default() };
        assert_eq!(put.encode_to_vec(), [0x20, 0x01]);

        // Compare.range_end is field 64, length-delimited: tag (64 << 3) | 2 = 514
        // = varint [0x82, 0x04].
        let cmp = Compare { range_end: b"z".to_vec(), ..Default::default() };
        assert_eq!(cmp.encode_to_vec(), [0x82, 0x04, 0x01, b'z']);

        // CompactionRequest.physical is field 2.
        let compact = CompactionRequest { revision: 0, physical: true };
        assert_eq!(compact.encode_to_vec(), [0x10, 0x01]);
    }

    #[test]
    fn descriptor_set_is_present() {
        assert!(!super::FILE_DESCRIPTOR_SET.is_empty());
    }
}
