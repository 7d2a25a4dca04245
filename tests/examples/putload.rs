//! A first, minimal load probe (the real load generator is the benchmark issue's): N
//! clients put 8-byte keys with 256-byte values for a duration against the given endpoints
//! and print throughput and latency percentiles.
//!
//! `cargo run --release -p cairn-tests --example putload -- <endpoints,comma,separated> <clients> <seconds>`
//! (results so far: docs/benchmarks.md)

use std::time::{Duration, Instant};

use cairn_tests::etcd_client::Client;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let endpoints: Vec<String> =
        args.get(1).map_or("127.0.0.1:2379", |s| s).split(',').map(|e| format!("http://{e}")).collect();
    let clients: usize = args.get(2).map_or(Ok(16), |s| s.parse())?;
    let seconds: u64 = args.get(3).map_or(Ok(5), |s| s.parse())?;
    let value = vec![b'v'; 256];
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = Client::connect(endpoints.clone(), None).await?;
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n: u64 = 0;
            while Instant::now() < deadline {
                let key = format!("{:08x}", (c as u64) << 24 | (n % 10_000));
                let start = Instant::now();
                client.put(key, value.clone(), None).await?;
                latencies.push(start.elapsed());
                n += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "clients={clients} ops={} ops_per_sec={:.0} p50_ms={:.2} p99_ms={:.2}",
        all.len(),
        all.len() as f64 / seconds as f64,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}
