//! Failover time (issue 11's benchmark): in a 3-member cluster with default timeouts, the
//! leader gets SIGKILL; the figure is the time from the kill to the first write acknowledged
//! through another member. A client connected to that member alone starts a put every
//! `--interval-ms` (each with a 10 s timeout, all in flight at once, so that a put waiting
//! inside the member never hides an earlier success); the earliest acknowledgement wins.
//! The killed member is restarted and the cluster waits for all three to serve before the
//! next trial.
//!
//!   cairn-failover --target before=/tmp/cairn-old --target after=target/release/cairn \
//!       --target etcd=/usr/bin/etcd --trials 20
//!
//! Targets run in turns (A B C A B C …) so that the machine's load drifts through all of them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cairn_tests::{Cluster, ClusterOptions, Target};
use clap::Parser;
use etcd_client::ConnectOptions;
use tokio::task::JoinSet;

#[derive(Parser, Debug)]
#[command(name = "cairn-failover", about = "Leader SIGKILL → first acknowledged write, Cairn vs etcd")]
struct Args {
    /// `LABEL=PATH`; a path whose file name starts with `etcd` runs etcd, anything else Cairn.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// Trials per target.
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Time between two puts started after the kill (the figure's resolution).
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    /// Quiet time after the cluster is ready and before the kill (heartbeats at steady state).
    #[arg(long, default_value_t = 1500)]
    settle_ms: u64,
}

struct Run {
    label: String,
    cluster: Cluster,
    millis: Vec<f64>,
}

fn target_of(spec: &str) -> Result<(String, Target)> {
    let (label, path) =
        spec.split_once('=').ok_or_else(|| anyhow!("--target {spec}: expected LABEL=PATH"))?;
    let bin = PathBuf::from(path);
    if !bin.exists() {
        bail!("--target {spec}: {} does not exist", bin.display());
    }
    let etcd = bin.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("etcd"));
    let target = if etcd { Target::Etcd { bin } } else { Target::Cairn { bin } };
    Ok((label.to_string(), target))
}

/// One trial: returns the milliseconds from the leader's SIGKILL to the first acknowledged put.
async fn trial(c: &Cluster, seq: usize, args: &Args) -> Result<f64> {
    c.wait_ready(Duration::from_secs(60)).await?;
    let leader = c.leader().await?;
    let via = (leader + 1) % c.len();
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(10));
    let client = c.client_with(&[via], options).await?;
    client.kv_client().put("failover/warm", "x", None).await.context("warm-up put")?;
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    if c.leader().await? != leader {
        bail!("the leader changed before the kill (the cluster is not steady)");
    }
    let interval = Duration::from_millis(args.interval_ms.max(1));
    let killed = Instant::now();
    c.kill(leader)?;
    let mut puts = JoinSet::new();
    let deadline = killed + Duration::from_secs(30);
    let mut first: Option<Instant> = None;
    let mut n = 0u64;
    let mut next = killed;
    while Instant::now() < deadline {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {
                let mut kv = client.kv_client();
                let key = format!("failover/{seq}/{n}");
                n += 1;
                puts.spawn(async move {
                    let r = kv.put(key, "v", None).await;
                    r.map(|_| Instant::now())
                });
                next += interval;
            }
            Some(done) = puts.join_next(), if !puts.is_empty() => {
                if let Ok(at) = done? {
                    first = Some(first.map_or(at, |f| f.min(at)));
                    break;
                }
            }
        }
    }
    // A put started earlier may still be acknowledged a little before the one we saw: take
    // the earliest among those that finish within a moment.
    let grace = tokio::time::sleep(Duration::from_millis(200));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            _ = &mut grace => break,
            done = puts.join_next() => match done {
                Some(Ok(Ok(at))) => first = Some(first.map_or(at, |f| f.min(at))),
                Some(_) => {}
                None => break,
            },
        }
    }
    puts.abort_all();
    c.restart(leader)?;
    let first = first.ok_or_else(|| anyhow!("no put acknowledged within 30 s of the kill"))?;
    Ok((first - killed).as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    // Nearest rank: with 20 trials p99 is the largest.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut runs = Vec::new();
    for spec in &args.targets {
        let (label, target) = target_of(spec)?;
        let cluster = Cluster::start(target, ClusterOptions::nodes(3))
            .await
            .with_context(|| format!("starting {label}"))?;
        runs.push(Run { label, cluster, millis: Vec::new() });
    }
    for t in 0..args.trials {
        for run in runs.iter_mut() {
            let ms =
                trial(&run.cluster, t, &args).await.with_context(|| format!("{} trial {t}", run.label))?;
            eprintln!("{} trial {t}: {ms:.0} ms", run.label);
            run.millis.push(ms);
        }
    }
    println!("| target | trials | median | p99 | min | max | every trial (ms) |");
    println!("|---|---|---|---|---|---|---|");
    for run in &runs {
        let mut sorted = run.millis.clone();
        sorted.sort_by(f64::total_cmp);
        let all: Vec<String> = run.millis.iter().map(|m| format!("{m:.0}")).collect();
        println!(
            "| {} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {} |",
            run.label,
            sorted.len(),
            percentile(&sorted, 50.0),
            percentile(&sorted, 99.0),
            sorted[0],
            sorted[sorted.len() - 1],
            all.join(" ")
        );
    }
    Ok(())
}
