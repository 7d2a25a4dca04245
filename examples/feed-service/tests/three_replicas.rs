//! The worked example end to end: three replicas of the feed service (each embedding a Cairn
//! member; the first founds the cluster, the others `--join` it, one cluster key) behind
//! HAProxy with no session affinity. Configuration written through one replica is read
//! through the load balancer; the replica that runs the indexing job is paused past its
//! lease (the job moves, and the paused replica's late write is refused by the fencing),
//! then the new runner is killed (the job moves again); requests through the load balancer
//! never fail for longer than the failover budget.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest stretch in which every request through the load balancer may fail while a
/// replica is paused or killed: a health check notices in about 1 s (HAProxy, `inter 500ms
/// fall 2`); an election, if the replica led the Cairn cluster, takes about 1 s more.
const FAILOVER_BUDGET: Duration = Duration::from_secs(5);
const PATIENCE: Duration = Duration::from_secs(40);

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 request with `Connection: close`: (status, body). `None` when it failed.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some((status, body.to_string()))
}

fn json(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    match http(addr, "GET", path, None)? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Replica {
    name: String,
    http: SocketAddr,
    child: Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(unsafe_code)] // kill(2) has no safe wrapper in std
fn signal(child: &Child, signal: i32) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, signal) };
}

fn start_replica(dir: &Path, i: usize, key: &Path, first_peer: Option<&str>) -> (Replica, String) {
    let ip = format!("127.0.0.{}", i + 1);
    let name = format!("r{}", i + 1);
    let http: SocketAddr = format!("{ip}:{}", free_port(&ip)).parse().unwrap();
    let peer = format!("{ip}:{}", free_port(&ip));
    let client = format!("{ip}:{}", free_port(&ip));
    let mut command = Command::new(env!("CARGO_BIN_EXE_feed-service"));
    command
        .args(["--name", &name, "--http", &http.to_string(), "--client-addr", &client, "--peer-addr", &peer])
        .arg("--data-dir")
        .arg(dir.join(&name))
        .arg("--key-file")
        .arg(key)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap());
    match first_peer {
        None => command.arg("--found"),
        Some(peer) => command.args(["--join", peer]),
    };
    let child = command.spawn().expect("starting feed-service");
    (Replica { name, http, child }, peer)
}

struct Balancer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy in front of the replicas: round robin, no affinity, `/healthz` checks, and a
/// GET that found its replica dead or hung is retried on another.
fn haproxy(dir: &Path, replicas: &[Replica]) -> Balancer {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1")).parse().unwrap();
    let servers: String = replicas
        .iter()
        .map(|r| format!("    server {} {} check inter 500ms fall 2 rise 1\n", r.name, r.http))
        .collect();
    let config = format!(
        "global\n    maxconn 256\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 10s\n    timeout server 2s\n    retries 3\n    option redispatch\n    retry-on conn-failure empty-response response-timeout 503\nfrontend feed\n    bind {addr}\n    default_backend replicas\nbackend replicas\n    balance roundrobin\n    option httpchk GET /healthz\n{servers}"
    );
    let file = dir.join("haproxy.cfg");
    std::fs::write(&file, config).unwrap();
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
        .spawn()
        .expect("starting haproxy (apt-get install haproxy)");
    Balancer { child, addr }
}

/// The last index run (through `addr`): (runner, fencing token).
fn last_run(addr: SocketAddr) -> Option<(String, i64)> {
    let index = json(addr, "/index")?;
    let last = index.get("last")?;
    Some((last.get("runner")?.as_str()?.to_string(), last.get("fencing_token")?.as_i64()?))
}

