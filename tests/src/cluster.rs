//! A cluster of real server processes on loopback addresses.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{Client, ConnectOptions, GetOptions, StatusResponse};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

use crate::ports::free_port;
use crate::target::{etcdctl_bin, Target};
use crate::{eventually, KEEP_DATA_ENV};

/// How a [`Cluster`] is started. `None` options are not passed, so the server's defaults apply.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of nodes (1..=254): node `i` runs on `127.0.0.{i+1}`.
    pub nodes: usize,
    /// `--snapshot-count`: applied log entries between snapshots; the log behind a snapshot is
    /// purged (etcd keeps 5000 extra entries for slow followers; see the README).
    pub snapshot_count: Option<u64>,
    /// `--heartbeat-interval` in milliseconds.
    pub heartbeat_interval_ms: Option<u64>,
    /// `--election-timeout` in milliseconds.
    pub election_timeout_ms: Option<u64>,
    /// `--max-request-bytes`.
    pub max_request_bytes: Option<u64>,
    /// `--max-txn-ops`.
    pub max_txn_ops: Option<u64>,
    /// How many nodes found the cluster (`--initial-cluster`); `None`: all of them. The
    /// others are not started with it: [`Cluster::join`] starts node `i` with `--join` (Cairn
    /// only), through the peer addresses of the nodes before it.
    pub founders: Option<usize>,
    /// Further arguments appended verbatim to every node's command line.
    pub extra_args: Vec<String>,
    /// Extra environment variables for every node (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// How long [`Cluster::start`] waits for every node to serve a linearizable read.
    pub start_timeout: Duration,
    /// Extra environment variables for one node: `node_env[i]` for node `i` (after `env`;
    /// missing entries mean none). The chaos harness gives each node its own libfaketime file.
    pub node_env: Vec<Vec<(String, String)>>,
    /// When set, the peer port other nodes dial to reach node `i` (on its own address
    /// `127.0.0.{i+1}`), e.g. a delay proxy in front of it; the node still listens on its own
    /// peer port. Must have one entry per node.
    pub advertise_peer_ports: Option<Vec<u16>>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            snapshot_count: None,
            heartbeat_interval_ms: None,
            election_timeout_ms: None,
            max_request_bytes: None,
            max_txn_ops: None,
            founders: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            start_timeout: Duration::from_secs(60),
            node_env: Vec::new(),
            advertise_peer_ports: None,
        }
    }
}

impl ClusterOptions {
    /// Defaults with `nodes` nodes.
    pub fn nodes(nodes: usize) -> Self {
        ClusterOptions { nodes, ..Default::default() }
    }
}

/// The client options the harness uses: 3 s connect timeout, 10 s per request.
pub fn default_connect_options() -> ConnectOptions {
    ConnectOptions::new().with_connect_timeout(Duration::from_secs(3)).with_timeout(Duration::from_secs(10))
}

struct Node {
    name: String,
    ip: Ipv4Addr,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// `None` when the harness stopped the node (kill/terminate) or never started it.
    child: Mutex<Option<Child>>,
    paused: AtomicBool,
    /// The binary this node runs when not the target's (see [`Cluster::set_node_bin`]).
    bin: Mutex<Option<PathBuf>>,
    /// Arguments for this node alone, after the others (see [`Cluster::set_node_args`]).
    args: Mutex<Vec<String>>,
    /// The `--initial-cluster` this node was added with (see [`Cluster::start_added`]).
    added: Mutex<Option<String>>,
}

/// A running cluster. Every method takes `&self`, so a cluster can be shared (e.g. in an `Arc`)
/// between a test and the tasks it spawns. Node indexes are 0-based; an index out of range
/// panics.
///
/// On drop every node is killed with SIGKILL and reaped, and the temp dir (data dirs and logs)
/// removed, unless `CAIRN_TEST_KEEP_DATA` is set. When dropped while the thread panics (a failing
/// test), the last 60 lines of each node's log are printed to stderr first.
pub struct Cluster {
    target: Target,
    opts: ClusterOptions,
    token: String,
    dir: Option<TempDir>,
    nodes: Vec<Node>,
}

