//! The HTTP side of the client port (issue 12): etcd's JSON gateway driven by curl and by an
//! HTTP-gateway etcd client from PyPI (`tests/gateway/suite.py`, etcd3gw), the health checks,
//! and a learner over JSON. What etcd 3.4 also does runs against it too
//! (`CAIRN_TEST_TARGET=etcd`); `/livez`, `/readyz` and the `reason` of `/health` are etcd
//! 3.5/3.6 features, checked on Cairn only.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use cairn_tests::{eventually, Cluster, ClusterOptions, Target};
use common::*;

/// An HTTP answer: status and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {:?}", self.body))
    }
}

/// `curl` with `args`, then the URL; returns the status and body.
fn curl(url: &str, args: &[&str]) -> Result<Answer> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .context("running curl (apt-get install curl)")?;
    ensure!(out.status.success(), "curl {url} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').ok_or_else(|| anyhow!("no status line in {text:?}"))?;
    Ok(Answer { status: status.trim().parse().context("status code")?, body: body.to_string() })
}

fn post(cluster: &Cluster, node: usize, path: &str, body: &str) -> Result<Answer> {
    curl(&format!("http://{}{path}", cluster.client_addr(node)), &["-X", "POST", "-d", body])
}

fn get(cluster: &Cluster, node: usize, path: &str) -> Result<Answer> {
    curl(&format!("http://{}{path}", cluster.client_addr(node)), &[])
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn base64_of_test_keys() {
    assert_eq!(b64("foo"), "Zm9v");
    assert_eq!(b64("fo"), "Zm8=");
    assert_eq!(b64("f"), "Zg==");
}

/// The PyPI client suite (`tests/gateway/suite.py`), against one member.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_gateway_client_from_pypi_works_unchanged() {
    let cluster = start_nodes(3).await;
    let root = repo_root();
    let setup = Command::new("bash").arg(root.join("tests/gateway/setup.sh")).output().expect("run setup.sh");
    assert!(
        setup.status.success(),
        "tests/gateway/setup.sh failed (needs python3 with venv and PyPI):\n{}{}",
        String::from_utf8_lossy(&setup.stdout),
        String::from_utf8_lossy(&setup.stderr)
    );
    let stdout = String::from_utf8_lossy(&setup.stdout);
    let python = stdout.lines().last().expect("setup.sh prints the venv's python").trim().to_string();
    for node in [0, 2] {
        let out = Command::new(&python)
            .arg(root.join("tests/gateway/suite.py"))
            .args(["--endpoint", &format!("http://{}", cluster.client_addr(node))])
            .output()
            .expect("run suite.py");
        assert!(
            out.status.success(),
            "gateway suite against node {node} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_in_json_out_with_grpc_gateway_rules() {
    let cluster = start_nodes(1).await;
    let put =
        post(&cluster, 0, "/v3/kv/put", &format!(r#"{{"key":"{}","value":"{}"}}"#, b64("gw/a"), b64("1")))
            .unwrap();
    assert_eq!(put.status, 200, "{put:?}");
    let header = &put.json().unwrap()["header"];
    for field in ["cluster_id", "member_id", "revision", "raft_term"] {
        assert!(header[field].is_string(), "header.{field} must be a string: {header}");
    }
    // The aliases, camelCase names, enum names, a missing key (no kvs, no count).
    for prefix in ["/v3", "/v3beta"] {
        let r = post(
            &cluster,
            0,
            &format!("{prefix}/kv/range"),
            &format!(r#"{{"key":"{}","rangeEnd":"{}","sort_order":"DESCEND"}}"#, b64("gw/"), b64("gw0")),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{prefix}: {r:?}");
        let v = r.json().unwrap();
        assert_eq!(v["kvs"][0]["key"], b64("gw/a"), "{v}");
        assert_eq!(v["kvs"][0]["version"], "1", "{v}");
        assert_eq!(v["count"], "1", "{v}");
    }
    let missing = post(&cluster, 0, "/v3/kv/range", &format!(r#"{{"key":"{}"}}"#, b64("gw/none"))).unwrap();
    let v = missing.json().unwrap();
    assert!(v.get("kvs").is_none() && v.get("count").is_none(), "zero values must be omitted: {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_etcd_codes_and_texts() {
    let cluster = start_nodes(1).await;
    // Malformed JSON and wrong types: InvalidArgument, HTTP 400.
    for body in ["{bad", r#"{"key":5}"#] {
        let a = post(&cluster, 0, "/v3/kv/range", body).unwrap();
        assert_eq!(a.status, 400, "{body}: {a:?}");
        let v = a.json().unwrap();
        assert_eq!(v["code"], 3, "{v}");
        assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
    }
    // etcd's own errors pass through with their code and text.
    let a =
        post(&cluster, 0, "/v3/kv/range", &format!(r#"{{"key":"{}","revision":"999"}}"#, b64("k"))).unwrap();
    assert_eq!(a.status, 400, "{a:?}");
    let v = a.json().unwrap();
    assert_eq!(v["code"], 11, "{v}");
    assert_eq!(v["error"], "etcdserver: mvcc: required revision is a future revision", "{v}");
    let a = post(&cluster, 0, "/v3/kv/put", r#"{"value":"eA=="}"#).unwrap();
    assert_eq!(
        (a.status, a.json().unwrap()["error"].clone()),
        (400, "etcdserver: key is not provided".into())
    );
    let a = post(&cluster, 0, "/v3/lease/revoke", r#"{"ID":"12345"}"#).unwrap();
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(a.json().unwrap()["error"], "etcdserver: requested lease not found");
    // Not a route, not a method.
    assert_eq!(post(&cluster, 0, "/v3/kv/nothing", "{}").unwrap().status, 404);
    assert_eq!(get(&cluster, 0, "/v3/kv/range").unwrap().status, 405);
}

/// A request above `--max-request-bytes`: etcd's "request is too large"; far above it (past
/// the gRPC message limit, max-request-bytes + 512 KiB), grpc-go's ResourceExhausted.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_request_is_refused_and_nothing_is_written() {
    let cluster =
        start(ClusterOptions { nodes: 1, max_request_bytes: Some(64 * 1024), ..Default::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    for (name, value_bytes, status, code, text) in [
        ("over", 100 * 1024, 400, 3, "etcdserver: request is too large"),
        ("far-over", 1024 * 1024, 429, 8, "grpc: received message larger than max"),
        ("huge", 8 * 1024 * 1024, 429, 8, "grpc: received message larger than max"),
    ] {
        let body = format!(r#"{{"key":"{}","value":"{}"}}"#, b64("big"), "QUFB".repeat(value_bytes / 3));
        let file = dir.path().join(name);
        std::fs::write(&file, body).unwrap();
        let a = curl(
            &format!("http://{}/v3/kv/put", cluster.client_addr(0)),
            &["-X", "POST", "--data-binary", &format!("@{}", file.display())],
        )
        .unwrap();
        assert_eq!(a.status, status, "{name}: {a:?}");
        let v = a.json().unwrap();
        assert_eq!(v["code"], code, "{name}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| e.starts_with(text)), "{name}: {v}");
    }
    let r = post(&cluster, 0, "/v3/kv/range", &format!(r#"{{"key":"{}"}}"#, b64("big"))).unwrap();
    assert!(r.json().unwrap().get("kvs").is_none(), "{r:?}");
}

/// A watch and a keepalive streamed through curl: one `{"result":…}` line per message.
#[tokio::test(flavor = "multi_thread")]
async fn a_watch_and_a_keepalive_stream_through_curl() {
    let cluster = start_nodes(3).await;
    let url = format!("http://{}/v3/watch", cluster.client_addr(1));
    let body = format!(r#"{{"create_request":{{"key":"{}"}}}}"#, b64("gw/watched"));
    let watch = std::process::Command::new("curl")
        .args(["-sSN", "--max-time", "6", "-X", "POST", "-d", &body, &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..3 {
        let put = format!(r#"{{"key":"{}","value":"{}"}}"#, b64("gw/watched"), b64(&i.to_string()));
        assert_eq!(post(&cluster, 0, "/v3/kv/put", &put).unwrap().status, 200);
    }
    let out = watch.wait_with_output().expect("curl watch");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(lines.len() >= 2, "expected created + events: {text}");
    assert_eq!(lines[0]["result"]["created"], true, "{text}");
    let values: Vec<String> = lines[1..]
        .iter()
        .flat_map(|l| l["result"]["events"].as_array().cloned().unwrap_or_default())
        .map(|e| e["kv"]["value"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(values, vec![b64("0"), b64("1"), b64("2")], "{text}");

    let grant = post(&cluster, 2, "/v3/lease/grant", r#"{"TTL":"30"}"#).unwrap().json().unwrap();
    let id = grant["ID"].as_str().expect("lease ID").to_string();
    let ka = post(&cluster, 2, "/v3/lease/keepalive", &format!(r#"{{"ID":"{id}"}}"#)).unwrap();
    let v: serde_json::Value = serde_json::from_str(ka.body.lines().next().unwrap_or_default()).unwrap();
    assert_eq!(v["result"]["ID"], id.as_str(), "{ka:?}");
    assert_eq!(v["result"]["TTL"], "30", "{ka:?}");
    // An unknown lease: no TTL field at all (clients test for its absence).
    let ka = post(&cluster, 2, "/v3/lease/keepalive", r#"{"ID":"987654321"}"#).unwrap();
    let v: serde_json::Value = serde_json::from_str(ka.body.lines().next().unwrap_or_default()).unwrap();
    assert!(v["result"].get("TTL").is_none(), "{ka:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn version_reports_numeric_etcd_versions() {
    let cluster = start_nodes(1).await;
    let v = get(&cluster, 0, "/version").unwrap().json().unwrap();
    for field in ["etcdserver", "etcdcluster"] {
        let s = v[field].as_str().unwrap_or_else(|| panic!("{field} missing: {v}"));
        let parts: Vec<u32> = s.split('.').map(|p| p.parse().expect("numeric part")).collect();
        assert_eq!(parts.len(), 3, "{field}: {s}");
        assert!(parts[0] == 3 && parts[1] >= 4, "{field}: {s}");
    }
    if cluster.target().is_cairn() {
        assert_eq!(v["cairn"], env!("CARGO_PKG_VERSION"), "{v}");
    }
}

/// `/health` on a healthy cluster, then on a member that lost its quorum.
#[tokio::test(flavor = "multi_thread")]
async fn health_turns_503_when_the_quorum_is_gone() {
    let cluster = start_nodes(3).await;
    for i in 0..3 {
        let h = get(&cluster, i, "/health").unwrap();
        assert_eq!(h.status, 200, "node {i}: {h:?}");
        assert_eq!(h.json().unwrap()["health"], "true");
        if cluster.target().is_cairn() {
            assert_eq!(get(&cluster, i, "/livez").unwrap().body, "ok");
            let r = get(&cluster, i, "/readyz?verbose").unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            for check in
                ["data_corruption", "leader", "not_learner", "serializable_read", "linearizable_read"]
            {
                assert!(r.body.contains(&format!("[+]{check} ok")), "{r:?}");
            }
        }
    }
    cluster.kill(1).unwrap();
    cluster.kill(2).unwrap();
    let h = eventually(Duration::from_secs(40), "/health 503 without a quorum", || async {
        let h = get(&cluster, 0, "/health")?;
        if h.status != 503 {
            bail!("still {h:?}");
        }
        Ok(h)
    })
    .await
    .unwrap();
    assert_eq!(h.json().unwrap()["health"], "false", "{h:?}");
    // livez asks the process only; readyz names what fails.
    if cluster.target().is_cairn() {
        assert!(!h.json().unwrap()["reason"].as_str().unwrap_or_default().is_empty(), "{h:?}");
        assert_eq!(get(&cluster, 0, "/livez").unwrap().status, 200);
        let r = get(&cluster, 0, "/readyz").unwrap();
        assert_eq!(r.status, 503, "{r:?}");
        assert!(r.body.ends_with("readyz check failed\n"), "{r:?}");
        assert!(r.body.contains("[-]linearizable_read failed"), "{r:?}");
        // Excluding the checks that need the cluster leaves the local ones, which pass.
        let r = get(&cluster, 0, "/readyz?exclude=linearizable_read&exclude=leader&verbose").unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body.contains("[+]linearizable_read excluded: ok"), "{r:?}");
    }
    cluster.restart(1).unwrap();
    cluster.restart(2).unwrap();
    eventually(CONVERGE, "/health back to 200", || async {
        let h = get(&cluster, 0, "/health")?;
        ensure!(h.status == 200, "{h:?}");
        Ok(())
    })
    .await
    .unwrap();
}

/// A learner over JSON: serializable reads only, and (Cairn) not ready for a load balancer.
#[tokio::test(flavor = "multi_thread")]
async fn a_learner_refuses_gateway_writes_and_is_not_ready() {
    let target = Target::from_env();
    let mut opts = ClusterOptions { nodes: 4, founders: Some(3), ..Default::default() };
    if target.is_cairn() {
        opts.extra_args = vec!["--promote-after".into(), "600000".into()];
    }
    let cluster = Cluster::start(target, opts).await.unwrap();
    let url = format!("--peer-urls=http://{}", cluster.advertised_peer_addr(3));
    // etcd refuses member changes in its first seconds ("unhealthy cluster"): retry.
    let out = eventually(CONVERGE, "member add --learner", || async {
        let out = cluster.etcdctl(0, &["member", "add", cluster.node_name(3), &url, "--learner"]).await?;
        ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Ok(out)
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let initial = text
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER="))
        .map(|v| v.trim_matches('"').to_string())
        .expect("ETCD_INITIAL_CLUSTER line");
    cluster.start_added(3, &initial).unwrap();
    let key = b64("gw/learner");
    assert_eq!(
        post(&cluster, 0, "/v3/kv/put", &format!(r#"{{"key":"{key}","value":"eA=="}}"#)).unwrap().status,
        200
    );
    eventually(CONVERGE, "the learner serves a serializable range", || async {
        let r = post(&cluster, 3, "/v3/kv/range", &format!(r#"{{"key":"{key}","serializable":true}}"#))?;
        ensure!(r.status == 200 && r.json()?["count"] == "1", "{r:?}");
        Ok(())
    })
    .await
    .unwrap();
    let w = post(&cluster, 3, "/v3/kv/put", &format!(r#"{{"key":"{key}","value":"eQ=="}}"#)).unwrap();
    assert_eq!(w.status, 503, "{w:?}");
    let v = w.json().unwrap();
    assert_eq!(v["code"], 14, "{v}");
    assert_eq!(v["error"], "etcdserver: rpc not supported for learner", "{v}");
    if cluster.target().is_cairn() {
        let r = get(&cluster, 3, "/readyz").unwrap();
        assert_eq!(r.status, 503, "{r:?}");
        assert!(r.body.contains("[-]not_learner failed"), "{r:?}");
        assert_eq!(get(&cluster, 3, "/livez").unwrap().status, 200);
    }
}

/// `/metrics` under etcd's names (etcd 3.4 serves the same ones): one leader, a revision
/// that counts the writes, WAL fsyncs that happened.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_use_etcds_names_and_follow_the_cluster() {
    let cluster = start_nodes(3).await;
    for i in 0..5 {
        let put = format!(r#"{{"key":"{}","value":"eA=="}}"#, b64(&format!("gw/m{i}")));
        assert_eq!(post(&cluster, 0, "/v3/kv/put", &put).unwrap().status, 200);
    }
    let sample = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
    };
    let mut leaders = 0.0;
    for i in 0..3 {
        let m = get(&cluster, i, "/metrics").unwrap();
        assert_eq!(m.status, 200, "{m:?}");
        let text = m.body;
        let value =
            |name: &str| sample(&text, name).unwrap_or_else(|| panic!("node {i}: no {name} in\n{text}"));
        assert_eq!(value("etcd_server_has_leader"), 1.0);
        leaders += value("etcd_server_is_leader");
        assert!(value("etcd_server_leader_changes_seen_total") >= 1.0);
        assert!(value("etcd_debugging_mvcc_current_revision") >= 6.0, "node {i}");
        assert!(value("etcd_disk_wal_fsync_duration_seconds_count") >= 1.0, "node {i}");
        assert!(value("etcd_mvcc_db_total_size_in_bytes") > 0.0, "node {i}");
        assert!(
            value("etcd_server_proposals_committed_total")
                >= value("etcd_server_proposals_applied_total") - 1.0
        );
    }
    assert_eq!(leaders, 1.0, "exactly one member reports itself leader");

    // Every member measures its round trips to the others (etcd records them every 30 s).
    for i in 0..3 {
        let mut others = Vec::new();
        for j in (0..3).filter(|&j| j != i) {
            others.push(format!("{:x}", cluster.member_id(j).await.unwrap()));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
        loop {
            let text = get(&cluster, i, "/metrics").unwrap().body;
            let measured = others.iter().all(|to| {
                let name = format!("etcd_network_peer_round_trip_time_seconds_count{{To=\"{to}\"}}");
                sample(&text, &name).is_some_and(|n| n >= 1.0)
            });
            if measured {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {i}: no round trips to {others:?} in\n{text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
    if !cluster.target().is_etcd() {
        assert_eq!(post(&cluster, 0, "/v3/lease/grant", r#"{"TTL":"60"}"#).unwrap().status, 200);
        for i in 0..3 {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let text = get(&cluster, i, "/metrics").unwrap().body;
                let applied = sample(&text, "cairn_apply_duration_seconds_count").unwrap_or(0.0);
                if applied >= 1.0 && sample(&text, "cairn_leases") == Some(1.0) {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "node {i}: leases or apply latency in\n{text}");
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
    }
}
