//! `cairn-sim`: run seeds of the deterministic simulation (docs/simulation.md).
#![allow(clippy::print_stdout)] // a test tool: the transcript and the summary are its output

use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
#[command(about = "Deterministic simulation of a Cairn cluster: one seed replays exactly")]
struct Args {
    /// Replay this one seed and print its transcript (history and faults).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds (from --first) and print each failing one.
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed of --seeds.
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Simulated seconds of client operations per seed.
    #[arg(long, default_value_t = 3)]
    duration: u64,
    /// Run with one of cairn_raft::fault's deliberate bugs (stale-read, ack-before-commit,
    /// unsynced-append, follower-lease-clock), to check that the simulation finds it.
    #[arg(long)]
    fault: Option<String>,
    /// Only these fault kinds (comma-separated: crash, power-loss, partition, black-hole,
    /// hold, slow-network, slow-disk, clock-jump, member); default: each seed picks a subset
    /// of all of them.
    #[arg(long, value_delimiter = ',')]
    faults: Option<Vec<String>>,
    /// Only these workloads (comma-separated: register, lease, append, lock, watch);
    /// default: each seed picks a subset.
    #[arg(long, value_delimiter = ',')]
    workloads: Option<Vec<String>>,
    /// Simulated milliseconds per step (every host runs once per step).
    #[arg(long, default_value_t = 5)]
    tick_ms: u64,
    /// With --seeds: stop at the first failing seed.
    #[arg(long)]
    stop_at_failure: bool,
    /// With --seeds: seeds run at once (each in its own process).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// With --seed: print only the verdict, not the transcript.
    #[arg(long, hide = true)]
    no_transcript: bool,
}

/// Log lines stamped with the simulated time (each member's lines carry its name).
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:>8.3}s", turmoil::sim_elapsed().unwrap_or_default().as_secs_f64())
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // RUST_LOG=info (or a filter such as cairn_raft=debug) shows the members' logs.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_timer(SimTime)
            .with_writer(std::io::stderr)
            .init();
    }
    let kinds = match parse_names(&args.faults, "fault kind", &cairn_sim::FaultKind::ALL, |k| k.name()) {
        Ok(kinds) => kinds,
        Err(code) => return code,
    };
    let workloads =
        match parse_names(&args.workloads, "workload", &cairn_sim::WorkloadKind::ALL, |k| k.name()) {
            Ok(workloads) => workloads,
            Err(code) => return code,
        };
    if let Some(fault) = &args.fault {
        // Before any member starts: the fault is read once per process.
        std::env::set_var(cairn_raft::fault::FAULT_ENV, fault);
        cairn_raft::fault::arm();
    }
    let options = |seed| {
        let mut o = cairn_sim::Options::new(seed);
        o.duration = Duration::from_secs(args.duration);
        o.tick = Duration::from_millis(args.tick_ms);
        o.faults = kinds.clone();
        o.workloads = workloads.clone();
        o
    };
    if let Some(seed) = args.seed {
        let outcome = cairn_sim::run(&options(seed));
        if !args.no_transcript {
            print!("{}", outcome.transcript());
        }
        return report(&outcome);
    }
    run_seeds(&args)
}

/// `--seeds`: every seed in a process of its own (`--seed S`), `--jobs` at a time. A member
/// that panics takes its simulation down with it (turmoil shuts the runtime down and tokio
/// aborts): in a child process that is one failing seed, reported with the panic.
fn run_seeds(args: &Args) -> std::process::ExitCode {
    let count = args.seeds.unwrap_or(10);
    let exe = std::env::current_exe().expect("the path of this executable");
    let mut passed_on: Vec<String> = vec![
        "--no-transcript".into(),
        "--duration".into(),
        args.duration.to_string(),
        "--tick-ms".into(),
        args.tick_ms.to_string(),
    ];
    for (flag, value) in
        [("--fault", args.fault.clone()), ("--faults", args.faults.as_ref().map(|f| f.join(",")))]
            .into_iter()
            .chain([("--workloads", args.workloads.as_ref().map(|w| w.join(",")))])
    {
        if let Some(value) = value {
            passed_on.push(flag.into());
            passed_on.push(value);
        }
    }
    let started = Instant::now();
    let seeds: Vec<u64> = (args.first..args.first + count).collect();
    let mut next = 0;
    let mut running: std::collections::VecDeque<(u64, std::process::Child)> = Default::default();
    let (mut ran, mut failed, mut first_failing) = (0u64, 0u64, None::<u64>);
    loop {
        while running.len() < args.jobs.max(1) && next < seeds.len() && first_failing.is_none() {
            let seed = seeds[next];
            next += 1;
            let child = std::process::Command::new(&exe)
                .arg("--seed")
                .arg(seed.to_string())
                .args(&passed_on)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start a seed's process");
            running.push_back((seed, child));
        }
        // In seed order, so that the output is the same for any --jobs.
        let Some((seed, child)) = running.pop_front() else { break };
        let out = child.wait_with_output().expect("wait for a seed's process");
        ran += 1;
        if out.status.success() {
            continue;
        }
        failed += 1;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(1) {
            eprint!("{stderr}");
        } else {
            // Killed: by a panic (the first one says why) or a signal.
            let why: Vec<&str> = stderr.lines().skip_while(|l| !l.contains("panicked at")).take(2).collect();
            eprintln!("seed {seed}: FAILED (the simulation aborted: {}; {})", out.status, why.join(" "));
        }
        if args.stop_at_failure && first_failing.is_none() {
            first_failing = Some(seed);
        }
    }
    if let Some(seed) = first_failing {
        println!("first failing seed: {seed} (after {} seeds)", seed - args.first + 1);
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{ran} seeds, {failed} failed, {secs:.1} s ({:.2} seeds/s)", ran as f64 / secs);
    if failed > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// The kinds `names` names (`None`: no restriction); an unknown name is refused with the
/// known ones (exit 2).
fn parse_names<K: Copy>(
    names: &Option<Vec<String>>,
    what: &str,
    all: &[K],
    name: fn(K) -> &'static str,
) -> Result<Option<Vec<K>>, std::process::ExitCode> {
    let Some(names) = names else { return Ok(None) };
    let known: Vec<&str> = all.iter().map(|k| name(*k)).collect();
    names
        .iter()
        .map(|n| {
            all.iter().copied().find(|k| name(*k) == n).ok_or_else(|| {
                eprintln!("unknown {what} {n:?} (expected one of: {})", known.join(", "));
                std::process::ExitCode::from(2)
            })
        })
        .collect::<Result<Vec<K>, _>>()
        .map(Some)
}

fn report(outcome: &cairn_sim::Outcome) -> std::process::ExitCode {
    let faults: Vec<&str> = outcome.faults.iter().map(|f| f.name()).collect();
    let workloads: Vec<&str> = outcome.histories.iter().map(|(w, _)| w.name()).collect();
    let ops = outcome.ok_operations();
    if outcome.valid() {
        eprintln!(
            "seed {}: valid ({ops} ok operations of {}; faults: {})",
            outcome.seed,
            workloads.join(", "),
            faults.join(", ")
        );
        return std::process::ExitCode::SUCCESS;
    }
    eprintln!("seed {}: FAILED ({}; faults: {})", outcome.seed, workloads.join(", "), faults.join(", "));
    if let Some(why) = &outcome.aborted {
        eprintln!("  the simulation stopped: {why}");
    }
    for check in &outcome.checks {
        eprintln!("  {}: {:?} {}", check.checker, check.valid, check.details);
    }
    std::process::ExitCode::FAILURE
}
