//! The `cairn` binary: a thin wrapper over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin;
mod migrate;

/// glibc's malloc was 11 % of all CPU under a 256-client put load (many small, short-lived
/// buffers across threads: h2 frames, protobuf messages, RocksDB batches); mimalloc's
/// thread-local free lists cost a fraction of that (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "cairn", version, about = "A Raft-replicated key-value store that speaks the etcd v3 API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start
enum Command {
    /// Run a member. With no flags: a single-node cluster, data in ./cairn-data, clients on
    /// 127.0.0.1:2379, peers on 127.0.0.1:33237.
    Serve(ServeArgs),
    /// Load any etcd v3 endpoints (Cairn or etcd) and report throughput and latency.
    Bench(cairn_bench::BenchArgs),
    /// One table of every member: role, version, term, applied index, lag, db size, errors
    Status(admin::Target),
    /// List, add, update, remove or promote members
    Member {
        #[command(flatten)]
        target: admin::Target,
        #[command(subcommand)]
        command: admin::MemberCommand,
    },
    /// Hand leadership to another voter (by hex id)
    MoveLeader {
        #[command(flatten)]
        target: admin::Target,
        id: String,
    },
    /// Save a backup of a running cluster, or restore one into a new data directory
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Disaster recovery on a stopped member's data directory
    Recover(RecoverArgs),
    /// Copy the whole keyspace between a SQL database and a stopped member's data directory
    Migrate(migrate::MigrateArgs),
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Stream a backup from any member into FILE (checked whole before it is kept)
    Save {
        #[command(flatten)]
        target: admin::Target,
        file: PathBuf,
    },
    /// Create a new data directory holding a backup's keys, history and revisions; start a
    /// member on it with --initial-cluster to found a new cluster (run it once per member,
    /// each with its own data directory)
    Restore {
        file: PathBuf,
        /// The new data directory (must not exist or be empty)
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct RecoverArgs {
    /// Make this stopped member the only member of its cluster: for when a quorum is lost
    /// for good. It keeps everything in its own log; writes it never received are lost.
    #[arg(long, required = true)]
    force_new_cluster: bool,
    /// The member's data directory
    #[arg(long, env = "CAIRN_DATA_DIR", default_value = "cairn-data")]
    data_dir: PathBuf,
    /// The member's name (needed only for data directories written by 0.1)
    #[arg(long, env = "CAIRN_NAME", default_value = "default")]
    name: String,
    /// The cluster key's file, when the member's log is sealed (secrets at rest; or
    /// CAIRN_ENCRYPTION_KEY: the key itself)
    #[arg(long, env = "CAIRN_ENCRYPTION_KEY_FILE")]
    encryption_key_file: Option<PathBuf>,
}

/// Print an admin command's output, or its failure (exit 1).
fn report(outcome: Result<String, admin::Failure>) -> ExitCode {
    use std::io::Write;
    match outcome {
        Ok(text) => match std::io::stdout().write_all(text.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(1),
        },
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::from(1)
        }
    }
}

/// Every flag also reads an environment variable (CAIRN_<FLAG>) and a key of the
/// `--config` TOML file; a flag beats the variable, which beats the file.
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// A TOML file with any of the settings below (kebab-case keys).
    #[arg(long, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    /// This member's name [default: default]
    #[arg(long, env = "CAIRN_NAME")]
    name: Option<String>,
    /// Where this member keeps its data [default: cairn-data]
    #[arg(long, env = "CAIRN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// ip:port for etcd clients [default: 127.0.0.1:2379]
    #[arg(long, env = "CAIRN_CLIENT_ADDR")]
    client_addr: Option<String>,
    /// ip:port for the other members [default: 127.0.0.1:33237]
    #[arg(long, env = "CAIRN_PEER_ADDR")]
    peer_addr: Option<String>,
    /// name=ip:port,... of every founding member [default: this member alone]
    #[arg(long, env = "CAIRN_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// new: found the --initial-cluster; existing: this member was added with `member add`
    /// (etcd's flow) and --initial-cluster names the members to ask [default: new]
    #[arg(long, env = "CAIRN_INITIAL_CLUSTER_STATE")]
    initial_cluster_state: Option<String>,
    /// host:port,... of members of a running cluster to join (instead of --initial-cluster)
    #[arg(long, env = "CAIRN_JOIN")]
    join: Option<String>,
    /// Whether a joined learner is promoted to voter once caught up [default: true]
    #[arg(long, env = "CAIRN_AUTO_PROMOTE")]
    auto_promote: Option<bool>,
    /// Most log entries a learner may trail the leader by and count as caught up [default: 250]
    #[arg(long, env = "CAIRN_PROMOTE_MAX_LAG")]
    promote_max_lag: Option<u64>,
    /// Milliseconds a learner must stay caught up before it is promoted [default: 10000]
    #[arg(long, env = "CAIRN_PROMOTE_AFTER")]
    promote_after: Option<u64>,
    /// Milliseconds after which the cluster page shows a silent member as unhealthy [default: 5000]
    #[arg(long, env = "CAIRN_STALE_TIMEOUT")]
    stale_timeout: Option<u64>,
    /// Whether /readyz passes on a learner (for load balancers that also send it reads) [default: false]
    #[arg(long, env = "CAIRN_READY_WHEN_LEARNER")]
    ready_when_learner: Option<bool>,
    /// Seconds after which the leader removes a member it cannot reach (0: never) [default: 0]
    #[arg(long, env = "CAIRN_REMOVE_DEAD_AFTER")]
    remove_dead_after: Option<u64>,
    /// The fewest voters dead-member cleanup leaves [default: 3]
    #[arg(long, env = "CAIRN_MIN_VOTERS")]
    min_voters: Option<usize>,
    /// Serve from a SQL database, shared by every member: postgres://…, mysql://…, mariadb://…
    /// or sqlite:///path (unset: the embedded Raft store)
    #[arg(long, env = "CAIRN_BACKEND")]
    backend: Option<String>,
    /// A file holding the database password (or CAIRN_BACKEND_PASSWORD: the password itself)
    #[arg(long, env = "CAIRN_BACKEND_PASSWORD_FILE")]
    backend_password_file: Option<PathBuf>,
    /// Milliseconds between looks for other members' writes on MySQL/SQLite [default: 50]
    #[arg(long, env = "CAIRN_SQL_POLL_INTERVAL")]
    sql_poll_interval: Option<u64>,
    /// A file with the cluster key every member shares (or CAIRN_ENCRYPTION_KEY: the key itself)
    #[arg(long, env = "CAIRN_ENCRYPTION_KEY_FILE")]
    encryption_key_file: Option<PathBuf>,
    /// Seal the values of keys under this prefix at rest (repeat, or separate with commas;
    /// needs the cluster key; the same on every member)
    #[arg(long, env = "CAIRN_SECRET_PREFIX", value_delimiter = ',')]
    secret_prefix: Option<Vec<String>>,
    /// A file with the cluster key used before a rotation: values and log entries sealed
    /// with it still open
    #[arg(long, env = "CAIRN_PREVIOUS_ENCRYPTION_KEY_FILE")]
    previous_encryption_key_file: Option<PathBuf>,
    /// Milliseconds between heartbeats [default: 100]
    #[arg(long, env = "CAIRN_HEARTBEAT_INTERVAL")]
    heartbeat_interval: Option<u64>,
    /// Milliseconds before a follower calls an election [default: 1000]
    #[arg(long, env = "CAIRN_ELECTION_TIMEOUT")]
    election_timeout: Option<u64>,
    /// Log entries between snapshots, behind which the log is purged (etcd 3.4: 100000) [default: 100000]
    #[arg(long, env = "CAIRN_SNAPSHOT_COUNT")]
    snapshot_count: Option<u64>,
    /// Largest request in bytes [default: 1572864]
    #[arg(long, env = "CAIRN_MAX_REQUEST_BYTES")]
    max_request_bytes: Option<usize>,
    /// Most operations in one txn [default: 128]
    #[arg(long, env = "CAIRN_MAX_TXN_OPS")]
    max_txn_ops: Option<usize>,
    /// Most watches on one watch stream; further creates are canceled [default: 10000]
    #[arg(long, env = "CAIRN_MAX_WATCHES_PER_STREAM")]
    max_watches_per_stream: Option<usize>,
    /// Most HTTP/2 streams open at once on one client connection [default: 10000]
    #[arg(long, env = "CAIRN_MAX_CONCURRENT_STREAMS")]
    max_concurrent_streams: Option<u32>,
    /// Bytes the keyspace may take before writes are refused with a NOSPACE alarm (0: the
    /// default) [default: 2147483648]
    #[arg(long, env = "CAIRN_QUOTA_BACKEND_BYTES")]
    quota_backend_bytes: Option<u64>,
    /// Seconds between the leader's HashKV comparisons of all members; a member that
    /// diverged gets the CORRUPT alarm (0: never) [default: 300]
    #[arg(long, env = "CAIRN_CORRUPT_CHECK_INTERVAL")]
    corrupt_check_interval: Option<u64>,
    /// Milliseconds a request may wait for the cluster [default: 5000 + 2 election timeouts]
    #[arg(long, env = "CAIRN_REQUEST_TIMEOUT")]
    request_timeout: Option<u64>,
    /// The client port's TLS certificate (PEM); with --key-file the port serves TLS only
    #[arg(long, env = "CAIRN_CERT_FILE")]
    cert_file: Option<PathBuf>,
    /// The client port's TLS key (PEM)
    #[arg(long, env = "CAIRN_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// The CA that signs client certificates (PEM)
    #[arg(long, env = "CAIRN_TRUSTED_CA_FILE")]
    trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by --trusted-ca-file; its common name is the user
    /// of requests without a token [default: false]
    #[arg(long, env = "CAIRN_CLIENT_CERT_AUTH", num_args = 0..=1, default_missing_value = "true")]
    client_cert_auth: Option<bool>,
    /// The peer port's TLS certificate (PEM), also this member's towards the others
    #[arg(long, env = "CAIRN_PEER_CERT_FILE")]
    peer_cert_file: Option<PathBuf>,
    /// The peer port's TLS key (PEM)
    #[arg(long, env = "CAIRN_PEER_KEY_FILE")]
    peer_key_file: Option<PathBuf>,
    /// The CA that signs every member's peer certificate (PEM)
    #[arg(long, env = "CAIRN_PEER_TRUSTED_CA_FILE")]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Require a calling member's certificate signed by --peer-trusted-ca-file [default: false]
    #[arg(long, env = "CAIRN_PEER_CLIENT_CERT_AUTH", num_args = 0..=1, default_missing_value = "true")]
    peer_client_cert_auth: Option<bool>,
}

