//! The simulation's own promises: a seed replays exactly (in this process and in another),
//! correct code passes every seed of CI's fixed set, and the deliberate bugs of
//! `cairn_raft::fault` are found within a bounded number of seeds.

use std::process::Command;

fn sim_binary(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cairn-sim")).args(args).output().expect("run cairn-sim")
}

#[test]
fn a_seed_replays_exactly_in_this_process_and_another_seed_differs() {
    // Every fault kind and every workload, so that the replay covers crashes, power loss,
    // partitions, clock jumps, membership changes, leases, watches and transactions too.
    let mut o = cairn_sim::Options::new(11);
    o.faults = Some(cairn_sim::FaultKind::ALL.to_vec());
    o.workloads = Some(cairn_sim::WorkloadKind::ALL.to_vec());
    let first = cairn_sim::run(&o);
    let second = cairn_sim::run(&o);
    for (kind, events) in &first.histories {
        // The member fault's history is a few calls per change; a workload's is many.
        let least = if *kind == cairn_sim::WorkloadKind::Member { 4 } else { 20 };
        assert!(events.len() > least, "too few {kind:?} operations to compare: {}", events.len());
    }
    assert!(!first.nemesis.is_empty(), "no fault was applied");
    assert_eq!(first.transcript(), second.transcript(), "seed 11 did not replay in the same process");
    o.seed = 12;
    assert_ne!(cairn_sim::run(&o).transcript(), first.transcript(), "another seed gave the same run");
}

#[test]
fn the_binary_prints_the_same_transcript_twice() {
    let run = || sim_binary(&["--seed", "5", "--faults", "crash,partition,slow-disk"]);
    let (a, b) = (run(), run());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(a.stdout.len() > 1000, "a short transcript: {}", String::from_utf8_lossy(&a.stdout));
    assert_eq!(a.stdout, b.stdout, "seed 5 replayed differently in another process");
}

/// CI's fixed seeds: 800 in all (a seed costs ~1.8 s of a core in the debug build; the
/// budget is about a third of the CI run), in four tests so that they share the cores.
fn seeds_are_valid(first: u64, count: u64) {
    let out = sim_binary(&["--seeds", &count.to_string(), "--first", &first.to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "seeds {first}..{} found anomalies: {stdout}\n{}",
        first + count,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("{count} seeds, 0 failed")), "{stdout}");
}

#[test]
fn seeds_1_to_200_are_valid() {
    seeds_are_valid(1, 200);
}

#[test]
fn seeds_201_to_400_are_valid() {
    seeds_are_valid(201, 200);
}

#[test]
fn seeds_401_to_600_are_valid() {
    seeds_are_valid(401, 200);
}

#[test]
fn seeds_601_to_800_are_valid() {
    seeds_are_valid(601, 200);
}

