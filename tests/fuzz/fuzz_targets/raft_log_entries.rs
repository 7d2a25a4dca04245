//! The Raft log as stored (a format byte and bincode, or a sealed record) and the other
//! openraft values the codec reads from disk: any bytes decode or are refused with an error,
//! and what decodes encodes back to bytes that decode to the same value.
#![no_main]

use cairn_core::seal::{DataKey, Sealer};
use cairn_raft::codec;
use cairn_raft::log_store::{decode_entry, encode_entry};
use cairn_raft::types::{Command, CommandResult, LogId, SnapshotMeta, StoredMembership, Vote};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sealer = Sealer::new(DataKey::new([1; 8], [1; 32], [2; 32]), Vec::new(), Vec::new());
    let (index, stored) = match data.split_first_chunk::<8>() {
        Some((index, rest)) => (u64::from_be_bytes(*index), rest),
        None => (0, data),
    };
    for sealer in [None, Some(&sealer)] {
        if let Ok(entry) = decode_entry(index, stored, sealer) {
            let again = encode_entry(&entry, sealer).expect("a decoded entry encodes");
            let back = decode_entry(entry.log_id.index, &again, sealer).expect("an encoded entry decodes");
            assert_eq!(format!("{back:?}"), format!("{entry:?}"));
        }
    }
    let _ = codec::decode::<Vote>(data);
    let _ = codec::decode::<Option<LogId>>(data);
    let _ = codec::decode::<StoredMembership>(data);
    let _ = codec::decode::<SnapshotMeta>(data);
    let _ = codec::decode::<CommandResult>(data);
    if let Ok(command) = codec::decode::<Command>(data) {
        let again = codec::encode(&command).expect("a decoded command encodes");
        let back: Command = codec::decode(&again).expect("an encoded command decodes");
        assert_eq!(format!("{back:?}"), format!("{command:?}"));
    }
});
