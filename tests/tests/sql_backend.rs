//! `cairn serve --backend`: members as separate processes on one PostgreSQL database, used
//! through real etcd clients (the `etcd-client` crate and etcdctl); `cairn migrate` both ways
//! between a data directory and the database, checked by HashKV and a full read.
//! Cairn only (etcd has no SQL backend).
#![allow(clippy::unwrap_used)] // a test fails by panicking

#[path = "../../crates/cairn-sql/tests/common/mod.rs"]
mod databases;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn_tests::{etcdctl_bin, free_port, Target};
use etcd_client::{Client, EventType, GetOptions, WatchOptions};

struct Member {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cairn_bin() -> Option<std::path::PathBuf> {
    match Target::from_env() {
        Target::Cairn { bin } => Some(bin),
        Target::Etcd { .. } => {
            eprintln!("skipped: etcd has no SQL backend");
            None
        }
    }
}

async fn serve(bin: &std::path::Path, url: &str, name: &str) -> Member {
    let port = free_port(Ipv4Addr::LOCALHOST).unwrap();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let child = Command::new(bin)
        .args(["serve", "--backend", url, "--name", name, "--client-addr", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Owned at once: killed and reaped on every path, the panic below included.
    let member = Member { child, addr };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return member;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("member {name} never listened on {addr}");
}

fn ctl(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={addr}"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_one_postgres_serve_the_same_keyspace() {
    let Some(bin) = cairn_bin() else { return };
    let pg = databases::Postgres::start();
    let url = pg.database("members");
    let a = serve(&bin, &url, "a").await;
    let b = serve(&bin, &url, "b").await;
    let mut ca = Client::connect([a.addr.to_string()], None).await.unwrap();
    let mut cb = Client::connect([b.addr.to_string()], None).await.unwrap();

    // A watch on one member sees writes made through the other, in order.
    let mut events = cb.watch("feed/", Some(WatchOptions::new().with_prefix())).await.unwrap();
    for i in 0..5 {
        ca.put(format!("feed/{i}"), format!("v{i}"), None).await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let resp =
            tokio::time::timeout(Duration::from_secs(10), events.message()).await.unwrap().unwrap().unwrap();
        for e in resp.events() {
            assert_eq!(e.event_type(), EventType::Put);
            seen.push(e.kv().unwrap().key_str().unwrap().to_string());
        }
    }
    assert_eq!(seen, (0..5).map(|i| format!("feed/{i}")).collect::<Vec<_>>());
    let got = cb.get("feed/", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(got.count(), 5);

    // The HTTP side: health for load balancers, Prometheus metrics.
    let curl = |path: &str| {
        let out = Command::new("curl").args(["-s", &format!("http://{}{path}", b.addr)]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(curl("/health").contains("\"health\":\"true\""), "{}", curl("/health"));
    let metrics = curl("/metrics");
    assert!(
        metrics.contains("etcd_debugging_mvcc_current_revision") && metrics.contains("kind=\"postgres\""),
        "{metrics}"
    );

    // etcdctl: both members listed; a lock taken through one is seen through the other.
    let members = ctl(a.addr, &["member", "list"]);
    assert!(members.contains(", a,") && members.contains(", b,"), "{members}");
    let out = ctl(b.addr, &["lock", "jobs", "--", "sh", "-c", "echo held"]);
    assert!(out.contains("held"), "{out}");

    // An acknowledged write survives kill -9 of the member that took it.
    ca.put("durable", "yes", None).await.unwrap();
    drop(a);
    let got = cb.get("durable", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"yes");
}

fn full_read(addr: SocketAddr) -> String {
    ctl(addr, &["get", "", "--prefix", "-w", "json"]).split("\"kvs\"").nth(1).unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_moves_a_keyspace_both_ways() {
    let Some(bin) = cairn_bin() else { return };
    let pg = databases::Postgres::start();
    let url = pg.database("migrated");
    let dir = tempfile::tempdir().unwrap();
    let peer = free_port(Ipv4Addr::LOCALHOST).unwrap();
    let client = free_port(Ipv4Addr::LOCALHOST).unwrap();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, client));
    let raft = |data: &std::path::Path| {
        Command::new(&bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .args(["--client-addr", &addr.to_string(), "--peer-addr", &format!("127.0.0.1:{peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let wait = || async {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no member on {addr}");
    };
    // A keyspace with history, a compaction and a lease.
    let mut first = Member { child: raft(&dir.path().join("d1")), addr };
    wait().await;
    for i in 0..50 {
        ctl(addr, &["put", &format!("k{}", i % 10), &format!("v{i}")]);
    }
    ctl(addr, &["compact", "20"]);
    let lease = ctl(addr, &["lease", "grant", "600"]).split_whitespace().nth(1).unwrap().to_string();
    ctl(addr, &["put", "leased", "x", &format!("--lease={lease}")]);
    let before = full_read(addr);
    let old_value = ctl(addr, &["get", "k3", "--rev=30"]);
    let hash = ctl(addr, &["endpoint", "hashkv"]);
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let migrate = |args: &[&str]| {
        let out = Command::new(&bin).arg("migrate").args(args).output().unwrap();
        assert!(out.status.success(), "migrate {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let d1 = dir.path().join("d1");
    let report = migrate(&["--from-data-dir", d1.to_str().unwrap(), "--to", &url]);
    assert!(report.contains("on both sides"), "{report}");
    // A second import into the same database is refused: it is not empty any more.
    let again = Command::new(&bin)
        .args(["migrate", "--from-data-dir", d1.to_str().unwrap(), "--to", &url])
        .output()
        .unwrap();
    assert!(!again.status.success());

    let on_sql = serve(&bin, &url, "sql").await;
    assert_eq!(full_read(on_sql.addr), before);
    assert_eq!(ctl(on_sql.addr, &["get", "k3", "--rev=30"]), old_value);
    assert_eq!(
        ctl(on_sql.addr, &["endpoint", "hashkv"]).split(", ").nth(1),
        hash.split(", ").nth(1),
        "HashKV on the database equals the data directory's"
    );
    assert!(ctl(on_sql.addr, &["lease", "list"]).contains(&lease));
    let compacted = Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .args([format!("--endpoints={}", on_sql.addr), "get".into(), "k3".into(), "--rev=10".into()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&compacted.stderr).contains("compacted"),
        "the compaction point moved too"
    );
    ctl(on_sql.addr, &["put", "written-on-sql", "1"]);
    let after = full_read(on_sql.addr);
    drop(on_sql);

    let d2 = dir.path().join("d2");
    let report = migrate(&["--from", &url, "--to-data-dir", d2.to_str().unwrap()]);
    assert!(report.contains("on both sides"), "{report}");
    let _second = Member { child: raft(&d2), addr };
    wait().await;
    assert_eq!(full_read(addr), after);
    assert_eq!(ctl(addr, &["get", "k3", "--rev=30"]), old_value);
    assert!(ctl(addr, &["lease", "list"]).contains(&lease));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_or_a_bad_url_stops_the_start_with_its_exit_code() {
    let Some(bin) = cairn_bin() else { return };
    let nobody = free_port(Ipv4Addr::LOCALHOST).unwrap();
    let client = free_port(Ipv4Addr::LOCALHOST).unwrap();
    let start = |url: String| {
        Command::new(&bin)
            .args(["serve", "--backend", &url, "--client-addr", &format!("127.0.0.1:{client}")])
            .env("CAIRN_BACKEND_PASSWORD", "hunter2")
            .output()
            .unwrap()
    };
    let out = start(format!("postgres://cairn@127.0.0.1:{nobody}/cairn"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password was printed: {stderr}");
    let out = start("redis://127.0.0.1/0".into());
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
