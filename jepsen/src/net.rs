//! Network faults on one machine: iptables rules in chains that belong to this run only, so
//! healing (and cleanup after a crash) never touches anyone else's rules.
//!
//! Every node runs inside its own cgroup v2 group (`<cgroup2 root>/cairn-jepsen-<pid>/n<i>`;
//! a wrapper script moves itself there and then `exec`s the server). A mangle rule marks every
//! TCP connection a node *opens* with the node's connection mark (`CONNMARK`), so a rule can
//! name the direction "from node A to node B" as "connections marked A, to B's peer port" —
//! whatever source address the server picked. Cairn binds its outgoing peer connections to its
//! own 127.0.0.N, etcd 3.4 does not (its connections leave from 127.0.0.1): the mark works for
//! both. Only peer ports are matched, so clients (the harness, unmarked) always reach their
//! node, and other clusters on the same loopback addresses (other tests) are never affected.
//!
//! Layout: filter chain `CJ-<pid>-F` jumped to from `INPUT` holds the fault rules; mangle chain
//! `CJ-<pid>-M` jumped to from `OUTPUT` holds the marking rules. Healing flushes the filter
//! chain; [`Firewall::teardown`] (also run on drop) removes both chains and the jumps.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

/// Prefix of every chain this harness creates (`cairn-jepsen clean` removes stale ones).
pub const CHAIN_PREFIX: &str = "CJ-";

