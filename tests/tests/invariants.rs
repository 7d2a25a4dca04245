//! The architecture's dependency rules (ARCHITECTURE.md), checked on the real dependency
//! graph: `cargo tree -p <crate> -e normal` lists what a crate links, with the features a
//! build of that crate alone would use.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// What `crate_name` links (its normal dependencies, transitively), by package name.
fn linked(crate_name: &str) -> BTreeSet<String> {
    linked_with(crate_name, &[])
}

/// The same, with more `cargo tree` arguments (e.g. feature selection).
fn linked_with(crate_name: &str, extra: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(cargo)
        .current_dir(&root)
        .args(["tree", "--locked", "-p", crate_name, "-e", "normal", "--prefix", "none", "-f", "{p}"])
        .args(extra)
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree -p {crate_name}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn assert_never_links(crate_name: &str, forbidden: &[&str]) {
    let deps = linked(crate_name);
    assert!(deps.contains(crate_name), "cargo tree did not list {crate_name} itself: {deps:?}");
    for f in forbidden {
        assert!(!deps.contains(*f), "{crate_name} must never depend on {f}, but links it");
    }
}

#[test]
fn the_core_links_no_storage_transport_or_raft() {
    assert_never_links(
        "cairn-core",
        &["rocksdb", "librocksdb-sys", "tonic", "hyper", "openraft", "cairn-mvcc", "cairn-raft", "cairn-api"],
    );
}

#[test]
fn the_conformance_suite_links_only_the_core() {
    assert_never_links(
        "cairn-conformance",
        &["rocksdb", "librocksdb-sys", "tonic", "openraft", "cairn-mvcc", "cairn-raft", "cairn-api"],
    );
}

#[test]
fn the_api_links_no_storage_or_raft() {
    assert_never_links("cairn-api", &["rocksdb", "librocksdb-sys", "openraft", "cairn-mvcc", "cairn-raft"]);
}

#[test]
fn the_mvcc_engine_links_no_transport_or_raft() {
    assert_never_links("cairn-mvcc", &["tonic", "hyper", "openraft", "cairn-raft", "cairn-api"]);
}

#[test]
fn the_mvcc_semantics_link_rocksdb_only_for_its_engine() {
    // Without its `rocksdb` feature (as the workspace asks for it, and as a SQL or in-memory
    // backend gets it), the MVCC crate links no RocksDB; with it, it does.
    let without = linked_with("cairn-mvcc", &["--no-default-features"]);
    assert!(without.contains("cairn-mvcc") && without.contains("imbl"), "{without:?}");
    for f in ["rocksdb", "librocksdb-sys"] {
        assert!(!without.contains(f), "cairn-mvcc without its rocksdb feature links {f}");
    }
    assert!(linked("cairn-mvcc").contains("rocksdb"), "the guard sees the engine when it is on");
}

#[test]
fn the_unreplicated_backend_links_no_engine_transport_or_raft() {
    assert_never_links(
        "cairn-local",
        &["rocksdb", "librocksdb-sys", "tonic", "hyper", "openraft", "cairn-raft", "cairn-api"],
    );
}

#[test]
fn the_sql_adapter_links_no_engine_transport_or_raft() {
    assert_never_links(
        "cairn-sql",
        &[
            "rocksdb",
            "librocksdb-sys",
            "tonic",
            "hyper",
            "openraft",
            "cairn-raft",
            "cairn-api",
            "cairn-local",
        ],
    );
}

#[test]
fn the_raft_layer_knows_no_client_api() {
    assert_never_links("cairn-raft", &["cairn-api", "cairn-client"]);
}

#[test]
fn the_http_side_reaches_the_member_only_over_grpc() {
    assert_never_links(
        "cairn-http",
        &["rocksdb", "librocksdb-sys", "openraft", "cairn-mvcc", "cairn-raft", "cairn-api", "cairn-core"],
    );
}

#[test]
fn the_raft_layer_serves_no_http() {
    assert_never_links("cairn-raft", &["cairn-http"]);
}

#[test]
fn only_the_simulator_links_the_simulator() {
    // The members run the same code in a simulation and in production: the simulation's
    // runtime and network (turmoil) come in only through cairn-sim, never into a shipped crate.
    for shipped in
        ["cairn", "cairn-raft", "cairn-api", "cairn-core", "cairn-mvcc", "cairn-client", "cairn-http"]
    {
        assert_never_links(shipped, &["turmoil", "cairn-sim"]);
    }
}

#[test]
fn the_check_sees_real_dependencies() {
    // Guards the guard: the facade does link RocksDB and openraft, so the parsing works.
    let deps = linked("cairn");
    for expected in ["rocksdb", "openraft", "tonic", "cairn-core"] {
        assert!(deps.contains(expected), "cairn should link {expected}: {deps:?}");
    }
}
