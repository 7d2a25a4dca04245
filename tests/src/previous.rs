//! The previous release's `cairn` binary, for the upgrade tests: the promise is that a data
//! directory and a cluster of the previous release upgrade to this one without loss.
//!
//! The binary comes from, in order:
//! 1. `CAIRN_PREV_BIN`, when set;
//! 2. `tests/fixtures/cairn-0.1.0-x86_64-linux-gnu.xz` on x86_64 Linux: the release built
//!    from [`PREVIOUS_RELEASE`] (debug profile, stripped, xz), unpacked into the target dir;
//! 3. else it is built once from this repository's own history into the target directory:
//!    the release's sources are exported with `git archive` and built with the same target
//!    directory, the copy's binary renamed (`cairn-prev`) so that it never overwrites this
//!    build's `cairn`. (This rebuilds RocksDB: `cargo build -p cairn` resolves dependency
//!    features differently from `cargo test --workspace`, ~15 minutes on 2 cores, which is
//!    why the binary is kept as a fixture.)

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The previous release: 0.1, the last commit before the seams work (data format 1 without
/// a marker file, peer protocol without typed failures).
pub const PREVIOUS_RELEASE: &str = "cbb5f71726eda17d762fda6b9f04fbcb7398b3f1";

/// Env var naming a ready-built previous-release binary.
pub const PREV_BIN_ENV: &str = "CAIRN_PREV_BIN";

/// The previous release's binary, built if needed (a few minutes the first time).
pub fn previous_release_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(PREV_BIN_ENV) {
        let bin = PathBuf::from(bin);
        if !bin.exists() {
            bail!("{PREV_BIN_ENV}={} does not exist", bin.display());
        }
        return Ok(bin);
    }
    let target_dir = target_dir()?;
    let home = target_dir.join("cairn-prev").join(PREVIOUS_RELEASE);
    let bin = home.join("cairn");
    if bin.exists() {
        return Ok(bin);
    }
    // One unpack or build at a time, across test processes and the threads of one (flock
    // excludes another open of the file in the same process too): tests of one process
    // unpacking at once wrote the same file, and one ran it while another still wrote it
    // ("Text file busy").
    std::fs::create_dir_all(&home)?;
    let lock = std::fs::File::create(home.join("build.lock"))?;
    lock.lock().context("locking the previous-release build")?;
    if bin.exists() {
        return Ok(bin);
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cairn-0.1.0-x86_64-linux-gnu.xz");
    if cfg!(all(target_os = "linux", target_arch = "x86_64")) && fixture.exists() {
        let unpacked = home.join(format!("cairn.{}", std::process::id()));
        let out = std::fs::File::create(&unpacked)?;
        let xz = Command::new("xz").arg("-dc").arg(&fixture).stdout(out).status().context("running xz")?;
        if !xz.success() {
            bail!("cannot unpack {}", fixture.display());
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&unpacked, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&unpacked, &bin)?;
        return Ok(bin);
    }
    let src = home.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let archive = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "git -C '{}' archive {PREVIOUS_RELEASE} | tar -x -C '{}'",
            root.display(),
            src.display()
        ))
        .status()
        .context("running git archive")?;
    if !archive.success() {
        bail!(
            "cannot export release {PREVIOUS_RELEASE} from git history (a shallow clone? fetch it, or set {PREV_BIN_ENV})"
        );
    }
    // Rename the exported release's binary so that it cannot overwrite this build's `cairn`.
    let manifest = src.join("crates/cairn/Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    let renamed = text.replacen(
        "name = \"cairn\"\npath = \"src/main.rs\"",
        "name = \"cairn-prev\"\npath = \"src/main.rs\"",
        1,
    );
    if renamed == text {
        bail!("could not rename the binary in {}", manifest.display());
    }
    std::fs::write(&manifest, renamed)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = Command::new(cargo)
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args(["build", "--locked", "-p", "cairn", "--bin", "cairn-prev"])
        .status()
        .context("building the previous release")?;
    if !build.success() {
        bail!("building release {PREVIOUS_RELEASE} failed");
    }
    std::fs::copy(target_dir.join("debug/cairn-prev"), &bin)?;
    Ok(bin)
}

/// The target directory of this build: `CARGO_TARGET_DIR`, else the one holding the
/// running test executable (`<target>/<profile>/deps/<test>`).
fn target_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .context("the test executable is not in <target>/<profile>/deps")
}
