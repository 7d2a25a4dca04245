//! The MVCC engine alone: apply a batch of puts, scan 1,000 keys, read an old revision.

use cairn_micro::{apply_all, put, store};
use cairn_proto::etcdserverpb::RangeRequest;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn apply_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("mvcc/apply");
    for batch in [1usize, 64, 512] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("{batch} puts of 256 B"), |b| {
            let (_dir, store) = store();
            let mut next = 0u64;
            b.iter_batched(
                || {
                    let reqs: Vec<_> = (0..batch as u64).map(|i| put((next + i) % 100_000, 256)).collect();
                    next += batch as u64;
                    reqs
                },
                |reqs| apply_all(&store, &reqs),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn reads(c: &mut Criterion) {
    let (_dir, store) = store();
    // 10,000 keys, each written 3 times: the history has 30,000 versions.
    for _ in 0..3 {
        let reqs: Vec<_> = (0..10_000).map(|i| put(i, 256)).collect();
        apply_all(&store, &reqs);
    }
    let (current, _) = store.revisions().expect("revisions");
    let mut group = c.benchmark_group("mvcc/range");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000 keys, current", |b| {
        let req =
            RangeRequest { key: b"00001000".to_vec(), range_end: b"00002000".to_vec(), ..Default::default() };
        b.iter(|| assert_eq!(store.range(&req).expect("range").kvs.len(), 1000));
    });
    group.bench_function("1000 keys, historical", |b| {
        // The state after the first round: every key at its first version.
        let req = RangeRequest {
            key: b"00001000".to_vec(),
            range_end: b"00002000".to_vec(),
            revision: current - 20_000,
            ..Default::default()
        };
        b.iter(|| assert_eq!(store.range(&req).expect("range").kvs.len(), 1000));
    });
    group.finish();
    let mut group = c.benchmark_group("mvcc/get");
    group.bench_function("one key, current", |b| {
        let req = RangeRequest { key: b"00004242".to_vec(), ..Default::default() };
        b.iter(|| assert_eq!(store.range(&req).expect("range").kvs.len(), 1));
    });
    group.bench_function("one key, historical", |b| {
        let req =
            RangeRequest { key: b"00004242".to_vec(), revision: current - 20_000, ..Default::default() };
        b.iter(|| assert_eq!(store.range(&req).expect("range").kvs.len(), 1));
    });
    group.finish();
    // What the space quota costs every write (`--quota-backend-bytes`, checked before each put).
    let mut group = c.benchmark_group("mvcc/space");
    group.bench_function("approximate size (the quota check)", |b| {
        b.iter(|| assert!(store.engine().approximate_size() > 0));
    });
    group.finish();
}

criterion_group!(benches, apply_batch, reads);
criterion_main!(benches);
