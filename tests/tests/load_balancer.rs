//! Real load balancers in front of 3 members (issue 12), with the configurations the docs
//! give (`docs/lb/haproxy.cfg`, `docs/lb/nginx.conf`; only the addresses are substituted):
//! gRPC (etcdctl) and JSON (curl) writes and reads through the balancer's address only; the
//! leader is killed; writes succeed again through the balancer; HAProxy's `/readyz` check
//! takes the dead member out of rotation; every acknowledged write is there at the end.
//! Cairn only: etcd 3.4 has no `/readyz`.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use cairn_tests::{eventually, free_port, Cluster, ClusterOptions, Target};
use common::*;

fn repo_file(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The documented configuration with the cluster's client addresses in place of
/// `10.0.0.N:2379`.
fn with_members(config: &str, cluster: &Cluster) -> String {
    let mut config = config.to_string();
    for i in 0..3 {
        config = config.replace(&format!("10.0.0.{}:2379", i + 1), &cluster.client_addr(i).to_string());
    }
    config
}

struct Balancer {
    child: Child,
    log: PathBuf,
    /// host:port for gRPC, and for HTTP/1.1 (the same with HAProxy).
    grpc: String,
    http: String,
    _dir: tempfile::TempDir,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: nginx's master stops its workers on the way out (they would
        // outlive a killed master).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Balancer {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn haproxy(cluster: &Cluster) -> Result<Balancer> {
    let dir = tempfile::tempdir()?;
    let port = free_port(Ipv4Addr::LOCALHOST)?;
    let config = with_members(&repo_file("docs/lb/haproxy.cfg"), cluster)
        .replace("bind *:2379", &format!("bind 127.0.0.1:{port}"));
    ensure!(config.contains(&format!("bind 127.0.0.1:{port}")), "docs/lb/haproxy.cfg has no `bind *:2379`");
    let file = dir.path().join("haproxy.cfg");
    std::fs::write(&file, config)?;
    let log = dir.path().join("haproxy.log");
    let child = Command::new("haproxy")
        .arg("-f")
        .arg(&file)
        .env("CAIRN_HAPROXY_SOCKET", dir.path().join("haproxy.sock"))
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::options().append(true).open(&log)?)
        .spawn()
        .context("starting haproxy (apt-get install haproxy)")?;
    let addr = format!("127.0.0.1:{port}");
    Ok(Balancer { child, log, grpc: addr.clone(), http: addr, _dir: dir })
}

fn nginx(cluster: &Cluster) -> Result<Balancer> {
    let dir = tempfile::tempdir()?;
    let (grpc, http) = (free_port(Ipv4Addr::LOCALHOST)?, free_port(Ipv4Addr::LOCALHOST)?);
    let config = with_members(&repo_file("docs/lb/nginx.conf"), cluster)
        .replace("listen 2379 http2;", &format!("listen 127.0.0.1:{grpc} http2;"))
        .replace("listen 2380;", &format!("listen 127.0.0.1:{http};"));
    ensure!(config.contains(&format!("127.0.0.1:{http};")), "docs/lb/nginx.conf has no `listen 2380;`");
    let file = dir.path().join("nginx.conf");
    std::fs::write(&file, config)?;
    let log = dir.path().join("nginx.log");
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&file)
        .arg("-p")
        .arg(dir.path())
        .args(["-g", "daemon off;"])
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::options().append(true).open(&log)?)
        .spawn()
        .context("starting nginx (apt-get install nginx)")?;
    Ok(Balancer {
        child,
        log,
        grpc: format!("127.0.0.1:{grpc}"),
        http: format!("127.0.0.1:{http}"),
        _dir: dir,
    })
}

fn etcdctl(endpoint: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cairn_tests::etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout=2s"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("etcdctl")?;
    ensure!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn curl_json(url: &str, body: &str) -> Result<serde_json::Value> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "3", "-f", "-X", "POST", "-d", body, url])
        .output()?;
    ensure!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