#[test]
fn three_replicas_behind_haproxy_keep_serving_and_move_the_job() {
    // Data and logs live in target/tmp/feed-service/ (emptied at each run) for a failure.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("feed-service");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("cluster.key");
    std::fs::write(&key, "the feed service's cluster key, shared by every replica").unwrap();
    let (first, first_peer) = start_replica(dir.as_path(), 0, &key, None);
    eventually("the first replica to serve", || {
        (http(first.http, "GET", "/healthz", None)?.0 == 200).then_some(())
    });
    let mut replicas = vec![first];
    for i in 1..3 {
        replicas.push(start_replica(dir.as_path(), i, &key, Some(&first_peer)).0);
    }
    let servers = eventually("three registered web components", || {
        let list = json(replicas[0].http, "/components")?;
        let servers: Vec<String> =
            list.as_array()?.iter().filter_map(|c| Some(c.get("server")?.as_str()?.to_string())).collect();
        (servers.len() == 3).then_some(servers)
    });
    assert_eq!(servers, ["r1", "r2", "r3"]);
    // The joined replicas vote once the leader has promoted them (10 s after they caught up):
    // only then does the cluster survive losing any one replica.
    eventually("every replica a voter", || {
        replicas
            .iter()
            .all(|r| {
                json(r.http, "/status")
                    .and_then(|s| Some(matches!(s.get("role")?.as_str()?, "Leader" | "Follower")))
                    .unwrap_or(false)
            })
            .then_some(())
    });
    let balancer = haproxy(dir.as_path(), &replicas);
    let lb = balancer.addr;

    // Configuration written through one replica is read through the load balancer.
    let config = r#"{"feeds":["nuget.org","internal"],"retention_days":30}"#;
    let put = eventually("the configuration written", || {
        let (status, body) = http(replicas[1].http, "PUT", "/config", Some(config))?;
        (status == 200).then_some(body)
    });
    assert!(put.contains("revision"), "{put}");
    let read = eventually("the configuration read through HAProxy", || json(lb, "/config"));
    assert_eq!(read, serde_json::from_str::<serde_json::Value>(config).unwrap());

    // Requests through the load balancer all along: the longest run of failures is kept.
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(Mutex::new(Duration::ZERO));
    let poller = {
        let (stop, worst) = (stop.clone(), worst.clone());
        std::thread::spawn(move || {
            let mut failing_since: Option<Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                let ok = matches!(http(lb, "GET", "/config", None), Some((200, _)));
                match (ok, failing_since) {
                    (false, None) => failing_since = Some(Instant::now()),
                    (true, Some(since)) => {
                        let mut w = worst.lock().unwrap();
                        *w = (*w).max(since.elapsed());
                        failing_since = None;
                    }
                    _ => {}
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(since) = failing_since {
                let mut w = worst.lock().unwrap();
                *w = (*w).max(since.elapsed());
            }
        })
    };

    // The job runs on one replica; pause it past its lease: another takes over with a
    // larger fencing token.
    let (runner, token) = eventually("an index run", || last_run(lb));
    let paused = replicas.iter().position(|r| r.name == runner).unwrap();
    signal(&replicas[paused].child, libc::SIGSTOP);
    let (next_runner, next_token) =
        eventually("the job to move", || last_run(lb).filter(|(r, t)| *r != runner && *t > token));
    // Resumed, the old runner still believes it runs the job: its write is refused.
    signal(&replicas[paused].child, libc::SIGCONT);
    eventually("the paused runner's late write refused", || {
        let index = json(replicas[paused].http, "/index")?;
        (index.get("refused_late_writes")?.as_u64()? >= 1).then_some(())
    });
    let (after, _) = eventually("a run after the resume", || last_run(lb));
    assert_ne!(after, runner, "the resumed runner overwrote its successor's run");

    // Kill the new runner: the job moves once more.
    let killed = replicas.iter().position(|r| r.name == next_runner).unwrap();
    signal(&replicas[killed].child, libc::SIGKILL);
    let (third, _) = eventually("the job to move after a kill", || {
        last_run(lb).filter(|(r, t)| *r != next_runner && *t > next_token)
    });
    assert_ne!(third, next_runner);
    assert_eq!(json(lb, "/config").unwrap(), serde_json::from_str::<serde_json::Value>(config).unwrap());

    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    let worst = *worst.lock().unwrap();
    eprintln!("longest run of failed requests through HAProxy: {worst:?}");
    assert!(worst <= FAILOVER_BUDGET, "requests through HAProxy failed for {worst:?}");
}
