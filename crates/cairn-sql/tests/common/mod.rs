//! Throwaway database servers for the tests: Debian's PostgreSQL and MariaDB, each in a
//! temporary directory on a free loopback port, stopped (and removed) when dropped. As
//! root, the servers run as their own system users (neither runs as root by default).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// Run `program args` as `user` when root, else as ourselves; panics with its output on failure.
fn run_as(user: &str, program: &str, args: &[&str]) {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--", program]);
        c
    } else {
        Command::new(program)
    };
    let out = cmd.args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chown(dir: &Path, user: &str) {
    if is_root() {
        let ok = Command::new("chown").args(["-R", user]).arg(dir).status().unwrap().success();
        assert!(ok, "chown {user} {}", dir.display());
    }
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A PostgreSQL server (user `cairn`, trust authentication on loopback).
pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (Debian's postgresql package)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|p| p.join("initdb").exists())
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::Builder::new().prefix("cairn-pg").tempdir().unwrap();
        chown(dir.path(), "postgres");
        let data = dir.path().join("data");
        let port = free_port();
        let initdb = bin.join("initdb");
        run_as(
            "postgres",
            initdb.to_str().unwrap(),
            &["-D", data.to_str().unwrap(), "-U", "cairn", "--auth=trust", "--no-sync", "-E", "UTF8"],
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200",
            dir.path().display()
        );
        let log = dir.path().join("log");
        run_as(
            "postgres",
            bin.join("pg_ctl").to_str().unwrap(),
            &["-D", data.to_str().unwrap(), "-o", &options, "-l", log.to_str().unwrap(), "-w", "start"],
        );
        wait_for_port(port, "PostgreSQL");
        Postgres { dir, port, bin }
    }

    /// A URL for a database of its own (created here), so tests sharing a server do not meet.
    pub fn database(&self, name: &str) -> String {
        run_as(
            "postgres",
            self.bin.join("psql").to_str().unwrap(),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "cairn",
                "-d",
                "postgres",
                "-c",
                &format!("CREATE DATABASE {name}"),
            ],
        );
        format!("postgres://cairn@127.0.0.1:{}/{name}", self.port)
    }

    /// Stop the server abruptly (as a crash would), keeping its files.
    pub fn kill(&self) {
        run_as(
            "postgres",
            self.bin.join("pg_ctl").to_str().unwrap(),
            &["-D", self.data().to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }

    /// Start it again after [`Postgres::kill`].
    pub fn restart(&self) {
        let options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        let log = self.dir.path().join("log");
        run_as(
            "postgres",
            self.bin.join("pg_ctl").to_str().unwrap(),
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        wait_for_port(self.port, "PostgreSQL");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(if is_root() { "runuser" } else { "true" })
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", self.data().to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}

/// A MariaDB server (root without a password on loopback).
pub struct MariaDb {
    dir: tempfile::TempDir,
    pub port: u16,
    child: std::process::Child,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        let dir = tempfile::Builder::new().prefix("cairn-maria").tempdir().unwrap();
        let data = dir.path().join("data");
        chown(dir.path(), "mysql");
        run_as(
            "mysql",
            "mariadb-install-db",
            &[
                "--no-defaults",
                &format!("--datadir={}", data.display()),
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
        );
        let port = free_port();
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "mysql", "--", "mariadbd"]);
            c
        } else {
            Command::new("mariadbd")
        };
        let child = cmd
            .args([
                "--no-defaults".to_string(),
                format!("--datadir={}", data.display()),
                format!("--port={port}"),
                "--bind-address=127.0.0.1".into(),
                format!("--socket={}/mysqld.sock", dir.path().display()),
                format!("--pid-file={}/mysqld.pid", dir.path().display()),
                format!("--log-error={}/error.log", dir.path().display()),
                "--skip-name-resolve".into(),
                "--innodb-flush-log-at-trx-commit=1".into(),
                "--max-connections=300".into(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd (Debian's mariadb-server package)");
        wait_for_port(port, "MariaDB");
        MariaDb { dir, port, child }
    }

    /// A URL for a database of its own (created here).
    pub fn database(&self, name: &str) -> String {
        let out = Command::new("mariadb")
            .args([
                "-h",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
                "-u",
                "root",
                "-e",
                &format!("CREATE DATABASE {name}"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "CREATE DATABASE: {}", String::from_utf8_lossy(&out.stderr));
        format!("mysql://root@127.0.0.1:{}/{name}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-9").arg(self.child.id().to_string()).status();
        // runuser's child: the server itself.
        let _ = Command::new("pkill").args(["-9", "-f", &self.dir.path().display().to_string()]).status();
        let _ = self.child.wait();
    }
}