async fn through(balancer: Balancer, cluster: Cluster, name: &str) {
    let (grpc, http) = (balancer.grpc.clone(), balancer.http.clone());
    eventually(CONVERGE, "the balancer serves gRPC and JSON", || {
        let (grpc, http) = (grpc.clone(), http.clone());
        async move {
            etcdctl(&grpc, &["put", "lb/ready", "1"])?;
            let v = curl_json(
                &format!("http://{http}/v3/kv/range"),
                &format!(r#"{{"key":"{}"}}"#, b64("lb/ready")),
            )?;
            ensure!(v["count"] == "1", "{v}");
            let out = Command::new("curl").args(["-sS", "-f", &format!("http://{http}/readyz")]).output()?;
            ensure!(out.status.success() && out.stdout == b"ok", "{out:?}");
            Ok(())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{name}: {e:#}\n{}", balancer.log()));

    // Writers through the balancer only: gRPC (etcdctl) and JSON (curl), one key each.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, grpc, http) = (acked.clone(), stop.clone(), grpc.clone(), http.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("lb/{n}");
                let ok = if n % 2 == 0 {
                    etcdctl(&grpc, &["put", &key, "v"]).is_ok()
                } else {
                    curl_json(
                        &format!("http://{http}/v3/kv/put"),
                        &format!(r#"{{"key":"{}","value":"dg=="}}"#, b64(&key)),
                    )
                    .is_ok()
                };
                if ok {
                    acked.lock().unwrap().push(key);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = cluster.leader().await.unwrap();
    let before = acked.lock().unwrap().len();
    let killed = Instant::now();
    cluster.kill(leader).unwrap();
    eventually(Duration::from_secs(30), "writes through the balancer succeed again", || async {
        let n = acked.lock().unwrap().len();
        ensure!(n >= before + 10, "{n} acknowledged, {before} before the kill");
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{name}: {e:#}\n{}", balancer.log()));
    eprintln!("{name}: 10 more writes acknowledged {:?} after the leader's SIGKILL", killed.elapsed());
    if name == "haproxy" {
        let dead = format!("cairn_members/m{}", leader + 1);
        eventually(Duration::from_secs(15), "HAProxy takes the dead member out of rotation", || async {
            let log = balancer.log();
            ensure!(log.lines().any(|l| l.contains(&dead) && l.contains("is DOWN")), "{log}");
            Ok(())
        })
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    // Nothing acknowledged is lost: every key is there, read through the balancer.
    let acked = acked.lock().unwrap().clone();
    let listed = etcdctl(&grpc, &["get", "lb/", "--prefix", "--keys-only"]).unwrap();
    let present: std::collections::HashSet<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
    let lost: Vec<&String> = acked.iter().filter(|k| !present.contains(k.as_str())).collect();
    assert!(lost.is_empty(), "{name}: acknowledged but lost: {lost:?}");
    eprintln!("{name}: {} writes acknowledged, none lost", acked.len());

    // The killed member comes back and the balancer uses it again (HAProxy: UP in its log).
    cluster.restart(leader).unwrap();
    cluster.wait_node_ready(leader, CONVERGE).await.unwrap();
    if name == "haproxy" {
        let back = format!("cairn_members/m{}", leader + 1);
        eventually(Duration::from_secs(20), "the member is back in rotation", || async {
            let log = balancer.log();
            let after_down = log.lines().skip_while(|l| !(l.contains(&back) && l.contains("is DOWN")));
            ensure!(after_down.into_iter().any(|l| l.contains(&back) && l.contains("is UP")), "{log}");
            Ok(())
        })
        .await
        .unwrap();
    }
    drop(balancer);
}

#[tokio::test(flavor = "multi_thread")]
async fn haproxy_in_front_of_three_members() {
    let target = Target::from_env();
    if !target.is_cairn() {
        eprintln!("/readyz is Cairn's (etcd 3.4 has none): nothing to check on {}", target.name());
        return;
    }
    let cluster = Cluster::start(target, ClusterOptions::nodes(3)).await.unwrap();
    let balancer = haproxy(&cluster).unwrap();
    through(balancer, cluster, "haproxy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_in_front_of_three_members() {
    let target = Target::from_env();
    if !target.is_cairn() {
        eprintln!("the nginx configuration is Cairn's: nothing to check on {}", target.name());
        return;
    }
    let cluster = Cluster::start(target, ClusterOptions::nodes(3)).await.unwrap();
    let balancer = nginx(&cluster).unwrap();
    through(balancer, cluster, "nginx").await;
}
