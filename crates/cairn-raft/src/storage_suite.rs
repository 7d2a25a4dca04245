//! openraft's own storage contract test suite, run against our log store and state machine
//! on a real RocksDB.

use openraft::testing::log::{StoreBuilder, Suite};

use crate::log_store::LogStore;
use crate::state_machine::{SnapshotDir, StateMachine};
use crate::types::TypeConfig;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), openraft::StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = crate::storage::open_data_dir(dir.path()).expect("open data dir").db;
        let store = cairn_mvcc::MvccStore::new(std::sync::Arc::new(cairn_mvcc::RocksEngine::new(db.clone())));
        let sm = StateMachine::new(
            store,
            SnapshotDir::new(crate::storage::snapshot_path(dir.path())).expect("snapshot dir"),
            std::sync::Arc::new(cairn_core::lessor::Lessor::new(
                std::time::Duration::from_millis(100),
                std::time::Duration::from_millis(1000),
            )),
        )
        .expect("state machine");
        Ok((dir, LogStore::new(std::sync::Arc::new(crate::disk::RocksLogDisk::new(db)), None), sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder).await.expect("openraft storage suite");
}
