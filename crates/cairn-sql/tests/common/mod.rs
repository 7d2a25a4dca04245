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

/// A MariaDB Galera cluster of three nodes, each on its own loopback address (127.0.0.51,
/// .52 and .53) and the same ports: client, group communication (gcomm), IST and SST, from
/// a base chosen at random and checked free on all three addresses. Root has no password.
/// The first node bootstraps the cluster; the others join one after another (a state
/// transfer by rsync each). Dropping it kills the three servers and removes their files.
pub struct Galera {
    dir: tempfile::TempDir,
    /// The client port; gcomm, IST and SST are the three after it.
    pub port: u16,
    /// Each node's server (its own process group: SST helpers included), `None` once killed.
    nodes: std::sync::Mutex<Vec<Option<std::process::Child>>>,
}

impl Galera {
    pub const NODES: usize = 3;

    pub fn start() -> Galera {
        let dir = tempfile::Builder::new().prefix("cairn-galera").tempdir().unwrap();
        let port = Self::free_base_port();
        let cluster: Vec<String> =
            (1..=Self::NODES).map(|n| format!("{}:{}", Self::ip(n), port + 1)).collect();
        for n in 1..=Self::NODES {
            let ip = Self::ip(n);
            let home = dir.path().join(format!("node{n}"));
            // A temporary directory of its own: the installs run at once.
            std::fs::create_dir_all(home.join("tmp")).unwrap();
            let config = format!(
                "[mariadbd]\n\
                 datadir={home}/data\n\
                 socket={home}/mysqld.sock\n\
                 pid-file={home}/mysqld.pid\n\
                 log-error={home}/error.log\n\
                 tmpdir={home}/tmp\n\
                 port={port}\n\
                 bind-address={ip}\n\
                 skip-name-resolve\n\
                 max-connections=300\n\
                 innodb-flush-log-at-trx-commit=1\n\
                 innodb_log_file_size=8M\n\
                 innodb_buffer_pool_size=64M\n\
                 binlog_format=ROW\n\
                 default_storage_engine=InnoDB\n\
                 innodb_autoinc_lock_mode=2\n\
                 wsrep_on=ON\n\
                 wsrep_provider=/usr/lib/galera/libgalera_smm.so\n\
                 wsrep_cluster_name=cairn-test\n\
                 wsrep_cluster_address=gcomm://{cluster}\n\
                 wsrep_node_name=node{n}\n\
                 wsrep_node_address={ip}:{gcomm}\n\
                 wsrep_provider_options=\"gmcast.listen_addr=tcp://{ip}:{gcomm};ist.recv_addr={ip}:{ist};gcache.size=16M\"\n\
                 wsrep_sst_receive_address={ip}:{sst}\n\
                 wsrep_sst_method=rsync\n",
                home = home.display(),
                cluster = cluster.join(","),
                gcomm = port + 1,
                ist = port + 2,
                sst = port + 3,
            );
            std::fs::write(home.join("my.cnf"), config).unwrap();
        }
        chown(dir.path(), "mysql");
        // The three data directories at once (a joiner's is replaced by its state transfer).
        let installs: Vec<_> = (1..=Self::NODES)
            .map(|n| {
                let home = dir.path().join(format!("node{n}"));
                std::thread::spawn(move || {
                    let defaults = format!("--defaults-file={}", home.join("my.cnf").display());
                    let args = [&defaults[..], "--auth-root-authentication-method=normal", "--skip-test-db"];
                    let install = std::panic::catch_unwind(|| run_as("mysql", "mariadb-install-db", &args));
                    if let Err(e) = install {
                        let log = std::fs::read_to_string(home.join("error.log")).unwrap_or_default();
                        panic!("{}\nnode {n}'s error.log:\n{log}", panic_text(&*e));
                    }
                })
            })
            .collect();
        for i in installs {
            if let Err(e) = i.join() {
                panic!("{}", panic_text(&*e));
            }
        }
        let galera = Galera { dir, port, nodes: std::sync::Mutex::new(Vec::new()) };
        for n in 1..=Self::NODES {
            let child = galera.spawn(n, n == 1);
            galera.nodes().push(Some(child));
            galera.wait_synced(n, n);
        }
        galera
    }

