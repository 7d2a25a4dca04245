//! A snapshot stream from a peer (or a backup being restored), then every read over the
//! rows it installed: the snapshot reader and the on-disk row formats (kv, history,
//! events, leases, sealed values) must refuse damage with an error, never panic.
#![no_main]

use cairn_core::seal::{DataKey, Sealer};
use cairn_mvcc::MvccStore;
use cairn_proto::etcdserverpb::RangeRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sealer = Sealer::new(DataKey::new([7; 8], [7; 32], [8; 32]), Vec::new(), vec![b"/s/".to_vec()]);
    let store = MvccStore::in_memory().with_sealer(Some(std::sync::Arc::new(sealer)));
    let mut input = data;
    if store.install_snapshot(&mut input).is_err() {
        return;
    }
    let Ok((current, compacted)) = store.revisions() else { return };
    let all = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
    let _ = store.range(&all);
    for revision in [compacted, current / 2, current.saturating_sub(1)] {
        let _ = store.range(&RangeRequest { revision, ..all.clone() });
    }
    let _ = store.events(compacted.max(1), current, 64, true);
    let _ = store.hash_kv(0);
    let _ = store.leases();
});
