//! The openraft type configuration and the application data it carries.

use std::fmt;

use cairn_core::{RequestError, WriteRequest, WriteResponse};
use prost::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::pb;

/// A member's id: a stable hash of its name, so that every node derives the same ids
/// from the same `--initial-cluster` (etcd derives them from URLs and the cluster token).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Cairn's Raft types: log entries carry one etcd write each.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = PeerNode,
        AsyncRuntime = crate::runtime::CairnRuntime,
);

pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachine>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, crate::state_machine::SnapshotData>;

/// What the cluster knows of a member.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PeerNode {
    #[serde(deserialize_with = "borrowed_string")]
    pub name: String,
    /// host:port of the peer (Raft) listener.
    #[serde(deserialize_with = "borrowed_string")]
    pub peer_addr: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_addr)
    }
}

/// FNV-1a of the name: stable across versions and platforms, never 0.
pub fn node_id_of(name: &str) -> NodeId {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h.max(1)
}

/// The newest command format this version applies (`cairnpb.Command`'s `format`): 0 = the
/// entries of 0.1, 1 = adds member attributes, 2 = adds alarms. Each entry carries the
/// lowest format that knows its command, so members that apply format 1 still apply
/// everything but alarms. 3 adds etcd's auth, 4 writes checked at an auth revision.
pub const COMMAND_FORMAT: u32 = 4;

/// One replicated command: what a Raft log entry carries. Serialized as the protobuf
/// `cairnpb.Command`, which reads 0.1's entries (a `cairnpb.WriteRequest`) as writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// An etcd write: the only command of 0.1.
    Write(WriteRequest),
    /// An etcd write whose permissions were checked at auth revision `auth_revision`
    /// (format 4; proposed only while auth is enabled, which needs every member at 0.2 or
    /// later): refused at apply if the auth state changed since, as etcd re-checks.
    CheckedWrite { write: WriteRequest, auth_revision: u64 },
    /// A member publishes its attributes (0.2+; proposed only once every member knows it).
    SetMember(pb::MemberAttributes),
    /// An alarm raised or cleared (format 2; proposed only once every member published).
    SetAlarm(pb::AlarmChange),
    /// etcd's auth (format 3; proposed only once every member published).
    Auth(AuthCommand),
}

/// A replicated auth command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthCommand {
    Change(cairn_core::auth::AuthChange),
    /// From now on `token` stands for `user` on every member.
    AssignToken {
        user: String,
        token: String,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Write(w) => write_summary(f, w),
            Command::CheckedWrite { write, auth_revision } => {
                write_summary(f, write)?;
                write!(f, " at auth revision {auth_revision}")
            }
            Command::SetMember(m) => write!(f, "set_member({:x}, {})", m.id, m.name),
            Command::SetAlarm(a) => write!(f, "set_alarm({:x}, {}, {})", a.member_id, a.alarm, a.activate),
            // Never the token or a password hash.
            Command::Auth(AuthCommand::AssignToken { user, .. }) => write!(f, "auth_token({user})"),
            Command::Auth(AuthCommand::Change(c)) => write!(f, "auth({})", c.kind()),
        }
    }
}

fn write_summary(f: &mut fmt::Formatter<'_>, write: &WriteRequest) -> fmt::Result {
    match write {
        WriteRequest::Put(p) => write!(f, "put({} bytes key)", p.key.len()),
        WriteRequest::DeleteRange(_) => write!(f, "delete_range"),
        WriteRequest::Txn(t) => write!(f, "txn({} compares)", t.compare.len()),
        WriteRequest::Compact(c) => write!(f, "compact({})", c.revision),
        WriteRequest::LeaseGrant(g) => write!(f, "lease_grant({:x}, {}s)", g.id, g.ttl),
        WriteRequest::LeaseRevoke(r) => write!(f, "lease_revoke({:x})", r.id),
    }
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&pb::Command::from(self.clone()).encode_to_vec())
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = serde_bytes_vec(d)?;
        let msg = pb::Command::decode(bytes.as_slice()).map_err(serde::de::Error::custom)?;
        Command::try_from(msg).map_err(serde::de::Error::custom)
    }
}

/// The state machine's answer to one entry (`None` for blank and membership entries).
/// Serialized as `cairnpb.WriteResponse`.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResult(pub Option<Result<WriteResponse, RequestError>>);

impl Serialize for CommandResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let msg = match &self.0 {
            Some(r) => pb::WriteResponse::from(r.clone()),
            None => pb::WriteResponse { response: None, log_index: 0 },
        };
        s.serialize_bytes(&msg.encode_to_vec())
    }
}

impl<'de> Deserialize<'de> for CommandResult {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = serde_bytes_vec(d)?;
        let msg = pb::WriteResponse::decode(bytes.as_slice()).map_err(serde::de::Error::custom)?;
        if msg.response.is_none() {
            return Ok(CommandResult(None));
        }
        Result::<WriteResponse, RequestError>::try_from(msg)
            .map(|r| CommandResult(Some(r)))
            .map_err(serde::de::Error::custom)
    }
}

