//! A component registry: the data of a product's cluster overview. Each server registers
//! its components ("web", "service", …) with their version; a registration lives under a
//! lease that its server keeps alive, and carries a heartbeat the server refreshes, so a
//! server that dies drops out (lease expiry) and one that hangs shows a growing heartbeat
//! age. [`Registry::list`] tells, per component, the heartbeat age, whether it is stale, and
//! whether its version is the one most servers run.
//!
//! Keys: `<prefix><component>/<server>`, values JSON ([`Registration`]), so `etcdctl get
//! --prefix` shows them. Heartbeat ages compare the writer's clock with the reader's: keep
//! the servers' clocks in sync (NTP) or allow for the skew in the stale timeout.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::concurrency::Lease;
use crate::{prefix_end, Client, Error};

/// What one server says about one of its components.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// What runs ("web", "service", …).
    pub component: String,
    /// Where it runs.
    pub server: String,
    /// The component's software version.
    pub version: String,
    /// Anything else the product shows (addresses, ports, OS, …).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// The server's wall clock at its last heartbeat, in milliseconds since the Unix epoch.
    pub heartbeat_ms: u64,
}

/// One registration as [`Registry::list`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentStatus {
    /// What the server registered, with its last heartbeat.
    pub registration: Registration,
    /// How long ago the server last refreshed its heartbeat (by the reader's clock).
    pub heartbeat_age: Duration,
    /// Older than the stale timeout given to [`Registry::list`].
    pub stale: bool,
    /// The version most registrations of this component have.
    pub version_in_sync: bool,
}

/// The registry under one key prefix.
#[derive(Clone, Debug)]
pub struct Registry {
    client: Client,
    prefix: String,
}

/// A live registration: dropped or [`Registered::deregister`]ed, it stops its heartbeat and
/// its key goes away.
pub struct Registered {
    key: String,
    heartbeat: JoinHandle<()>,
    lease: Option<Lease>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Registry {
    /// A registry under `prefix` (e.g. `"product/components/"`).
    pub fn new(client: &Client, prefix: impl Into<String>) -> Registry {
        Registry { client: client.clone(), prefix: prefix.into() }
    }

    fn key(&self, component: &str, server: &str) -> String {
        format!("{}{component}/{server}", self.prefix)
    }

    /// Registers `component` of `server` at `version`: the key lives under a lease of `ttl`
    /// seconds (kept alive in the background) and its heartbeat is refreshed every
    /// `heartbeat`. Registering again replaces the previous registration.
    pub async fn register(
        &self,
        component: &str,
        server: &str,
        version: &str,
        meta: BTreeMap<String, String>,
        ttl: i64,
        heartbeat: Duration,
    ) -> Result<Registered, Error> {
        let lease = Lease::grant(&self.client, ttl).await?;
        let key = self.key(component, server);
        let mut registration = Registration {
            component: component.to_string(),
            server: server.to_string(),
            version: version.to_string(),
            meta,
            heartbeat_ms: now_ms(),
        };
        let put = |r: &Registration| -> Result<PutRequest, Error> {
            Ok(PutRequest {
                key: key.clone().into_bytes(),
                value: serde_json::to_vec(r).map_err(Error::Encode)?,
                lease: lease.id(),
                ..Default::default()
            })
        };
        self.client.put_request(put(&registration)?).await?;
        let (client, first) = (self.client.clone(), put(&registration)?);
        let heartbeat = tokio::spawn(async move {
            let mut request = first;
            loop {
                tokio::time::sleep(heartbeat).await;
                registration.heartbeat_ms = now_ms();
                match serde_json::to_vec(&registration) {
                    Ok(value) => request.value = value,
                    Err(_) => return,
                }
                if let Err(e) = client.put_request(request.clone()).await {
                    tracing::warn!(error = %e, key = %String::from_utf8_lossy(&request.key), "registry heartbeat failed");
                }
            }
        });
        Ok(Registered { key, heartbeat, lease: Some(lease) })
    }

    /// Every registration (a linearizable read), ordered by component then server; `stale`
    /// when the heartbeat is older than `stale_after`.
    pub async fn list(&self, stale_after: Duration) -> Result<Vec<ComponentStatus>, Error> {
        let prefix = self.prefix.clone().into_bytes();
        let resp = self
            .client
            .range(RangeRequest { range_end: prefix_end(&prefix), key: prefix, ..Default::default() })
            .await?;
        let mut registrations = Vec::with_capacity(resp.kvs.len());
        for kv in resp.kvs {
            let r: Registration = serde_json::from_slice(&kv.value).map_err(|source| Error::Decode {
                key: String::from_utf8_lossy(&kv.key).into_owned(),
                source,
            })?;
            registrations.push(r);
        }
        // The version most registrations of each component have.
        let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for r in &registrations {
            *counts.entry((r.component.as_str(), r.version.as_str())).or_default() += 1;
        }
        let mut common: BTreeMap<&str, (&str, usize)> = BTreeMap::new();
        for ((component, version), n) in &counts {
            let best = common.entry(component).or_insert((version, 0));
            if *n > best.1 {
                *best = (version, *n);
            }
        }
        let now = now_ms();
        let statuses = registrations
            .iter()
            .map(|r| {
                let heartbeat_age = Duration::from_millis(now.saturating_sub(r.heartbeat_ms));
                ComponentStatus {
                    registration: r.clone(),
                    heartbeat_age,
                    stale: heartbeat_age > stale_after,
                    version_in_sync: common.get(r.component.as_str()).is_some_and(|(v, _)| *v == r.version),
                }
            })
            .collect();
        Ok(statuses)
    }
}

impl Registered {
    /// The registration's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Stops the heartbeat and removes the registration now (revokes its lease).
    pub async fn deregister(mut self) -> Result<(), Error> {
        self.heartbeat.abort();
        match self.lease.take() {
            Some(lease) => lease.revoke().await,
            None => Ok(()),
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // The lease's own drop stops its keepalive; the key expires with it.
        self.heartbeat.abort();
    }
}
