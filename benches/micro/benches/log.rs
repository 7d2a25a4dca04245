//! The Raft side: log append through openraft's storage trait, with the fsync that makes
//! it durable (group commit), and the codec of one log entry.

use cairn_micro::put;
use cairn_raft::codec;
use cairn_raft::log_store::LogStore;
use cairn_raft::types::{Command, Entry, TypeConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::TypeConfigExt;

fn entries(from: u64, n: u64) -> Vec<Entry> {
    (from..from + n)
        .map(|i| {
            Entry::new_normal(openraft::testing::log_id::<TypeConfig>(1, 1, i), Command::Write(put(i, 256)))
        })
        .collect()
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("log/append+fsync");
    for batch in [1u64, 64] {
        group.throughput(Throughput::Elements(batch));
        group.bench_function(format!("{batch} entries of 256 B"), |b| {
            let dir = tempfile::tempdir().expect("temp dir");
            let data = cairn_raft::storage::open_data_dir(dir.path()).expect("open");
            let log = LogStore::new(
                std::sync::Arc::new(cairn_raft::disk::RocksLogDisk::new(data.db.clone())),
                None,
            );
            let mut next = 1u64;
            b.to_async(&runtime).iter(|| {
                let batch_entries = entries(next, batch);
                next += batch;
                let mut log = log.clone();
                async move {
                    let (tx, rx) = TypeConfig::oneshot();
                    log.append(batch_entries, IOFlushed::<TypeConfig>::signal(tx)).await.expect("append");
                    rx.await.expect("flushed").expect("fsync");
                }
            });
        });
    }
    group.finish();
}

fn codec_entry(c: &mut Criterion) {
    let entry = entries(1, 1).pop().expect("one entry");
    let bytes = codec::encode(&entry).expect("encode");
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode entry (256 B put)", |b| b.iter(|| codec::encode(&entry).expect("encode")));
    group.bench_function("decode entry (256 B put)", |b| {
        b.iter(|| codec::decode::<Entry>(&bytes).expect("decode"))
    });
    group.finish();
}

criterion_group!(benches, append, codec_entry);
criterion_main!(benches);
