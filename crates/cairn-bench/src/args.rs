//! The command line of `cairn bench`: one workload, then the knobs (most apply to every
//! workload; the few that do not say which they belong to).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

/// Load an etcd v3 endpoint (Cairn or etcd) and report throughput and latency percentiles.
///
/// `cairn bench put --endpoints A,B,C --clients 64 --duration 10s --key-size 8 --value-size 256`
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What each client does in a loop.
    #[arg(value_enum)]
    pub workload: Workload,

    /// Comma-separated host:port (or http://host:port) of the members to load.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// Load only the member that leads (found with Maintenance.Status) instead of all.
    #[arg(long)]
    pub leader_only: bool,
    /// Concurrent clients, each with at most one request in flight.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// HTTP/2 connections the clients share (round-robin over the endpoints)
    /// [default: one per endpoint].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Key length in bytes (keys are zero-padded decimal indexes into the key space).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value length in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Distinct keys the workload picks from (uniformly at random).
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    /// range: read this many consecutive keys from a random one (a prefix-style range, as
    /// kine's list queries) instead of one key.
    #[arg(long, default_value_t = 1)]
    pub range_keys: u64,
    /// Stop after this many operations in all (instead of --duration).
    #[arg(long, conflicts_with = "duration")]
    pub total: Option<u64>,
    /// How long to run, e.g. `10s`, `1m` [default: 10s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Target operations per second over all clients (open loop: latency counts from each
    /// operation's scheduled start, so a stall is not hidden). Unlimited when absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Give up on one request after this long (counted as DeadlineExceeded).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// range, mixed: `l` linearizable (read index) or `s` serializable (local).
    #[arg(long, value_enum, default_value_t = Consistency::L)]
    pub consistency: Consistency,
    /// mixed: fraction of operations that are reads (single-key range); the rest are puts.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// put, range: send JSON over HTTP/1.1 to etcd's gateway (`POST /v3/kv/put|range`), one
    /// kept-alive connection per client, instead of gRPC.
    #[arg(long)]
    pub gateway: bool,
    /// range, txn, mixed, delete: skip writing the key space before the run.
    #[arg(long)]
    pub no_prefill: bool,
    /// Puts per txn when writing the key space (etcd's --max-txn-ops is 128).
    #[arg(long, default_value_t = 128)]
    pub fill_batch: usize,
    /// watch: watchers, all on one key on the first endpoint; puts (by --clients) go to all
    /// endpoints. Latency is from each put's acknowledgement to each watcher's event.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// watch: watchers per gRPC watch stream.
    #[arg(long, default_value_t = 10)]
    pub watchers_per_stream: usize,
    /// watch: the pid of the server process behind the first endpoint (on this machine): its
    /// RSS is read before the watchers are created and once they all are, to report the
    /// server's memory per watcher.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// lease: keepalives sent on each lease between its grant and its revoke.
    #[arg(long, default_value_t = 1)]
    pub keepalives_per_lease: u32,
    /// lease: TTL of granted leases, seconds.
    #[arg(long, default_value_t = 60)]
    pub lease_ttl: i64,
    /// Seed of the key choice (each client adds its index).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print exactly one JSON object on stdout (and no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Write an SVG latency plot (percentile spectrum and per-second timeline) to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Start one member in this process (a temporary data directory; --endpoints unused)
    /// and load it through its in-process client (`inproc`) or over gRPC on loopback to its
    /// client port (`grpc`): what an embedding product pays for each (`cairn` binary only).
    #[arg(long, value_enum)]
    pub embedded: Option<Embedded>,
}

/// How `--embedded` reaches the member in this process.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Embedded {
    /// `Node::client()`: the member's services called directly in this process.
    Inproc,
    /// The member's services over an HTTP/2 channel on in-memory pipes (what `Node::client()`
    /// was before 0.3; kept to measure the direct path against it).
    #[value(name = "inproc-channel")]
    #[serde(rename = "inproc-channel")]
    InprocChannel,
    /// A gRPC client connected to the member's client port on loopback.
    Grpc,
}

