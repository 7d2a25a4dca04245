//! Cairn's conformance suite: etcd v3's API semantics, written once against the backend
//! traits of `cairn-core` ([`cairn_core::Backend`]), so that every backend (the
//! Raft-replicated store, SQL backends) is held to the same tests.
//!
//! **Architecture invariant:** like `cairn-core`, this crate never depends on a storage
//! engine (RocksDB, SQL drivers), a transport (tonic, HTTP) or Raft (openraft): it sees a
//! backend only through the traits, and depends on `cairn-core` and `tokio` (sync, time)
//! alone.
//!
//! # Using it
//!
//! Build a backend, then run the suite on it from an async test (a tokio runtime with
//! time enabled) and fail with the list of failures:
//!
//! ```
//! async fn conforms<B: cairn_core::Backend>(backend: &B) {
//!     let failures = cairn_conformance::run_all(backend, "conformance/run-1/").await;
//!     assert!(failures.is_empty(), "{} failures:\n{failures:#?}", failures.len());
//! }
//! ```
//!
//! The `prefix` confines every key the suite writes: each test writes only keys starting
//! with `prefix`, its name and a slash (e.g. `conformance/run-1/kv::delete_range/a`), and
//! deletes them first, so a run can share a backend with other data, and a backend can
//! run the suite twice (give each run its own prefix; lease ids are derived from it).
//!
//! What the suite assumes of the backend beyond the traits' contract:
//! - **Nobody else writes during a run.** Other data may exist, but the tests check that
//!   each write takes exactly the next revision, so a concurrent writer (or a lease of
//!   other data expiring) fails them.
//! - **It reads its own writes**: `revisions()` and serializable reads reflect every write
//!   the backend acknowledged (a single member, or the Raft leader).
//! - **Compaction is global**: the last test compacts the store at a revision the suite
//!   wrote, which drops the older history of every key, not just the suite's.
//!
//! Tests never assume an empty store or a particular revision: each reads the current
//! revision (or a write's header revision) and reasons relative to it. Tests run one after
//! another; a failing test returns its first failed check and the others still run.
//!
//! # The tests, in run order
//!
//! | test | checks |
//! |---|---|
//! | `kv::put_revisions_and_versions` | put/overwrite/delete/re-create: header revisions, create/mod revision, version (reset by delete), `prev_kv` |
//! | `kv::revisions_are_dense` | every changing write (put, delete, txn) takes current + 1; deletes of nothing, read-only txns, txns with an empty chosen branch take none |
//! | `kv::delete_range` | deleted count, `prev_kv` in key order, span deletes in one revision, deleting a missing key changes nothing |
//! | `kv::put_ignore_value` | `ignore_value`/`ignore_lease` keep value/lease; on a missing key `KeyNotFound` |
//! | `range::single_key_and_spans` | single key, `[key, end)`, prefix, end before key, from-key (`"\0"`) |
//! | `range::limit_more_and_count` | `limit`, `more`, `count` = keys in the range |
//! | `range::sort_orders_and_targets` | KEY, CREATE, MOD, VERSION, VALUE × ascend/descend/none, sorted before the limit |
//! | `range::keys_only_and_count_only` | `keys_only` clears values only; `count_only` returns the count alone |
//! | `range::revision_filters` | `min/max_mod_revision`, `min/max_create_revision` |
//! | `range::historical_reads` | reads at older revisions (overwritten, deleted, re-created keys); a future revision is `FutureRevision` |
//! | `range::serializable_reads` | serializable reads, current and historical |
//! | `txn::compares_choose_the_branch` | VALUE/VERSION/CREATE/MOD/LEASE × EQUAL/GREATER/LESS/NOT_EQUAL, several compares, compares over a range |
//! | `txn::compares_on_a_missing_key` | a missing key compares as version/create/mod/lease 0; VALUE compares fail; create-if-absent |
//! | `txn::success_and_failure_branches` | `succeeded`, only the chosen branch writes |
//! | `txn::responses_in_order_and_one_revision` | responses in op order and kind; later ops see earlier writes; one revision |
//! | `txn::many_puts_one_revision` | several puts take one revision |
//! | `txn::nested_txn` | nested txns choose their own branch; their compares are decided before the txn writes |
//! | `txn::read_only_txn` | a read-only txn (nested too, serializable or not) takes no revision |
//! | `txn::refused_txns_write_nothing` | `KeyNotFound`, `LeaseNotFound`, `FutureRevision` in a txn write nothing; the untaken branch is not checked |
//! | `watch::events_of_a_run_of_writes` | `events()` per revision with types, kvs, `prev_kv`; `max_revisions`; `revision_updates()` |
//! | `lease::grant_attach_and_revoke` | grant with an id, `LeaseExists`, `lease_keys`, `leases`, `lease_time`, `lease_renew`, revoke in one revision |
//! | `lease::keys_move_between_leases` | a put moves a key to its lease, or detaches it; `ignore_lease` keeps it; delete detaches |
//! | `lease::unknown_lease_ids` | renew 0, time None, revoke and put `LeaseNotFound` |
//! | `lease::grant_with_id_zero` | the backend chooses an id; revoking a lease without keys takes no revision |
//! | `cluster::status_and_members` | `status()` has a member id that `members()` lists |
//! | `cluster::db_size` | `db_size()` ≥ 0 |
//! | `cluster::hash_kv` | `hash_kv(r)` fixed once `r` is written, changed by a write, 0 = current, future refused |
//! | `auth::users_roles_and_tokens` | auth changes with etcd's errors and revisions, the state after them, permission checks, tokens invalidated by a new password and by disabling (auth left off, users and roles removed) |
//! | `compaction::compact_history` | reads and `events()` below the compaction refused, at it allowed; re-compaction `Compacted`, future `FutureRevision` (runs last) |

