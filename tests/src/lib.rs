//! The Cairn cluster harness: real server processes (Cairn or the reference etcd) on
//! `127.0.0.{i+1}`, one per node, with node control (kill -9, SIGSTOP/SIGCONT, SIGTERM, restart)
//! and client helpers (etcd-client, etcdctl).
//!
//! The same harness runs the integration tests in `tests/tests/`, the chaos harness and the
//! benchmark comparison; so nothing here asserts: every fallible call returns an
//! [`anyhow::Result`] with context.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use cairn_tests::{Cluster, ClusterOptions, Target};
//! let cluster = Cluster::start(Target::from_env(), ClusterOptions::nodes(3)).await?;
//! let mut client = cluster.client(0).await?;
//! client.put("k", "v", None).await?;
//! let leader = cluster.leader().await?;
//! cluster.kill(leader)?;
//! cluster.restart(leader)?;
//! cluster.wait_ready(std::time::Duration::from_secs(30)).await?;
//! # Ok(()) }
//! ```

mod cluster;
mod ports;
mod previous;
mod target;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

pub use cluster::{default_connect_options, Cluster, ClusterOptions};
pub use ports::free_port;
pub use previous::{previous_release_bin, PREVIOUS_RELEASE, PREV_BIN_ENV};
pub use target::{
    etcdctl_bin, Target, CAIRN_BIN_ENV, DEFAULT_ETCDCTL_BIN, DEFAULT_ETCD_BIN, ETCDCTL_BIN_ENV, ETCD_BIN_ENV,
    TARGET_ENV,
};

/// Re-exported so users match on the same `tonic::Code` the client returns.
pub use etcd_client;
pub use tonic::{Code, Status};

/// Env var: when set (to anything but `0`), a dropped cluster keeps its temp dir (data dirs and
/// logs) and prints where it is.
pub const KEEP_DATA_ENV: &str = "CAIRN_TEST_KEEP_DATA";

/// The gRPC status inside a client error, if the error is one (and not e.g. a transport error).
pub fn grpc_status(err: &etcd_client::Error) -> Option<&tonic::Status> {
    match err {
        etcd_client::Error::GRpcStatus(status) => Some(status),
        _ => None,
    }
}

/// `(code, message)` of a client error that carries a gRPC status.
pub fn grpc_code(err: &etcd_client::Error) -> Option<(tonic::Code, String)> {
    grpc_status(err).map(|s| (s.code(), s.message().to_string()))
}

/// Calls `f` until it returns `Ok`, sleeping `100ms` between attempts, for at most `timeout`
/// in all (an attempt still running at the deadline is abandoned). On timeout returns the last
/// error, with `what` and the time waited as context.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let err = match tokio::time::timeout(remaining, f()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => anyhow!("attempt still running at the deadline"),
        };
        if Instant::now() + Duration::from_millis(100) >= deadline {
            return Err(
                err.context(format!("timed out after {timeout:?} ({attempts} attempts) waiting for {what}"))
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