impl ServeArgs {
    fn into_config(self) -> Result<cairn::Config, String> {
        let mut cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read --config {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("bad --config {}: {e}", path.display()))?
            }
            None => cairn::Config::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { cfg.$field = v; } )* };
        }
        set!(
            name,
            data_dir,
            client_addr,
            peer_addr,
            initial_cluster_state,
            auto_promote,
            promote_max_lag,
            promote_after,
            remove_dead_after,
            min_voters,
            heartbeat_interval,
            election_timeout,
            snapshot_count,
            max_request_bytes,
            max_txn_ops,
            max_watches_per_stream,
            max_concurrent_streams,
            quota_backend_bytes,
            request_timeout,
            ready_when_learner,
            stale_timeout,
            client_cert_auth,
            peer_client_cert_auth,
            corrupt_check_interval,
            sql_poll_interval
        );
        if self.backend.is_some() {
            cfg.backend = self.backend;
        }
        if self.backend_password_file.is_some() {
            cfg.backend_password_file = self.backend_password_file;
        }
        if let Ok(password) = std::env::var("CAIRN_BACKEND_PASSWORD") {
            cfg.backend_password = Some(password);
        }
        for (flag, value) in [
            (&mut cfg.cert_file, self.cert_file),
            (&mut cfg.key_file, self.key_file),
            (&mut cfg.trusted_ca_file, self.trusted_ca_file),
            (&mut cfg.peer_cert_file, self.peer_cert_file),
            (&mut cfg.peer_key_file, self.peer_key_file),
            (&mut cfg.peer_trusted_ca_file, self.peer_trusted_ca_file),
        ] {
            if value.is_some() {
                *flag = value;
            }
        }
        if self.initial_cluster.is_some() {
            cfg.initial_cluster = self.initial_cluster;
        }
        if self.join.is_some() {
            cfg.join = self.join;
        }
        if self.encryption_key_file.is_some() {
            cfg.encryption_key_file = self.encryption_key_file;
        }
        if let Some(prefixes) = self.secret_prefix {
            cfg.secret_prefixes = prefixes;
        }
        if self.previous_encryption_key_file.is_some() {
            cfg.previous_encryption_key_file = self.previous_encryption_key_file;
        }
        // The key itself only from the environment (never a flag: it would show in `ps`).
        if let Ok(key) = std::env::var("CAIRN_ENCRYPTION_KEY") {
            cfg.encryption_key = Some(key);
        }
        Ok(cfg)
    }
}