#[macro_use]
mod check;

mod auth;
mod cluster;
mod compaction;
mod kv;
mod lease;
mod range;
mod txn;
mod watch;

use cairn_core::Backend;

/// One failed check: which test, and what differed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub test: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.test, self.detail)
    }
}

/// Lists the tests once: their names (`module::function`) and the order [`run_all`] runs them in.
macro_rules! suite {
    ($($module:ident :: $test:ident),* $(,)?) => {
        /// Run every test of the suite against `backend`, one after another; returns the
        /// failures (empty = conforms). Every key written starts with `prefix`.
        pub async fn run_all<B: Backend>(backend: &B, prefix: &str) -> Vec<Failure> {
            let mut failures = Vec::new();
            $(
                let test = concat!(stringify!($module), "::", stringify!($test));
                let base = format!("{prefix}{test}/");
                if let Err(detail) = $module::$test(backend, &base).await {
                    failures.push(Failure { test, detail });
                }
            )*
            failures
        }

        /// The names of the tests, in run order.
        pub fn test_names() -> Vec<&'static str> {
            vec![$(concat!(stringify!($module), "::", stringify!($test))),*]
        }
    };
}

suite!(
    kv::put_revisions_and_versions,
    kv::revisions_are_dense,
    kv::delete_range,
    kv::put_ignore_value,
    kv::binary_and_large_values,
    range::single_key_and_spans,
    range::limit_more_and_count,
    range::sort_orders_and_targets,
    range::keys_only_and_count_only,
    range::revision_filters,
    range::historical_reads,
    range::serializable_reads,
    txn::compares_choose_the_branch,
    txn::compares_on_a_missing_key,
    txn::success_and_failure_branches,
    txn::responses_in_order_and_one_revision,
    txn::many_puts_one_revision,
    txn::nested_txn,
    txn::read_only_txn,
    txn::refused_txns_write_nothing,
    watch::events_of_a_run_of_writes,
    lease::grant_attach_and_revoke,
    lease::keys_move_between_leases,
    lease::unknown_lease_ids,
    lease::grant_with_id_zero,
    cluster::status_and_members,
    cluster::db_size,
    cluster::hash_kv,
    auth::users_roles_and_tokens,
    // Compaction drops history every other test may read: always last.
    compaction::compact_history,
);

/// Compile-time check: the suite's future is `Send` for every backend, so callers may
/// `tokio::spawn` it.
#[allow(dead_code)]
fn run_all_is_send<B: Backend>(backend: &B) {
    fn send<T: Send>(_: T) {}
    send(run_all(backend, ""));
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_compaction_runs_last() {
        let names = super::test_names();
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "duplicate test names: {names:?}");
        assert_eq!(names.last(), Some(&"compaction::compact_history"));
    }
}
