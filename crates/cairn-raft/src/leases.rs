//! Lease calls on a member and the leader's lease timers. Grants and revokes are ordinary
//! replicated writes; keepalives and time-to-live ask the leader's [`Lessor`] through
//! [`RaftNode::on_leader`]; on the leader, expired leases become replicated revokes.

use std::sync::Arc;
use std::time::Duration;

use cairn_core::{BackendError, LeaseTime, WriteRequest, WriteResponse};
use cairn_proto::etcdserverpb::{LeaseGrantResponse, LeaseRevokeRequest};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;

use crate::leader::{self, LeaseQuestion};
use crate::node::RaftNode;
use crate::pb;
use crate::peer_error::PeerError;
use crate::route::Repeat;
use crate::types::{Command, NodeId, Raft};
use cairn_core::lessor::Lessor;

/// How often the leader looks for expired leases, and how many revokes it proposes per
/// look (etcd: every 500 ms, at most 1000 revokes a second).
const EXPIRY_INTERVAL: Duration = Duration::from_millis(500);
const MAX_REVOKES_PER_INTERVAL: usize = 500;

impl RaftNode {
    /// Grant a lease. `id` 0 lets this member choose one; the TTL is raised to the minimum.
    pub async fn lease_grant(&self, id: i64, ttl: i64) -> Result<LeaseGrantResponse, BackendError> {
        cairn_core::lessor::grant(id, ttl, self.lessor.min_ttl(), |grant| self.write(grant)).await
    }

    /// Revoke a lease: it and its keys are deleted in one revision.
    pub async fn lease_revoke(&self, id: i64) -> Result<WriteResponse, BackendError> {
        self.write(WriteRequest::LeaseRevoke(LeaseRevokeRequest { id })).await
    }

    /// A keepalive, handled by the leader wherever it is sent. Returns the lease's TTL, or
    /// 0 if it does not exist (any more), as etcd does.
    pub async fn lease_renew(&self, id: i64) -> Result<i64, BackendError> {
        let time = self.ask_lessor(id, LeaseQuestion::Renew).await?;
        Ok(time.map_or(0, |t| t.granted))
    }

    /// The leader's view of a lease's time; `None` if it does not exist.
    pub async fn lease_remaining(&self, id: i64) -> Result<Option<LeaseTime>, BackendError> {
        self.ask_lessor(id, LeaseQuestion::Remaining).await
    }

    async fn ask_lessor(&self, id: i64, question: LeaseQuestion) -> Result<Option<LeaseTime>, BackendError> {
        self.on_leader(
            Repeat::Idempotent,
            |_| leader::ask_lessor(&self.raft, &self.lessor, id, question),
            |addr, remaining| async move {
                let mut client = self.channels.client(&addr).map_err(|_| PeerError::NotDelivered)?;
                let mut request = tonic::Request::new(pb::LeaseRenewRequest { id });
                request.set_timeout(remaining);
                Ok(match question {
                    LeaseQuestion::Renew => {
                        let ttl =
                            client.lease_renew(request).await.map_err(PeerError::from)?.into_inner().ttl;
                        (ttl > 0).then_some(LeaseTime { remaining: ttl, granted: ttl })
                    }
                    LeaseQuestion::Remaining => {
                        let r = client.lease_remaining(request).await.map_err(PeerError::from)?.into_inner();
                        r.found.then_some(LeaseTime { remaining: r.remaining, granted: r.granted })
                    }
                })
            },
        )
        .await
    }
}

/// Keep the lessor's idea of leadership in step with Raft's.
pub(crate) async fn track_leadership(raft: Raft, id: NodeId, lessor: Arc<Lessor>) {
    // Server metrics change with the role and leader, not at every append.
    let mut metrics = raft.server_metrics();
    let mut leading = false;
    loop {
        let now_leading = {
            let m = metrics.borrow_watched();
            m.state == ServerState::Leader && m.current_leader == Some(id)
        };
        if now_leading != leading {
            leading = now_leading;
            if leading {
                #[cfg(feature = "fault-injection")]
                let injected = crate::fault::follower_lease_clock();
                #[cfg(not(feature = "fault-injection"))]
                let injected = false;
                if injected {
                    lessor.promote_keeping_follower_deadlines();
                } else {
                    lessor.promote();
                    tracing::info!("leader: lease timers restarted");
                }
            } else {
                lessor.demote();
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// On the leader, turn expired leases into replicated revokes.
pub(crate) async fn expire_leases(raft: Raft, lessor: Arc<Lessor>) {
    let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for id in lessor.take_expired(MAX_REVOKES_PER_INTERVAL) {
            let raft = raft.clone();
            tokio::spawn(async move {
                tracing::debug!(lease = format!("{id:x}"), "lease expired: revoking");
                let revoke = Command::Write(WriteRequest::LeaseRevoke(LeaseRevokeRequest { id }));
                if let Err(e) = raft.client_write(revoke).await {
                    tracing::debug!(lease = format!("{id:x}"), error = %e, "revoke of an expired lease failed");
                }
            });
        }
    }
}