fn iptables(args: &[&str]) -> Result<()> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .with_context(|| format!("running iptables {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("iptables {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn iptables_quiet(args: &[&str]) {
    let _ = Command::new("iptables").arg("-w").args(args).output();
}

/// Installs a Debian package when `probe` is not found (the harness's own setup).
pub fn ensure_package(probe: &Path, package: &str) -> Result<()> {
    if probe.exists() {
        return Ok(());
    }
    eprintln!("cairn-jepsen: {} missing, installing {package}", probe.display());
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !status.success() || !probe.exists() {
        bail!("could not install {package} (apt-get install -y {package}); {} is required", probe.display());
    }
    Ok(())
}

/// The cgroup v2 mount point, from /proc/mounts.
pub fn cgroup2_root() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 3 && f[2] == "cgroup2" {
            return Ok(PathBuf::from(f[1]));
        }
    }
    bail!("no cgroup2 file system is mounted (needed to tell nodes' connections apart for partitions)")
}

/// One node's identity for the firewall.
#[derive(Clone, Debug)]
pub struct NodeNet {
    /// The port the other nodes dial (the node's peer port, or its delay proxy's).
    pub peer_port: u16,
    /// The node's connection mark.
    pub mark: u32,
    /// Cgroup path relative to the cgroup2 root.
    pub cgroup: String,
}

/// The run's chains and node cgroups.
pub struct Firewall {
    chain: String,
    mangle_chain: String,
    cgroup_dir: PathBuf,
    pub nodes: Vec<NodeNet>,
    installed: Mutex<bool>,
    /// Human-readable rules currently in force (for the report).
    active: Mutex<Vec<String>>,
}

impl Firewall {
    /// Creates the node cgroups (not yet the chains: see [`Firewall::install`]).
    pub fn new(peer_ports: &[u16]) -> Result<Firewall> {
        let pid = std::process::id();
        let root = cgroup2_root()?;
        let group = format!("cairn-jepsen-{pid}");
        let cgroup_dir = root.join(&group);
        let mut nodes = Vec::new();
        for (i, &port) in peer_ports.iter().enumerate() {
            let dir = cgroup_dir.join(format!("n{}", i + 1));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
            nodes.push(NodeNet {
                peer_port: port,
                mark: 0x00c4_0000 | ((pid & 0xfff) << 8) | (i as u32 + 1),
                cgroup: format!("{group}/n{}", i + 1),
            });
        }
        Ok(Firewall {
            chain: format!("{CHAIN_PREFIX}{pid}-F"),
            mangle_chain: format!("{CHAIN_PREFIX}{pid}-M"),
            cgroup_dir,
            nodes,
            installed: Mutex::new(false),
            active: Mutex::new(Vec::new()),
        })
    }

    /// The cgroup.procs file node `i`'s wrapper writes its pid to.
    pub fn procs_file(&self, i: usize) -> PathBuf {
        self.cgroup_dir.join(format!("n{}", i + 1)).join("cgroup.procs")
    }

    /// Creates the chains and the marking rules (before any node starts).
    pub fn install(&self) -> Result<()> {
        let mut installed = self.installed.lock().unwrap_or_else(|p| p.into_inner());
        if *installed {
            return Ok(());
        }
        if Command::new("iptables").arg("--version").output().is_err() {
            ensure_package(Path::new("/usr/sbin/iptables"), "iptables")?;
        }
        iptables(&["-N", &self.chain])?;
        *installed = true;
        iptables(&["-I", "INPUT", "-j", &self.chain])?;
        iptables(&["-t", "mangle", "-N", &self.mangle_chain])?;
        iptables(&["-t", "mangle", "-I", "OUTPUT", "-j", &self.mangle_chain])?;
        for n in &self.nodes {
            let mark = format!("{:#x}", n.mark);
            iptables(&[
                "-t",
                "mangle",
                "-A",
                &self.mangle_chain,
                "-p",
                "tcp",
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-m",
                "cgroup",
                "--path",
                &n.cgroup,
                "-j",
                "CONNMARK",
                "--set-mark",
                &mark,
            ])?;
        }
        Ok(())
    }

    fn add(&self, rule: &[String], describe: String) -> Result<()> {
        let mut args: Vec<&str> = vec!["-A", &self.chain];
        args.extend(rule.iter().map(|s| s.as_str()));
        iptables(&args)?;
        self.active.lock().unwrap_or_else(|p| p.into_inner()).push(describe);
        Ok(())
    }

    /// Drops traffic of connections node `from` opens to node `to` (both directions of those
    /// connections). For a full cut call it both ways ([`Firewall::cut`]).
    fn drop_conns(&self, from: usize, to: usize, extra: &[&str]) -> Result<()> {
        let mark = format!("{:#x}", self.nodes[from].mark);
        let port = self.nodes[to].peer_port.to_string();
        for dir in ["--dport", "--sport"] {
            let mut rule: Vec<String> = ["-p", "tcp", "-m", "connmark", "--mark", &mark, dir, &port]
                .iter()
                .map(|s| s.to_string())
                .collect();
            rule.extend(extra.iter().map(|s| s.to_string()));
            rule.extend(["-j", "DROP"].iter().map(|s| s.to_string()));
            self.add(&rule, format!("n{} -> n{} {dir} {port} {}", from + 1, to + 1, extra.join(" ")))?;
        }
        Ok(())
    }

    /// No traffic between `a` and `b` either way.
    pub fn cut(&self, a: usize, b: usize) -> Result<()> {
        self.drop_conns(a, b, &[])?;
        self.drop_conns(b, a, &[])
    }

    /// Cuts every link between a node of `side` and a node outside it (`n` nodes in all).
    pub fn split(&self, side: &[usize], n: usize) -> Result<()> {
        for &a in side {
            for b in (0..n).filter(|b| !side.contains(b)) {
                self.cut(a, b)?;
            }
        }
        Ok(())
    }

    /// Drops each packet between any two nodes with probability `p`.
    pub fn loss(&self, p: f64) -> Result<()> {
        let prob = format!("{p:.3}");
        let stat = ["-m", "statistic", "--mode", "random", "--probability", &prob];
        for a in 0..self.nodes.len() {
            for b in 0..self.nodes.len() {
                if a != b {
                    self.drop_conns(a, b, &stat)?;
                }
            }
        }
        Ok(())
    }

    /// Removes every fault rule (the marking rules stay).
    pub fn heal(&self) -> Result<()> {
        if *self.installed.lock().unwrap_or_else(|p| p.into_inner()) {
            iptables(&["-F", &self.chain])?;
        }
        self.active.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(())
    }

    pub fn active_rules(&self) -> Vec<String> {
        self.active.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Removes the chains (idempotent; errors ignored) and the node cgroups (once empty).
    pub fn teardown(&self) {
        let mut installed = self.installed.lock().unwrap_or_else(|p| p.into_inner());
        if *installed {
            remove_chains(&self.chain, &self.mangle_chain);
            *installed = false;
        }
        remove_cgroup_dir(&self.cgroup_dir);
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn remove_chains(chain: &str, mangle_chain: &str) {
    // A jump may have been added more than once by a crashed run: delete until it fails.
    for _ in 0..10 {
        let ok = Command::new("iptables")
            .args(["-w", "-D", "INPUT", "-j", chain])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            break;
        }
    }
    iptables_quiet(&["-F", chain]);
    iptables_quiet(&["-X", chain]);
    for _ in 0..10 {
        let ok = Command::new("iptables")
            .args(["-w", "-t", "mangle", "-D", "OUTPUT", "-j", mangle_chain])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            break;
        }
    }
    iptables_quiet(&["-t", "mangle", "-F", mangle_chain]);
    iptables_quiet(&["-t", "mangle", "-X", mangle_chain]);
}

/// Whether `pid` is a live process (a zombie is not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => stat.rsplit_once(") ").is_none_or(|(_, rest)| !rest.starts_with('Z')),
    }
}