/// A deliberate bug is found within `bound` seeds (the first failing seed is recorded in
/// docs/simulation.md; the bound leaves room for the schedule to change).
fn finds(fault: &str, bound: u64, options: &[&str]) {
    let bound_text = bound.to_string();
    let mut args = vec!["--fault", fault, "--seeds", &bound_text, "--stop-at-failure"];
    args.extend_from_slice(options);
    let out = sim_binary(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{fault} was not found in {bound} seeds: {stdout}");
    assert!(stdout.contains("first failing seed"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED"));
}

#[test]
fn a_stale_read_is_found() {
    // It needs a register read served by a leader cut off from the others: with the whole
    // swarm of faults and workloads that is rare (none in 300 seeds), with the faults that
    // cut members off and the register alone it is found at seed 52.
    finds("stale-read", 150, &["--workloads", "register", "--faults", "partition,black-hole,hold"]);
}

#[test]
fn an_acknowledgement_before_commit_is_found() {
    finds("ack-before-commit", 100, &[]);
}

#[test]
fn an_append_reported_durable_before_its_sync_is_found() {
    // Only a power loss during slow syncs loses what was reported durable, and only reads
    // after the cluster is back show it: longer runs with those faults.
    finds("unsynced-append", 100, &["--duration", "8", "--faults", "power-loss,slow-disk"]);
}

#[test]
fn a_lease_expiry_decided_by_a_followers_clock_is_found() {
    finds("follower-lease-clock", 100, &[]);
}

#[test]
fn unknown_names_are_refused_with_the_known_ones() {
    let out = sim_binary(&["--seed", "1", "--faults", "crash,meteor"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown fault kind \"meteor\"") && stderr.contains("black-hole"), "{stderr}");
    let out = sim_binary(&["--seed", "1", "--workloads", "bank"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown workload \"bank\""));
    assert!(out.stdout.is_empty(), "nothing ran");
}

#[test]
fn the_bugs_stay_inert_unless_armed() {
    // The same seed that finds the stale read passes when the fault is not armed.
    let out = sim_binary(&["--seed", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Whether the lease checker, told of no clock jump, finds a lease that ended early.
fn early_without_allowance(outcome: &cairn_sim::Outcome) -> bool {
    let strict = cairn_jepsen::checker::lease::Bound {
        after_expiry: std::time::Duration::from_secs(2),
        // "Not late" is not what this looks at.
        after_fault: std::time::Duration::from_secs(3600),
        faults: Vec::new(),
        clock_jumps: Vec::new(),
    };
    outcome.histories.iter().filter(|(k, _)| *k == cairn_sim::WorkloadKind::Lease).any(|(_, events)| {
        let r = cairn_jepsen::checker::lease::check(events, &strict);
        r.details["anomalies"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["anomaly"].as_str().is_some_and(|s| s.contains("promised"))))
    })
}

#[test]
fn a_clock_jump_reaches_the_members_timers() {
    // Valid with the allowance for the jumps, yet some seed's leader ends a lease early: the
    // jump moved the clock its lease timers run on.
    for seed in 1..=EARLY_WITHIN {
        let mut o = cairn_sim::Options::new(seed);
        o.faults = Some(vec![cairn_sim::FaultKind::ClockJump]);
        o.workloads = Some(vec![cairn_sim::WorkloadKind::Lease]);
        let outcome = cairn_sim::run(&o);
        assert!(outcome.valid(), "seed {seed}: {:?}", outcome.checks);
        if early_without_allowance(&outcome) {
            return;
        }
    }
    panic!("no lease ended early in {EARLY_WITHIN} seeds of clock jumps");
}

const EARLY_WITHIN: u64 = 40;

#[test]
fn the_member_fault_removes_and_re_adds_members_both_ways() {
    let (mut by_member_add, mut by_join) = (false, false);
    for seed in 1..=12 {
        let mut o = cairn_sim::Options::new(seed);
        o.faults = Some(vec![cairn_sim::FaultKind::Member]);
        o.workloads = Some(vec![cairn_sim::WorkloadKind::Register]);
        let outcome = cairn_sim::run(&o);
        assert!(outcome.valid(), "seed {seed}: {:?}", outcome.checks);
        let member = outcome.checks.iter().find(|c| c.checker == "member").expect("the member check ran");
        // Every member answered the final list: a verdict, not "unknown".
        assert_eq!(member.valid, cairn_jepsen::checker::Validity::Valid, "seed {seed}: {}", member.details);
        let wiped = outcome.nemesis.iter().any(|l| l.contains("admin: wipe"));
        by_member_add |= wiped && outcome.nemesis.iter().any(|l| l.contains("existing: true"));
        by_join |= wiped && outcome.nemesis.iter().any(|l| l.contains("join: [\"n"));
    }
    assert!(by_member_add && by_join, "MemberAdd re-add seen: {by_member_add}, join re-add seen: {by_join}");
}

#[test]
fn a_failed_sync_stops_the_member_and_its_supervisor_restarts_it() {
    let mut o = cairn_sim::Options::new(1);
    o.faults = Some(vec![cairn_sim::FaultKind::DiskFailure]);
    o.workloads = Some(vec![cairn_sim::WorkloadKind::Register]);
    let outcome = cairn_sim::run(&o);
    assert!(outcome.valid(), "{:?}", outcome.checks);
    let failed = outcome.nemesis.iter().position(|l| l.contains("FailSync")).expect("a sync was failed");
    let exited = outcome.nemesis.iter().position(|l| l.contains("exited on a fatal error"));
    let restarted = outcome.nemesis.iter().position(|l| l.contains("supervisor: restart"));
    assert!(
        exited.is_some_and(|e| e > failed) && restarted > exited,
        "the member did not stop and come back: {:#?}",
        outcome.nemesis
    );
}