/// `cairn bench --embedded inproc|grpc`: one member started in this process, loaded through
/// its in-process client or over gRPC on loopback to its client port.
async fn bench_embedded(args: cairn_bench::BenchArgs) -> ExitCode {
    let report = async {
        let dir = tempfile::tempdir()?;
        let node = cairn::Node::builder()
            .name("bench")
            .data_dir(dir.path().join("data"))
            .client_addr("127.0.0.1:0")
            .peer_addr("127.0.0.1:0")
            .start()
            .await?;
        let (endpoint, channel) = match args.embedded {
            Some(cairn_bench::Embedded::Grpc) => {
                let url = format!("http://{}", node.client_addr());
                let channel =
                    tonic::transport::Endpoint::from_shared(url.clone())?.tcp_nodelay(true).connect().await?;
                (url, cairn_client::channel_transport(channel))
            }
            Some(cairn_bench::Embedded::InprocChannel) => {
                ("in-process channel".to_string(), cairn_client::channel_transport(node.in_process_channel()))
            }
            _ => ("in-process".to_string(), node.client().transport().clone()),
        };
        let connections = args.connections.unwrap_or(1);
        let report = cairn_bench::run_on(&args, &[endpoint], vec![channel; connections]).await;
        node.stop().await;
        report
    };
    let report: anyhow::Result<cairn_bench::Report> = report.await;
    cairn_bench::print_report(&args, report)
}

