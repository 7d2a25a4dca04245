//! What a member reads from a peer after the handshake: openraft's requests and answers in
//! `RaftPayload`s, snapshot chunk headers, and the protobuf messages of the peer service
//! with their conversions. The first byte picks the message; no input may panic.
#![no_main]

use cairn_raft::codec;
use cairn_raft::pb;
use cairn_raft::types::{SnapshotMeta, TypeConfig, Vote, VoteRequest};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 12 {
        0 => drop(codec::decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(bytes)),
        1 => drop(codec::decode::<openraft::raft::AppendEntriesResponse<TypeConfig>>(bytes)),
        2 => drop(codec::decode::<openraft::raft::StreamAppendResult<TypeConfig>>(bytes)),
        3 => drop(codec::decode::<VoteRequest>(bytes)),
        4 => drop(codec::decode::<openraft::raft::VoteResponse<TypeConfig>>(bytes)),
        5 => drop(codec::decode::<openraft::raft::TransferLeaderRequest<TypeConfig>>(bytes)),
        6 => {
            let _ = codec::decode::<Vote>(bytes);
            let _ = codec::decode::<SnapshotMeta>(bytes);
            let _ = codec::decode::<openraft::raft::SnapshotResponse<TypeConfig>>(bytes);
        }
        7 => {
            if let Ok(msg) = pb::WriteRequest::decode(bytes) {
                let _ = cairn_core::WriteRequest::try_from(msg);
            }
        }
        8 => {
            if let Ok(msg) = pb::Command::decode(bytes) {
                let _ = cairn_raft::types::Command::try_from(msg);
            }
        }
        9 => {
            if let Ok(msg) = pb::WriteResponse::decode(bytes) {
                let _ = Result::<cairn_core::WriteResponse, cairn_core::RequestError>::try_from(msg);
            }
        }
        10 => {
            let _ = pb::ForwardedWrite::decode(bytes).map(|w| w.write.map(cairn_core::WriteRequest::try_from));
            let _ = pb::PeerFailure::decode(bytes);
            let _ = pb::MemberChangeRequest::decode(bytes);
            let _ = pb::JoinRequest::decode(bytes);
        }
        _ => {
            let _ = pb::MemberAttributes::decode(bytes);
            let _ = pb::SnapshotChunk::decode(bytes);
            let _ = pb::LeaseRenewRequest::decode(bytes);
            let _ = pb::PeerHashKvRequest::decode(bytes);
        }
    }
});