/// The workloads.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Put random keys of the key space.
    Put,
    /// Single-key range of random (prefilled) keys, --consistency l or s.
    Range,
    /// Compare-and-swap: txn(if mod_revision(k) == last seen then put k else get k).
    Txn,
    /// Delete the prefilled key space, each key once, in order (stops when it is empty).
    Delete,
    /// Fan-out: puts to one key, --watchers watching it on the first endpoint.
    Watch,
    /// Lease grant, --keepalives-per-lease keepalives (one stream per client), revoke.
    Lease,
    /// Single-key reads (--read-ratio, --consistency) and puts.
    Mixed,
    /// Only write the key space (txns of --fill-batch puts) and report keys per second.
    Fill,
    /// etcd's Lock service: Lock then Unlock of a name of this client's (uncontended; with
    /// --key-space smaller than --clients, names are shared and clients queue), under a
    /// lease granted per client beforehand; one operation is the pair.
    Lock,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Range => "range",
            Workload::Txn => "txn",
            Workload::Delete => "delete",
            Workload::Watch => "watch",
            Workload::Lease => "lease",
            Workload::Mixed => "mixed",
            Workload::Fill => "fill",
            Workload::Lock => "lock",
        }
    }

    /// Whether the workload needs the key space written first.
    pub fn prefills(self) -> bool {
        matches!(self, Workload::Range | Workload::Txn | Workload::Delete | Workload::Mixed | Workload::Fill)
    }
}

/// Read consistency.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// Linearizable.
    #[value(name = "l")]
    L,
    /// Serializable.
    #[value(name = "s")]
    S,
}

impl BenchArgs {
    /// Arguments with every default, for embedding (`BenchArgs::new(Workload::Put)`).
    pub fn new(workload: Workload) -> BenchArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: BenchArgs,
        }
        let mut args = Wrap::parse_from(["bench", workload.name()]).args;
        args.workload = workload;
        args
    }

    /// Rejects combinations that cannot run.
    pub fn validate(&self) -> Result<()> {
        if self.embedded.is_some() && (self.gateway || self.workload == Workload::Watch) {
            bail!("--embedded runs the gRPC workloads other than watch");
        }
        if self.endpoints.is_empty() {
            bail!("--endpoints: at least one endpoint");
        }
        if self.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if self.connections == Some(0) {
            bail!("--connections must be at least 1");
        }
        if self.key_space == 0 {
            bail!("--key-space must be at least 1");
        }
        let digits = (self.key_space - 1).max(1).ilog10() as usize + 1;
        if self.key_size < digits {
            bail!(
                "--key-size {} is too short for --key-space {} ({digits} digits)",
                self.key_size,
                self.key_space
            );
        }
        if let Some(rate) = self.rate {
            if rate.is_nan() || rate <= 0.0 {
                bail!("--rate must be positive");
            }
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            bail!("--read-ratio must be within 0..=1");
        }
        if self.fill_batch == 0 {
            bail!("--fill-batch must be at least 1");
        }
        if self.workload == Workload::Watch {
            if self.watchers == 0 || self.watchers_per_stream == 0 {
                bail!("--watchers and --watchers-per-stream must be at least 1");
            }
            if self.value_size < 8 {
                bail!("watch: --value-size must be at least 8 (a value carries its put's sequence number)");
            }
        }
        Ok(())
    }

    /// The number of connections actually opened.
    pub fn connection_count(&self, endpoints: usize) -> usize {
        self.connections.unwrap_or(endpoints).max(1)
    }

    /// The run's length when neither --total nor --duration is given.
    pub fn effective_duration(&self) -> Option<Duration> {
        match (self.total, self.duration) {
            (Some(_), _) => None,
            (None, Some(d)) => Some(d),
            (None, None) if self.workload == Workload::Fill => None,
            (None, None) => Some(Duration::from_secs(10)),
        }
    }
}
