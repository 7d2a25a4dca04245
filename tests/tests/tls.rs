//! TLS on the client port with etcd's flags (`--cert-file`, `--key-file`,
//! `--trusted-ca-file`, `--client-cert-auth`), certificates made with rcgen: etcdctl and
//! curl reach gRPC and HTTP through one TLS port; a client without a certificate the CA
//! signed is refused; a certificate's common name is the user when auth is enabled (etcd's
//! certificate auth); a renewed certificate is served without a restart.
//!
//! Between members (`--peer-cert-file`, `--peer-key-file`, `--peer-trusted-ca-file`,
//! `--peer-client-cert-auth`), under the cluster key's handshake: a cluster replicates and
//! fails over through TLS, and a caller that does not speak TLS gets nothing.
//!
//! Cairn only for now: the harness starts etcd with plain URLs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use cairn_tests::Target;

struct Pki {
    dir: PathBuf,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "cairn test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        Pki { dir: dir.into(), ca: rcgen::Issuer::new(params, key) }
    }

    fn ca(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }

    /// A certificate with common name `cn`, valid for `ip`; its files `<name>.pem`, `<name>-key.pem`.
    fn issue(&self, name: &str, cn: &str, ip: &str) -> (String, String) {
        self.issue_for(name, cn, &[ip])
    }

    fn issue_for(&self, name: &str, cn: &str, ips: &[&str]) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        for ip in ips {
            params.subject_alt_names.push(rcgen::SanType::IpAddress(ip.parse().unwrap()));
        }
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (self.dir.join(format!("{name}.pem")), self.dir.join(format!("{name}-key.pem")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c.display().to_string(), k.display().to_string())
    }
}

