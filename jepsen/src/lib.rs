//! `cairn-jepsen`: a chaos harness for etcd-API stores (Cairn, etcd). Real server processes on
//! 127.0.0.N, nemeses (kill, pause, iptables partitions and packet loss, a delay proxy,
//! libfaketime clock skew, membership churn), client histories in the Jepsen format, checkers
//! (linearizability, Elle list-append, set, watch) and an HTML report. See `docs/jepsen.md`.

pub mod checker;
pub mod client;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod proxy;
pub mod report;
pub mod run;
pub mod workload;
