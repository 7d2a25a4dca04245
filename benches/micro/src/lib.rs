//! Fixtures shared by the criterion benches in `benches/` (`cargo bench -p cairn-micro`).

use cairn_core::WriteRequest;
use cairn_mvcc::MvccStore;
use cairn_proto::etcdserverpb::PutRequest;

/// A fresh MVCC store on a real RocksDB in a temp dir (kept alive with the store).
pub fn store() -> (tempfile::TempDir, MvccStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = MvccStore::new(std::sync::Arc::new(
        cairn_mvcc::RocksEngine::open(dir.path(), &[]).expect("open RocksDB"),
    ));
    (dir, store)
}

/// An 8-byte key (zero-padded index, as `cairn bench`) and a value of `value_size` bytes.
pub fn put(index: u64, value_size: usize) -> WriteRequest {
    WriteRequest::Put(PutRequest {
        key: format!("{index:08}").into_bytes(),
        value: vec![b'v'; value_size],
        ..Default::default()
    })
}

/// Applies `requests` as one batch (one revision each, one RocksDB write).
pub fn apply_all(store: &MvccStore, requests: &[WriteRequest]) {
    let mut batch = store.begin_apply().expect("begin apply");
    for r in requests {
        batch.apply(r).expect("apply");
    }
    batch.commit().expect("commit");
}
