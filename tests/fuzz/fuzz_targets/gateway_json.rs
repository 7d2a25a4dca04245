//! The JSON gateway's request bodies: grpc-gateway's JSON for every request message the
//! gateway takes (int64 as strings, bytes as base64, enums by name), one or many values in
//! a body, as `cairn-http` decodes them. Bad JSON is an error, never a panic.
#![no_main]

use cairn_proto::etcdserverpb as pb;
use cairn_proto::v3electionpb as election;
use cairn_proto::v3lockpb as lock;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

fn decode<T: DeserializeOwned + serde::Serialize>(body: &[u8]) {
    for value in serde_json::Deserializer::from_slice(body).into_iter::<T>() {
        match value {
            // What decodes encodes again (the gateway echoes messages in responses).
            Ok(msg) => {
                let _ = serde_json::to_vec(&msg);
            }
            Err(_) => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    decode::<pb::RangeRequest>(data);
    decode::<pb::PutRequest>(data);
    decode::<pb::DeleteRangeRequest>(data);
    decode::<pb::TxnRequest>(data);
    decode::<pb::CompactionRequest>(data);
    decode::<pb::WatchRequest>(data);
    decode::<pb::LeaseGrantRequest>(data);
    decode::<pb::LeaseKeepAliveRequest>(data);
    decode::<pb::LeaseTimeToLiveRequest>(data);
    decode::<pb::AlarmRequest>(data);
    decode::<pb::MemberAddRequest>(data);
    decode::<pb::AuthUserAddRequest>(data);
    decode::<pb::AuthRoleGrantPermissionRequest>(data);
    decode::<lock::LockRequest>(data);
    decode::<election::CampaignRequest>(data);
    decode::<election::ProclaimRequest>(data);
});