struct Member(Child);

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn etcdctl(endpoint: &str, args: &[&str]) -> Output {
    Command::new(cairn_tests::etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["--dial-timeout=3s", "--command-timeout=10s"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?} stdout {:?} stderr {:?}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().unwrap()
}

#[test]
fn the_client_port_serves_grpc_and_http_over_tls_with_client_certificates() {
    let target = Target::from_env();
    if !target.is_cairn() {
        eprintln!("skipped: the harness starts etcd without TLS");
        return;
    }
    body(&target).unwrap();
}

fn body(target: &Target) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(dir.path());
    let ip = "127.0.0.1";
    let (server, server_key) = pki.issue("server", "first server cert", ip);
    let (root, root_key) = pki.issue("root", "root", ip);
    let (alice, alice_key) = pki.issue("alice", "alice", ip);
    let other_dir = tempfile::tempdir()?;
    let (stranger, stranger_key) = Pki::new(other_dir.path()).issue("stranger", "root", ip);
    let port = cairn_tests::free_port(ip.parse()?)?;
    let peer = cairn_tests::free_port(ip.parse()?)?;
    let log = std::fs::File::create(dir.path().join("member.log"))?;
    let _member = Member(
        Command::new(target.bin())
            .args(["serve", "--name", "tls", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--client-addr", &format!("{ip}:{port}"), "--peer-addr", &format!("{ip}:{peer}")])
            .args(["--cert-file", &server, "--key-file", &server_key, "--trusted-ca-file", &pki.ca()])
            .arg("--client-cert-auth")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    let endpoint = format!("https://{ip}:{port}");
    let ca = pki.ca();
    let as_root = ["--cacert", &ca, "--cert", &root, "--key", &root_key];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = etcdctl(&endpoint, &[&as_root[..], &["put", "foo", "bar"]].concat());
        if out.status.success() {
            break;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("member.log")).unwrap_or_default();
            bail!("no TLS put: {}\n{log}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = etcdctl(&endpoint, &[&as_root[..], &["get", "foo"]].concat());
    ensure!(String::from_utf8_lossy(&out.stdout) == "foo\nbar\n", "get: {}", text(&out));

    // No client certificate, another CA's, or plain text: nothing.
    let out = etcdctl(&endpoint, &["--cacert", &ca, "get", "foo"]);
    ensure!(!out.status.success(), "no client certificate: {}", text(&out));
    let out =
        etcdctl(&endpoint, &["--cacert", &ca, "--cert", &stranger, "--key", &stranger_key, "get", "foo"]);
    ensure!(!out.status.success(), "a stranger's certificate: {}", text(&out));
    let out = etcdctl(&format!("http://{ip}:{port}"), &["get", "foo"]);
    ensure!(!out.status.success(), "plain text: {}", text(&out));

    // HTTP through the same port: health and the gateway.
    let url = |path: &str| format!("{endpoint}{path}");
    let out = curl(&["--cacert", &ca, "--cert", &root, "--key", &root_key, &url("/health")]);
    ensure!(String::from_utf8_lossy(&out.stdout).contains(r#""health":"true""#), "health: {}", text(&out));
    let out = curl(&["--cacert", &ca, &url("/health")]);
    ensure!(!out.status.success(), "health without a client certificate: {}", text(&out));

    // The cluster page asks every member at its https:// client URL (with the member's own
    // certificate as the client's).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = curl(&["--cacert", &ca, "--cert", &root, "--key", &root_key, &url("/v1/cluster")]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if json["members"][0]["healthy"] == true && json["members"][0]["client_urls"][0] == endpoint.as_str()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the cluster page over TLS: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    // With auth on, the certificate's common name is the user.
    for args in [
        &["user", "add", "root:pw", "--interactive=false"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice:pw", "--interactive=false"],
        &["auth", "enable"],
    ] {
        let out = etcdctl(&endpoint, &[&as_root[..], args].concat());
        ensure!(out.status.success(), "{args:?}: {}", text(&out));
    }
    let out = etcdctl(&endpoint, &[&as_root[..], &["get", "foo"]].concat());
    ensure!(String::from_utf8_lossy(&out.stdout) == "foo\nbar\n", "root by certificate: {}", text(&out));
    let out = etcdctl(&endpoint, &["--cacert", &ca, "--cert", &alice, "--key", &alice_key, "get", "foo"]);
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("Error: etcdserver: permission denied"),
        "alice by certificate: {}",
        text(&out)
    );

    // A renewed certificate is served to new connections, without a restart.
    let (renewed, renewed_key) = pki.issue("renewed", "second server cert", ip);
    std::fs::copy(&renewed, &server)?;
    std::fs::copy(&renewed_key, &server_key)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = curl(&["-v", "--cacert", &ca, "--cert", &root, "--key", &root_key, &url("/health")]);
        if String::from_utf8_lossy(&out.stderr).contains("second server cert") {
            break;
        }
        if Instant::now() > deadline {
            bail!("the renewed certificate was not served: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn members_replicate_through_tls_under_the_cluster_key() {
    let target = Target::from_env();
    if !target.is_cairn() {
        eprintln!("skipped: the harness starts etcd without TLS");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (cert, key) = pki.issue_for("peer", "member", &["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
    let opts = cairn_tests::ClusterOptions {
        nodes: 3,
        extra_args: vec![
            "--peer-cert-file".into(),
            cert,
            "--peer-key-file".into(),
            key,
            "--peer-trusted-ca-file".into(),
            pki.ca(),
            "--peer-client-cert-auth".into(),
        ],
        env: vec![("CAIRN_ENCRYPTION_KEY".into(), "a cluster key of at least 16 bytes".into())],
        ..Default::default()
    };
    let cluster = cairn_tests::Cluster::start(target, opts).await.unwrap();
    let mut c = cluster.client(0).await.unwrap();
    c.put("tls/a", "1", None).await.unwrap();
    let mut far = cluster.client(2).await.unwrap();
    let got = far.get("tls/a", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"1");

    // Not TLS: the handshake's bytes in the clear are refused, and counted.
    let mut tcp = std::net::TcpStream::connect(cluster.peer_addr(1)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    use std::io::{Read, Write};
    tcp.write_all(b"CAIRNP1\n0123456789abcdef0123456789abcdef0123456789abcdef").unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    assert!(!answer.starts_with(&[0]), "no challenge in the clear: {answer:?}");
    let metrics = curl(&[&format!("http://{}/metrics", cluster.client_addr(1))]);
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cairn_peer_refusals_total{reason=\"tls\"} ") && !l.ends_with(" 0")),
        "a TLS refusal counted"
    );

    // A leader's death: the others elect through TLS and go on.
    let leader = cluster.leader().await.unwrap();
    cluster.kill(leader).unwrap();
    let live = cluster.live_nodes();
    let mut c = cluster.client_with(&live, cairn_tests::default_connect_options()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.put("tls/b", "2", None).await.is_err() {
        assert!(Instant::now() < deadline, "no write after the leader's death");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.restart(leader).unwrap();
    cluster.wait_node_ready(leader, Duration::from_secs(30)).await.unwrap();
}
