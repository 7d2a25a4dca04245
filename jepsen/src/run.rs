//! One test run: start the cluster (with cgroups, proxies and clocks as the nemeses need),
//! run the workers and the nemesis, heal, wait, final reads, check, write the report.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_tests::{Cluster, ClusterOptions, Target};
use serde_json::json;

use crate::checker::{overall, CheckResult, Validity};
use crate::client::{Shared, Worker};
use crate::history::{write_jsonl, Recorder};
use crate::nemesis::{Nemesis, NemesisKind, Schedule};
use crate::net::{ensure_package, Firewall};
use crate::proxy::Proxy;
use crate::report;
use crate::workload::{Ctx, Workload, WorkloadKind};

pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// What to run (the `test` subcommand's flags).
#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct TestArgs {
    /// Number of server processes (127.0.0.1 .. 127.0.0.N).
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Seconds of client operations (then heal, quiet period, final reads).
    #[arg(long, default_value_t = 60)]
    pub time: u64,
    #[arg(long, value_enum, default_value_t = WorkloadKind::Register)]
    pub workload: WorkloadKind,
    /// Comma-separated nemeses: kill, pause, partition, loss, delay, clock, member, all (or none).
    #[arg(long, value_delimiter = ',', default_value = "none")]
    pub nemesis: Vec<String>,
    /// `cairn` or `etcd`.
    #[arg(long, default_value = "cairn")]
    pub target: String,
    /// The server binary (default: `cairn` next to this executable, or CAIRN_BIN; for etcd
    /// ETCD_BIN or /usr/bin/etcd).
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Extra environment for every server, KEY=VALUE (repeatable; e.g. CAIRN_FAULT=stale-read).
    #[arg(long = "server-env")]
    pub server_env: Vec<String>,
    /// The report directory (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Client workers (logical processes at a time); default 2 per node.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Target rate of operations per second over all workers.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds before a client gives up on an operation (then `info` if it may have happened).
    #[arg(long, default_value_t = 2.0)]
    pub op_timeout: f64,
    /// Seconds of health between faults.
    #[arg(long, default_value_t = 5.0)]
    pub nemesis_quiet: f64,
    /// Seconds each fault lasts.
    #[arg(long, default_value_t = 6.0)]
    pub nemesis_fault: f64,
    /// Seconds between healing and the final reads.
    #[arg(long, default_value_t = 3.0)]
    pub quiet: f64,
    /// Seconds the linearizability checker may spend before answering `unknown`.
    #[arg(long, default_value_t = 60.0)]
    pub check_time: f64,
    /// Server election timeout in ms (heartbeat = timeout / 10); default: the server's own.
    #[arg(long)]
    pub election_timeout: Option<u64>,
}

/// What a run produced.
pub struct Outcome {
    pub valid: Validity,
    pub results: Vec<CheckResult>,
    pub out: PathBuf,
}

