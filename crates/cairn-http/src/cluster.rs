//! The cluster page: `GET /` (HTML, assets built in), `GET /v1/cluster` (the same content
//! as JSON) and its actions, `POST /v1/cluster/members/{id}/remove|promote|leader`.
//!
//! Whichever member serves it asks every member for `Maintenance.Status` over gRPC (at its
//! first client URL; its own through the local channel) and remembers when each last
//! answered: a member that has not answered for the stale timeout shows as unhealthy.
//! Actions need the `X-Cairn-Action` header, which a cross-site form cannot send (a
//! browser asks the member first, and the member does not allow it), and each is one etcd
//! call: MemberRemove, MemberPromote, MoveLeader (sent to the leader).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::Router;
use http::HeaderMap;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{
    Member, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest, MoveLeaderRequest, StatusRequest,
    StatusResponse,
};
use cairn_proto::{headers, release_line};

use crate::error::HttpError;

/// The page itself: one file, no external assets.
const PAGE: &str = include_str!("cluster.html");

/// The header an action must carry (see the module docs).
pub const ACTION_HEADER: &str = "x-cairn-action";

/// Timing the page reports and uses.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    /// A member not heard from for this long is unhealthy.
    pub stale_timeout: Duration,
}

#[derive(Clone)]
pub struct ClusterView {
    local: Channel,
    timing: Timing,
    /// When each member (by id) last answered, and channels to members by client URL.
    seen: Arc<Mutex<HashMap<u64, Instant>>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    connect: Option<MemberChannels>,
}

/// Opens a channel to another member's client URL (`url`, with a per-call `timeout`), for
/// members whose client port needs more than a plain connection (TLS). Lazy: it connects
/// at the first call.
#[derive(Clone)]
pub struct MemberChannels(pub Arc<ConnectMember>);

/// Opens a channel to a member's client URL with a per-call timeout.
pub type ConnectMember = dyn Fn(&str, Duration) -> Result<Channel, String> + Send + Sync;

impl std::fmt::Debug for MemberChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemberChannels")
    }
}

pub fn routes(local: Channel, timing: Timing, connect: Option<MemberChannels>) -> Router {
    let view = ClusterView::new(local, timing, connect);
    let (v1, v2) = (view.clone(), view);
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/v1/cluster",
            get(move || async move {
                match v1.overview().await {
                    Ok(overview) => axum::Json(overview).into_response(),
                    Err(e) => e.into_response(),
                }
            }),
        )
        .route(
            "/v1/cluster/members/{id}/{action}",
            post(move |Path((id, action)): Path<(String, String)>, headers: HeaderMap| async move {
                match v2.act(&id, &action, &headers).await {
                    Ok(message) => {
                        axum::Json(serde_json::json!({ "ok": true, "message": message })).into_response()
                    }
                    Err(e) => e.into_response(),
                }
            }),
        )
}

/// `/v1/cluster`.
#[derive(Debug, Serialize)]
pub struct Overview {
    pub cluster_id: String,
    /// The member that served this page.
    pub member_id: String,
    /// The leader the serving member knows ("" when none).
    pub leader: String,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub stale_timeout_ms: u64,
    pub members: Vec<MemberView>,
    /// Plain warnings (no cluster key, keys or versions differ, unhealthy members).
    pub warnings: Vec<String>,
    /// Whether etcd's auth is enabled: actions then need a signed-in root user.
    pub auth_enabled: bool,
}

#[derive(Debug, Serialize)]
pub struct MemberView {
    pub id: String,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    /// "leader", "follower", "learner", or "unknown" when it did not answer.
    pub role: String,
    pub os: String,
    pub version: String,
    pub version_in_sync: bool,
    pub key_fingerprint: String,
    pub key_in_sync: bool,
    pub term: u64,
    pub applied_index: u64,
    /// The leader's applied index minus this member's (when both answered).
    pub lag: Option<u64>,
    pub db_size: i64,
    /// Milliseconds since this member last answered the serving member (`None`: never).
    pub last_seen_ms: Option<u64>,
    pub healthy: bool,
    /// Why it did not answer, or its raised alarms.
    pub error: String,
}

/// What one member said about itself.
struct Answer {
    status: StatusResponse,
    version: String,
    key: String,
    os: String,
}

impl ClusterView {
    /// The view through `local` (a channel to the member that serves it, or to any member
    /// for a one-off look such as `cairn status`): members are asked at their client URLs,
    /// through `connect` when given.
    pub fn new(local: Channel, timing: Timing, connect: Option<MemberChannels>) -> ClusterView {
        ClusterView { local, timing, seen: Default::default(), channels: Default::default(), connect }
    }

