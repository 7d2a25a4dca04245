//! The `cairn-jepsen` command line.
//!
//! Exit codes: 0 valid, 1 a checker said invalid, 2 unknown (no checker invalid, at least one
//! could not decide), 3 the harness itself failed, 130 interrupted.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_jepsen::checker::{overall, Validity};
use cairn_jepsen::run::{run, TestArgs};
use cairn_jepsen::workload::{Ctx, Workload, WorkloadKind};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cairn-jepsen", about = "Chaos tests for etcd-API stores (Cairn, etcd)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a test and write DIR/{results.json,history.jsonl,nemesis.json,report.html,logs/}.
    Test(TestArgs),
    /// Check an existing history.jsonl again (prints the results as JSON).
    Check {
        #[arg(long, value_enum)]
        workload: WorkloadKind,
        /// Seconds the linearizability checker may spend.
        #[arg(long, default_value_t = 60.0)]
        check_time: f64,
        history: PathBuf,
    },
    /// Remove iptables chains and cgroups left by runs that were killed (SIGKILL).
    Clean,
}

fn code(v: Validity) -> ExitCode {
    match v {
        Validity::Valid => ExitCode::SUCCESS,
        Validity::Invalid => ExitCode::from(1),
        Validity::Unknown => ExitCode::from(2),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Clean => match cairn_jepsen::net::clean_stale() {
            Ok(removed) => {
                for r in removed {
                    println!("removed {r}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cairn-jepsen clean: {e:#}");
                ExitCode::from(3)
            }
        },
        Command::Check { workload, check_time, history } => {
            let events = match cairn_jepsen::history::read_jsonl(&history) {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("cairn-jepsen check: {e:#}");
                    return ExitCode::from(3);
                }
            };
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            let _guard = rt.enter();
            let shared = std::sync::Arc::new(cairn_jepsen::client::Shared {
                recorder: cairn_jepsen::history::Recorder::new(std::time::Instant::now()),
                endpoints: Vec::new(),
                op_timeout: std::time::Duration::from_secs(1),
                concurrency: 1,
            });
            let ctx = Ctx {
                shared,
                deadline: std::time::Instant::now(),
                pace: std::time::Duration::ZERO,
                nodes: 0,
                check_budget: std::time::Duration::from_secs_f64(check_time),
            };
            let results = Workload::new(workload).check(&events, &ctx);
            println!("{}", serde_json::to_string_pretty(&results).unwrap_or_default());
            code(overall(&results))
        }
        Command::Test(args) => {
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cairn-jepsen: {e}");
                    return ExitCode::from(3);
                }
            };
            let result = rt.block_on(async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
                tokio::select! {
                    r = run(args) => Some(r),
                    _ = tokio::signal::ctrl_c() => None,
                    _ = term.recv() => None,
                }
            });
            // Dropping the runtime drops every task, so the cluster is killed and the firewall
            // rules removed (their Drop impls) before we exit.
            rt.shutdown_timeout(std::time::Duration::from_secs(10));
            match result {
                None => {
                    eprintln!("cairn-jepsen: interrupted; cluster stopped and faults healed");
                    let _ = cairn_jepsen::net::clean_own();
                    ExitCode::from(130)
                }
                Some(Err(e)) => {
                    eprintln!("cairn-jepsen: {e:#}");
                    ExitCode::from(3)
                }
                Some(Ok(outcome)) => {
                    for r in &outcome.results {
                        eprintln!("cairn-jepsen: {}: {:?}", r.checker, r.valid);
                    }
                    eprintln!(
                        "cairn-jepsen: {:?}; report: {}",
                        outcome.valid,
                        outcome.out.join("report.html").display()
                    );
                    code(outcome.valid)
                }
            }
        }
    }
}
