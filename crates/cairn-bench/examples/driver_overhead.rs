//! Which client gives the load generator less overhead: `etcd-client` 0.21 or the raw tonic
//! stubs of `cairn-proto`? Both put the same keys over one shared connection from `clients`
//! tasks, in turns A B A B; printed: throughput and the load generator's CPU per put.
//!
//! `cargo run --release -p cairn-bench --example driver_overhead -- <host:port> [clients] [puts]`

use std::sync::Arc;
use std::time::Instant;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::PutRequest;

fn cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

async fn with_etcd_client(endpoint: &str, clients: usize, puts: usize) -> anyhow::Result<()> {
    let client = etcd_client::Client::connect([format!("http://{endpoint}")], None).await?;
    let per = puts / clients;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut kv = client.kv_client();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                kv.put(cairn_bench::key(((c * per + i) % 10_000) as u64, 8), vec![b'v'; 256], None).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn with_tonic(endpoint: &str, clients: usize, puts: usize) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))?.connect().await?;
    let per = puts / clients;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut kv = KvClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let key = cairn_bench::key(((c * per + i) % 10_000) as u64, 8);
                kv.put(PutRequest { key, value: vec![b'v'; 256], ..Default::default() }).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = Arc::new(args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:2379".into()));
    let clients: usize = args.get(2).map_or(Ok(64), |s| s.parse())?;
    let puts: usize = args.get(3).map_or(Ok(20_000), |s| s.parse())?;
    println!("driver        round  puts/s   cpu µs/put");
    for round in ["A", "B"] {
        for driver in ["etcd-client", "tonic"] {
            let (t0, c0) = (Instant::now(), cpu_s());
            match driver {
                "etcd-client" => with_etcd_client(&endpoint, clients, puts).await?,
                _ => with_tonic(&endpoint, clients, puts).await?,
            }
            let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_s() - c0);
            println!("{driver:<13} {round:<6} {:>7.0} {:>10.1}", puts as f64 / secs, cpu * 1e6 / puts as f64);
        }
    }
    Ok(())
}
