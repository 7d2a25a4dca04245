//! Helpers shared by the integration tests (not part of the harness library).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use cairn_tests::etcd_client::{
    Client, DeleteOptions, GetOptions, GetResponse, KeyValue, PutOptions, ResponseHeader,
};
use cairn_tests::{eventually, grpc_code, Cluster, ClusterOptions, Code, Target};

/// Generous limit for anything that converges (elections, catch-up).
pub const CONVERGE: Duration = Duration::from_secs(30);

/// Starts a cluster of the target chosen by the environment.
pub async fn start(opts: ClusterOptions) -> Cluster {
    let target = Target::from_env();
    Cluster::start(target, opts).await.unwrap_or_else(|e| panic!("cluster did not start: {e:#}"))
}

pub async fn start_nodes(n: usize) -> Cluster {
    start(ClusterOptions::nodes(n)).await
}

pub fn header_rev(h: Option<&ResponseHeader>) -> Result<i64> {
    h.map(|h| h.revision()).ok_or_else(|| anyhow!("response has no header"))
}

/// A key-value as the tests compare them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl From<&KeyValue> for Kv {
    fn from(kv: &KeyValue) -> Self {
        Kv {
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: kv.lease(),
        }
    }
}

pub fn kvs(resp: &GetResponse) -> Vec<Kv> {
    resp.kvs().iter().map(Kv::from).collect()
}

pub fn keys(resp: &GetResponse) -> Vec<String> {
    resp.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect()
}

/// What the store should hold, built from the revisions the server acknowledged.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub kvs: BTreeMap<Vec<u8>, Kv>,
    pub rev: i64,
}

impl Model {
    pub fn put(&mut self, key: &[u8], value: &[u8], rev: i64) {
        let e = self.kvs.entry(key.to_vec()).or_insert(Kv {
            key: key.to_vec(),
            value: Vec::new(),
            create_revision: rev,
            mod_revision: rev,
            version: 0,
            lease: 0,
        });
        e.value = value.to_vec();
        e.mod_revision = rev;
        e.version += 1;
        self.rev = rev;
    }

    pub fn delete(&mut self, key: &[u8]) -> Option<Kv> {
        self.kvs.remove(key)
    }

    /// Keys in `[start, end)`; `end` empty = just `start`; `end == "\0"` = every key >= start.
    pub fn range(&self, start: &[u8], end: &[u8]) -> Vec<Kv> {
        if end.is_empty() {
            return self.kvs.get(start).cloned().into_iter().collect();
        }
        self.kvs
            .iter()
            .filter(|(k, _)| k.as_slice() >= start && (end == b"\0" || k.as_slice() < end))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn prefix(&self, prefix: &[u8]) -> Vec<Kv> {
        self.kvs.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v.clone()).collect()
    }
}

/// `put` through `client`, recording it in `model`; checks the header revision is
/// `model.rev + 1` (exactly one revision per write) and returns it.
pub async fn put_model(
    client: &mut Client,
    model: &mut Model,
    key: impl AsRef<[u8]>,
    value: impl AsRef<[u8]>,
) -> Result<i64> {
    let (key, value) = (key.as_ref(), value.as_ref());
    let resp = client
        .put(key, value, Some(PutOptions::new().with_prev_key()))
        .await
        .with_context(|| format!("put {:?}", String::from_utf8_lossy(key)))?;
    let rev = header_rev(resp.header())?;
    ensure!(
        rev == model.rev + 1,
        "put {:?}: header revision {rev}, expected {} (one revision per write)",
        String::from_utf8_lossy(key),
        model.rev + 1
    );
    let before = model.kvs.get(key).cloned();
    ensure!(
        resp.prev_key().map(Kv::from) == before,
        "put {:?}: prev_kv {:?}, expected {:?}",
        String::from_utf8_lossy(key),
        resp.prev_key(),
        before
    );
    model.put(key, value, rev);
    Ok(rev)
}

/// Deletes one key through `client`, recording it in `model`; checks `deleted`, `prev_kvs` and the
/// header revision (one more if something was deleted, unchanged otherwise).
pub async fn delete_model(client: &mut Client, model: &mut Model, key: impl AsRef<[u8]>) -> Result<i64> {
    let key = key.as_ref();
    let resp = client
        .delete(key, Some(DeleteOptions::new().with_prev_key()))
        .await
        .with_context(|| format!("delete {:?}", String::from_utf8_lossy(key)))?;
    let rev = header_rev(resp.header())?;
    let before = model.delete(key);
    let expected_rev = if before.is_some() { model.rev + 1 } else { model.rev };
    ensure!(
        rev == expected_rev,
        "delete {:?}: header revision {rev}, expected {expected_rev}",
        String::from_utf8_lossy(key)
    );
    ensure!(
        resp.deleted() == i64::from(before.is_some()),
        "delete {:?}: deleted {}, expected {}",
        String::from_utf8_lossy(key),
        resp.deleted(),
        i64::from(before.is_some())
    );
    let prev: Vec<Kv> = resp.prev_kvs().iter().map(Kv::from).collect();
    ensure!(
        prev == before.clone().into_iter().collect::<Vec<_>>(),
        "delete {:?}: prev_kvs {prev:?}, expected {before:?}",
        String::from_utf8_lossy(key)
    );
    model.rev = rev;
    Ok(rev)
}