/// A string read as borrowed bytes, for the same reason as [`serde_bytes_vec`].
fn borrowed_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
    }
    d.deserialize_str(V)
}

fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    // Borrowed, not `deserialize_byte_buf`: bincode allocates an owned buffer of the length
    // the input claims before reading it (4 GiB from 6 bytes, found by fuzzing), while a
    // borrowed slice is checked against the bytes that are really there.
    d.deserialize_bytes(V)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::etcdserverpb::{PutRequest, PutResponse, ResponseHeader};

    #[test]
    fn commands_and_results_round_trip_through_the_codec() {
        let cmd = Command::Write(WriteRequest::Put(PutRequest {
            key: b"k".to_vec(),
            value: vec![0, 1, 2],
            lease: 3,
            ..Default::default()
        }));
        let back: Command = crate::codec::decode(&crate::codec::encode(&cmd).unwrap()).unwrap();
        assert_eq!(back, cmd);
        let ok = CommandResult(Some(Ok(WriteResponse::Put(PutResponse {
            header: Some(ResponseHeader { revision: 5, ..Default::default() }),
            prev_kv: None,
        }))));
        let back: CommandResult = crate::codec::decode(&crate::codec::encode(&ok).unwrap()).unwrap();
        assert_eq!(back, ok);
        let err = CommandResult(Some(Err(RequestError::Compacted)));
        let back: CommandResult = crate::codec::decode(&crate::codec::encode(&err).unwrap()).unwrap();
        assert_eq!(back, err);
        let none: CommandResult =
            crate::codec::decode(&crate::codec::encode(&CommandResult(None)).unwrap()).unwrap();
        assert_eq!(none, CommandResult(None));
    }

    #[test]
    fn entries_of_0_1_read_as_writes_and_0_1_reads_ours() {
        let put =
            WriteRequest::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() });
        // A 0.1 entry: the protobuf WriteRequest.
        let old = pb::WriteRequest::from(put.clone()).encode_to_vec();
        let cmd = Command::try_from(pb::Command::decode(old.as_slice()).unwrap()).unwrap();
        assert_eq!(cmd, Command::Write(put.clone()));
        // What 0.1 decodes from our write entries.
        let ours = pb::Command::from(Command::Write(put.clone())).encode_to_vec();
        let seen_by_0_1 = pb::WriteRequest::decode(ours.as_slice()).unwrap();
        assert_eq!(WriteRequest::try_from(seen_by_0_1).unwrap(), put);
    }

    /// A length prefix that claims more bytes than follow is refused before anything of
    /// that size is allocated (fuzzing found 4 GiB allocated from 6 bytes; 2^62 aborts).
    #[test]
    fn a_huge_claimed_length_is_refused_without_allocating_it() {
        let mut claim = vec![1, 0xFD];
        claim.extend_from_slice(&(1u64 << 62).to_le_bytes());
        claim.extend_from_slice(b"short");
        assert!(crate::codec::decode::<CommandResult>(&claim).is_err());
        assert!(crate::codec::decode::<Command>(&claim).is_err());
        assert!(crate::codec::decode::<PeerNode>(&claim).is_err());
        let node = PeerNode { name: "n1".into(), peer_addr: "127.0.0.1:2380".into() };
        assert_eq!(crate::codec::decode::<PeerNode>(&crate::codec::encode(&node).unwrap()).unwrap(), node);
    }

    #[test]
    fn checked_writes_are_format_4_and_keep_their_auth_revision() {
        let put =
            WriteRequest::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() });
        let checked = Command::CheckedWrite { write: put.clone(), auth_revision: 7 };
        let msg = pb::Command::from(checked.clone());
        assert_eq!((msg.format, msg.auth_revision), (4, 7));
        assert_eq!(Command::try_from(msg).unwrap(), checked);
        let back: Command = crate::codec::decode(&crate::codec::encode(&checked).unwrap()).unwrap();
        assert_eq!(back, checked);
        // A member that knows only format 3 refuses it rather than apply it unchecked.
        assert!(pb::Command::from(checked).format > 3);
        assert_eq!(pb::Command::from(Command::Write(put)).format, 1);
    }

    #[test]
    fn a_newer_command_format_is_refused() {
        let mut msg =
            pb::Command::from(Command::SetMember(pb::MemberAttributes { id: 1, ..Default::default() }));
        msg.format = COMMAND_FORMAT + 1;
        assert!(Command::try_from(msg).is_err());
        assert!(Command::try_from(pb::Command::default()).is_err(), "an empty command");
    }

    #[test]
    fn node_ids_are_stable() {
        assert_eq!(node_id_of("n1"), node_id_of("n1"));
        assert_ne!(node_id_of("n1"), node_id_of("n2"));
        // Pinned: ids are persisted in membership, so the hash must never change.
        assert_eq!(node_id_of("default"), 0xebada5168620c5fe);
    }
}
