//! Workloads: what the clients do, what runs after the nemesis healed (final reads), and
//! which checkers judge the history.

pub mod append;
pub mod lock;
pub mod register;
pub mod set;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use cairn_tests::Cluster;
use rand::Rng;

use crate::checker::CheckResult;
use crate::client::{Shared, Worker};
use crate::history::Event;

/// Which workload to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Independent keys, read / write / compare-and-set, checked for linearizability.
    Register,
    /// Unique adds, then final reads: no acknowledged add lost.
    Set,
    /// Elle-style list-append transactions, checked for strict serializability.
    Append,
    /// Writers plus one watcher per node: identical, ordered, gap-free event streams.
    Watch,
    /// Lock service (with leases): mutual exclusion checked with fencing tokens.
    Lock,
}

/// Everything workers and the final phase share.
pub struct Ctx {
    pub shared: Arc<Shared>,
    /// When workers stop issuing operations.
    pub deadline: Instant,
    /// Mean pause between one worker's operations.
    pub pace: Duration,
    pub nodes: usize,
    /// Time budget of the expensive checkers (then `unknown`).
    pub check_budget: Duration,
}

impl Ctx {
    /// Sleeps a random pause with mean `pace`; `false` once the deadline passed.
    pub async fn pause(&self) -> bool {
        if !self.pace.is_zero() {
            let ms = self.pace.as_secs_f64() * 1000.0;
            let d = rand::rng().random_range(0.0..2.0 * ms);
            tokio::time::sleep(Duration::from_micros((d * 1000.0) as u64)).await;
        }
        Instant::now() < self.deadline
    }
}

/// A workload instance (its generators keep state shared by the workers).
#[derive(Clone)]
pub enum Workload {
    Register(Arc<register::Register>),
    Set(Arc<set::SetWorkload>),
    Append(Arc<append::Append>),
    Watch(Arc<watch::WatchWorkload>),
    Lock(Arc<lock::LockWorkload>),
}

impl Workload {
    pub fn new(kind: WorkloadKind) -> Workload {
        match kind {
            WorkloadKind::Register => Workload::Register(Arc::new(register::Register::default())),
            WorkloadKind::Set => Workload::Set(Arc::new(set::SetWorkload::default())),
            WorkloadKind::Append => Workload::Append(Arc::new(append::Append::default())),
            WorkloadKind::Watch => Workload::Watch(Arc::new(watch::WatchWorkload::default())),
            WorkloadKind::Lock => Workload::Lock(Arc::new(lock::LockWorkload)),
        }
    }

    /// Before the clients start (e.g. watchers open their streams).
    pub async fn setup(&self, cluster: &Cluster, ctx: &Arc<Ctx>) -> Result<()> {
        match self {
            Workload::Watch(w) => w.setup(cluster, ctx).await,
            _ => Ok(()),
        }
    }

    /// One worker's loop until the deadline.
    pub async fn worker(&self, w: Worker, ctx: Arc<Ctx>) {
        match self {
            Workload::Register(r) => r.worker(w, ctx).await,
            Workload::Set(s) => s.worker(w, ctx).await,
            Workload::Append(a) => a.worker(w, ctx).await,
            Workload::Watch(x) => x.worker(w, ctx).await,
            Workload::Lock(l) => l.worker(w, ctx).await,
        }
    }

    /// After the nemesis healed and the quiet period: final reads. `first_process` is a process
    /// id no worker used.
    pub async fn finish(&self, cluster: &Cluster, ctx: &Arc<Ctx>, first_process: u64) -> Result<()> {
        match self {
            Workload::Register(r) => r.finish(cluster, ctx, first_process).await,
            Workload::Set(s) => s.finish(cluster, ctx, first_process).await,
            Workload::Append(a) => a.finish(cluster, ctx, first_process).await,
            Workload::Watch(x) => x.finish(cluster, ctx, first_process).await,
            Workload::Lock(l) => l.finish(cluster, ctx, first_process).await,
        }
    }

    pub fn check(&self, events: &[Event], ctx: &Ctx) -> Vec<CheckResult> {
        match self {
            Workload::Register(_) => vec![register::check(events, ctx.check_budget)],
            Workload::Set(_) => vec![set::check(events)],
            Workload::Append(_) => vec![append::check(events)],
            Workload::Watch(x) => x.check(events),
            Workload::Lock(_) => vec![lock::check(events)],
        }
    }
}

/// Workers for a final phase: one per node, with process ids from `first_process` on.
pub fn final_workers(ctx: &Arc<Ctx>, first_process: u64) -> Vec<Worker> {
    (0..ctx.nodes)
        .map(|i| {
            let mut w = Worker::new(i, i, ctx.shared.clone());
            w.process = first_process + i as u64;
            w
        })
        .collect()
}
