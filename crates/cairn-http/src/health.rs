//! Health checks for operators and load balancers, each asked of this member over gRPC:
//!
//! - `GET /health` — etcd's: `{"health":"true","reason":""}`, or 503 with
//!   `{"health":"false","reason":…}` when an alarm is raised (`?exclude=NOSPACE` ignores
//!   one), no leader is known, or a read of the key `health` fails (linearizable unless
//!   `?serializable=true`).
//! - `GET /livez` — etcd 3.6's: the process serves a serializable read.
//! - `GET /readyz` — etcd 3.6's checks (`data_corruption`, `serializable_read`,
//!   `linearizable_read`) and Cairn's `leader` (a leader is known) and `not_learner` (off
//!   with `ready_when_learner`). A load balancer sends traffic to a member that passes.
//!
//! `/livez` and `/readyz` answer `ok` (200), or 503 with one `[-]check failed: reason` line
//! per failed check and `livez check failed` / `readyz check failed`; `?verbose` lists every
//! check with `[+]check ok`; `?exclude=check` skips one; `/readyz/<check>` runs one.

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::{Path, RawQuery};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::StatusCode;
use tonic::transport::Channel;

use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{AlarmRequest, AlarmType, RangeRequest, StatusRequest};

use crate::HttpOptions;

#[derive(Clone)]
pub struct Health {
    /// This member's services, without the learner gate.
    pub local: Channel,
    pub options: HttpOptions,
}

pub fn routes(health: Health) -> Router {
    let (h1, h2, h3, h4) = (health.clone(), health.clone(), health.clone(), health);
    Router::new()
        .route("/health", get(move |q: RawQuery| async move { h1.health(q.0).await }))
        .route("/livez", get(move |q: RawQuery| async move { h2.probe(Probe::Livez, q.0, None).await }))
        .route("/readyz", get(move |q: RawQuery| async move { h3.probe(Probe::Readyz, q.0, None).await }))
        .route(
            "/readyz/{check}",
            get(move |Path(check): Path<String>, q: RawQuery| async move {
                h4.probe(Probe::Readyz, q.0, Some(check)).await
            }),
        )
}

/// The query's parameters, in order (values percent-decoded; repeated keys kept).
fn params(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else { return Vec::new() };
    form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn truthy(v: &str) -> bool {
    matches!(v, "" | "true" | "1")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Probe {
    Livez,
    Readyz,
}

impl Probe {
    fn name(self) -> &'static str {
        match self {
            Probe::Livez => "livez",
            Probe::Readyz => "readyz",
        }
    }

    fn checks(self) -> &'static [&'static str] {
        match self {
            Probe::Livez => &["serializable_read"],
            Probe::Readyz => {
                &["data_corruption", "leader", "not_learner", "serializable_read", "linearizable_read"]
            }
        }
    }
}

