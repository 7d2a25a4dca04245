//! `cairn-sim`: run seeds of the deterministic simulation (docs/simulation.md).

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
    /// unsynced-append),
    /// to check that the simulation finds it.
    #[arg(long)]
    fault: Option<String>,
    /// Only these fault kinds (comma-separated: crash, power-loss, partition, hold,
    /// slow-network, slow-disk); default: each seed picks a subset of all of them.
    #[arg(long, value_delimiter = ',')]
    faults: Option<Vec<String>>,
    /// Simulated milliseconds per step (every host runs once per step).
    #[arg(long, default_value_t = 5)]
    tick_ms: u64,
    /// With --seeds: stop at the first failing seed.
    #[arg(long)]
    stop_at_failure: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut kinds = None;
    if let Some(names) = &args.faults {
        let mut chosen = Vec::new();
        for name in names {
            match cairn_sim::FaultKind::from_name(name) {
                Some(kind) => chosen.push(kind),
                None => {
                    eprintln!("unknown fault kind {name:?}");
                    return std::process::ExitCode::from(2);
                }
            }
        }
        kinds = Some(chosen);
    }
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
        o
    };
    if let Some(seed) = args.seed {
        let outcome = cairn_sim::run(&options(seed));
        print!("{}", outcome.transcript());
        return report(&outcome);
    }
    let count = args.seeds.unwrap_or(10);
    let started = Instant::now();
    let mut failed = 0;
    for seed in args.first..args.first + count {
        let outcome = cairn_sim::run(&options(seed));
        if !outcome.valid() {
            failed += 1;
            let _ = report(&outcome);
            if args.stop_at_failure {
                println!("first failing seed: {seed} (after {} seeds)", seed - args.first + 1);
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{count} seeds, {failed} failed, {secs:.1} s ({:.2} seeds/s)", count as f64 / secs);
    if failed > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

fn report(outcome: &cairn_sim::Outcome) -> std::process::ExitCode {
    let faults: Vec<&str> = outcome.faults.iter().map(|f| f.name()).collect();
    let ops = outcome.events.iter().filter(|e| e.kind == cairn_jepsen::history::Kind::Ok).count();
    if outcome.valid() {
        eprintln!("seed {}: valid ({ops} ok operations; faults: {})", outcome.seed, faults.join(", "));
        return std::process::ExitCode::SUCCESS;
    }
    eprintln!("seed {}: FAILED (faults: {})", outcome.seed, faults.join(", "));
    if let Some(why) = &outcome.aborted {
        eprintln!("  the simulation stopped: {why}");
    }
    for check in &outcome.checks {
        eprintln!("  {}: {:?} {}", check.checker, check.valid, check.details);
    }
    std::process::ExitCode::FAILURE
}
