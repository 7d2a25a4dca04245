//! The `cairn` binary as an operator meets it: no-flag start, exit codes for bad
//! configuration, a locked or corrupted data directory, and graceful SIGTERM.
#![allow(clippy::unwrap_used)] // a test fails by panicking

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

#[allow(unsafe_code)] // kill(2) has no safe wrapper in std
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

/// A single member on `data` with `n` acknowledged puts (`k00`..), then stopped: by kill -9
/// (`graceful` false: the puts are only in RocksDB's WAL) or by SIGTERM.
fn member_with_puts(data: &std::path::Path, n: usize, graceful: bool) {
    let client = format!("127.0.0.1:{}", free_port());
    let peer = format!("127.0.0.1:{}", free_port());
    // Its log is kept: a failure below says what the member said.
    let log = data.with_extension("log");
    let mut child = cairn()
        .args(["serve", "--data-dir", data.to_str().unwrap(), "--client-addr", &client, "--peer-addr", &peer])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_listening(&client, &mut child);
    let outcome = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = etcd_client::Client::connect([client.as_str()], None).await?;
        for i in 0..n {
            c.put(format!("k{i:02}"), "v", None).await?;
        }
        Ok::<_, etcd_client::Error>(())
    });
    if let Err(e) = outcome {
        let status = child.try_wait().unwrap();
        panic!(
            "puts to {client} failed: {e}; member exit status {status:?}; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    if graceful {
        sigterm(&child);
    } else {
        child.kill().unwrap();
    }
    child.wait().unwrap();
}

/// Start a member on `data` and return its exit status and stderr if it exits within 30 s
/// (`None`: it runs and serves; it is then stopped).
fn start_on(data: &std::path::Path) -> Option<(Option<i32>, String)> {
    let client = format!("127.0.0.1:{}", free_port());
    let peer = format!("127.0.0.1:{}", free_port());
    let mut child = cairn()
        .args(["serve", "--data-dir", data.to_str().unwrap(), "--client-addr", &client, "--peer-addr", &peer])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            return Some((status.code(), stderr));
        }
        if std::net::TcpStream::connect(&client).is_ok() {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        assert!(Instant::now() < deadline, "cairn neither served nor exited");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The largest file in `<data>/db` whose name ends with `suffix` (or starts with it).
fn db_file(data: &std::path::Path, matches: impl Fn(&str) -> bool) -> std::path::PathBuf {
    std::fs::read_dir(data.join("db"))
        .unwrap()
        .flatten()
        .filter(|e| matches(&e.file_name().to_string_lossy()))
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap_or_else(|| panic!("no such file in {}", data.join("db").display()))
        .path()
}

/// Overwrite 8 bytes a third of the way into `file`.
fn flip_bytes(file: &std::path::Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes.len() / 3;
    assert!(bytes.len() > at + 8, "{} is too small to damage", file.display());
    for b in &mut bytes[at..at + 8] {
        *b ^= 0x5a;
    }
    std::fs::write(file, bytes).unwrap();
}

fn assert_refused_naming(data: &std::path::Path, damaged: &std::path::Path) {
    let (code, stderr) = start_on(data).expect("a member on a damaged data directory must not start");
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("corrupted"), "{stderr}");
    let name = damaged.file_name().unwrap().to_string_lossy();
    assert!(stderr.contains(name.as_ref()), "the message should name {name}: {stderr}");
}

/// Acknowledged writes damaged in the middle of the WAL: RocksDB's default recovery would
/// drop everything after the bad record and open without a word.
#[test]
fn a_damaged_wal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    member_with_puts(&data, 20, false);
    let wal = db_file(&data, |n| n.ends_with(".log"));
    flip_bytes(&wal);
    assert_refused_naming(&data, &wal);
}

/// A record torn at the WAL's tail (a crash while writing it) is normal: the member starts.
#[test]
fn a_torn_wal_tail_is_tolerated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    member_with_puts(&data, 20, false);
    let wal = db_file(&data, |n| n.ends_with(".log"));
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(len - 5).unwrap();
    assert_eq!(start_on(&data), None, "a torn tail must not stop the member");
}

/// Rows moved into table files (as a memtable flush does), then one damaged.
#[test]
fn a_damaged_table_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    member_with_puts(&data, 200, true);
    flush_all(&data);
    let sst = db_file(&data, |n| n.ends_with(".sst"));
    flip_bytes(&sst);
    assert_refused_naming(&data, &sst);
}

#[test]
fn a_damaged_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    member_with_puts(&data, 20, true);
    flush_all(&data);
    let manifest = db_file(&data, |n| n.starts_with("MANIFEST-"));
    flip_bytes(&manifest);
    assert_refused_naming(&data, &manifest);
}

/// Flush every column family's memtable into table files.
fn flush_all(data: &std::path::Path) {
    let db_dir = data.join("db");
    let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), &db_dir).unwrap();
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &db_dir, &families).unwrap();
    for name in &families {
        db.flush_cf(db.cf_handle(name).unwrap()).unwrap();
    }
}

#[test]
fn a_data_directory_of_a_newer_format_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    member_with_puts(&data, 1, true);
    std::fs::write(data.join("FORMAT"), "2\n").unwrap();
    let before = std::fs::read_dir(data.join("db")).unwrap().count();
    let (code, stderr) = start_on(&data).expect("must not start");
    assert_eq!(code, Some(6), "{stderr}");
    assert!(stderr.contains("newer"), "{stderr}");
    assert_eq!(std::fs::read_dir(data.join("db")).unwrap().count(), before, "files changed");
}

/// A member whose Raft stops on a storage error (here: its RocksDB directory vanished, so
/// the flush a defragmentation asks for cannot write its file, and RocksDB refuses every
/// write after) exits 8 naming the error, instead of lingering with its client port open and
/// no Raft behind it.
#[test]
fn a_fatal_storage_error_while_running_exits_8() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("m");
    let client = format!("127.0.0.1:{}", free_port());
    let peer = format!("127.0.0.1:{}", free_port());
    let mut child = cairn()
        .args(["serve", "--data-dir", data.to_str().unwrap(), "--client-addr", &client, "--peer-addr", &peer])
        .stderr(std::fs::File::create(dir.path().join("m.log")).unwrap())
        .spawn()
        .unwrap();
    wait_listening(&client, &mut child);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = etcd_client::Client::connect([client.as_str()], None).await.unwrap();
        c.put("before", "v", None).await.unwrap();
        std::fs::remove_dir_all(data.join("db")).unwrap();
        let _ = c.defragment().await;
        // Puts fail once Raft has stopped.
        for i in 0..60 {
            if c.put(format!("k{i:02}"), "v", None).await.is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the member did not exit after its Raft stopped");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(dir.path().join("m.log")).unwrap();
    assert_eq!(status.code(), Some(8), "stderr:\n{stderr}");
    assert!(stderr.contains("cairn: raft stopped on a fatal error"), "stderr:\n{stderr}");
}