    /// 127.0.0.5N for node N (1-based).
    pub fn ip(node: usize) -> String {
        assert!((1..=Self::NODES).contains(&node), "node {node} of {}", Self::NODES);
        format!("127.0.0.5{node}")
    }

    /// A base port whose four ports are free on all three addresses.
    fn free_base_port() -> u16 {
        for _ in 0..200 {
            let base = 10_000 + 4 * (rand::random::<u16>() % 5_000);
            let free = (1..=Self::NODES).all(|n| {
                (base..base + 4).all(|p| std::net::TcpListener::bind((Self::ip(n).as_str(), p)).is_ok())
            });
            if free {
                return base;
            }
        }
        panic!("no four free ports on 127.0.0.51-53");
    }

    fn spawn(&self, node: usize, bootstrap: bool) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "mysql", "--", "mariadbd"]);
            c
        } else {
            Command::new("mariadbd")
        };
        cmd.arg(format!("--defaults-file={}", self.home(node).join("my.cnf").display()));
        if bootstrap {
            cmd.arg("--wsrep-new-cluster");
        }
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd (Debian's mariadb-server and galera-4 packages)")
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, Vec<Option<std::process::Child>>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn home(&self, node: usize) -> PathBuf {
        self.dir.path().join(format!("node{node}"))
    }

    /// Run `sql` on `node` with the `mariadb` client; its output (tab-separated, no header).
    pub fn sql(&self, node: usize, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .args(["-N", "-B", "--connect-timeout=2", "-h", &Self::ip(node), "-P", &self.port.to_string()])
            .args(["-u", "root", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("mariadb: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `node`'s wsrep status variable `name`.
    pub fn status(&self, node: usize, name: &str) -> Option<String> {
        let out = self.sql(node, &format!("SHOW GLOBAL STATUS LIKE '{name}'")).ok()?;
        out.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string())
    }

    /// Wait until `node` is Synced in a primary component of `size` nodes.
    pub fn wait_synced(&self, node: usize, size: usize) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let state = self.status(node, "wsrep_local_state_comment");
            let members = self.status(node, "wsrep_cluster_size");
            if state.as_deref() == Some("Synced") && members == Some(size.to_string()) {
                return;
            }
            let exited = match self.nodes().get_mut(node - 1) {
                Some(Some(child)) => child.try_wait().ok().flatten(),
                _ => None,
            };
            if let Some(status) = exited {
                panic!("Galera node {node} exited ({status}):\n{}", self.log(node));
            }
            assert!(
                Instant::now() < deadline,
                "Galera node {node}: {state:?} in a cluster of {members:?}, not Synced in {size}:\n{}",
                self.log(node)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A URL for database `name` through `node` (1-based).
    pub fn url(&self, node: usize, name: &str) -> String {
        format!("mysql://root@{}:{}/{name}", Self::ip(node), self.port)
    }

    /// Create database `name` (once: it replicates), and wait until every live node has it.
    pub fn database(&self, name: &str) {
        let live = self.live();
        let first = *live.first().expect("a live Galera node");
        self.sql(first, &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in live {
            while self
                .sql(n, &format!("SHOW DATABASES LIKE '{name}'"))
                .map(|o| o.trim() != name)
                .unwrap_or(true)
            {
                assert!(Instant::now() < deadline, "database {name} did not reach node {n}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The nodes not killed.
    pub fn live(&self) -> Vec<usize> {
        let nodes = self.nodes();
        (1..=nodes.len()).filter(|n| nodes[n - 1].is_some()).collect()
    }

    /// SIGKILL `node`'s server (as a crash would), keeping its files.
    pub fn kill(&self, node: usize) {
        let child = self.nodes().get_mut(node - 1).and_then(Option::take);
        if let Some(mut child) = child {
            // The whole process group: runuser, the server and any state-transfer helper.
            let _ = Command::new("kill").args(["-9", "--", &format!("-{}", child.id())]).status();
            let _ = child.wait();
        }
    }

    pub fn log(&self, node: usize) -> String {
        std::fs::read_to_string(self.home(node).join("error.log")).unwrap_or_default()
    }
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

impl Drop for Galera {
    fn drop(&mut self) {
        for n in 1..=Self::NODES {
            self.kill(n);
        }
    }
}