/// The current revision as seen through `client` (a linearizable get of a key nobody writes).
pub async fn current_rev(client: &mut Client) -> Result<i64> {
    let resp = client.get("\u{1}cairn-tests/none", None).await?;
    header_rev(resp.header())
}

/// Asserts `res` failed with exactly this gRPC code and message.
pub fn expect_grpc_err<T: std::fmt::Debug>(
    res: Result<T, cairn_tests::etcd_client::Error>,
    code: Code,
    message: &str,
    what: &str,
) -> Result<()> {
    match res {
        Ok(v) => Err(anyhow!("{what}: expected {code:?} {message:?}, got Ok({v:?})")),
        Err(e) => {
            let got = grpc_code(&e);
            ensure!(
                got == Some((code, message.to_string())),
                "{what}: expected {code:?} {message:?}, got {got:?} (error: {e})"
            );
            Ok(())
        }
    }
}

pub fn get_opts() -> GetOptions {
    GetOptions::new()
}

/// `out`'s stdout, or an error naming `etcdctl {what}` with both outputs if it failed.
pub fn stdout(out: &std::process::Output, what: &str) -> Result<String> {
    ensure!(
        out.status.success(),
        "`etcdctl {what}` failed with {}: stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `etcdctl <args>` against node `i`; its stdout if it succeeded.
pub async fn ctl(cluster: &Cluster, i: usize, args: &[&str]) -> Result<String> {
    let out = cluster.etcdctl(i, args).await?;
    stdout(&out, &args.join(" "))
}

/// Starts `etcdctl --endpoints <endpoint> <args>` in the background.
pub fn spawn_etcdctl(endpoint: &str, args: &[&str]) -> Result<tokio::process::Child> {
    Ok(tokio::process::Command::new(cairn_tests::etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

/// Reads `child`'s stdout until it contains `needle` (within [`CONVERGE`]); returns it all.
pub async fn read_until(child: &mut tokio::process::Child, needle: &str) -> Result<String> {
    use tokio::io::AsyncReadExt;
    let stdout = child.stdout.as_mut().context("no stdout")?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    tokio::time::timeout(CONVERGE, async {
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let n = stdout.read(&mut buf).await?;
            if n == 0 {
                anyhow::bail!("output ended: {:?}", String::from_utf8_lossy(&seen));
            }
            seen.extend_from_slice(&buf[..n]);
        }
        Ok(())
    })
    .await
    .context("timed out")??;
    Ok(String::from_utf8_lossy(&seen).into_owned())
}

#[derive(Default)]
pub struct KeepAliveLog {
    /// When each renewal was answered with a positive TTL.
    pub renewed: Vec<Instant>,
    /// Set when the server answered TTL 0: the lease was gone.
    pub lost: bool,
}

/// Keeps `id` alive through `client` every 500 ms until `stop`, reopening the stream after
/// errors (as client libraries do), and records every answer.
pub async fn keep_alive_loop(
    mut client: Client,
    id: i64,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<KeepAliveLog>>,
) -> Result<()> {
    while !stop.load(Ordering::SeqCst) {
        let (mut keeper, mut stream) =
            match tokio::time::timeout(Duration::from_secs(10), client.lease_keep_alive(id)).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(cairn_tests::etcd_client::Error::LeaseKeepAliveError(e))) => {
                    log.lock().unwrap().lost = true;
                    anyhow::bail!("lease {id:x} lost: {e}");
                }
                Ok(Err(_)) | Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
        log.lock().unwrap().renewed.push(Instant::now());
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => log.lock().unwrap().renewed.push(Instant::now()),
                Ok(Ok(Some(resp))) => {
                    log.lock().unwrap().lost = true;
                    anyhow::bail!("lease {id:x} lost: keepalive answered {resp:?}");
                }
                _ => break,
            }
        }
    }
    Ok(())
}

/// Puts `key = value`, retrying (fresh attempts every 100 ms) until acknowledged, `deadline`, or
/// `stop` is set. Returns whether it was acknowledged; a failed attempt may still have been
/// applied.
pub async fn put_retrying(
    client: &mut Client,
    key: &str,
    value: &str,
    deadline: Instant,
    stop: Option<&AtomicBool>,
) -> bool {
    loop {
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), client.put(key, value, None)).await {
            return true;
        }
        if Instant::now() >= deadline || stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every key under `prefix` as seen by node `i` (linearizable unless `serializable`).
pub async fn read_prefix(
    cluster: &Cluster,
    i: usize,
    prefix: &str,
    serializable: bool,
) -> Result<BTreeMap<String, String>> {
    let mut c = cluster.client(i).await?;
    let mut opts = GetOptions::new().with_prefix();
    if serializable {
        opts = opts.with_serializable();
    }
    let resp = c.get(prefix, Some(opts)).await.with_context(|| format!("node {i}: get --prefix {prefix}"))?;
    Ok(resp
        .kvs()
        .iter()
        .map(|kv| {
            (String::from_utf8_lossy(kv.key()).into_owned(), String::from_utf8_lossy(kv.value()).into_owned())
        })
        .collect())
}

/// Checks every acknowledged write is on node `i` (extra, unacknowledged ones are allowed).
pub fn check_acked(
    node: usize,
    seen: &BTreeMap<String, String>,
    acked: &BTreeMap<String, String>,
) -> Result<()> {
    let missing: Vec<&String> =
        acked.iter().filter(|(k, v)| seen.get(*k) != Some(*v)).map(|(k, _)| k).collect();
    ensure!(
        missing.is_empty(),
        "node {node}: {} of {} acknowledged writes missing or wrong, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    Ok(())
}

/// Waits until node `i` serves (serializable, i.e. from its own state) every acknowledged write.
pub async fn wait_caught_up(
    cluster: &Cluster,
    i: usize,
    prefix: &str,
    acked: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<()> {
    eventually(timeout, &format!("node {i} to catch up"), || async {
        let seen = read_prefix(cluster, i, prefix, true).await?;
        check_acked(i, &seen, acked)
    })
    .await
}

/// Background writers: keys `<prefix>w<id>/<n>`, each retried until acknowledged (or 30 s, or
/// stopped), recording what was acknowledged, until stopped.
pub struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    pub async fn start(cluster: &Cluster, nodes: &[usize], prefix: &str, count: usize) -> Result<Writers> {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let mut tasks = Vec::new();
        for w in 0..count {
            let mut client = cluster.client_with(nodes, cairn_tests::default_connect_options()).await?;
            let (stop, acked, prefix) = (stop.clone(), acked.clone(), prefix.to_string());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let (k, v) = (format!("{prefix}w{w}/{n:06}"), format!("v{n}"));
                    let deadline = Instant::now() + Duration::from_secs(30);
                    // Acknowledged = committed, whenever it happens: record it.
                    if put_retrying(&mut client, &k, &v, deadline, Some(&stop)).await {
                        acked.lock().unwrap().insert(k, v);
                    }
                    n += 1;
                }
            }));
        }
        Ok(Writers { stop, acked, tasks })
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.acked_count() < n {
            if Instant::now() >= deadline {
                bail!("only {} of {n} writes acknowledged after {timeout:?}", self.acked_count());
            }
            if self.tasks.iter().all(|t| t.is_finished()) {
                bail!("all writers stopped after {} acknowledged writes", self.acked_count());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops the writers and returns the acknowledged writes.
    pub async fn stop(self) -> Result<BTreeMap<String, String>> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.map_err(|e| anyhow!("writer task: {e}"))?;
        }
        Ok(Arc::try_unwrap(self.acked).map_err(|_| anyhow!("acked still shared"))?.into_inner().unwrap())
    }
}

/// Standard, padded base64 of a test key or value (the JSON gateway's encoding of bytes).
/// The value of one sample of member `i`'s `/metrics` (`sample`: the name with its labels,
/// e.g. `cairn_peer_refusals_total{reason="bad_proof"}`), `None` when it is not there.
#[allow(dead_code)] // not every test binary reads metrics
pub fn metric_sample(cluster: &Cluster, i: usize, sample: &str) -> Result<Option<f64>> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!("http://{}/metrics", cluster.client_addr(i)))
        .output()
        .context("curl")?;
    let text = String::from_utf8(out.stdout)?;
    let prefix = format!("{sample} ");
    let value = text.lines().find_map(|l| l.strip_prefix(&prefix));
    Ok(value.map(|v| v.trim().parse()).transpose()?)
}

pub fn b64(s: &str) -> String {
    // Enough base64 for test keys (standard alphabet, padded).
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
