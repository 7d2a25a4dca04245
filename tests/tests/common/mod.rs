//! Helpers shared by the integration tests (not part of the harness library).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use cairn_tests::etcd_client::{
    Client, DeleteOptions, GetOptions, GetResponse, KeyValue, PutOptions, ResponseHeader,
};
use cairn_tests::{grpc_code, Cluster, ClusterOptions, Code, Target};

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
