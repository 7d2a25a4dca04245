//! A member's configuration: defaults that run a single node with no flags, the TOML file
//! format (`--config`), and validation into the values the node runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_api::Limits;
use serde::Deserialize;

/// Member configuration. Every field has a default, so `Config::default()` is a working
/// single-node cluster with data in `./cairn-data`. In TOML the keys are kebab-case, as
/// the flags: `name = "n1"`, `data-dir = "d1"`, `initial-cluster = "n1=127.0.0.1:33237,…"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// This member's name, unique in the cluster.
    pub name: String,
    /// Where the member keeps its data (created if missing; one process at a time).
    pub data_dir: PathBuf,
    /// host:port for etcd clients (an `http://` prefix is accepted).
    pub client_addr: String,
    /// host:port for the other members (Raft traffic).
    pub peer_addr: String,
    /// `name=host:port,…` of every founding member; unset: this member alone.
    pub initial_cluster: Option<String>,
    /// `new` (found a cluster of `initial-cluster`) or `existing` (etcd's flow: this member
    /// was added with MemberAdd; `initial-cluster` names the members to ask).
    pub initial_cluster_state: String,
    /// `host:port,…`: peer addresses of members of a running cluster to join (any one is
    /// enough; a follower passes the request to the leader). Not with `initial-cluster`.
    pub join: Option<String>,
    /// Whether this member, joined as a learner, is promoted to voter once caught up.
    pub auto_promote: bool,
    /// Most log entries a learner may trail the leader by to count as caught up.
    pub promote_max_lag: u64,
    /// Milliseconds a learner must stay caught up and in contact before it is promoted.
    pub promote_after: u64,
    /// Seconds after which the leader removes a member it cannot reach (0: never, the
    /// default). Never below `min-voters` voters, one member at a time.
    pub remove_dead_after: u64,
    /// The fewest voters dead-member cleanup leaves.
    pub min_voters: usize,
    /// A file holding the cluster key every member shares (at least 16 bytes; surrounding
    /// whitespace ignored). Unset, with `encryption-key` unset too: no key.
    pub encryption_key_file: Option<PathBuf>,
    /// The cluster key itself (usually from `CAIRN_ENCRYPTION_KEY`), instead of a file.
    pub encryption_key: Option<String>,
    /// Secrets at rest: the values of keys under these prefixes are sealed with AES-256-GCM
    /// under a key derived from the cluster key, and so is every Raft log entry. Needs the
    /// cluster key; give every member the same prefixes.
    pub secret_prefixes: Vec<String>,
    /// The cluster key in use before a rotation (a file): what it sealed still opens.
    pub previous_encryption_key_file: Option<PathBuf>,
    /// Milliseconds between leader heartbeats (etcd: 100).
    pub heartbeat_interval: u64,
    /// Minimum milliseconds without a leader before an election (etcd: 1000).
    pub election_timeout: u64,
    /// Log entries between snapshots; the log is purged behind a snapshot, keeping
    /// min(snapshot-count, 5000) entries for slow followers (etcd 3.4: 100000).
    pub snapshot_count: u64,
    /// Largest accepted request in bytes (etcd: 1.5 MiB).
    pub max_request_bytes: usize,
    /// Most operations in one txn (etcd: 128).
    pub max_txn_ops: usize,
    /// Most watches on one watch stream (etcd: unlimited); further creates are canceled.
    pub max_watches_per_stream: usize,
    /// Most HTTP/2 streams open at once on one client connection (etcd 3.5's
    /// `--max-concurrent-streams`; etcd's default is unlimited).
    pub max_concurrent_streams: u32,
    /// Bytes the keyspace may take before writes that add data are refused and a NOSPACE
    /// alarm is raised (etcd: 2 GiB; 0: that default).
    pub quota_backend_bytes: u64,
    /// Milliseconds a request may wait for the cluster (0: 5 s + 2 election timeouts, as etcd).
    pub request_timeout: u64,
    /// Whether `/readyz` passes on a learner (load balancers that also send serializable
    /// reads to learners); by default a learner is not ready.
    pub ready_when_learner: bool,
    /// Milliseconds after which the cluster page shows a silent member as unhealthy.
    pub stale_timeout: u64,
    /// The client port's TLS certificate and key (PEM; etcd's `--cert-file`/`--key-file`):
    /// both set, the port serves TLS only (gRPC, the gateway and the pages alike).
    pub cert_file: Option<PathBuf>,
    /// The client port's TLS private key (etcd's `--key-file`).
    pub key_file: Option<PathBuf>,
    /// The CA that signs client certificates (etcd's `--trusted-ca-file`).
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by that CA (etcd's `--client-cert-auth`); its
    /// common name is the user when a request carries no token.
    pub client_cert_auth: bool,
    /// The peer port's TLS certificate and key (etcd's `--peer-cert-file`/`--peer-key-file`),
    /// also this member's certificate towards the others; both set, peers speak TLS only.
    pub peer_cert_file: Option<PathBuf>,
    /// The peer port's TLS private key (etcd's `--peer-key-file`).
    pub peer_key_file: Option<PathBuf>,
    /// The CA that signs every member's peer certificate (etcd's `--peer-trusted-ca-file`).
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Require the calling member's certificate (etcd's `--peer-client-cert-auth`).
    pub peer_client_cert_auth: bool,
    /// Seconds between the leader's comparisons of every member's HashKV (etcd's
    /// `--experimental-corrupt-check-time`); a member that diverged gets the CORRUPT alarm.
    /// 0: never.
    pub corrupt_check_interval: u64,
    /// Serve from a SQL database instead of the embedded Raft store: `postgres://…`,
    /// `mysql://…`/`mariadb://…` or `sqlite:///path`. Every member points at the same one;
    /// then no peer port and no data directory are used.
    pub backend: Option<String>,
    /// A file holding the database password (replaces the URL's; or CAIRN_BACKEND_PASSWORD).
    pub backend_password_file: Option<PathBuf>,
    /// The database password itself (from the environment only; never logged).
    #[serde(skip)]
    pub backend_password: Option<String>,
    /// Milliseconds between looks for other members' writes on MySQL and SQLite
    /// (PostgreSQL's NOTIFY wakes members at once; this is its fallback).
    pub sql_poll_interval: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "default".into(),
            data_dir: PathBuf::from("cairn-data"),
            client_addr: "127.0.0.1:2379".into(),
            peer_addr: "127.0.0.1:33237".into(),
            initial_cluster: None,
            initial_cluster_state: "new".into(),
            join: None,
            auto_promote: true,
            promote_max_lag: cairn_raft::Promotion::default().max_lag,
            promote_after: cairn_raft::Promotion::default().stable_for.as_millis() as u64,
            remove_dead_after: 0,
            min_voters: 3,
            encryption_key_file: None,
            encryption_key: None,
            secret_prefixes: Vec::new(),
            previous_encryption_key_file: None,
            heartbeat_interval: 100,
            election_timeout: 1000,
            snapshot_count: 100_000,
            max_request_bytes: Limits::default().max_request_bytes,
            max_txn_ops: Limits::default().max_txn_ops,
            max_watches_per_stream: Limits::default().max_watches_per_stream,
            max_concurrent_streams: Limits::default().max_concurrent_streams,
            quota_backend_bytes: Limits::default().quota_backend_bytes,
            request_timeout: 0,
            ready_when_learner: false,
            stale_timeout: 5000,
            cert_file: None,
            key_file: None,
            trusted_ca_file: None,
            client_cert_auth: false,
            peer_cert_file: None,
            peer_key_file: None,
            peer_trusted_ca_file: None,
            peer_client_cert_auth: false,
            corrupt_check_interval: 300,
            backend: None,
            backend_password_file: None,
            backend_password: None,
            sql_poll_interval: 50,
        }
    }
}

