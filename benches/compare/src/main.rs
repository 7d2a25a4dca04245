//! `cairn-compare`: Cairn and etcd 3.4 side by side on this machine, in one run.
//!
//! Starts a 3-node Cairn (release binary) and a 3-node etcd (Debian's `/usr/bin/etcd`) on
//! loopback through the test harness (`cairn-tests`), fsync on in both (their defaults), and
//! runs the same `cairn bench` workloads against each in turns A B A B (cairn, etcd, cairn,
//! etcd). Then, on fresh clusters, loads 1,000,000 keys into each and measures RSS, on-disk
//! size and restart-to-serving time; probes the disk's fsync rate; and reads the puts per
//! fsync Cairn achieved (from the `replication counters` line each member logs at shutdown).
//! Prints a markdown table of each figure for both and the ratio Cairn/etcd.
//!
//! ```sh
//! cargo build --release -p cairn -p cairn-compare
//! target/release/cairn-compare --quick            # smoke run, ~2 minutes
//! target/release/cairn-compare --plots docs/bench # the full run (docs/benchmarks.md)
//! ```

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cairn_bench::Report;
use cairn_tests::{Cluster, ClusterOptions, Target};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "cairn-compare",
    about = "Cairn vs etcd 3.4 on this machine: throughput, latency, memory, restart"
)]
struct Args {
    /// Short runs and 100,000 keys instead of 1,000,000: a smoke run of the whole harness.
    #[arg(long)]
    quick: bool,
    /// The cairn binary (also the load generator) [default: target/release/cairn].
    #[arg(long)]
    cairn_bin: Option<PathBuf>,
    /// The etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// Seconds per measured run [default: 10, --quick: 2].
    #[arg(long)]
    seconds: Option<u64>,
    /// Rounds of A B (cairn, etcd) per workload.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Keys for the memory / disk / restart figures [default: 1000000, --quick: 100000].
    #[arg(long)]
    keys: Option<u64>,
    /// Write SVG latency plots (cairn vs etcd) into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Write every raw report and figure as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Run only the workloads whose name contains this (e.g. `put`); skips the 1M-key phase.
    #[arg(long)]
    only: Option<String>,
    /// Also measure the coordination figures (issue 3) A B A B: watch fan-out with this many
    /// watchers on one member (put acknowledgement to event delivery, and that member's RSS
    /// per watcher) and lease churn (grants + keepalives per second). 0: skip.
    #[arg(long, default_value_t = 0)]
    watchers: usize,
    /// With --watchers: the put rate during the fan-out run (puts/s, open loop).
    #[arg(long, default_value_t = 10.0)]
    watch_put_rate: f64,
    /// Skip the KV workloads and the 1M-key phase (with --watchers: coordination figures only).
    #[arg(long)]
    coordination_only: bool,
}

/// One measured workload: a name and the `cairn bench` arguments after the endpoints.
struct Workload {
    name: &'static str,
    args: Vec<String>,
}

fn workloads(seconds: u64) -> Vec<Workload> {
    let d = format!("{seconds}s");
    let w = |name, args: &[&str]| {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend([
            "--duration".to_string(),
            d.clone(),
            "--key-size".into(),
            "8".into(),
            "--value-size".into(),
            "256".into(),
        ]);
        Workload { name, args: a }
    };
    vec![
        w("put, 1 client", &["put", "--clients", "1"]),
        w("put, 16 clients", &["put", "--clients", "16"]),
        w("put, 256 clients", &["put", "--clients", "256"]),
        w("range linearizable, 64 clients", &["range", "--clients", "64", "--consistency", "l"]),
        w("range serializable, 64 clients", &["range", "--clients", "64", "--consistency", "s"]),
        w("txn CAS, 64 clients", &["txn", "--clients", "64"]),
    ]
}

fn endpoints(c: &Cluster) -> String {
    (0..c.len()).map(|i| c.client_addr(i).to_string()).collect::<Vec<_>>().join(",")
}

/// Runs `cairn bench <args> --endpoints <eps> --json` and parses its one JSON object.
fn bench(bin: &Path, eps: &str, args: &[String]) -> Result<Report> {
    let out = Command::new(bin)
        .arg("bench")
        .args(args)
        .args(["--endpoints", eps, "--json"])
        .output()
        .with_context(|| format!("running {} bench", bin.display()))?;
    if !out.status.success() {
        bail!("cairn bench {args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8(out.stdout)?;
    serde_json::from_str(stdout.trim()).with_context(|| format!("parsing the bench output {stdout:?}"))
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| anyhow!("no VmRSS"))?;
    let kb: u64 = line.split_whitespace().nth(1).ok_or_else(|| anyhow!("bad VmRSS"))?.parse()?;
    Ok(kb * 1024)
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += std::os::unix::fs::MetadataExt::blocks(&m) * 512,
                Err(_) => {}
            }
        }
    }
    total
}