impl Health {
    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.options.health_timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(status)) => Err(status.message().to_string()),
            Err(_) => Err(format!("timed out after {:?}", self.options.health_timeout)),
        }
    }

    async fn read(&self, serializable: bool) -> Result<(), String> {
        let req = RangeRequest { key: b"health".to_vec(), serializable, ..Default::default() };
        self.timed(KvClient::new(self.local.clone()).range(req)).await.map(|_| ())
    }

    async fn alarms(&self) -> Result<Vec<i32>, String> {
        let req = AlarmRequest { action: AlarmAction::Get as i32, ..Default::default() };
        let resp = self.timed(MaintenanceClient::new(self.local.clone()).alarm(req)).await?;
        Ok(resp.into_inner().alarms.into_iter().map(|a| a.alarm).collect())
    }

    async fn status(&self) -> Result<cairn_proto::etcdserverpb::StatusResponse, String> {
        let resp = self.timed(MaintenanceClient::new(self.local.clone()).status(StatusRequest {})).await?;
        Ok(resp.into_inner())
    }

    /// etcd's `/health` (3.5's `checkV3Health`).
    async fn health(&self, query: Option<String>) -> Response {
        let params = params(query.as_deref());
        let serializable = params.iter().any(|(k, v)| k == "serializable" && v == "true");
        let excluded: HashSet<String> =
            params.iter().filter(|(k, _)| k == "exclude").map(|(_, v)| v.to_ascii_uppercase()).collect();
        let reason = async {
            for alarm in self.alarms().await.map_err(|e| format!("ALARM ERROR:{e}"))? {
                let name = AlarmType::try_from(alarm).map(|a| a.as_str_name()).unwrap_or("UNKNOWN");
                if !excluded.contains(name) {
                    return Err(format!("ALARM {name}"));
                }
            }
            let status = self.status().await.map_err(|e| format!("STATUS ERROR:{e}"))?;
            if status.leader == 0 {
                return Err("RAFT NO LEADER".to_string());
            }
            self.read(serializable).await.map_err(|e| format!("QGET ERROR:{e}"))
        }
        .await;
        let (code, body) = match reason {
            Ok(()) => (StatusCode::OK, serde_json::json!({"health": "true", "reason": ""})),
            Err(reason) => {
                tracing::debug!(%reason, "/health: unhealthy");
                (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"health": "false", "reason": reason}))
            }
        };
        (code, axum::Json(body)).into_response()
    }

    async fn check(&self, name: &str) -> Result<(), String> {
        match name {
            "serializable_read" => self.read(true).await,
            "linearizable_read" => self.read(false).await,
            "data_corruption" => {
                let corrupt = AlarmType::Corrupt as i32;
                if self.alarms().await?.contains(&corrupt) {
                    Err("the CORRUPT alarm is raised".to_string())
                } else {
                    Ok(())
                }
            }
            "leader" => match self.status().await?.leader {
                0 => Err("no leader".to_string()),
                _ => Ok(()),
            },
            "not_learner" => {
                if !self.options.ready_when_learner && self.status().await?.is_learner {
                    Err("this member is a learner".to_string())
                } else {
                    Ok(())
                }
            }
            other => Err(format!("no such check: {other}")),
        }
    }

    /// `/livez` and `/readyz`, in etcd 3.6's output format.
    async fn probe(&self, probe: Probe, query: Option<String>, only: Option<String>) -> Response {
        let params = params(query.as_deref());
        let verbose = params.iter().any(|(k, v)| k == "verbose" && truthy(v));
        let excluded: HashSet<&str> =
            params.iter().filter(|(k, _)| k == "exclude").map(|(_, v)| v.as_str()).collect();
        let checks: Vec<&str> = match &only {
            Some(one) if probe.checks().contains(&one.as_str()) => vec![one.as_str()],
            Some(unknown) => {
                return (StatusCode::NOT_FOUND, format!("no {} check named {unknown}\n", probe.name()))
                    .into_response()
            }
            None => probe.checks().iter().copied().filter(|c| !excluded.contains(c)).collect(),
        };
        let mut lines = String::new();
        let mut failed = false;
        for name in checks {
            match self.check(name).await {
                Ok(()) => lines.push_str(&format!("[+]{name} ok\n")),
                Err(reason) => {
                    failed = true;
                    lines.push_str(&format!("[-]{name} failed: {reason}\n"));
                }
            }
        }
        for name in &excluded {
            if probe.checks().contains(name) && only.is_none() {
                lines.push_str(&format!("[+]{name} excluded: ok\n"));
            }
        }
        if failed {
            tracing::debug!(probe = probe.name(), %lines, "check failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{lines}{} check failed\n", probe.name()))
                .into_response()
        } else if verbose {
            (StatusCode::OK, format!("{lines}ok\n")).into_response()
        } else {
            (StatusCode::OK, "ok").into_response()
        }
    }
}

/// How long a check may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_split_and_decoded() {
        assert_eq!(
            params(Some("exclude=NOSPACE&serializable=true&verbose&x=a%20b+c")),
            vec![
                ("exclude".into(), "NOSPACE".into()),
                ("serializable".into(), "true".into()),
                ("verbose".into(), "".into()),
                ("x".into(), "a b c".into()),
            ]
        );
        assert_eq!(params(None), vec![]);
        let value = |q: &str| params(Some(&format!("x={q}"))).pop().map(|(_, v)| v);
        assert_eq!(value("100%").as_deref(), Some("100%"));
        assert_eq!(value("%zz").as_deref(), Some("%zz"));
        assert_eq!(value("%\u{e9}x%4").as_deref(), Some("%\u{e9}x%4"));
    }
}