/// A cluster key from a file, or the key itself; none without either.
fn key_from(
    file: Option<&std::path::Path>,
    key: Option<&str>,
    flag: &str,
) -> Result<cairn_raft::ClusterKey, String> {
    match (file, key) {
        (Some(_), Some(_)) => {
            Err("give the cluster key once: --encryption-key-file or CAIRN_ENCRYPTION_KEY".into())
        }
        (Some(path), None) => {
            let secret =
                std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))?;
            cairn_raft::ClusterKey::from_secret(&secret)
                .map_err(|e| format!("{flag} {}: {e}", path.display()))
        }
        (None, Some(key)) => cairn_raft::ClusterKey::from_secret(key.as_bytes())
            .map_err(|e| format!("CAIRN_ENCRYPTION_KEY: {e}")),
        (None, None) => Ok(cairn_raft::ClusterKey::none()),
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub name: String,
    pub data_dir: PathBuf,
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub initial_cluster: Vec<(String, String)>,
    /// `--initial-cluster-state existing`.
    pub existing: bool,
    /// Peer addresses to join through (empty: found or restart from `initial_cluster`).
    pub join: Vec<String>,
    pub auto_promote: bool,
    pub promotion: cairn_raft::Promotion,
    pub dead_members: Option<cairn_raft::DeadMembers>,
    pub cluster_key: cairn_raft::ClusterKey,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub snapshot_count: u64,
    pub corrupt_check_interval: Option<Duration>,
    pub sealer: Option<Arc<cairn_core::seal::Sealer>>,
    pub request_timeout: Duration,
    pub limits: Limits,
    pub ready_when_learner: bool,
    pub stale_timeout: Duration,
    /// The client port's TLS (`None`: plain).
    pub client_tls: Option<std::sync::Arc<cairn_tls::rustls::ServerConfig>>,
    /// How this member reaches other members' TLS client ports (its certificate as the
    /// client's, theirs verified against the trusted CA).
    pub member_tls: Option<std::sync::Arc<cairn_tls::rustls::ClientConfig>>,
    pub peer_tls: Option<cairn_raft::PeerTls>,
}