    fn channel(&self, url: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        let timeout = self.ask_timeout();
        let channel = match &self.connect {
            Some(connect) => (connect.0)(url, timeout)?,
            None => Endpoint::from_shared(url.to_string())
                .map_err(|e| format!("bad client URL {url}: {e}"))?
                .connect_timeout(timeout)
                .timeout(timeout)
                .connect_lazy(),
        };
        channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }

    /// How long one member may take to answer: well inside the stale timeout.
    fn ask_timeout(&self) -> Duration {
        (self.timing.stale_timeout / 3).clamp(Duration::from_millis(200), Duration::from_secs(2))
    }

    async fn ask(&self, channel: Channel) -> Result<Answer, String> {
        let mut client = MaintenanceClient::new(channel);
        let resp = match tokio::time::timeout(self.ask_timeout(), client.status(StatusRequest {})).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(status)) => return Err(status.message().to_string()),
            Err(_) => return Err(format!("no answer within {:?}", self.ask_timeout())),
        };
        let header = |name: &str| resp.metadata().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let version = header(headers::SOFTWARE_VERSION);
        let key = header(headers::KEY_FINGERPRINT).unwrap_or_default();
        let os = header(headers::OS).unwrap_or_default();
        let status = resp.into_inner();
        let version = version.unwrap_or_else(|| format!("etcd {}", status.version));
        Ok(Answer { status, version, key, os })
    }

    async fn members(&self) -> Result<(u64, u64, Vec<Member>), HttpError> {
        let list = ClusterClient::new(self.local.clone())
            .member_list(MemberListRequest { linearizable: false })
            .await?;
        let list = list.into_inner();
        let header = list.header.unwrap_or_default();
        Ok((header.cluster_id, header.member_id, list.members))
    }

    pub async fn overview(&self) -> Result<Overview, HttpError> {
        let (cluster_id, me, members) = self.members().await?;
        let answers = futures::future::join_all(members.iter().map(|m| async move {
            if m.id == me {
                return self.ask(self.local.clone()).await;
            }
            let url = m.client_ur_ls.first().ok_or_else(|| "no client URL published yet".to_string())?;
            self.ask(self.channel(url)?).await
        }))
        .await;
        let now = Instant::now();
        let seen: HashMap<u64, Instant> = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            for (m, a) in members.iter().zip(&answers) {
                if a.is_ok() {
                    seen.insert(m.id, now);
                }
            }
            seen.retain(|id, _| members.iter().any(|m| m.id == *id));
            seen.clone()
        };
        let leader = answers
            .iter()
            .flatten()
            .find(|a| a.status.header.as_ref().is_some_and(|h| h.member_id == a.status.leader))
            .or_else(|| {
                answers.iter().flatten().find(|a| a.status.header.as_ref().is_some_and(|h| h.member_id == me))
            });
        let leader_id = leader.map_or(0, |a| a.status.leader);
        let leader_applied = answers
            .iter()
            .flatten()
            .find(|a| leader_id != 0 && a.status.header.as_ref().is_some_and(|h| h.member_id == leader_id))
            .map(|a| a.status.raft_applied_index);
        // "In sync" means: the same as most members that answered.
        let most = |f: &dyn Fn(&Answer) -> String| -> Option<String> {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for a in answers.iter().flatten() {
                *counts.entry(f(a)).or_default() += 1;
            }
            counts.into_iter().max_by_key(|(_, n)| *n).map(|(v, _)| v)
        };
        let common_key = most(&|a| a.key.clone());
        let common_version = most(&|a| release_line(&a.version).to_string());
        let mut views = Vec::new();
        let mut warnings = Vec::new();
        for (m, answer) in members.iter().zip(answers) {
            let last_seen = seen.get(&m.id).map(|t| now.saturating_duration_since(*t));
            let healthy = last_seen.is_some_and(|age| age <= self.timing.stale_timeout);
            let name = if m.name.is_empty() { format!("(unstarted {:x})", m.id) } else { m.name.clone() };
            let mut view = MemberView {
                id: format!("{:x}", m.id),
                name: name.clone(),
                peer_urls: m.peer_ur_ls.clone(),
                client_urls: m.client_ur_ls.clone(),
                role: if m.is_learner { "learner" } else { "unknown" }.to_string(),
                os: String::new(),
                version: String::new(),
                version_in_sync: false,
                key_fingerprint: String::new(),
                key_in_sync: false,
                term: 0,
                applied_index: 0,
                lag: None,
                db_size: 0,
                last_seen_ms: last_seen.map(|d| d.as_millis() as u64),
                healthy,
                error: String::new(),
            };
            match answer {
                Ok(a) => {
                    let s = &a.status;
                    view.role = if s.is_learner || m.is_learner {
                        "learner"
                    } else if leader_id != 0 && m.id == leader_id {
                        "leader"
                    } else {
                        "follower"
                    }
                    .to_string();
                    view.version_in_sync = common_version.as_deref() == Some(release_line(&a.version));
                    view.key_in_sync = common_key.as_deref() == Some(a.key.as_str()) && !a.key.is_empty();
                    view.os = a.os;
                    view.version = a.version;
                    view.key_fingerprint = a.key;
                    view.term = s.raft_term;
                    view.applied_index = s.raft_applied_index;
                    view.lag = leader_applied.map(|l| l.saturating_sub(s.raft_applied_index));
                    view.db_size = s.db_size;
                    view.error = s.errors.join("; ");
                }
                Err(e) => view.error = e,
            }
            if !view.healthy {
                warnings.push(format!(
                    "{name} is unhealthy: {}",
                    if view.error.is_empty() { "not heard from" } else { &view.error }
                ));
            }
            views.push(view);
        }
        if common_key.as_deref() == Some("none") {
            warnings.push(
                "The cluster runs without a cluster key: any node that reaches a peer port can join it. Give every member the same --encryption-key-file.".to_string(),
            );
        }
        if views.iter().any(|v| !v.key_fingerprint.is_empty() && !v.key_in_sync) {
            warnings.push("The members do not all run with the same cluster key.".to_string());
        }
        if views.iter().any(|v| !v.version.is_empty() && !v.version_in_sync) {
            warnings.push("The members run different releases (a rolling upgrade under way?).".to_string());
        }
        // AuthStatus is open to anyone; a member that cannot say is taken as without auth.
        let auth_enabled = AuthClient::new(self.local.clone())
            .auth_status(cairn_proto::etcdserverpb::AuthStatusRequest {})
            .await
            .is_ok_and(|s| s.into_inner().enabled);
        Ok(Overview {
            auth_enabled,
            cluster_id: format!("{cluster_id:x}"),
            member_id: format!("{me:x}"),
            leader: if leader_id == 0 { String::new() } else { format!("{leader_id:x}") },
            heartbeat_interval_ms: self.timing.heartbeat_interval.as_millis() as u64,
            election_timeout_ms: self.timing.election_timeout.as_millis() as u64,
            stale_timeout_ms: self.timing.stale_timeout.as_millis() as u64,
            members: views,
            warnings,
        })
    }

    async fn act(&self, id: &str, action: &str, request_headers: &HeaderMap) -> Result<String, HttpError> {
        if !request_headers.contains_key(ACTION_HEADER) {
            return Err(HttpError::Forbidden(format!("cluster actions need the {ACTION_HEADER} header")));
        }
        let id = u64::from_str_radix(id.trim_start_matches("0x"), 16)
            .map_err(|_| HttpError::BadJson(format!("member id {id:?} is not hexadecimal")))?;
        match action {
            "remove" => {
                let request = crate::gateway::with_token(request_headers, MemberRemoveRequest { id });
                ClusterClient::new(self.local.clone()).member_remove(request).await?;
                Ok(format!("removed member {id:x}"))
            }
            "promote" => {
                let request = crate::gateway::with_token(request_headers, MemberPromoteRequest { id });
                ClusterClient::new(self.local.clone()).member_promote(request).await?;
                Ok(format!("promoted member {id:x}"))
            }
            "leader" => {
                let (_, me, members) = self.members().await?;
                let leader = MaintenanceClient::new(self.local.clone())
                    .status(StatusRequest {})
                    .await?
                    .into_inner()
                    .leader;
                if leader == 0 {
                    return Err(HttpError::Grpc(tonic::Status::unavailable("etcdserver: no leader")));
                }
                let channel = if leader == me {
                    self.local.clone()
                } else {
                    let url = members
                        .iter()
                        .find(|m| m.id == leader)
                        .and_then(|m| m.client_ur_ls.first())
                        .ok_or_else(|| {
                            HttpError::Grpc(tonic::Status::unavailable("the leader has no client URL"))
                        })?;
                    self.channel(url).map_err(|e| HttpError::Grpc(tonic::Status::unavailable(e)))?
                };
                let request =
                    crate::gateway::with_token(request_headers, MoveLeaderRequest { target_id: id });
                MaintenanceClient::new(channel).move_leader(request).await?;
                Ok(format!("leadership moved to {id:x}"))
            }
            other => Err(HttpError::NotFound(format!("/v1/cluster/members/{id:x}/{other}"))),
        }
    }
}
