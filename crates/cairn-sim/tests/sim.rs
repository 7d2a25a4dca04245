//! The simulation's own promises: a seed replays exactly (in this process and in another),
//! correct code passes every seed, and the deliberate bugs of `cairn_raft::fault` are found.

use std::process::Command;
use std::time::Duration;

fn options(seed: u64) -> cairn_sim::Options {
    let mut o = cairn_sim::Options::new(seed);
    o.duration = Duration::from_secs(6);
    o
}

fn sim_binary(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cairn-sim")).args(args).output().expect("run cairn-sim")
}

#[test]
fn a_seed_replays_exactly_in_this_process_and_in_another() {
    // Every fault kind, so that the replay covers crashes and partitions too.
    let mut o = options(11);
    o.faults = Some(cairn_sim::FaultKind::ALL.to_vec());
    let first = cairn_sim::run(&o);
    let second = cairn_sim::run(&o);
    assert!(first.events.len() > 50, "too few operations to compare: {}", first.events.len());
    assert!(!first.nemesis.is_empty(), "no fault was applied");
    assert_eq!(first.transcript(), second.transcript(), "seed 11 did not replay in the same process");
    let other = options(12);
    assert_ne!(cairn_sim::run(&other).transcript(), first.transcript(), "another seed gave the same run");
}

#[test]
fn the_binary_prints_the_same_transcript_twice() {
    let run = || sim_binary(&["--seed", "5", "--duration", "4"]);
    let (a, b) = (run(), run());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(!a.stdout.is_empty());
    assert_eq!(a.stdout, b.stdout, "seed 5 replayed differently in another process");
}