fn strip_scheme(addr: &str) -> &str {
    addr.trim().trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/')
}

/// `ip:port` or `host:port` (resolved now; the first address wins).
fn socket_addr(flag: &str, addr: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let bare = strip_scheme(addr);
    if let Ok(a) = bare.parse() {
        return Ok(a);
    }
    let bad = || format!("--{flag} {addr:?} is not a host:port address");
    if bare.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
        return Err(bad());
    }
    bare.to_socket_addrs().map_err(|e| format!("--{flag} {addr:?}: {e}"))?.next().ok_or_else(bad)
}

impl Config {
    /// The cluster key from `encryption_key_file` or `encryption_key` (none without either),
    /// with the key before a rotation (`previous_encryption_key_file`) when given: peers may
    /// still prove it, and what it sealed still opens.
    pub(crate) fn cluster_key(&self) -> Result<cairn_raft::ClusterKey, String> {
        let key = key_from(
            self.encryption_key_file.as_deref(),
            self.encryption_key.as_deref(),
            "--encryption-key-file",
        )?;
        match &self.previous_encryption_key_file {
            Some(_) if key.is_none() => {
                Err("--previous-encryption-key-file needs the new cluster key too".into())
            }
            Some(path) => {
                Ok(key.with_previous(key_from(Some(path), None, "--previous-encryption-key-file")?))
            }
            None => Ok(key),
        }
    }

    /// What seals secrets at rest: the cluster key's data key (and the previous key's, to
    /// open what it sealed) over `secret_prefixes`; `None` without prefixes.
    fn sealer(&self, key: &cairn_raft::ClusterKey) -> Result<Option<Arc<cairn_core::seal::Sealer>>, String> {
        if self.secret_prefixes.is_empty() {
            return Ok(None);
        }
        if self.secret_prefixes.iter().any(String::is_empty) {
            return Err("--secret-prefix must not be empty (it would seal every key)".into());
        }
        let Some(current) = key.data_key() else {
            return Err("--secret-prefix needs the cluster key (--encryption-key-file or CAIRN_ENCRYPTION_KEY): values are sealed with a key derived from it".into());
        };
        let previous = match key.previous() {
            Some(old) if old.fingerprint() == key.fingerprint() => {
                return Err("--previous-encryption-key-file holds the current cluster key".into());
            }
            Some(old) => old.data_key().into_iter().collect(),
            None => Vec::new(),
        };
        let prefixes = self.secret_prefixes.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(Some(Arc::new(cairn_core::seal::Sealer::new(current, previous, prefixes))))
    }