/// openraft's warnings, but not its per-heartbeat and per-retry ones about an unreachable
/// peer (many a second while a member is down; `/metrics` and the cluster page show it).
const DEFAULT_LOG_FILTER: &str = "info,openraft=warn,openraft::core::heartbeat=error,openraft::replication=error,openraft::engine::handler::replication_handler=error";

/// `pub(crate)`: `src/bin/cairn-faulty.rs` wraps this `main` (and arms the test-only faults).
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Bench(args) if args.embedded.is_some() => runtime.block_on(bench_embedded(args)),
        Command::Bench(args) => runtime.block_on(cairn_bench::main(args)),
        Command::Status(target) => report(runtime.block_on(admin::status(&target))),
        Command::Member { target, command } => report(runtime.block_on(admin::member(&target, &command))),
        Command::MoveLeader { target, id } => report(runtime.block_on(admin::move_leader(&target, &id))),
        Command::Snapshot { command: SnapshotCommand::Save { target, file } } => {
            report(runtime.block_on(admin::snapshot_save(&target, &file)))
        }
        Command::Snapshot { command: SnapshotCommand::Restore { file, data_dir } } => {
            report(restore(&file, &data_dir))
        }
        Command::Recover(args) => report(recover(&args)),
        Command::Migrate(args) => report(runtime.block_on(migrate::run(args))),
    }
}

fn restore(file: &std::path::Path, data_dir: &std::path::Path) -> Result<String, admin::Failure> {
    let r = cairn_raft::restore_backup(file, data_dir).map_err(|e| e.to_string())?;
    Ok(format!(
        "Restored {} into {} (revision {}, compacted at {}).\nStart a member on it with --initial-cluster to found a new cluster; start each other member on a restore of its own.\n",
        file.display(),
        data_dir.display(),
        r.revision,
        r.compacted
    ))
}

fn recover(args: &RecoverArgs) -> Result<String, admin::Failure> {
    let key = cairn::Config {
        encryption_key_file: args.encryption_key_file.clone(),
        encryption_key: std::env::var("CAIRN_ENCRYPTION_KEY").ok(),
        ..Default::default()
    };
    let sealer = key.log_sealer().map_err(|e| e.to_string())?;
    let forced = cairn_raft::force_new_cluster(&args.data_dir, &args.name, sealer.as_ref())
        .map_err(|e| e.to_string())?;
    let dropped: Vec<String> = forced.dropped.iter().map(|(id, n)| format!("{id:x} ({n})")).collect();
    Ok(format!(
        "Member {:x} is now the only member of its cluster; dropped: {}.\nIt keeps its whole log (up to index {}), entries it had not seen committed included; writes the other members acknowledged that never reached it are lost.\nStart it as before, then add members with `cairn serve --join` on new data directories. Do not restart the dropped members on their old data directories.\n",
        forced.member_id,
        if dropped.is_empty() { "none".to_string() } else { dropped.join(", ") },
        forced.last_index
    ))
}

async fn serve(args: ServeArgs) -> ExitCode {
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::from(2);
        }
    };
    // Before the node starts: the client port listens before start returns, and a SIGTERM
    // in between must still mean a graceful stop, not the default (killed by the signal).
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cairn: cannot handle SIGTERM/SIGINT: {e}");
            return ExitCode::from(1);
        }
    };
    let node = match cairn::NodeBuilder::from_config(config).start().await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let ended = tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); None }
        _ = int.recv() => { tracing::info!("SIGINT: shutting down"); None }
        _ = node.removed() => Some((7, "the member has been permanently removed from the cluster".to_string())),
        why = node.failed() => Some((8, format!("raft stopped on a fatal error: {why}"))),
    };
    node.stop().await;
    if let Some((code, why)) = ended {
        tracing::error!("{why}");
        eprintln!("cairn: {why}");
        return ExitCode::from(code);
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
