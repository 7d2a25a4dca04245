//! `cairn bench` end to end: a 1-node cluster from the harness (cairn, or etcd with
//! `CAIRN_TEST_TARGET=etcd`), the real `cairn` binary, and its `--json` output parsed back.
//! Figures are checked for sanity only (no timing assertions).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use cairn_bench::Report;
use cairn_tests::{Cluster, ClusterOptions, Target, CAIRN_BIN_ENV};

/// The `cairn` binary with the `bench` subcommand: `CAIRN_BIN`, else next to this test's
/// profile directory (`target/<profile>/cairn`; build it with `cargo build -p cairn`).
fn cairn_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(CAIRN_BIN_ENV) {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    let bin =
        exe.parent().and_then(|deps| deps.parent()).map(|p| p.join("cairn")).context("no profile dir")?;
    if !bin.is_file() {
        bail!("{} not found: build it first with `cargo build -p cairn`", bin.display());
    }
    Ok(bin)
}

fn bench(args: &[&str]) -> Result<Report> {
    let out = Command::new(cairn_bin()?).arg("bench").args(args).arg("--json").output()?;
    let stdout = String::from_utf8(out.stdout)?;
    if !out.status.success() {
        bail!("cairn bench {args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    // Exactly one JSON object: serde_json rejects trailing content.
    serde_json::from_str(stdout.trim())
        .with_context(|| format!("stdout is not one Report object: {stdout:?}"))
}

fn check_sane(r: &Report, workload: &str, ops: u64) {
    assert_eq!(r.workload, workload);
    assert_eq!(r.ops, ops, "{r:?}");
    assert_eq!(r.errors, 0, "{:?}", r.errors_by_code);
    assert!(r.errors_by_code.is_empty());
    assert!(r.ops_per_sec > 0.0 && r.duration_s > 0.0, "{r:?}");
    let lat = [r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms];
    assert!(lat[0] > 0.0, "{lat:?}");
    assert!(lat.windows(2).all(|w| w[0] <= w[1]), "percentiles out of order: {lat:?}");
    assert!(!r.percentiles.is_empty() && !r.timeline.is_empty());
    assert_eq!(r.timeline.iter().map(|s| s.ops).sum::<u64>(), r.ops);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_json_against_a_one_node_cluster() -> Result<()> {
    let cluster = Cluster::start(Target::from_env(), ClusterOptions::nodes(1)).await?;
    let ep = cluster.client_addr(0).to_string();
    let common = ["--endpoints", ep.as_str(), "--clients", "4", "--total", "200"];

    let put = bench(&[&["put"], &common[..], &["--key-space", "100"]].concat())?;
    check_sane(&put, "put", 200);
    assert_eq!((put.clients, put.connections, put.key_size, put.value_size), (4, 1, 8, 256));

    let range = bench(&[&["range"], &common[..], &["--key-space", "300", "--consistency", "s"]].concat())?;
    check_sane(&range, "range", 200);
    assert_eq!(range.extra.get("prefill_keys_per_sec").map(|v| *v > 0.0), Some(true));

    let txn = bench(&[&["txn"], &common[..], &["--key-space", "50", "--leader-only"]].concat())?;
    check_sane(&txn, "txn", 200);
    // Each client's first try on a key it has not seen fails (the key exists), the retry wins.
    let won = txn.extra["cas_succeeded"];
    assert!(won > 0.0 && won <= 200.0, "{won}");

    let delete = bench(&["delete", "--endpoints", &ep, "--clients", "4", "--key-space", "100"])?;
    check_sane(&delete, "delete", 100);
    assert_eq!(delete.extra["keys_deleted"], 100.0);

    let watch = bench(&[
        "watch",
        "--endpoints",
        &ep,
        "--clients",
        "2",
        "--total",
        "50",
        "--watchers",
        "20",
        "--watchers-per-stream",
        "5",
    ])?;
    assert_eq!(watch.extra["watch_puts"], 50.0);
    assert_eq!(watch.extra["events_lost"], 0.0, "{watch:?}");
    assert_eq!(watch.ops, 50 * 20);
    let pid = cluster.pid(0).context("the server's pid")?.to_string();
    let fanout =
        bench(&["watch", "--endpoints", &ep, "--total", "20", "--watchers", "200", "--server-pid", &pid])?;
    assert_eq!(fanout.extra["events_lost"], 0.0, "{fanout:?}");
    assert!(fanout.extra["server_rss_before_mib"] > 0.0, "{fanout:?}");
    assert!(fanout.extra.contains_key("server_bytes_per_watcher"), "{fanout:?}");

    // Each lease: grant, 2 keepalives on the client's stream, revoke.
    let lease =
        bench(&[&["lease"], &common[..], &["--keepalives-per-lease", "2", "--lease-ttl", "30"]].concat())?;
    check_sane(&lease, "lease", 200);
    let (grants, keepalives, revokes) =
        (lease.extra["lease_grants"], lease.extra["lease_keepalives"], lease.extra["lease_revokes"]);
    assert_eq!(grants + keepalives + revokes, 200.0, "{:?}", lease.extra);
    assert!(revokes <= grants && grants <= revokes + 4.0, "{:?}", lease.extra);
    assert!(keepalives <= 2.0 * grants && keepalives >= 2.0 * revokes, "{:?}", lease.extra);
    assert!(lease.extra["grants_keepalives_per_sec"] > 0.0, "{:?}", lease.extra);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_and_plot() -> Result<()> {
    let cluster = Cluster::start(Target::from_env(), ClusterOptions::nodes(1)).await?;
    let dir = tempfile::tempdir()?;
    let svg = dir.path().join("lat.svg");
    let out = Command::new(cairn_bin()?)
        .args(["bench", "mixed", "--endpoints", &cluster.client_addr(0).to_string(), "--clients", "2"])
        .args(["--total", "100", "--key-space", "20", "--plot"])
        .arg(&svg)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout)?;
    for needle in ["ops/s", "p99.9", "mixed against"] {
        assert!(table.contains(needle), "{needle} not in:\n{table}");
    }
    let svg = std::fs::read_to_string(&svg)?;
    assert!(
        svg.starts_with("<svg") && svg.contains("latency by percentile"),
        "{}",
        &svg[..svg.len().min(200)]
    );
    Ok(())
}
