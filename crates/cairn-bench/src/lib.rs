//! The load generator behind `cairn bench`: etcd v3 workloads against any endpoints (Cairn or
//! etcd), with throughput and latency percentiles from HDR histograms, errors by gRPC code, a
//! progress bar, one-object JSON for scripts and SVG latency plots.
//!
//! Clients are the raw tonic stubs of `cairn-proto` over a few shared HTTP/2 connections
//! (`--connections`): no per-request conversion or balancing layer, and no protoc needed to
//! build the `cairn` binary (docs/benchmarks.md has the comparison with `etcd-client`).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use cairn_bench::{BenchArgs, Workload};
//! let mut args = BenchArgs::new(Workload::Put);
//! args.endpoints = vec!["127.0.0.1:2379".into()];
//! args.total = Some(1000);
//! let report = cairn_bench::run(&args).await?;
//! println!("{:.0} puts/s, p99 {:.2} ms", report.ops_per_sec, report.p99_ms);
//! # Ok(()) }
//! ```

mod args;
mod gateway;
pub mod plot;
mod report;
mod runner;
mod watch;
mod workloads;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use cairn_client::Transport;

pub use args::{BenchArgs, Consistency, Embedded, Workload};
pub use report::{Report, Second};
pub use runner::endpoint_url;
pub use workloads::key;

use runner::{
    build_report, client_period, connect_all, cpu_time, resolve_endpoints, ClientResult, Progress, Shared,
};

/// Runs the workload `args` describes (prefill, then the measured phase) and returns its
/// figures. Prints nothing but the progress bar (when not `--json` and stderr is a terminal).
pub async fn run(args: &BenchArgs) -> Result<Report> {
    args.validate()?;
    let endpoints = resolve_endpoints(args).await?;
    let connections = args.connection_count(endpoints.len());
    let channels = connect_all(&endpoints, connections).await?;
    run_on(args, &endpoints, channels).await
}

/// [`run`] over channels made elsewhere (an in-process member's, `--embedded`);
/// `endpoints` only names them in the report.
pub async fn run_on(args: &BenchArgs, endpoints: &[String], channels: Vec<Transport>) -> Result<Report> {
    args.validate()?;
    let endpoints = endpoints.to_vec();
    let connections = channels.len();
    let mut extra = BTreeMap::new();
    if args.workload.prefills() && !args.no_prefill {
        let shared = Shared::new(None, None);
        let bar = Progress::start(&shared, !args.json, "prefill", None, None);
        let keys_per_sec = workloads::prefill(args, &channels).await;
        bar.finish();
        extra.insert("prefill_keys_per_sec".to_string(), keys_per_sec?);
    }
    if args.workload == Workload::Fill {
        let keys_per_sec = extra.get("prefill_keys_per_sec").copied().unwrap_or(0.0);
        let shared = Shared::new(None, None);
        let secs = if keys_per_sec > 0.0 { args.key_space as f64 / keys_per_sec } else { 0.0 };
        let mut report = build_report(
            args,
            &endpoints,
            connections,
            &shared,
            &ClientResult::new(),
            std::time::Duration::from_secs_f64(secs),
            std::time::Duration::ZERO,
            extra,
        );
        report.ops = if args.no_prefill { 0 } else { args.key_space };
        report.ops_per_sec = keys_per_sec;
        return Ok(report);
    }

    let duration = args.effective_duration();
    let total = match args.workload {
        // Each key once: the run ends when the key space is empty.
        Workload::Delete => Some(args.total.unwrap_or(args.key_space).min(args.key_space)),
        _ => args.total,
    };
    let shared = Shared::new(total, duration);
    let bar = Progress::start(&shared, !args.json, args.workload.name(), total, duration);
    let period = client_period(args.rate, args.clients);
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let outcome = match args.workload {
        Workload::Watch => watch::run_watch(args, &endpoints, &channels, &shared, period).await,
        _ if args.gateway => {
            gateway::run(args, &endpoints, &shared, period).await.map(|r| (r, Default::default()))
        }
        _ => workloads::run_ops(args, &channels, &shared, period).await,
    };
    let (elapsed, cpu) = (t0.elapsed(), cpu_time().saturating_sub(cpu0));
    bar.finish();
    let (result, more) = outcome?;
    extra.extend(more);
    let mut report = build_report(args, &endpoints, connections, &shared, &result, elapsed, cpu, extra);
    if args.workload == Workload::Watch {
        // The shared timeline holds the putters' latencies, not the deliveries'.
        report.timeline.clear();
    }
    Ok(report)
}

/// `cairn bench`: runs, then prints the table (or with `--json` one JSON object) on stdout
/// and writes the `--plot`. Exit code 1 when the run could not start or nothing succeeded.
pub async fn main(args: BenchArgs) -> ExitCode {
    let report = run(&args).await;
    print_report(&args, report)
}

/// Prints `report` as [`main`] does (the table, or `--json`; the `--plot`); its exit code.
pub fn print_report(args: &BenchArgs, report: Result<Report>) -> ExitCode {
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cairn bench: {e:#}");
            return ExitCode::from(1);
        }
    };
    if args.json {
        match serde_json::to_string(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("cairn bench: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &args.plot {
        let title = format!("cairn bench {} ({} clients)", report.workload, report.clients);
        if let Err(e) = plot::write_svg(path, &title, &[(report.workload.as_str(), &report)]) {
            eprintln!("cairn bench: {e:#}");
            return ExitCode::from(1);
        }
    }
    if report.ops == 0 && report.errors > 0 {
        eprintln!("cairn bench: every operation failed");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
