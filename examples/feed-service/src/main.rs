//! A package-feed metadata service, three replicas of which run behind a load balancer with
//! no shared database: each replica embeds a Cairn member (one cluster key, the second and
//! third replicas `--join` the first) and keeps in it
//!
//! - the feed configuration (`TypedKey<FeedConfig>`; `GET`/`PUT /config` on any replica),
//! - its components with version and heartbeat (`Registry`; `GET /components`),
//! - a scheduled indexing job that runs on exactly one replica at a time (`SingleRunner`),
//!   writing its result only while its turn is current (`Turn::fenced_put`), so a replica
//!   that was paused past its lease cannot overwrite its successor (`GET /index` shows the
//!   last run and this replica's refused late writes).
//!
//! `GET /healthz` is the load balancer's check: 200 while this replica's member knows a
//! leader that has a quorum. See README.md for running it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use cairn::{Client, ClientError, Registry, Role, SingleRunner, TypedKey};
use clap::Parser;
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(about = "A package-feed metadata service whose replicas embed Cairn")]
struct Args {
    /// This replica's name (also its Cairn member name).
    #[arg(long)]
    name: String,
    /// Where the service's HTTP API listens.
    #[arg(long)]
    http: SocketAddr,
    /// The embedded member's data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// The embedded member's client address (etcd API: etcdctl works against it).
    #[arg(long)]
    client_addr: String,
    /// The embedded member's peer address.
    #[arg(long)]
    peer_addr: String,
    /// Found a new cluster with this replica alone (the first replica).
    #[arg(long, conflicts_with = "join")]
    found: bool,
    /// Join the cluster through these peer addresses (the other replicas).
    #[arg(long, value_delimiter = ',')]
    join: Vec<String>,
    /// The cluster key every replica shares.
    #[arg(long)]
    key_file: PathBuf,
    /// How often the indexing job runs, in milliseconds.
    #[arg(long, default_value_t = 500)]
    index_every_ms: u64,
    /// Seconds after which a silent job runner loses its turn.
    #[arg(long, default_value_t = 3)]
    job_ttl: i64,
}

/// The feeds the service indexes (its configuration, the same on every replica).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct FeedConfig {
    feeds: Vec<String>,
    #[serde(default)]
    retention_days: u32,
}

/// What one run of the indexing job wrote.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct IndexRun {
    runner: String,
    fencing_token: i64,
    run: u64,
    feeds: usize,
}

struct Service {
    name: String,
    client: Client,
    node: cairn::Node,
    config: TypedKey<FeedConfig>,
    registry: Registry,
    runs: AtomicU64,
    refused_late_writes: AtomicU64,
}

const CONFIG_KEY: &str = "feed/config";
const INDEX_KEY: &str = "feed/index/last";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(
        "info,openraft=warn,openraft::core::heartbeat=error,openraft::replication=error,openraft::engine::handler::replication_handler=error",
    ).init();
    let args = Args::parse();
    let mut builder = cairn::Node::builder()
        .name(&args.name)
        .data_dir(&args.data_dir)
        .client_addr(&args.client_addr)
        .peer_addr(&args.peer_addr)
        .cluster_key_file(&args.key_file);
    builder = if args.found {
        builder.initial_cluster([(args.name.as_str(), args.peer_addr.as_str())])
    } else {
        builder.join(&args.join)
    };
    let node = builder.start().await.context("starting the embedded Cairn member")?;
    let client = node.client();
    let service = Arc::new(Service {
        name: args.name.clone(),
        config: TypedKey::new(&client, CONFIG_KEY),
        registry: Registry::new(&client, "feed/components/"),
        client,
        node,
        runs: AtomicU64::new(0),
        refused_late_writes: AtomicU64::new(0),
    });
    let meta = BTreeMap::from([("http".to_string(), args.http.to_string())]);
    let version = env!("CARGO_PKG_VERSION");
    let _web = register(&service.registry, "web", &args.name, version, meta).await?;
    tokio::spawn(index_job(service.clone(), Duration::from_millis(args.index_every_ms), args.job_ttl));

    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/config", get(get_config).put(put_config))
        .route("/components", get(components))
        .route("/index", get(index))
        .with_state(service.clone());
    let listener = tokio::net::TcpListener::bind(args.http).await.context("binding the HTTP address")?;
    tracing::info!(name = %args.name, http = %args.http, "feed service serving");
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        term.recv().await;
    };
    axum::serve(listener, app).with_graceful_shutdown(stop).await?;
    service.node.stop().await;
    Ok(())
}