    /// The sealer an offline tool needs to read a sealed Raft log (`cairn recover`): the
    /// cluster key's (and the previous key's, during a rotation), whatever the prefixes;
    /// `None` without a key.
    pub fn log_sealer(&self) -> Result<Option<cairn_core::seal::Sealer>, String> {
        let key = self.cluster_key()?;
        let previous = key.previous().and_then(cairn_raft::ClusterKey::data_key).into_iter().collect();
        Ok(key.data_key().map(|k| cairn_core::seal::Sealer::new(k, previous, Vec::new())))
    }

    pub(crate) fn resolve(&self) -> Result<Resolved, String> {
        if self.name.is_empty() || self.name.contains([',', '=']) {
            return Err(format!("--name {:?} must be non-empty and contain no ',' or '='", self.name));
        }
        let existing = match self.initial_cluster_state.trim() {
            "new" => false,
            "existing" => true,
            other => return Err(format!("--initial-cluster-state {other:?} must be new or existing")),
        };
        let client_addr = socket_addr("client-addr", &self.client_addr)?;
        let peer_addr = socket_addr("peer-addr", &self.peer_addr)?;
        let initial_cluster: Vec<(String, String)> = match &self.initial_cluster {
            None => vec![(self.name.clone(), strip_scheme(&self.peer_addr).to_string())],
            Some(list) => list
                .split(',')
                .map(|m| {
                    let (name, addr) = m
                        .split_once('=')
                        .ok_or_else(|| format!("--initial-cluster member {m:?} is not name=host:port"))?;
                    let addr = strip_scheme(addr);
                    // etcdctl's `member add` lists members not started yet as `=url`.
                    if (name.trim().is_empty() && !existing)
                        || addr.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err())
                    {
                        return Err(format!("--initial-cluster member {m:?} is not name=host:port"));
                    }
                    Ok((name.trim().to_string(), addr.to_string()))
                })
                .collect::<Result<_, _>>()?,
        };
        if !initial_cluster.iter().any(|(n, _)| *n == self.name) {
            return Err(format!("--initial-cluster does not name this member ({})", self.name));
        }
        let join: Vec<String> = match &self.join {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|a| {
                    let addr = strip_scheme(a);
                    if addr.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
                        return Err(format!("--join address {a:?} is not host:port"));
                    }
                    Ok(addr.to_string())
                })
                .collect::<Result<_, _>>()?,
        };
        if existing && (self.initial_cluster.is_none() || !join.is_empty()) {
            return Err("--initial-cluster-state existing needs --initial-cluster naming the cluster's members (and no --join)".into());
        }
        if !join.is_empty() && self.initial_cluster.is_some() {
            return Err(
                "--join and --initial-cluster exclude each other: found a cluster, or join one".into()
            );
        }
        if self.promote_after == 0 {
            return Err("--promote-after must be positive".into());
        }
        if self.remove_dead_after > 0 && self.min_voters == 0 {
            return Err("--min-voters must be positive".into());
        }
        let dead_members = (self.remove_dead_after > 0).then(|| cairn_raft::DeadMembers {
            after: Duration::from_secs(self.remove_dead_after),
            min_voters: self.min_voters,
        });
        let cluster_key = self.cluster_key()?;
        let sealer = self.sealer(&cluster_key)?;
        if self.heartbeat_interval == 0 {
            return Err("--heartbeat-interval must be positive".into());
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(format!(
                "--election-timeout ({} ms) must be at least 5 times --heartbeat-interval ({} ms)",
                self.election_timeout, self.heartbeat_interval
            ));
        }
        if self.snapshot_count == 0 {
            return Err("--snapshot-count must be positive".into());
        }
        if self.max_request_bytes == 0 || self.max_txn_ops == 0 {
            return Err("--max-request-bytes and --max-txn-ops must be positive".into());
        }
        if self.max_watches_per_stream == 0 || self.max_concurrent_streams == 0 {
            return Err("--max-watches-per-stream and --max-concurrent-streams must be positive".into());
        }
        let client_tls = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let files = cairn_tls::TlsFiles {
                    cert_file: cert.clone(),
                    key_file: key.clone(),
                    trusted_ca_file: self.trusted_ca_file.clone(),
                    client_cert_auth: self.client_cert_auth,
                };
                // One port for gRPC (HTTP/2) and the gateway and pages (HTTP/1.1).
                let config = cairn_tls::server_config(&files, &[b"h2", b"http/1.1"])
                    .map_err(|e| format!("client TLS: {e}"))?;
                Some(config)
            }
            (None, None) if self.trusted_ca_file.is_some() || self.client_cert_auth => {
                return Err("--trusted-ca-file and --client-cert-auth need --cert-file and --key-file".into())
            }
            (None, None) => None,
            _ => return Err("--cert-file and --key-file go together".into()),
        };
        let member_tls = match (&self.cert_file, &self.key_file, &self.trusted_ca_file) {
            (Some(cert), Some(key), Some(ca)) => Some(
                cairn_tls::client_config(ca, Some((cert, key)), &[b"h2"])
                    .map_err(|e| format!("client TLS towards other members: {e}"))?,
            ),
            _ => None,
        };
        let peer_tls = match (&self.peer_cert_file, &self.peer_key_file, &self.peer_trusted_ca_file) {
            (Some(cert), Some(key), Some(ca)) => {
                let files = cairn_tls::TlsFiles {
                    cert_file: cert.clone(),
                    key_file: key.clone(),
                    trusted_ca_file: Some(ca.clone()),
                    client_cert_auth: self.peer_client_cert_auth,
                };
                Some(cairn_raft::PeerTls {
                    server: cairn_tls::server_config(&files, &[b"h2"])
                        .map_err(|e| format!("peer TLS: {e}"))?,
                    client: cairn_tls::client_config(ca, Some((cert, key)), &[b"h2"])
                        .map_err(|e| format!("peer TLS: {e}"))?,
                })
            }
            (None, None, None) if !self.peer_client_cert_auth => None,
            _ => {
                return Err("peer TLS needs --peer-cert-file, --peer-key-file and --peer-trusted-ca-file \
                            (the CA that signs every member's peer certificate)"
                    .into())
            }
        };
        let request_timeout = match self.request_timeout {
            0 => Duration::from_millis(5000 + 2 * self.election_timeout),
            ms => Duration::from_millis(ms),
        };
        Ok(Resolved {
            name: self.name.clone(),
            data_dir: self.data_dir.clone(),
            client_addr,
            peer_addr,
            initial_cluster,
            existing,
            join,
            auto_promote: self.auto_promote,
            promotion: cairn_raft::Promotion {
                max_lag: self.promote_max_lag,
                stable_for: Duration::from_millis(self.promote_after),
            },
            dead_members,
            cluster_key,
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval),
            election_timeout: Duration::from_millis(self.election_timeout),
            snapshot_count: self.snapshot_count,
            sealer,
            corrupt_check_interval: (self.corrupt_check_interval > 0)
                .then(|| Duration::from_secs(self.corrupt_check_interval)),
            request_timeout,
            ready_when_learner: self.ready_when_learner,
            stale_timeout: Duration::from_millis(self.stale_timeout.max(1)),
            client_tls,
            member_tls,
            peer_tls,
            limits: Limits {
                max_request_bytes: self.max_request_bytes,
                max_txn_ops: self.max_txn_ops,
                max_watches_per_stream: self.max_watches_per_stream,
                max_concurrent_streams: self.max_concurrent_streams,
                quota_backend_bytes: match self.quota_backend_bytes {
                    0 => Limits::default().quota_backend_bytes,
                    bytes => bytes,
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_single_node() {
        let r = Config::default().resolve().unwrap();
        assert_eq!(r.initial_cluster, vec![("default".to_string(), "127.0.0.1:33237".to_string())]);
        assert_eq!(r.client_addr, "127.0.0.1:2379".parse().unwrap());
        assert_eq!(r.request_timeout, Duration::from_millis(7000));
        assert!(r.join.is_empty() && r.auto_promote);
        let joining =
            Config { join: Some("http://10.0.0.1:2380, 10.0.0.2:2380".into()), ..Default::default() };
        assert_eq!(joining.resolve().unwrap().join, vec!["10.0.0.1:2380", "10.0.0.2:2380"]);
        let added = Config {
            initial_cluster: Some(
                "n1=http://10.0.0.1:2380,=http://10.0.0.3:2380,default=http://127.0.0.1:33237".into(),
            ),
            initial_cluster_state: "existing".into(),
            ..Default::default()
        };
        assert!(added.resolve().unwrap().existing);
        let named = Config { client_addr: "http://localhost:2379".into(), ..Default::default() };
        assert_eq!(named.resolve().unwrap().client_addr.port(), 2379);
    }

    #[test]
    fn bad_input_gets_a_clear_error() {
        let cases = [
            (Config { name: String::new(), ..Default::default() }, "--name"),
            (Config { client_addr: "localhost".into(), ..Default::default() }, "--client-addr"),
            (Config { initial_cluster: Some("n1".into()), ..Default::default() }, "not name=host:port"),
            (Config { join: Some("10.0.0.1".into()), ..Default::default() }, "--join address"),
            (
                Config {
                    join: Some("10.0.0.1:2380".into()),
                    initial_cluster: Some("default=127.0.0.1:1".into()),
                    ..Default::default()
                },
                "exclude each other",
            ),
            (Config { promote_after: 0, ..Default::default() }, "--promote-after"),
            (Config { remove_dead_after: 60, min_voters: 0, ..Default::default() }, "--min-voters"),
            (Config { initial_cluster_state: "old".into(), ..Default::default() }, "must be new or existing"),
            (
                Config { initial_cluster_state: "existing".into(), ..Default::default() },
                "needs --initial-cluster",
            ),
            (
                Config {
                    initial_cluster: Some("=http://127.0.0.1:2380,default=127.0.0.1:1".into()),
                    ..Default::default()
                },
                "not name=host:port",
            ),
            (Config { encryption_key: Some("too short".into()), ..Default::default() }, "at least 16"),
            (
                Config {
                    encryption_key: Some("a key of enough bytes".into()),
                    encryption_key_file: Some("k.key".into()),
                    ..Default::default()
                },
                "give the cluster key once",
            ),
            (
                Config { encryption_key_file: Some("/nonexistent/cairn.key".into()), ..Default::default() },
                "cannot read --encryption-key-file",
            ),
            (
                Config { initial_cluster: Some("n1=127.0.0.1:x".into()), ..Default::default() },
                "not name=host:port",
            ),
            (
                Config { initial_cluster: Some("n1=127.0.0.1:1".into()), ..Default::default() },
                "does not name this member",
            ),
            (Config { election_timeout: 200, ..Default::default() }, "at least 5 times"),
            (Config { snapshot_count: 0, ..Default::default() }, "--snapshot-count"),
            (Config { max_watches_per_stream: 0, ..Default::default() }, "--max-watches-per-stream"),
            (Config { max_concurrent_streams: 0, ..Default::default() }, "--max-concurrent-streams"),
            (
                Config { secret_prefixes: vec!["/secrets/".into()], ..Default::default() },
                "--secret-prefix needs the cluster key",
            ),
            (
                Config {
                    secret_prefixes: vec![String::new()],
                    encryption_key: Some("a cluster key of 32 bytes or so".into()),
                    ..Default::default()
                },
                "--secret-prefix must not be empty",
            ),
            (
                Config {
                    previous_encryption_key_file: Some("/nonexistent/old.key".into()),
                    ..Default::default()
                },
                "--previous-encryption-key-file needs the new cluster key too",
            ),
            (
                Config {
                    encryption_key: Some("a cluster key of 32 bytes or so".into()),
                    previous_encryption_key_file: Some("/nonexistent/old.key".into()),
                    ..Default::default()
                },
                "cannot read --previous-encryption-key-file",
            ),
        ];
        for (cfg, want) in cases {
            let err = cfg.resolve().unwrap_err();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }

    #[test]
    fn toml_uses_the_flag_names() {
        let cfg: Config =
            toml::from_str("name = \"n1\"\ndata-dir = \"d1\"\ninitial-cluster = \"n1=127.0.0.1:33237\"\n")
                .unwrap();
        assert_eq!((cfg.name.as_str(), cfg.data_dir.to_str().unwrap()), ("n1", "d1"));
        assert!(toml::from_str::<Config>("nmae = \"typo\"").is_err(), "unknown keys are refused");
    }
}