/// write(4 KiB) + fdatasync in a loop for `secs` in `dir`: the disk's sync rate.
fn fsync_probe(dir: &Path, secs: f64) -> Result<(f64, f64, f64)> {
    let path = dir.join("cairn-compare-fsync-probe");
    let file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path)?;
    let block = vec![0xA5u8; 4096];
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut off = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        file.write_all_at(&block, off)?;
        file.sync_data()?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        off += block.len() as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    Ok((lat.len() as f64 / elapsed, p(0.5), p(0.99)))
}

async fn start(target: Target) -> Result<Cluster> {
    Cluster::start(target, ClusterOptions::nodes(3)).await
}

/// SIGTERMs every member, returns the last `replication counters` line of each log as
/// (wal_syncs, appends_synced, entries_applied), then restarts them and waits until ready.
async fn cairn_counters_and_restart(c: &Cluster) -> Result<Vec<(u64, u64, u64)>> {
    for i in 0..c.len() {
        c.terminate(i).await?;
    }
    let mut out = Vec::new();
    for i in 0..c.len() {
        let log = std::fs::read_to_string(c.log_path(i))?;
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("replication counters"))
            .ok_or_else(|| anyhow!("node {i} logged no replication counters"))?;
        let field = |name: &str| -> Result<u64> {
            let at = line.find(&format!("{name}=")).ok_or_else(|| anyhow!("{name} missing in {line}"))?;
            let rest = &line[at + name.len() + 1..];
            Ok(rest.split(|ch: char| !ch.is_ascii_digit()).next().unwrap_or("").parse()?)
        };
        out.push((field("wal_syncs")?, field("appends_synced")?, field("entries_applied")?));
    }
    c.restart_stopped()?;
    c.wait_ready(Duration::from_secs(60)).await?;
    Ok(out)
}

/// Static figures of a cluster holding `keys` keys.
#[derive(Debug, Default, serde::Serialize)]
struct Static {
    fill_keys_per_sec: f64,
    rss_total_mib: f64,
    rss_max_mib: f64,
    disk_mib: f64,
    restart_to_serving_s: f64,
    rss_after_restart_total_mib: f64,
}