static CLUSTER_SEQ: AtomicU64 = AtomicU64::new(0);

fn lock(m: &Mutex<Option<Child>>) -> MutexGuard<'_, Option<Child>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// Starts every node and waits (up to `opts.start_timeout`) until each serves a
    /// linearizable read. When a node fails because its port was taken in the meantime, starts
    /// over with fresh ports (3 attempts in all). On failure the error includes the log tails.
    pub async fn start(target: Target, opts: ClusterOptions) -> Result<Cluster> {
        let mut port_conflicts = Vec::new();
        for _attempt in 0..3 {
            let cluster = Cluster::spawn(target.clone(), opts.clone())?;
            match cluster.wait_ready(opts.start_timeout).await {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    let conflict = (0..cluster.len()).any(|i| {
                        cluster.log_tail(i, 200).to_ascii_lowercase().contains("address already in use")
                    });
                    let report = format!("{e:#}\n{}", cluster.logs_tail(60));
                    drop(cluster);
                    if !conflict {
                        bail!("starting a {}-node {} cluster failed: {report}", opts.nodes, target.name());
                    }
                    port_conflicts.push(report);
                }
            }
        }
        bail!(
            "starting a {}-node {} cluster failed 3 times on port conflicts; last: {}",
            opts.nodes,
            target.name(),
            port_conflicts.pop().unwrap_or_default()
        )
    }

    /// Allocates addresses, a temp dir and starts every node, without waiting for anything.
    pub fn spawn(target: Target, opts: ClusterOptions) -> Result<Cluster> {
        if opts.nodes == 0 || opts.nodes > 254 {
            bail!("a cluster has 1..=254 nodes, not {}", opts.nodes);
        }
        if opts.advertise_peer_ports.as_ref().is_some_and(|p| p.len() != opts.nodes) {
            bail!("advertise_peer_ports needs one port per node ({})", opts.nodes);
        }
        let base = std::env::var_os("CAIRN_TEST_TMPDIR").map(PathBuf::from);
        let dir = match base {
            Some(base) => tempfile::Builder::new().prefix("cairn-cluster-").tempdir_in(base),
            None => tempfile::Builder::new().prefix("cairn-cluster-").tempdir(),
        }
        .context("creating the cluster's temp dir")?;
        let seq = CLUSTER_SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let token = format!("cairn-test-{}-{seq}-{nanos}", std::process::id());
        let mut nodes = Vec::with_capacity(opts.nodes);
        for i in 0..opts.nodes {
            let ip = Ipv4Addr::new(127, 0, 0, (i + 1) as u8);
            let client_port = free_port(ip)?;
            let mut peer_port = free_port(ip)?;
            while peer_port == client_port {
                peer_port = free_port(ip)?;
            }
            let name = format!("n{}", i + 1);
            let data_dir = dir.path().join(&name);
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let log_path = dir.path().join(format!("{name}.log"));
            nodes.push(Node {
                name,
                ip,
                client_port,
                peer_port,
                data_dir,
                log_path,
                child: Mutex::new(None),
                paused: AtomicBool::new(false),
                bin: Mutex::new(None),
                args: Mutex::new(Vec::new()),
                added: Mutex::new(None),
            });
        }
        let cluster = Cluster { target, opts, token, dir: Some(dir), nodes };
        for i in 0..cluster.founders() {
            cluster.spawn_node(i)?;
        }
        Ok(cluster)
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// Number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The cluster's temp dir (holds `n<i>/` data dirs and `n<i>.log` logs).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).unwrap_or(Path::new(""))
    }

    /// The `--initial-cluster-token` (etcd) of this cluster.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `n{i+1}`.
    pub fn node_name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// `127.0.0.{i+1}`.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        self.nodes[i].ip
    }

    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.nodes[i].ip, self.nodes[i].client_port))
    }

    pub fn peer_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.nodes[i].ip, self.nodes[i].peer_port))
    }

    /// The peer address the other nodes dial for node `i`: [`Cluster::peer_addr`] unless
    /// [`ClusterOptions::advertise_peer_ports`] is set.
    pub fn advertised_peer_addr(&self, i: usize) -> SocketAddr {
        match &self.opts.advertise_peer_ports {
            Some(ports) => SocketAddr::V4(SocketAddrV4::new(self.nodes[i].ip, ports[i])),
            None => self.peer_addr(i),
        }
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.nodes[i].data_dir
    }

    /// The node's stdout+stderr (appended to across restarts).
    pub fn log_path(&self, i: usize) -> &Path {
        &self.nodes[i].log_path
    }

    /// `http://127.0.0.{i+1}:<client port>`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}", self.client_addr(i))
    }

    /// Every node's endpoint, in node order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.endpoint(i)).collect()
    }

    /// The server command line of node `i` (without the binary).
    /// How many nodes found the cluster (see [`ClusterOptions::founders`]).
    pub fn founders(&self) -> usize {
        self.opts.founders.unwrap_or(self.len()).clamp(1, self.len())
    }

    /// Starts node `i` (not a founder) with `--join` through the peer addresses of the nodes
    /// before it, the most recent first. Does not wait: see [`Cluster::wait_node_ready`]. Cairn only.
    pub fn join(&self, i: usize) -> Result<()> {
        if !self.target.is_cairn() {
            bail!(
                "--join is Cairn's; etcd adds members with `member add` and --initial-cluster-state existing"
            );
        }
        if i < self.founders() {
            bail!("node {i} is a founder, not a joiner");
        }
        self.spawn_node(i)
    }

    /// Starts node `i` (not a founder) as etcd's flow has it, after `member add`: with
    /// `--initial-cluster <initial_cluster> --initial-cluster-state existing` (what `etcdctl
    /// member add` printed as ETCD_INITIAL_CLUSTER). Cairn and etcd alike. Node `i` may be
    /// a founder that was removed, its data directory emptied. Later restarts of node `i`
    /// use the same flags (both servers ignore them once they have data). Does not wait.
    pub fn start_added(&self, i: usize, initial_cluster: &str) -> Result<()> {
        *self.nodes[i].added.lock().unwrap_or_else(|e| e.into_inner()) = Some(initial_cluster.to_string());
        self.spawn_node(i)
    }

    /// Extra arguments for node `i` alone, from its next start on (e.g. `--auto-promote=false`).
    pub fn set_node_args(&self, i: usize, args: Vec<String>) {
        *self.nodes[i].args.lock().unwrap_or_else(|e| e.into_inner()) = args;
    }

    pub fn node_args(&self, i: usize) -> Vec<String> {
        let n = &self.nodes[i];
        let o = &self.opts;
        let mut a: Vec<String> = Vec::new();
        let flag = |a: &mut Vec<String>, k: &str, v: String| {
            a.push(k.to_string());
            a.push(v);
        };
        let added = n.added.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match &self.target {
            Target::Cairn { .. } => {
                a.push("serve".into());
                flag(&mut a, "--name", n.name.clone());
                flag(&mut a, "--data-dir", n.data_dir.display().to_string());
                flag(&mut a, "--client-addr", self.client_addr(i).to_string());
                flag(&mut a, "--peer-addr", self.peer_addr(i).to_string());
                if let Some(initial) = added {
                    flag(&mut a, "--initial-cluster", initial);
                    flag(&mut a, "--initial-cluster-state", "existing".into());
                } else if i < self.founders() {
                    let initial: Vec<String> = (0..self.founders())
                        .map(|j| format!("{}={}", self.nodes[j].name, self.advertised_peer_addr(j)))
                        .collect();
                    flag(&mut a, "--initial-cluster", initial.join(","));
                } else {
                    // The most recently started first: a joiner asks a follower before the founders.
                    let members: Vec<String> =
                        (0..i).rev().map(|j| self.advertised_peer_addr(j).to_string()).collect();
                    flag(&mut a, "--join", members.join(","));
                }
            }
            Target::Etcd { .. } => {
                let client_url = format!("http://{}", self.client_addr(i));
                let peer_url = format!("http://{}", self.peer_addr(i));
                let advertised_peer_url = format!("http://{}", self.advertised_peer_addr(i));
                flag(&mut a, "--name", n.name.clone());
                flag(&mut a, "--data-dir", n.data_dir.display().to_string());
                flag(&mut a, "--listen-client-urls", client_url.clone());
                flag(&mut a, "--advertise-client-urls", client_url);
                flag(&mut a, "--listen-peer-urls", peer_url);
                flag(&mut a, "--initial-advertise-peer-urls", advertised_peer_url);
                let initial: Vec<String> = (0..self.founders())
                    .map(|j| format!("{}=http://{}", self.nodes[j].name, self.advertised_peer_addr(j)))
                    .collect();
                // On a restart etcd finds its WAL in the data dir and ignores the initial-cluster
                // flags, so the same command line serves both.
                match added {
                    Some(initial) => {
                        flag(&mut a, "--initial-cluster", initial);
                        flag(&mut a, "--initial-cluster-state", "existing".into());
                    }
                    None => {
                        flag(&mut a, "--initial-cluster", initial.join(","));
                        flag(&mut a, "--initial-cluster-state", "new".into());
                    }
                }
                flag(&mut a, "--initial-cluster-token", self.token.clone());
            }
        }
        if let Some(v) = o.snapshot_count {
            flag(&mut a, "--snapshot-count", v.to_string());
        }
        if let Some(v) = o.heartbeat_interval_ms {
            flag(&mut a, "--heartbeat-interval", v.to_string());
        }
        if let Some(v) = o.election_timeout_ms {
            flag(&mut a, "--election-timeout", v.to_string());
        }
        if let Some(v) = o.max_request_bytes {
            flag(&mut a, "--max-request-bytes", v.to_string());
        }
        if let Some(v) = o.max_txn_ops {
            flag(&mut a, "--max-txn-ops", v.to_string());
        }
        a.extend(o.extra_args.iter().cloned());
        a.extend(n.args.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
        a
    }

    fn spawn_node(&self, i: usize) -> Result<()> {
        let n = &self.nodes[i];
        let mut child = lock(&n.child);
        if let Some(c) = child.as_mut() {
            if c.try_wait()?.is_none() {
                bail!("node {} is already running (pid {})", n.name, c.id());
            }
        }
        let args = self.node_args(i);
        let bin = self.node_bin(i);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log_path)
            .with_context(|| format!("opening {}", n.log_path.display()))?;
        writeln!(
            log,
            "=== cairn-tests: starting {} ({}) at {:?}: {} {}",
            n.name,
            self.target.name(),
            std::time::SystemTime::now(),
            bin.display(),
            args.join(" ")
        )?;
        let mut cmd = Command::new(&bin);
        cmd.args(&args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        if self.target.is_cairn() {
            // cairn reads its settings from CAIRN_* env vars too; a stray config must not leak in.
            cmd.env_remove("CAIRN_CONFIG");
        }
        // Plain logs (tracing-subscriber honours NO_COLOR).
        cmd.env("NO_COLOR", "1");
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        for (k, v) in self.opts.node_env.get(i).into_iter().flatten() {
            cmd.env(k, v);
        }
        let c = cmd
            .spawn()
            .with_context(|| format!("spawning node {}: {} {}", n.name, bin.display(), args.join(" ")))?;
        *child = Some(c);
        n.paused.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// The pid of node `i` if its process is alive (running or paused).
    pub fn pid(&self, i: usize) -> Option<u32> {
        let mut child = lock(&self.nodes[i].child);
        let c = child.as_mut()?;
        match c.try_wait() {
            Ok(None) => Some(c.id()),
            _ => None,
        }
    }

    /// Whether node `i`'s process is alive (a paused node is alive).
    pub fn is_running(&self, i: usize) -> bool {
        self.pid(i).is_some()
    }

    /// Whether node `i` is stopped with SIGSTOP (by [`Cluster::pause`]).
    pub fn is_paused(&self, i: usize) -> bool {
        self.is_running(i) && self.nodes[i].paused.load(Ordering::SeqCst)
    }

    /// Nodes whose process is alive and not paused.
    pub fn live_nodes(&self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.is_running(i) && !self.is_paused(i)).collect()
    }

    /// Nodes whose process exited although the harness did not stop it (a crash), with the exit
    /// status.
    pub fn unexpected_exits(&self) -> Vec<(usize, ExitStatus)> {
        (0..self.len())
            .filter_map(|i| {
                let mut child = lock(&self.nodes[i].child);
                match child.as_mut().map(|c| c.try_wait()) {
                    Some(Ok(Some(status))) => Some((i, status)),
                    _ => None,
                }
            })
            .collect()
    }

    fn signal(&self, i: usize, sig: libc::c_int) -> Result<()> {
        let n = &self.nodes[i];
        let pid = self.pid(i).ok_or_else(|| anyhow!("node {} is not running", n.name))?;
        // SAFETY: kill(2) on a child we own and have not reaped (so the pid is not reused).
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("kill({pid}, {sig}) for node {}", n.name));
        }
        Ok(())
    }

    /// SIGKILL node `i` and reap it. A node that is not running is left as it is.
    pub fn kill(&self, i: usize) -> Result<()> {
        let n = &self.nodes[i];
        let mut child = lock(&n.child);
        if let Some(mut c) = child.take() {
            // Fails only if it already exited; wait reaps it either way.
            let _ = c.kill();
            c.wait().with_context(|| format!("waiting for node {}", n.name))?;
        }
        n.paused.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// SIGKILL every node.
    pub fn kill_all(&self) -> Result<()> {
        for i in 0..self.len() {
            self.kill(i)?;
        }
        Ok(())
    }

    /// SIGTERM node `i` and wait up to 30 s for it to exit (a paused node is resumed first so it
    /// can handle the signal). Returns its exit status; if it does not exit in time it is killed
    /// and an error returned.
    pub async fn terminate(&self, i: usize) -> Result<ExitStatus> {
        self.terminate_within(i, Duration::from_secs(30)).await
    }

    /// [`Cluster::terminate`] with a chosen grace period.
    pub async fn terminate_within(&self, i: usize, grace: Duration) -> Result<ExitStatus> {
        let n = &self.nodes[i];
        self.signal(i, libc::SIGTERM)?;
        if n.paused.swap(false, Ordering::SeqCst) {
            self.signal(i, libc::SIGCONT)?;
        }
        let deadline = Instant::now() + grace;
        loop {
            {
                let mut child = lock(&n.child);
                let Some(c) = child.as_mut() else {
                    bail!("node {} was stopped by someone else meanwhile", n.name);
                };
                if let Some(status) = c.try_wait()? {
                    *child = None;
                    return Ok(status);
                }
            }
            if Instant::now() >= deadline {
                self.kill(i)?;
                bail!("node {} did not exit within {grace:?} of SIGTERM (killed it)", n.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGSTOP node `i`.
    pub fn pause(&self, i: usize) -> Result<()> {
        self.signal(i, libc::SIGSTOP)?;
        self.nodes[i].paused.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// SIGCONT node `i`.
    pub fn resume(&self, i: usize) -> Result<()> {
        self.signal(i, libc::SIGCONT)?;
        self.nodes[i].paused.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Makes node `i` run `bin` (same flags) from its next start on: a rolling upgrade
    /// replaces the binary member by member.
    pub fn set_node_bin(&self, i: usize, bin: PathBuf) {
        *self.nodes[i].bin.lock().unwrap_or_else(|e| e.into_inner()) = Some(bin);
    }

    /// The binary node `i` runs.
    pub fn node_bin(&self, i: usize) -> PathBuf {
        let own = self.nodes[i].bin.lock().unwrap_or_else(|e| e.into_inner()).clone();
        own.unwrap_or_else(|| self.target.bin().to_path_buf())
    }

    /// Starts node `i` again with the same data dir, ports and flags (killing it first if it is
    /// still running). Does not wait: use [`Cluster::wait_node_ready`] or
    /// [`Cluster::wait_ready`].
    pub fn restart(&self, i: usize) -> Result<()> {
        self.kill(i)?;
        self.spawn_node(i)
    }

    /// [`Cluster::restart`] every node that is not running (all of them after
    /// [`Cluster::kill_all`]).
    pub fn restart_stopped(&self) -> Result<()> {
        for i in 0..self.len() {
            if !self.is_running(i) {
                self.restart(i)?;
            }
        }
        Ok(())
    }

    /// A client connected to node `i` only, with [`default_connect_options`].
    pub async fn client(&self, i: usize) -> Result<Client> {
        self.client_with(&[i], default_connect_options()).await
    }

    /// A client balancing over every node.
    pub async fn client_all(&self) -> Result<Client> {
        let all: Vec<usize> = (0..self.len()).collect();
        self.client_with(&all, default_connect_options()).await
    }

    /// A client over the given nodes with the given options.
    pub async fn client_with(&self, nodes: &[usize], options: ConnectOptions) -> Result<Client> {
        let eps: Vec<String> = nodes.iter().map(|&i| self.endpoint(i)).collect();
        tokio::time::timeout(Duration::from_secs(10), Client::connect(&eps, Some(options)))
            .await
            .map_err(|_| anyhow!("connecting to {eps:?} timed out"))?
            .with_context(|| format!("connecting to {eps:?}"))
    }

    /// Waits until node `i` answers a linearizable `get`. Fails at once (with the log tail) if its
    /// process exits.
    pub async fn wait_node_ready(&self, i: usize, timeout: Duration) -> Result<()> {
        let n = &self.nodes[i];
        let deadline = Instant::now() + timeout;
        let mut last_err = anyhow!("no attempt made");
        loop {
            {
                let mut child = lock(&n.child);
                match child.as_mut() {
                    None => bail!("node {} is not running (stopped by the harness)", n.name),
                    Some(c) => {
                        if let Some(status) = c.try_wait()? {
                            bail!(
                                "node {} ({}) exited with {status} while waiting for it to be ready; log tail:\n{}",
                                n.name,
                                self.endpoint(i),
                                self.log_tail(i, 60)
                            );
                        }
                    }
                }
            }
            let attempt = async {
                let mut c = self.client(i).await?;
                match c.get("cairn-tests/ready", Some(GetOptions::new())).await {
                    Ok(_) => {}
                    // Auth is enabled: a member that knows a leader is ready.
                    Err(e)
                        if crate::grpc_code(&e)
                            .is_some_and(|(_, m)| m == "etcdserver: user name is empty") =>
                    {
                        let status = c.status().await.context("status")?;
                        anyhow::ensure!(status.leader() != 0, "no leader known");
                    }
                    Err(e) => return Err(anyhow::Error::from(e).context("linearizable get")),
                }
                anyhow::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last_err = e,
                Err(_) => last_err = anyhow!("linearizable get timed out after 5s"),
            }
            if Instant::now() >= deadline {
                return Err(last_err.context(format!(
                    "node {} ({}) not ready after {timeout:?}",
                    n.name,
                    self.endpoint(i)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every running, unpaused node answers a linearizable `get`; the error names the
    /// first node that did not.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for i in self.live_nodes() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            self.wait_node_ready(i, remaining.max(Duration::from_millis(1))).await?;
        }
        Ok(())
    }

    /// `Maintenance.Status` of node `i` (5 s timeout).
    pub async fn status(&self, i: usize) -> Result<StatusResponse> {
        let fut = async {
            let c = self.client(i).await?;
            c.maintenance_client()
                .status()
                .await
                .with_context(|| format!("status of node {}", self.nodes[i].name))
        };
        tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .map_err(|_| anyhow!("status of node {} timed out", self.nodes[i].name))?
    }

    /// The raft member id of node `i` (from its status response header).
    pub async fn member_id(&self, i: usize) -> Result<u64> {
        let s = self.status(i).await?;
        s.header()
            .map(|h| h.member_id())
            .ok_or_else(|| anyhow!("status of node {} has no header", self.nodes[i].name))
    }

    /// The index of the leader, once every reachable node names the same leader and the leader is
    /// reachable and names itself (retries for up to 30 s).
    pub async fn leader(&self) -> Result<usize> {
        self.leader_within(Duration::from_secs(30)).await
    }

    /// [`Cluster::leader`] with a chosen timeout.
    pub async fn leader_within(&self, timeout: Duration) -> Result<usize> {
        eventually(timeout, "a leader every reachable node agrees on", || async {
            // (index, member id, leader id)
            let mut seen: Vec<(usize, u64, u64)> = Vec::new();
            for i in self.live_nodes() {
                if let Ok(s) = self.status(i).await {
                    let member = s.header().map(|h| h.member_id()).unwrap_or(0);
                    seen.push((i, member, s.leader()));
                }
            }
            let Some(&(_, _, leader)) = seen.first() else {
                bail!("no node answered Status");
            };
            if leader == 0 || seen.iter().any(|s| s.2 != leader) {
                bail!("no agreed leader yet: (node, member, leader) = {seen:x?}");
            }
            seen.iter()
                .find(|s| s.1 == leader)
                .map(|s| s.0)
                .ok_or_else(|| anyhow!("leader {leader:x} is not among the reachable nodes {seen:x?}"))
        })
        .await
    }

    /// Running nodes other than the leader.
    pub async fn followers(&self) -> Result<Vec<usize>> {
        let leader = self.leader().await?;
        Ok((0..self.len()).filter(|&i| i != leader && self.is_running(i)).collect())
    }

    /// Runs `etcdctl --endpoints <endpoint(i)> <args>` with `ETCDCTL_API=3` (60 s timeout).
    pub async fn etcdctl(&self, i: usize, args: &[&str]) -> Result<Output> {
        self.etcdctl_with_stdin(i, args, None).await
    }

    /// [`Cluster::etcdctl`] feeding `stdin` (e.g. for `etcdctl txn`); its stdin is closed after.
    pub async fn etcdctl_with_stdin(&self, i: usize, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let bin = etcdctl_bin();
        let endpoints = format!("--endpoints={}", self.endpoint(i));
        let what = format!("{} {endpoints} {}", bin.display(), args.join(" "));
        let fut = async {
            let mut cmd = tokio::process::Command::new(&bin);
            cmd.env("ETCDCTL_API", "3")
                .arg(&endpoints)
                .args(args)
                .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let mut child = cmd.spawn().context("spawning etcdctl")?;
            if let Some(input) = stdin {
                let mut pipe = child.stdin.take().context("etcdctl stdin")?;
                pipe.write_all(input.as_bytes()).await?;
                pipe.shutdown().await?;
                drop(pipe);
            }
            child.wait_with_output().await.context("waiting for etcdctl")
        };
        tokio::time::timeout(Duration::from_secs(60), fut)
            .await
            .map_err(|_| anyhow!("`{what}` timed out"))?
            .with_context(|| format!("running `{what}`"))
    }

    /// The last `lines` lines of node `i`'s log (empty if there is none).
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let bytes = fs::read(&self.nodes[i].log_path).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The log tails of every node, each under a header line.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for i in 0..self.len() {
            out.push_str(&format!(
                "----- {} node {} ({}) log tail ({}) -----\n{}\n",
                self.target.name(),
                self.nodes[i].name,
                self.endpoint(i),
                self.nodes[i].log_path.display(),
                self.log_tail(i, lines)
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs_tail(60));
        }
        for n in &self.nodes {
            let mut child = lock(&n.child);
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let keep = std::env::var(KEEP_DATA_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
        if keep {
            if let Some(dir) = self.dir.take() {
                let path = dir.keep();
                eprintln!("{KEEP_DATA_ENV}: kept cluster dir {}", path.display());
            }
        }
    }
}
