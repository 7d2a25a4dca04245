//! `/metrics`: the Prometheus registry of a member. The replication layer records its
//! histograms and counters as things happen (`cairn_raft::metrics`); the gauges here are
//! read from the member when scraped. Names are etcd's where the meaning is the same, so
//! that dashboards made for etcd mostly work; Cairn's own start with `cairn_`.

use std::sync::{Arc, Weak};

use cairn_core::MaintenanceBackend;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::backend::RaftBackend;

/// The registry of `backend`'s member, encoded in the OpenMetrics text format on demand.
pub(crate) fn registry(backend: &Arc<RaftBackend>) -> Registry {
    let mut registry = Registry::default();
    cairn_raft::metrics::register(&mut registry);
    cairn_api::metrics::register(&mut registry);
    registry.register_collector(Box::new(Live { backend: Arc::downgrade(backend) }));
    registry
}

/// Gauges read from the member at each scrape.
struct Live {
    backend: Weak<RaftBackend>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A gauge of value 1 with one label (etcd's way of exposing an identity or a version).
fn info(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: (&str, String),
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(1i64);
    let mut family = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    let labels = [(label.0.to_string(), label.1)];
    g.encode(family.encode_family(&labels)?)
}

/// The store's sizes (etcd's names), whatever the backend.
fn sizes(e: &mut DescriptorEncoder, db_size: i64, in_use: u64) -> Result<(), std::fmt::Error> {
    gauge(
        e,
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        db_size,
    )?;
    gauge(
        e,
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Total size of the underlying database logically in use in bytes (what the quota counts).",
        in_use as i64,
    )
}

/// Who the member is and what it runs, whatever the backend.
fn identity(e: &mut DescriptorEncoder, member_id: u64) -> Result<(), std::fmt::Error> {
    info(
        e,
        "etcd_server_id",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
        ("server_id", format!("{member_id:x}")),
    )?;
    info(
        e,
        "etcd_server_version",
        "Which version of the etcd API is running. 1 for 'server_version' label with current version.",
        ("server_version", cairn_api::maintenance::API_VERSION.to_string()),
    )?;
    info(
        e,
        "cairn_build_info",
        "Cairn's version. 1 for 'version' label with current version.",
        ("version", env!("CARGO_PKG_VERSION").to_string()),
    )
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(backend) = self.backend.upgrade() else { return Ok(()) };
        let node = &backend.node;
        let status = node.status();
        let committed = status.committed_index;
        let e = &mut encoder;
        gauge(
            e,
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            status.leader.is_some() as i64,
        )?;
        gauge(
            e,
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            status.is_leader as i64,
        )?;
        gauge(
            e,
            "etcd_server_is_learner",
            "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            status.is_learner as i64,
        )?;
        gauge(
            e,
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            committed as i64,
        )?;
        gauge(
            e,
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            status.applied_index as i64,
        )?;
        gauge(
            e,
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit (log entries not yet committed).",
            status.last_log_index.saturating_sub(committed) as i64,
        )?;
        gauge(e, "etcd_server_term", "The raft term this member knows.", status.term as i64)?;
        sizes(e, backend.db_size(), backend.space_used())?;
        gauge(
            e,
            "cairn_leases",
            "Leases granted and not yet revoked or expired.",
            node.lease_count() as i64,
        )?;
        gauge(
            e,
            "etcd_debugging_mvcc_current_revision",
            "The current revision of store.",
            *node.revision_updates().borrow(),
        )?;
        identity(e, status.member_id)?;
        Ok(())
    }
}

/// The registry of a member on a SQL database: the API's metrics and the member's gauges
/// (no Raft: every member leads, the revision stands in for the log index).
pub(crate) fn sql_registry(backend: &Arc<cairn_sql::SqlBackend>) -> Registry {
    let mut registry = Registry::default();
    cairn_api::metrics::register(&mut registry);
    registry.register_collector(Box::new(SqlLive { backend: Arc::downgrade(backend) }));
    registry
}

struct SqlLive {
    backend: Weak<cairn_sql::SqlBackend>,
}

impl std::fmt::Debug for SqlLive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqlLive")
    }
}

impl Collector for SqlLive {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use cairn_core::{ClusterBackend, WatchSource};
        let Some(backend) = self.backend.upgrade() else { return Ok(()) };
        let status = backend.status();
        let e = &mut encoder;
        gauge(e, "etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", 1)?;
        gauge(
            e,
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            1,
        )?;
        sizes(e, backend.db_size(), backend.space_used())?;
        gauge(
            e,
            "etcd_debugging_mvcc_current_revision",
            "The current revision of store.",
            *backend.revision_updates().borrow(),
        )?;
        identity(e, status.member_id)?;
        info(
            e,
            "cairn_sql_backend_info",
            "The database this member serves from. 1 for 'kind' label with its kind.",
            ("kind", format!("{:?}", backend.kind()).to_lowercase()),
        )?;
        Ok(())
    }
}
