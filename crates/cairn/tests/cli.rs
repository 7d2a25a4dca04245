//! The `cairn` binary as an operator meets it: no-flag start, exit codes for bad
//! configuration, a locked or corrupted data directory, and graceful SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn cairn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Wait until something accepts connections on `addr`.
fn wait_listening(addr: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "cairn exited before listening on {addr}");
        assert!(Instant::now() < deadline, "cairn did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm(child: &Child) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

#[test]
fn serve_without_flags_runs_a_single_node_in_cairn_data_and_stops_on_sigterm() {
    for port in [2379, 33237] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "this test needs 127.0.0.1:{port} free"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = cairn().arg("serve").current_dir(dir.path()).stderr(Stdio::null()).spawn().unwrap();
    wait_listening("127.0.0.1:2379", &mut child);
    assert!(dir.path().join("cairn-data").is_dir(), "default data dir is ./cairn-data");
    std::net::TcpStream::connect("127.0.0.1:33237").expect("default peer port 33237");
    sigterm(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
}

#[test]
fn bad_configuration_exits_2_with_a_message() {
    let cases: &[&[&str]] = &[
        &["serve", "--election-timeout", "10"],
        &["serve", "--initial-cluster", "other=127.0.0.1:1"],
        &["serve", "--client-addr", "not-an-address"],
        &["serve", "--no-such-flag"],
    ];
    for args in cases {
        let out = cairn().args(*args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(!out.stderr.is_empty(), "{args:?} explains itself");
    }
}

#[test]
fn env_and_config_file_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let client = format!("127.0.0.1:{}", free_port());
    let peer = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("cairn.toml");
    std::fs::write(&cfg, format!("data-dir = \"from-file\"\nclient-addr = \"{client}\"\n")).unwrap();
    let mut child = cairn()
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env("CAIRN_PEER_ADDR", &peer)
        .current_dir(dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(&client, &mut child);
    wait_listening(&peer, &mut child);
    assert!(dir.path().join("from-file").is_dir());
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn a_locked_data_dir_exits_3_and_a_corrupted_one_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let client = format!("127.0.0.1:{}", free_port());
    let peer = format!("127.0.0.1:{}", free_port());
    let mut first = cairn()
        .args(["serve", "--data-dir", data.to_str().unwrap(), "--client-addr", &client, "--peer-addr", &peer])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(&client, &mut first);
    // Same flags, same data dir: the lock, not the port, is what it reports.
    let out = cairn()
        .args(["serve", "--data-dir", data.to_str().unwrap(), "--client-addr", &client, "--peer-addr", &peer])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    first.kill().unwrap();
    first.wait().unwrap();

    let corrupt = dir.path().join("c");
    std::fs::create_dir_all(corrupt.join("db")).unwrap();
    std::fs::write(corrupt.join("db/CURRENT"), "garbage").unwrap();
    let out = cairn()
        .args([
            "serve",
            "--data-dir",
            corrupt.to_str().unwrap(),
            "--client-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--peer-addr",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("corrupted"), "{stderr}");
}