async fn static_figures(bin: &Path, target: Target, keys: u64) -> Result<Static> {
    let c = start(target).await?;
    let eps = endpoints(&c);
    let args: Vec<String> = [
        "fill",
        "--key-space",
        &keys.to_string(),
        "--clients",
        "16",
        "--key-size",
        "8",
        "--value-size",
        "256",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let fill = bench(bin, &eps, &args)?;
    // Let background work (flushes, compactions, snapshots) settle as it would in service.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let rss: Vec<u64> = (0..c.len()).map(|i| rss_bytes(c.pid(i).unwrap_or(0))).collect::<Result<_>>()?;
    let disk: u64 = (0..c.len()).map(|i| dir_size(c.data_dir(i))).sum();
    for i in 0..c.len() {
        c.terminate(i).await?;
    }
    let t = Instant::now();
    c.restart_stopped()?;
    c.wait_ready(Duration::from_secs(300)).await?;
    let restart = t.elapsed().as_secs_f64();
    let rss_after: u64 =
        (0..c.len()).map(|i| rss_bytes(c.pid(i).unwrap_or(0))).collect::<Result<Vec<_>>>()?.iter().sum();
    Ok(Static {
        fill_keys_per_sec: fill.ops_per_sec,
        rss_total_mib: mib(rss.iter().sum()),
        rss_max_mib: mib(rss.iter().copied().max().unwrap_or(0)),
        disk_mib: mib(disk),
        restart_to_serving_s: restart,
        rss_after_restart_total_mib: mib(rss_after),
    })
}

/// One coordination measurement on a fresh cluster: (fan-out report, lease churn report).
/// The watchers sit on member 0, whose process's RSS is read before and after creating them.
fn coordination_round(
    bin: &Path,
    c: &Cluster,
    watchers: usize,
    put_rate: f64,
    seconds: u64,
) -> Result<(Report, Report)> {
    let eps = endpoints(c);
    let pid = c.pid(0).ok_or_else(|| anyhow!("member 0 is not running"))?;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let fanout = bench(
        bin,
        &eps,
        &s(&[
            "watch",
            "--watchers",
            &watchers.to_string(),
            "--watchers-per-stream",
            "100",
            "--clients",
            "1",
            "--rate",
            &put_rate.to_string(),
            "--duration",
            &format!("{seconds}s"),
            "--server-pid",
            &pid.to_string(),
        ]),
    )?;
    let churn = bench(
        bin,
        &eps,
        &s(&[
            "lease",
            "--clients",
            "64",
            "--keepalives-per-lease",
            "4",
            "--lease-ttl",
            "60",
            "--duration",
            &format!("{seconds}s"),
        ]),
    )?;
    Ok((fanout, churn))
}

/// The coordination table: A B A B, a fresh pair of clusters per round (the watchers' memory
/// must not linger into the next round).
async fn coordination(
    out: &mut String,
    json: &mut serde_json::Map<String, serde_json::Value>,
    bin: &Path,
    targets: (&Target, &Target),
    args: &Args,
    seconds: u64,
) -> Result<()> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        for (target, into) in [(targets.0, &mut a), (targets.1, &mut b)] {
            eprintln!(
                "[{}] coordination on {} round {} (load {})",
                cairn_bench_elapsed(),
                target.name(),
                round + 1,
                load()
            );
            let c = start(target.clone()).await?;
            into.push(coordination_round(bin, &c, args.watchers, args.watch_put_rate, seconds)?);
        }
    }
    let _ = writeln!(
        out,
        "\nCoordination ({} watchers on member 0 in streams of 100, puts at {}/s through all members; \
         lease: 64 clients, grant + 4 keepalives + revoke):\n",
        args.watchers, args.watch_put_rate
    );
    let _ = writeln!(out, "| figure | Cairn (A / B) | etcd 3.4 (A / B) | Cairn/etcd |\n|---|---:|---:|---:|");
    type Pick = fn(&(Report, Report)) -> f64;
    let figures: [(&str, Pick, usize); 9] = [
        ("fan-out: put ack to event p50 ms", |r| r.0.p50_ms, 2),
        ("fan-out: put ack to event p99 ms", |r| r.0.p99_ms, 2),
        ("fan-out: put ack to event max ms", |r| r.0.max_ms, 1),
        ("fan-out: events delivered/s", |r| r.0.ops_per_sec, 0),
        ("fan-out: events lost", |r| r.0.extra.get("events_lost").copied().unwrap_or(f64::NAN), 0),
        (
            "fan-out: member RSS before watchers, MiB",
            |r| r.0.extra.get("server_rss_before_mib").copied().unwrap_or(f64::NAN),
            1,
        ),
        (
            "fan-out: member RSS per watcher, bytes",
            |r| r.0.extra.get("server_bytes_per_watcher").copied().unwrap_or(f64::NAN),
            0,
        ),
        (
            "lease: grants + keepalives /s",
            |r| r.1.extra.get("grants_keepalives_per_sec").copied().unwrap_or(f64::NAN),
            0,
        ),
        ("lease: request p99 ms", |r| r.1.p99_ms, 2),
    ];
    for (name, pick, prec) in figures {
        let (va, vb): (Vec<f64>, Vec<f64>) = (a.iter().map(pick).collect(), b.iter().map(pick).collect());
        let ratio = if mean(&vb) > 0.0 { mean(&va) / mean(&vb) } else { f64::NAN };
        let _ = writeln!(out, "| {name} | {} | {} | {ratio:.2} |", fmt_vals(&va, prec), fmt_vals(&vb, prec));
    }
    let errs: Vec<String> =
        a.iter().chain(b.iter()).map(|(f, l)| format!("{}+{}", f.errors, l.errors)).collect();
    let _ = writeln!(out, "\nerrors (fan-out puts + lease requests), A B A B: {}", errs.join(", "));
    let pairs = |v: &[(Report, Report)]| {
        v.iter().map(|(f, l)| serde_json::json!({"fanout": f, "lease": l})).collect::<Vec<_>>()
    };
    json.insert("coordination".into(), serde_json::json!({"cairn": pairs(&a), "etcd": pairs(&b)}));
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<f64>().unwrap_or(0.0))
        })
        .unwrap_or(0.0)
        / 1024.0
        / 1024.0;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let tmp =
        std::env::var("CAIRN_TEST_TMPDIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let df = Command::new("df")
        .args(["-hT", &tmp])
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem:.0} GiB, Linux {}, data dirs in {tmp} on {df}", kernel.trim())
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn fmt_vals(v: &[f64], prec: usize) -> String {
    v.iter().map(|x| format!("{x:.prec$}")).collect::<Vec<_>>().join(" / ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cairn_bin = args.cairn_bin.clone().unwrap_or_else(|| root.join("target/release/cairn"));
    if !cairn_bin.is_file() {
        bail!("{} not found: cargo build --release -p cairn", cairn_bin.display());
    }
    let seconds = args.seconds.unwrap_or(if args.quick { 2 } else { 10 });
    let keys = args.keys.unwrap_or(if args.quick { 100_000 } else { 1_000_000 });
    let cairn = Target::Cairn { bin: cairn_bin.clone() };
    let etcd = Target::Etcd { bin: args.etcd_bin.clone() };
    let mut json = serde_json::Map::new();
    let mut out = String::new();

    let _ = writeln!(out, "machine: {}", machine());
    let _ = writeln!(out, "load average at start: {}", load());
    let tmp = std::env::var("CAIRN_TEST_TMPDIR").map(PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
    let (fsyncs, f50, f99) = fsync_probe(&tmp, if args.quick { 1.0 } else { 3.0 })?;
    let _ = writeln!(
        out,
        "fsync probe (4 KiB write + fdatasync): {fsyncs:.0}/s, p50 {f50:.3} ms, p99 {f99:.3} ms"
    );
    json.insert("fsync_probe".into(), serde_json::json!({"per_sec": fsyncs, "p50_ms": f50, "p99_ms": f99}));
    eprint!("{out}");

    if args.watchers > 0 {
        coordination(&mut out, &mut json, &cairn_bin, (&cairn, &etcd), &args, seconds).await?;
    }
    if args.coordination_only {
        let _ = writeln!(out, "\nload average at end: {}", load());
        print!("{out}");
        if let Some(path) = &args.json_out {
            std::fs::File::create(path)?.write_all(serde_json::to_string_pretty(&json)?.as_bytes())?;
        }
        return Ok(());
    }

    // A B A B on two live clusters.
    let (cc, ec) = (start(cairn.clone()).await?, start(etcd.clone()).await?);
    let (ceps, eeps) = (endpoints(&cc), endpoints(&ec));
    let mut rows = Vec::new();
    let mut raw = serde_json::Map::new();
    for w in workloads(seconds) {
        if args.only.as_ref().is_some_and(|o| !w.name.contains(o.as_str())) {
            continue;
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 0..args.rounds {
            eprintln!("[{}] {} round {} (load {})", cairn_bench_elapsed(), w.name, round + 1, load());
            a.push(bench(&cairn_bin, &ceps, &w.args)?);
            b.push(bench(&cairn_bin, &eeps, &w.args)?);
        }
        if let Some(dir) = &args.plots {
            std::fs::create_dir_all(dir)?;
            let file = dir.join(format!("{}.svg", slug(w.name)));
            cairn_bench::plot::write_svg(
                &file,
                &format!("{} (round 1)", w.name),
                &[("cairn", &a[0]), ("etcd 3.4", &b[0])],
            )?;
        }
        raw.insert(w.name.into(), serde_json::json!({"cairn": a, "etcd": b}));
        rows.push((w.name, a, b));
    }
    json.insert("workloads".into(), serde_json::Value::Object(raw));
    drop(cc);
    drop(ec);

    let _ =
        writeln!(out, "\n| figure | Cairn (A / B) | etcd 3.4 (A / B) | Cairn/etcd |\n|---|---:|---:|---:|");
    let figure = |out: &mut String, name: String, a: Vec<f64>, b: Vec<f64>, prec: usize| {
        let ratio = if mean(&b) > 0.0 { mean(&a) / mean(&b) } else { f64::NAN };
        let _ = writeln!(out, "| {name} | {} | {} | {ratio:.2} |", fmt_vals(&a, prec), fmt_vals(&b, prec));
    };
    for (name, a, b) in &rows {
        let get = |v: &Vec<Report>, f: fn(&Report) -> f64| v.iter().map(f).collect::<Vec<_>>();
        figure(&mut out, format!("{name}: ops/s"), get(a, |r| r.ops_per_sec), get(b, |r| r.ops_per_sec), 0);
        figure(&mut out, format!("{name}: p50 ms"), get(a, |r| r.p50_ms), get(b, |r| r.p50_ms), 2);
        figure(&mut out, format!("{name}: p99 ms"), get(a, |r| r.p99_ms), get(b, |r| r.p99_ms), 2);
        let errs =
            get(a, |r| r.errors as f64).iter().sum::<f64>() + get(b, |r| r.errors as f64).iter().sum::<f64>();
        if errs > 0.0 {
            figure(
                &mut out,
                format!("{name}: errors"),
                get(a, |r| r.errors as f64),
                get(b, |r| r.errors as f64),
                0,
            );
        }
    }

    if args.only.is_none() {
        // Puts per fsync: a put run on freshly restarted members (counters start at 0).
        let cc = start(cairn.clone()).await?;
        let eps = endpoints(&cc);
        let _ = writeln!(out, "\nCairn group commit (fresh processes per run; leader | followers):\n");
        let _ = writeln!(out, "| put clients | puts/s | leader entries per fsync | leader appends per fsync | follower entries per fsync |\n|---:|---:|---:|---:|---:|");
        let mut gc = Vec::new();
        for clients in [1, 16, 256] {
            cairn_counters_and_restart(&cc).await?;
            let leader = cc.leader().await?;
            let w = &workloads(seconds)[match clients {
                1 => 0,
                16 => 1,
                _ => 2,
            }];
            let r = bench(&cairn_bin, &eps, &w.args)?;
            let counters = cairn_counters_and_restart(&cc).await?;
            let per = |(syncs, _, applied): (u64, u64, u64)| applied as f64 / syncs.max(1) as f64;
            let (ls, la, _) = counters[leader];
            let followers: Vec<String> = counters
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != leader)
                .map(|(_, c)| format!("{:.1}", per(*c)))
                .collect();
            let _ = writeln!(
                out,
                "| {clients} | {:.0} | {:.1} | {:.1} | {} |",
                r.ops_per_sec,
                per(counters[leader]),
                la as f64 / ls.max(1) as f64,
                followers.join(", ")
            );
            gc.push(serde_json::json!({"clients": clients, "puts_per_sec": r.ops_per_sec, "counters": counters, "leader": leader}));
        }
        json.insert("group_commit".into(), serde_json::Value::Array(gc));
        drop(cc);

        eprintln!("[{}] {keys} keys into cairn, then etcd (load {})", cairn_bench_elapsed(), load());
        let sc = static_figures(&cairn_bin, cairn, keys).await?;
        let se = static_figures(&cairn_bin, etcd, keys).await?;
        let _ = writeln!(
            out,
            "\nWith {keys} keys (8-byte keys, 256-byte values, loaded in txns of 128 puts; 3 members):\n"
        );
        let _ = writeln!(out, "| figure | Cairn | etcd 3.4 | Cairn/etcd |\n|---|---:|---:|---:|");
        let row = |out: &mut String, name: &str, a: f64, b: f64, prec: usize| {
            let _ = writeln!(out, "| {name} | {a:.prec$} | {b:.prec$} | {:.2} |", a / b);
        };
        row(&mut out, "load rate, keys/s", sc.fill_keys_per_sec, se.fill_keys_per_sec, 0);
        row(&mut out, "RSS, MiB (sum of 3)", sc.rss_total_mib, se.rss_total_mib, 0);
        row(&mut out, "RSS, MiB (largest member)", sc.rss_max_mib, se.rss_max_mib, 0);
        row(&mut out, "on-disk size, MiB (sum of 3)", sc.disk_mib, se.disk_mib, 0);
        row(
            &mut out,
            "restart to serving, s (all 3, SIGTERM then start)",
            sc.restart_to_serving_s,
            se.restart_to_serving_s,
            2,
        );
        row(
            &mut out,
            "RSS after restart, MiB (sum of 3)",
            sc.rss_after_restart_total_mib,
            se.rss_after_restart_total_mib,
            0,
        );
        json.insert("static".into(), serde_json::json!({"keys": keys, "cairn": serde_json::to_value(&sc)?, "etcd": serde_json::to_value(&se)?}));
    }
    let _ = writeln!(out, "\nload average at end: {}", load());
    print!("{out}");
    if let Some(path) = &args.json_out {
        std::fs::File::create(path)?.write_all(serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    Ok(())
}

fn slug(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-")
}

fn cairn_bench_elapsed() -> String {
    use std::sync::OnceLock;
    static START: OnceLock<Instant> = OnceLock::new();
    format!("{:>5.0}s", START.get_or_init(Instant::now).elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slug("put, 256 clients"), "put-256-clients");
    }
}