fn parse_nemeses(names: &[String]) -> Result<Vec<NemesisKind>> {
    let mut kinds = Vec::new();
    for n in names.iter().map(|s| s.trim()).filter(|s| !s.is_empty() && *s != "none") {
        let k = match n {
            "kill" => NemesisKind::Kill,
            "pause" => NemesisKind::Pause,
            "partition" => NemesisKind::Partition,
            "loss" => NemesisKind::Loss,
            "delay" => NemesisKind::Delay,
            "clock" => NemesisKind::Clock,
            "member" => NemesisKind::Member,
            "all" => {
                kinds.extend(NemesisKind::ALL);
                continue;
            }
            other => bail!(
                "unknown nemesis {other:?}: expected kill, pause, partition, loss, delay, clock, member, all or none"
            ),
        };
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    Ok(kinds)
}

fn target(args: &TestArgs) -> Result<Target> {
    match args.target.as_str() {
        "cairn" => {
            let bin = match &args.bin {
                Some(b) => b.clone(),
                None => match std::env::var_os(cairn_tests::CAIRN_BIN_ENV) {
                    Some(b) => PathBuf::from(b),
                    None => {
                        let exe = std::env::current_exe()?;
                        let dir = exe.parent().context("no exe dir")?;
                        let here = dir.join("cairn");
                        if here.is_file() {
                            here
                        } else {
                            dir.parent().map(|p| p.join("cairn")).unwrap_or(here)
                        }
                    }
                },
            };
            if !bin.is_file() {
                bail!(
                    "cairn binary {} not found: build it (`cargo build -p cairn`) or pass --bin",
                    bin.display()
                );
            }
            Ok(Target::Cairn { bin })
        }
        "etcd" => {
            let t = match &args.bin {
                Some(b) => Target::Etcd { bin: b.clone() },
                None => Target::etcd(),
            };
            if !t.bin().is_file() {
                bail!("etcd binary {} not found (apt-get install etcd-server, or --bin)", t.bin().display());
            }
            Ok(t)
        }
        other => bail!("--target {other:?}: expected cairn or etcd"),
    }
}

/// A shell wrapper that puts the server into its node's cgroup, then execs it.
fn write_wrapper(dir: &Path, real: &Path, fw: &Firewall, nodes: usize) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut cases = String::new();
    for i in 0..nodes {
        cases.push_str(&format!("  n{}) echo $$ > '{}' || exit 97 ;;\n", i + 1, fw.procs_file(i).display()));
    }
    let script = format!(
        "#!/bin/sh\n# cairn-jepsen: put this node into its cgroup (for per-node iptables marks), then run the server.\n\
         name=''; prev=''\nfor a in \"$@\"; do [ \"$prev\" = --name ] && name=\"$a\"; prev=\"$a\"; done\n\
         case \"$name\" in\n{cases}  *) echo \"cairn-jepsen wrapper: unknown node $name\" >&2; exit 97 ;;\nesac\n\
         exec '{}' \"$@\"\n",
        real.display()
    );
    let path = dir.join("node-wrapper.sh");
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// Runs one test and writes its report to `args.out`.
pub async fn run(args: TestArgs) -> Result<Outcome> {
    let kinds = parse_nemeses(&args.nemesis)?;
    let target = target(&args)?;
    let n = args.nodes;
    if n == 0 || n > 20 {
        bail!("--nodes must be 1..=20");
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let out = args.out.canonicalize()?;
    let work = out.join("work");
    std::fs::create_dir_all(&work)?;

    let needs_fw = kinds.iter().any(|k| matches!(k, NemesisKind::Partition | NemesisKind::Loss));
    let needs_proxy = kinds.contains(&NemesisKind::Delay);
    let needs_clock = kinds.contains(&NemesisKind::Clock);

    let mut opts = ClusterOptions::nodes(n);
    opts.start_timeout = Duration::from_secs(60);
    if let Some(e) = args.election_timeout {
        opts.election_timeout_ms = Some(e);
        opts.heartbeat_interval_ms = Some((e / 10).max(10));
    }
    for kv in &args.server_env {
        let (k, v) =
            kv.split_once('=').with_context(|| format!("--server-env {kv:?}: expected KEY=VALUE"))?;
        opts.env.push((k.to_string(), v.to_string()));
    }
    // Delay proxies listen on each node's address; nodes advertise them.
    let mut proxy_ports = Vec::new();
    if needs_proxy {
        for i in 0..n {
            proxy_ports.push(cairn_tests::free_port(std::net::Ipv4Addr::new(127, 0, 0, (i + 1) as u8))?);
        }
        opts.advertise_peer_ports = Some(proxy_ports.clone());
    }
    let mut clock_files = Vec::new();
    if needs_clock {
        ensure_package(Path::new(LIBFAKETIME), "faketime")?;
        for i in 0..n {
            let f = work.join(format!("clock-n{}", i + 1));
            std::fs::write(&f, "+0\n")?;
            opts.node_env.push(vec![
                ("LD_PRELOAD".into(), LIBFAKETIME.into()),
                ("FAKETIME_TIMESTAMP_FILE".into(), f.display().to_string()),
                ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
                ("FAKETIME_CACHE_DURATION".into(), "1".into()),
            ]);
            clock_files.push(f);
        }
    }
    // Firewall: cgroups and marking rules before any node starts.
    let mut firewall = None;
    let mut target_run = target.clone();
    if needs_fw {
        let fw = Firewall::new(&vec![0; n])?;
        fw.install()?;
        let wrapper = write_wrapper(&work, target.bin(), &fw, n)?;
        target_run = match &target {
            Target::Cairn { .. } => Target::Cairn { bin: wrapper },
            Target::Etcd { .. } => Target::Etcd { bin: wrapper },
        };
        firewall = Some(fw);
    }
    let tmp = work.join("cluster");
    std::fs::create_dir_all(&tmp)?;
    // The harness's temp dir lives inside the report dir, so logs survive a crash.
    std::env::set_var("CAIRN_TEST_TMPDIR", &tmp);
    eprintln!(
        "cairn-jepsen: {} nodes of {} ({}), workload {:?}, nemesis {:?}, {} s",
        n,
        target.name(),
        target.bin().display(),
        args.workload,
        kinds,
        args.time
    );
    let cluster = Arc::new(Cluster::spawn(target_run, opts)?);
    if let Some(fw) = firewall.as_mut() {
        let ports: Vec<u16> = (0..n).map(|i| cluster.advertised_peer_addr(i).port()).collect();
        for (node, p) in fw.nodes.iter_mut().zip(ports) {
            node.peer_port = p;
        }
    }
    let firewall = firewall.map(Arc::new);
    let mut proxies = Vec::new();
    for (i, &port) in proxy_ports.iter().enumerate() {
        let listen = std::net::SocketAddr::new(cluster.ip(i).into(), port);
        proxies.push(Proxy::start(listen, cluster.peer_addr(i)).await?);
    }
    let result = drive(&args, &kinds, cluster.clone(), firewall.clone(), proxies, clock_files, &out).await;
    // Node logs into the report, whatever happened.
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs)?;
    for i in 0..n {
        let _ = std::fs::copy(cluster.log_path(i), logs.join(format!("n{}.log", i + 1)));
    }
    let _ = cluster.kill_all();
    drop(cluster);
    if let Some(fw) = firewall {
        fw.teardown();
    }
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

async fn drive(
    args: &TestArgs,
    kinds: &[NemesisKind],
    cluster: Arc<Cluster>,
    firewall: Option<Arc<Firewall>>,
    proxies: Vec<Proxy>,
    clock_files: Vec<PathBuf>,
    out: &Path,
) -> Result<Outcome> {
    let n = args.nodes;
    cluster.wait_ready(Duration::from_secs(60)).await.map_err(|e| e.context(cluster.logs_tail(30)))?;
    let start = Instant::now();
    let concurrency = args.concurrency.unwrap_or(2 * n).max(1);
    let shared = Arc::new(Shared {
        recorder: Recorder::new(start),
        endpoints: cluster.endpoints(),
        op_timeout: Duration::from_secs_f64(args.op_timeout),
        concurrency,
    });
    let deadline = start + Duration::from_secs(args.time);
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        deadline,
        pace: Duration::from_secs_f64(concurrency as f64 / args.rate.max(0.1)),
        nodes: n,
        check_budget: Duration::from_secs_f64(args.check_time),
    });
    let workload = Workload::new(args.workload);
    workload.setup(&cluster, &ctx).await?;
    let nemesis =
        Arc::new(Nemesis::new(cluster.clone(), firewall, proxies, clock_files, kinds.to_vec(), start));
    let schedule = Schedule {
        quiet: Duration::from_secs_f64(args.nemesis_quiet),
        fault: Duration::from_secs_f64(args.nemesis_fault),
    };
    let nem = {
        let nemesis = nemesis.clone();
        tokio::spawn(async move { nemesis.run(schedule, deadline).await })
    };
    let workers: Vec<_> = (0..concurrency)
        .map(|id| {
            let w = Worker::new(id, id % n, shared.clone());
            let (wl, ctx) = (workload.clone(), ctx.clone());
            tokio::spawn(async move { wl.worker(w, ctx).await })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let _ = nem.await;
    nemesis.heal_all().await;
    let healed_at = start.elapsed().as_secs_f64();
    // Every node back and serving before the final reads.
    let ready = cluster.wait_ready(Duration::from_secs(60)).await;
    if let Err(e) = &ready {
        eprintln!("cairn-jepsen: cluster not ready after healing: {e:#}");
    }
    tokio::time::sleep(Duration::from_secs_f64(args.quiet)).await;
    let final_start = start.elapsed().as_secs_f64();
    let first_process = 10_000_000;
    workload.finish(&cluster, &ctx, first_process).await?;
    let crashed: Vec<String> = cluster
        .unexpected_exits()
        .into_iter()
        .map(|(i, s)| format!("n{} exited by itself: {s}", i + 1))
        .collect();

    let events = shared.recorder.events();
    write_jsonl(&out.join("history.jsonl"), &events)?;
    let intervals = nemesis.intervals();
    std::fs::write(out.join("nemesis.json"), serde_json::to_vec_pretty(&intervals)?)?;
    eprintln!("cairn-jepsen: {} events recorded; checking", events.len());
    let results = {
        let (wl, ctx, ev) = (workload.clone(), ctx.clone(), events.clone());
        tokio::task::spawn_blocking(move || wl.check(&ev, &ctx)).await?
    };
    let valid = overall(&results);
    let ops = crate::history::pair(&events);
    let count = |k: crate::history::Kind| ops.iter().filter(|o| o.kind == k).count();
    let summary = json!({
        "valid": valid,
        "target": cluster.target().name(),
        "bin": cluster.target().bin().display().to_string(),
        "args": args,
        "ops": {"total": ops.len(), "ok": count(crate::history::Kind::Ok),
                "fail": count(crate::history::Kind::Fail), "info": count(crate::history::Kind::Info)},
        "healed_at_s": healed_at,
        "final_reads_at_s": final_start,
        "ready_after_heal": ready.as_ref().map(|_| true).unwrap_or(false),
        "ready_error": ready.err().map(|e| format!("{e:#}")),
        "unexpected_exits": crashed,
        "nemesis": intervals,
        "checkers": results,
    });
    std::fs::write(out.join("results.json"), serde_json::to_vec_pretty(&summary)?)?;
    report::write_html(&out.join("report.html"), &summary, &ops, &intervals)?;
    Ok(Outcome { valid, results, out: out.to_path_buf() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_names_parse() {
        let names = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            parse_nemeses(&names("member,kill,member")).unwrap(),
            [NemesisKind::Member, NemesisKind::Kill]
        );
        assert_eq!(parse_nemeses(&names("none")).unwrap(), []);
        assert_eq!(parse_nemeses(&names("all")).unwrap(), NemesisKind::ALL);
        assert!(parse_nemeses(&names("members")).is_err());
    }
}