/// Pids in the node groups under `dir`.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(text) = std::fs::read_to_string(e.path().join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        }
    }
    pids
}

fn remove_cgroup_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                // Fails while a process is still inside (then it stays; `clean` retries).
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Removes chains and cgroups left by runs whose process is gone (`cairn-jepsen clean`), and
/// kills the server processes still inside those cgroups (orphans of a SIGKILLed harness).
/// Returns what was removed.
pub fn clean_stale() -> Result<Vec<String>> {
    clean(false)
}

/// Removes this process's own chains and cgroups (after an interrupted run, once its cluster
/// is gone).
pub fn clean_own() -> Result<Vec<String>> {
    clean(true)
}

fn clean(own: bool) -> Result<Vec<String>> {
    let me = std::process::id();
    let gone = |pid: u32| if own { pid == me } else { !alive(pid) };
    let mut removed = Vec::new();
    let out = Command::new("iptables").args(["-w", "-S"]).output().context("iptables -S")?;
    let mangle =
        Command::new("iptables").args(["-w", "-t", "mangle", "-S"]).output().context("iptables -S")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&mangle.stdout));
    let mut pids = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("-N ") {
            if let Some(rest) = name.strip_prefix(CHAIN_PREFIX) {
                if let Some((pid, _)) = rest.split_once('-') {
                    if let Ok(pid) = pid.parse::<u32>() {
                        pids.insert(pid);
                    }
                }
            }
        }
    }
    for pid in pids {
        if !gone(pid) {
            continue;
        }
        remove_chains(&format!("{CHAIN_PREFIX}{pid}-F"), &format!("{CHAIN_PREFIX}{pid}-M"));
        removed.push(format!("iptables chains of pid {pid}"));
    }
    if let Ok(root) = cgroup2_root() {
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if let Some(pid) = name.strip_prefix("cairn-jepsen-").and_then(|p| p.parse::<u32>().ok()) {
                    if gone(pid) {
                        // Servers orphaned by a killed harness are still in their node groups:
                        // stop exactly those processes (by pid) so the groups can go.
                        if !own {
                            for pid in cgroup_pids(&e.path()) {
                                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                                removed.push(format!("orphaned server process {pid}"));
                            }
                            std::thread::sleep(std::time::Duration::from_millis(300));
                        }
                        remove_cgroup_dir(&e.path());
                        removed.push(format!("cgroup {}", e.path().display()));
                    }
                }
            }
        }
    }
    Ok(removed)
}
