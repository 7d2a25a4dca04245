//! Client workers: one logical process at a time per worker, over the etcd gRPC API.
//!
//! [`Worker::op`] records an invocation, runs the request with a timeout and records the
//! completion: `ok` with the result; `fail` when the operation certainly did not take effect
//! (a definite refusal such as a failed CAS compare, a read the server answered with an error,
//! or a request that never reached a server: connection refused); `info` otherwise (any
//! timeout, a write that got an error, a transport error after the request may have been sent). After `info` the worker takes a new process
//! id (`process + concurrency`): the old process may still be running that operation.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use serde_json::Value;

use crate::history::{Kind, Recorder};

/// What an operation body returns: `Ok(Ok(v))` = it happened with result `v`; `Ok(Err(v))` =
/// it definitely did not happen (e.g. a CAS whose compare failed), with `v` for the record.
pub type OpResult = Result<Result<Value, Value>, etcd_client::Error>;

/// Whether a client error proves the request never reached a server.
pub fn never_sent(e: &etcd_client::Error) -> bool {
    let text = format!("{e:?}");
    text.contains("Connection refused")
        || text.contains("ConnectError")
        || text.contains("tcp connect error")
        || text.contains("error trying to connect")
}

/// Shared by all workers of a run.
pub struct Shared {
    pub recorder: Recorder,
    pub endpoints: Vec<String>,
    pub op_timeout: Duration,
    pub concurrency: usize,
}

/// One worker: a sequence of logical processes talking to one node.
pub struct Worker {
    pub id: usize,
    pub process: u64,
    pub node: usize,
    shared: Arc<Shared>,
    client: Option<Client>,
}

impl Worker {
    pub fn new(id: usize, node: usize, shared: Arc<Shared>) -> Worker {
        Worker { id, process: id as u64, node, shared, client: None }
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    async fn connect(&mut self) -> Result<Client, etcd_client::Error> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(self.shared.op_timeout);
        let endpoint = self.shared.endpoints[self.node].clone();
        let c = tokio::time::timeout(Duration::from_secs(2), Client::connect([endpoint], Some(options)))
            .await
            .map_err(|_| etcd_client::Error::InvalidArgs("tcp connect error: connect timed out".into()))??;
        self.client = Some(c.clone());
        Ok(c)
    }

    /// Runs one operation and records it. `mutating`: whether the operation may change state
    /// (a read the server answered with an error is `fail`; a write's error is `info`). Any
    /// timeout is `info`. Returns the completion's kind and value.
    pub async fn op<F, Fut>(
        &mut self,
        f: &str,
        key: Option<String>,
        input: Value,
        mutating: bool,
        body: F,
    ) -> (Kind, Value)
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = OpResult>,
    {
        let inv = self.shared.recorder.invoke(self.process, f, key, input.clone(), Some(self.node));
        let outcome = match self.connect().await {
            Err(e) => Err(e),
            Ok(client) => match tokio::time::timeout(self.shared.op_timeout, body(client)).await {
                Ok(r) => r,
                Err(_) => {
                    // Timed out: whatever it was, its outcome is unknown.
                    self.shared.recorder.complete(&inv, Kind::Info, input.clone(), Some("timeout".into()));
                    self.after(Kind::Info);
                    return (Kind::Info, input);
                }
            },
        };
        let (kind, value, error) = match outcome {
            Ok(Ok(v)) => (Kind::Ok, v, None),
            Ok(Err(v)) => (Kind::Fail, v, None),
            Err(e) => {
                let text = short_error(&e);
                // Definitely did not happen: never sent, or a read the server answered with an
                // error status. Otherwise (a write that got an error, a transport failure after
                // sending) unknown.
                let answered = matches!(e, etcd_client::Error::GRpcStatus(_));
                if never_sent(&e) || (!mutating && answered) {
                    (Kind::Fail, input.clone(), Some(text))
                } else {
                    (Kind::Info, input.clone(), Some(text))
                }
            }
        };
        self.shared.recorder.complete(&inv, kind, value.clone(), error);
        self.after(kind);
        (kind, value)
    }

    fn after(&mut self, kind: Kind) {
        if kind == Kind::Info {
            self.process += self.shared.concurrency as u64;
            // A fresh connection for the new process: the old one may be wedged.
            self.client = None;
        }
    }
}

/// A one-line rendering of a client error.
pub fn short_error(e: &etcd_client::Error) -> String {
    let s = match e {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    };
    let s = s.replace('\n', " ");
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_connect_errors_as_never_sent() {
        let refused = etcd_client::Error::GRpcStatus(tonic_status(
            "error trying to connect: tcp connect error: Connection refused (os error 111)",
        ));
        assert!(never_sent(&refused));
        let timeout = etcd_client::Error::GRpcStatus(tonic_status("etcdserver: request timed out"));
        assert!(!never_sent(&timeout));
    }

    fn tonic_status(msg: &str) -> cairn_tests::Status {
        cairn_tests::Status::unavailable(msg)
    }
}
