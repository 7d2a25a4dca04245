//! The harness end to end, as CI runs it (`cargo test --workspace`):
//! - a short smoke run (3 nodes, kill + partition, register) against the real `cairn` must be
//!   valid — with `CAIRN_FAULT=stale-read` set, which the `cairn` binary must ignore;
//! - so must one with membership churn (member + kill), every member removed and added back
//!   (`CAIRN_TEST_TARGET=etcd` runs this one against etcd);
//! - the checkers must be able to fail: runs against `cairn-faulty` with each injected bug
//!   (stale reads, acknowledging before commit) must be reported invalid, exit code 1.
//!
//! Needs root (iptables, cgroups) and the server binaries next to this test's profile dir:
//! `target/<profile>/cairn` and `target/<profile>/cairn-faulty`, which `cargo test --workspace`
//! builds (this package's dev-dependency turns on cairn's `fault-injection` feature). With
//! `cargo test -p cairn-jepsen` alone build them first:
//! `cargo build -p cairn --features fault-injection --bin cairn --bin cairn-faulty`.
//! The runs are serialized (one cluster at a time on this machine).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/harness-<hash>
    exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf()
}

fn server(name: &str) -> PathBuf {
    let bin = profile_dir().join(name);
    assert!(
        bin.is_file(),
        "{} not found: run `cargo test --workspace`, or build it first with \
         `cargo build -p cairn --features fault-injection --bin cairn --bin cairn-faulty`",
        bin.display()
    );
    bin
}

/// Runs `cairn-jepsen test` against `bin` (a Cairn binary) and returns (exit code,
/// results.json, report dir).
fn harness(args: &[&str], bin: &PathBuf, name: &str) -> (i32, Value, tempfile::TempDir) {
    let target = [OsString::from("--target"), "cairn".into(), "--bin".into(), bin.into()];
    harness_on(&target, args, name)
}

/// The target as `CAIRN_TEST_TARGET` chooses it (as the other test suites do): Cairn's
/// `server("cairn")` by default; with `etcd`, `ETCD_BIN` or cairn-jepsen's default etcd.
fn target_from_env() -> Vec<OsString> {
    match std::env::var(cairn_tests::TARGET_ENV).unwrap_or_default().trim().to_ascii_lowercase().as_str() {
        "etcd" => {
            let mut t = vec![OsString::from("--target"), "etcd".into()];
            if let Some(bin) = std::env::var_os(cairn_tests::ETCD_BIN_ENV) {
                t.extend(["--bin".into(), bin]);
            }
            t
        }
        _ => vec!["--target".into(), "cairn".into(), "--bin".into(), server("cairn").into()],
    }
}

/// [`harness`] with the target's flags given (`--target ...`, maybe `--bin ...`).
fn harness_on(target: &[OsString], args: &[&str], name: &str) -> (i32, Value, tempfile::TempDir) {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = tempfile::Builder::new().prefix(&format!("cairn-jepsen-{name}-")).tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_cairn-jepsen"))
        .arg("test")
        .args(target)
        .arg("--out")
        .arg(out.path())
        .args(args)
        .status()
        .expect("running cairn-jepsen");
    let code = status.code().unwrap_or(-1);
    let results = std::fs::read(out.path().join("results.json"))
        .unwrap_or_else(|e| panic!("{name}: no results.json (exit {code}): {e}"));
    let results: Value = serde_json::from_slice(&results).unwrap();
    for f in ["history.jsonl", "report.html", "logs/n1.log"] {
        assert!(out.path().join(f).is_file(), "{name}: {f} missing");
    }
    (code, results, out)
}

fn keep_on_failure(dir: tempfile::TempDir, ok: bool) {
    if !ok {
        eprintln!("report kept in {}", dir.keep().display());
    }
}

#[test]
fn smoke_register_with_kill_and_partition_is_valid() {
    let (code, r, dir) = harness(
        &[
            "--nodes",
            "3",
            "--time",
            "30",
            "--workload",
            "register",
            "--nemesis",
            "partition,kill",
            "--nemesis-quiet",
            "4",
            "--nemesis-fault",
            "5",
            "--server-env",
            "CAIRN_FAULT=stale-read",
        ],
        &server("cairn"),
        "smoke",
    );
    let ok = code == 0 && r["valid"] == "valid";
    let log = (1..=3)
        .map(|i| std::fs::read_to_string(dir.path().join(format!("logs/n{i}.log"))).unwrap_or_default())
        .collect::<String>();
    let armed = log.contains("FAULT INJECTION BUILD");
    keep_on_failure(dir, ok && !armed);
    assert!(ok, "smoke run not valid (exit {code}): {:#}", r["checkers"]);
    assert!(r["ops"]["ok"].as_u64().unwrap() > 100, "too few ops: {}", r["ops"]);
    assert!(r["nemesis"].as_array().unwrap().len() >= 2, "nemesis did not run: {}", r["nemesis"]);
    assert!(!armed, "the cairn binary armed a fault: only cairn-faulty may");
}

