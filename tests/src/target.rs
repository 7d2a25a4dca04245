//! Which server binary a cluster runs: Cairn or the reference etcd.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Env var choosing the target: `cairn` (default) or `etcd`.
pub const TARGET_ENV: &str = "CAIRN_TEST_TARGET";
/// Env var overriding the cairn binary's path.
pub const CAIRN_BIN_ENV: &str = "CAIRN_BIN";
/// Env var overriding the etcd binary's path (default `/usr/bin/etcd`).
pub const ETCD_BIN_ENV: &str = "ETCD_BIN";
/// Env var overriding the etcdctl binary's path (default `/usr/bin/etcdctl`).
pub const ETCDCTL_BIN_ENV: &str = "ETCDCTL_BIN";

/// Default etcd binary (Debian's package).
pub const DEFAULT_ETCD_BIN: &str = "/usr/bin/etcd";
/// Default etcdctl binary (Debian's package).
pub const DEFAULT_ETCDCTL_BIN: &str = "/usr/bin/etcdctl";

/// The server a [`crate::Cluster`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Cairn: `cairn serve ...`.
    Cairn { bin: PathBuf },
    /// The reference implementation: etcd (3.4 from Debian by default).
    Etcd { bin: PathBuf },
}

impl Target {
    /// The target chosen by the environment (see [`Target::try_from_env`]).
    ///
    /// # Panics
    /// If the environment names an unknown target or the cairn binary cannot be found; the
    /// message names every path that was tried and how to fix it.
    pub fn from_env() -> Target {
        match Target::try_from_env() {
            Ok(t) => t,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// The target chosen by the environment:
    /// - `CAIRN_TEST_TARGET` = `cairn` (default) or `etcd`;
    /// - cairn's binary: `CAIRN_BIN`, else `cairn` next to the running executable
    ///   (`target/<profile>/cairn` when running from `target/<profile>/deps/<test>-<hash>`);
    /// - etcd's binary: `ETCD_BIN`, else `/usr/bin/etcd`.
    pub fn try_from_env() -> Result<Target> {
        let which = std::env::var(TARGET_ENV).unwrap_or_default();
        match which.trim().to_ascii_lowercase().as_str() {
            "" | "cairn" => Ok(Target::Cairn { bin: find_cairn_bin()? }),
            "etcd" => {
                let bin = std::env::var_os(ETCD_BIN_ENV)
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_ETCD_BIN));
                if !bin.exists() {
                    bail!(
                        "etcd binary not found at {} (set {ETCD_BIN_ENV} or install Debian's etcd-server)",
                        bin.display()
                    );
                }
                Ok(Target::Etcd { bin })
            }
            other => bail!("{TARGET_ENV}={other:?}: expected `cairn` or `etcd`"),
        }
    }

    /// The etcd target with the default binary (`ETCD_BIN` or `/usr/bin/etcd`), whatever
    /// `CAIRN_TEST_TARGET` says.
    pub fn etcd() -> Target {
        Target::Etcd {
            bin: std::env::var_os(ETCD_BIN_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ETCD_BIN)),
        }
    }

    /// The server binary.
    pub fn bin(&self) -> &Path {
        match self {
            Target::Cairn { bin } | Target::Etcd { bin } => bin,
        }
    }

    /// `"cairn"` or `"etcd"`.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Cairn { .. } => "cairn",
            Target::Etcd { .. } => "etcd",
        }
    }

    pub fn is_etcd(&self) -> bool {
        matches!(self, Target::Etcd { .. })
    }

    pub fn is_cairn(&self) -> bool {
        matches!(self, Target::Cairn { .. })
    }
}

/// The etcdctl binary: `ETCDCTL_BIN`, else `/usr/bin/etcdctl`.
pub fn etcdctl_bin() -> PathBuf {
    std::env::var_os(ETCDCTL_BIN_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_ETCDCTL_BIN))
}

fn find_cairn_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(CAIRN_BIN_ENV) {
        let bin = PathBuf::from(bin);
        if !bin.exists() {
            bail!("{CAIRN_BIN_ENV}={} does not exist (build it with `cargo build -p cairn`)", bin.display());
        }
        return Ok(bin);
    }
    let exe = std::env::current_exe()?;
    let mut tried = Vec::new();
    if let Some(dir) = exe.parent() {
        // target/<profile>/deps/<test>-<hash>  ->  target/<profile>/cairn
        if dir.file_name().is_some_and(|n| n == "deps") {
            if let Some(profile_dir) = dir.parent() {
                tried.push(profile_dir.join("cairn"));
            }
        }
        // target/<profile>/<some-bin>  ->  target/<profile>/cairn
        tried.push(dir.join("cairn"));
    }
    for path in &tried {
        if path.is_file() {
            return Ok(path.clone());
        }
    }
    let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "cairn binary not found (tried: {}); build it first with `cargo build -p cairn` \
         (same profile as the tests), or set {CAIRN_BIN_ENV}=/path/to/cairn, \
         or run against the reference with {TARGET_ENV}=etcd",
        tried.join(", ")
    )
}