/// Registers a component, retrying while the member has no leader yet (just joined).
async fn register(
    registry: &Registry,
    component: &str,
    server: &str,
    version: &str,
    meta: BTreeMap<String, String>,
) -> anyhow::Result<cairn::Registered> {
    let mut last = None;
    for _ in 0..100 {
        match registry.register(component, server, version, meta.clone(), 5, Duration::from_secs(1)).await {
            Ok(r) => return Ok(r),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(anyhow::anyhow!("registering {component}: {last:?}"))
}

/// The indexing job: wait for the turn, then index every `every` and record the run with
/// the turn's fencing; a write refused because another replica took over ends the turn.
async fn index_job(service: Arc<Service>, every: Duration, ttl: i64) {
    let runner = SingleRunner::new(&service.client, "feed/jobs/indexer", ttl);
    loop {
        let turn = match runner.acquire(&service.name).await {
            Ok(turn) => turn,
            Err(e) => {
                tracing::warn!(error = %e, "waiting for the indexing job's turn failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        tracing::info!(fencing_token = turn.fencing_token(), "this replica runs the indexing job");
        loop {
            tokio::time::sleep(every).await;
            let feeds = service.config.get().await.ok().flatten().map_or(0, |c| c.value.feeds.len());
            let run = IndexRun {
                runner: service.name.clone(),
                fencing_token: turn.fencing_token(),
                run: service.runs.fetch_add(1, Ordering::Relaxed) + 1,
                feeds,
            };
            let value = match serde_json::to_vec(&run) {
                Ok(v) => v,
                Err(_) => continue,
            };
            match turn.fenced_put(INDEX_KEY, value).await {
                Ok(_) => {}
                Err(ClientError::NotLeader) => {
                    service.refused_late_writes.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("a late index write was refused: another replica runs the job now");
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "index write failed"),
            }
        }
    }
}

async fn healthz(State(s): State<Arc<Service>>) -> impl IntoResponse {
    let status = s.node.status();
    match status.role {
        Role::Leader | Role::Follower | Role::Learner if status.leader.is_some() => (StatusCode::OK, "ok"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "no leader with a quorum"),
    }
}

/// This replica's member: its role in the Cairn cluster (a joined replica is a learner
/// until the leader promotes it, 10 s after it caught up) and the leader it knows.
async fn status(State(s): State<Arc<Service>>) -> Json<serde_json::Value> {
    let status = s.node.status();
    Json(serde_json::json!({
        "replica": s.name,
        "role": format!("{:?}", status.role),
        "leader": status.leader.map(|l| format!("{l:x}")),
        "applied_index": status.applied_index,
    }))
}

fn failed(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

async fn get_config(State(s): State<Arc<Service>>) -> Result<Json<FeedConfig>, (StatusCode, String)> {
    match s.config.get().await.map_err(failed)? {
        Some(config) => Ok(Json(config.value)),
        None => Err((StatusCode::NOT_FOUND, "no configuration yet".into())),
    }
}

async fn put_config(
    State(s): State<Arc<Service>>,
    Json(config): Json<FeedConfig>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let revision = s.config.put(&config).await.map_err(failed)?;
    Ok(Json(serde_json::json!({ "revision": revision })))
}

async fn components(State(s): State<Arc<Service>>) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let list = s.registry.list(Duration::from_secs(5)).await.map_err(failed)?;
    let rows: Vec<_> = list
        .iter()
        .map(|c| {
            serde_json::json!({
                "component": c.registration.component,
                "server": c.registration.server,
                "version": c.registration.version,
                "version_in_sync": c.version_in_sync,
                "heartbeat_age_ms": c.heartbeat_age.as_millis() as u64,
                "stale": c.stale,
            })
        })
        .collect();
    Ok(Json(serde_json::Value::Array(rows)))
}

async fn index(State(s): State<Arc<Service>>) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let last = s.client.get(INDEX_KEY).await.map_err(failed)?;
    let last: Option<IndexRun> = last.kvs.first().and_then(|kv| serde_json::from_slice(&kv.value).ok());
    Ok(Json(serde_json::json!({
        "last": last,
        "replica": s.name,
        "refused_late_writes": s.refused_late_writes.load(Ordering::Relaxed),
    })))
}