#[test]
fn smoke_register_with_member_and_kill_is_valid() {
    // Membership churn: about four faults, member and kill taking turns. A follower, then
    // the leader, removed (killed, MemberRemove, data wiped) and added back (MemberAdd as a
    // learner, started empty with --initial-cluster-state existing, MemberPromote once caught
    // up); kill faults in between restart re-added members with the flags they were added
    // with. CAIRN_TEST_TARGET=etcd runs the same against etcd.
    let target = target_from_env();
    let (code, r, dir) = harness_on(
        &target,
        &[
            "--nodes",
            "3",
            "--time",
            "30",
            "--workload",
            "register",
            "--nemesis",
            "member,kill",
            "--nemesis-quiet",
            "3",
            "--nemesis-fault",
            "4",
        ],
        "member",
    );
    let nemesis = r["nemesis"].as_array().unwrap().clone();
    let members: Vec<&Value> = nemesis.iter().filter(|iv| iv["kind"] == "member").collect();
    let healed = |iv: &&Value| {
        iv["mode"] != "error"
            && iv["end_s"].is_number()
            && iv["detail"].as_str().is_some_and(|d| d.contains("re-added") && d.contains("promoted"))
    };
    let exits = r["unexpected_exits"].as_array().unwrap().clone();
    let ok = code == 0
        && r["valid"] == "valid"
        && exits.is_empty()
        && r["ready_after_heal"] == true
        && !members.is_empty()
        && members.iter().all(healed);
    keep_on_failure(dir, ok);
    assert!(exits.is_empty(), "servers exited by themselves: {exits:?}");
    assert!(code == 0 && r["valid"] == "valid", "member run not valid (exit {code}): {:#}", r["checkers"]);
    assert!(r["ops"]["ok"].as_u64().unwrap() > 100, "too few ops: {}", r["ops"]);
    assert!(!members.is_empty(), "no member fault ran: {nemesis:#?}");
    assert!(members.iter().all(healed), "a member fault did not complete remove and re-add: {members:#?}");
    assert!(nemesis.iter().any(|iv| iv["kind"] == "kill"), "no kill fault ran: {nemesis:#?}");
    assert_eq!(r["ready_after_heal"], true, "not ready after healing: {}", r["ready_error"]);
}

#[test]
fn stale_read_fault_is_caught() {
    // A partition isolates the leader first: the isolated node keeps serving reads from its
    // stale local state. 30 s: three faults (in 20 s, two faults once let no stale read
    // through in one of nine full runs).
    let (code, r, dir) = harness(
        &[
            "--nodes",
            "3",
            "--time",
            "30",
            "--workload",
            "register",
            "--nemesis",
            "partition",
            "--nemesis-quiet",
            "3",
            "--nemesis-fault",
            "6",
            "--server-env",
            "CAIRN_FAULT=stale-read",
        ],
        &server("cairn-faulty"),
        "stale-read",
    );
    let ok = code == 1 && r["valid"] == "invalid";
    keep_on_failure(dir, ok);
    assert!(ok, "stale reads not caught (exit {code}): {:#}", r["checkers"]);
    assert_eq!(r["checkers"][0]["checker"], "linearizable-register");
    assert!(r["checkers"][0]["details"]["non_linearizable_keys"].as_u64().unwrap() > 0);
}

#[test]
fn ack_before_commit_fault_is_caught() {
    // The isolated leader acknowledges adds it can never commit: they are lost.
    let (code, r, dir) = harness(
        &[
            "--nodes",
            "3",
            "--time",
            "20",
            "--workload",
            "set",
            "--nemesis",
            "partition",
            "--nemesis-quiet",
            "3",
            "--nemesis-fault",
            "6",
            "--server-env",
            "CAIRN_FAULT=ack-before-commit",
        ],
        &server("cairn-faulty"),
        "ack-before-commit",
    );
    let ok = code == 1 && r["valid"] == "invalid";
    keep_on_failure(dir, ok);
    assert!(ok, "lost acknowledged writes not caught (exit {code}): {:#}", r["checkers"]);
    assert!(r["checkers"][0]["details"]["anomalies"][0]["lost_count"].as_u64().unwrap() > 0);
}

#[path = "../../crates/cairn-sql/tests/common/mod.rs"]
mod databases;

#[test]
fn register_and_append_on_postgres_with_kill_and_pause_are_valid() {
    if std::env::var(cairn_tests::TARGET_ENV).is_ok_and(|t| t.trim().eq_ignore_ascii_case("etcd")) {
        eprintln!("skipped: etcd has no SQL backend");
        return;
    }
    // Three stateless members on one PostgreSQL; the nemesis kills and pauses members (the
    // database stays up): every acknowledged write must stay, reads must be linearizable.
    let pg = databases::Postgres::start();
    for workload in ["register", "append"] {
        let url = pg.database(&format!("jepsen_{workload}"));
        let (code, r, dir) = harness(
            &[
                "--nodes",
                "3",
                "--time",
                "20",
                "--workload",
                workload,
                "--nemesis",
                "kill,pause",
                "--nemesis-quiet",
                "3",
                "--nemesis-fault",
                "4",
                "--server-env",
                &format!("CAIRN_BACKEND={url}"),
            ],
            &server("cairn"),
            &format!("postgres-{workload}"),
        );
        let served_from_sql = std::fs::read_to_string(dir.path().join("logs/n1.log"))
            .unwrap_or_default()
            .contains("from a SQL database");
        let ok = code == 0 && r["valid"] == "valid" && served_from_sql;
        keep_on_failure(dir, ok);
        assert!(served_from_sql, "{workload}: the members did not run on PostgreSQL");
        assert!(ok, "{workload} on PostgreSQL not valid (exit {code}): {:#}", r["checkers"]);
        assert!(r["ops"]["ok"].as_u64().unwrap() > 100, "{workload}: too few ops: {}", r["ops"]);
        assert!(
            r["nemesis"].as_array().unwrap().len() >= 2,
            "{workload}: nemesis did not run: {}",
            r["nemesis"]
        );
    }
}
