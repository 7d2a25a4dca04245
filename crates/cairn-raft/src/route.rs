//! Running an operation on the leader, wherever it is: [`RaftNode::on_leader`] is the one
//! place that finds the leader, calls it locally or through a peer RPC, and retries while
//! nothing was proposed. Writes, read barriers and lease calls all go through it.

use std::future::Future;
use std::time::Duration;

// tokio's clock: the real one in a process, the virtual one in a simulation.
use tokio::time::Instant;

use cairn_core::{BackendError, RequestError, WriteRequest, WriteResponse};

use crate::applied::WaitError;
use crate::leader;
use crate::node::RaftNode;
use crate::pb;
use crate::peer_error::PeerError;

/// Pause between tries while there is no leader to talk to.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Where the leader is.
enum Leader {
    Here,
    /// Its peer address.
    At(String),
}

/// Whether an operation may be sent again after an outcome that leaves it unknown.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Only when it certainly did not happen (a write).
    IfNotApplied,
    /// Whenever the leader did not answer it (keepalives, read points).
    Idempotent,
}

impl RaftNode {
    async fn leader(&self) -> Option<Leader> {
        let leader = self.raft.current_leader().await?;
        if leader == self.id {
            return Some(Leader::Here);
        }
        self.peer_addr(leader).map(Leader::At)
    }

    /// Run an operation on the leader until it is done or the request timeout passes:
    /// `here` when this member leads, `there(peer address, time left)` otherwise. Both
    /// report failures as [`PeerError`]s; an operation that certainly did not happen (no
    /// leader, not the leader any more, connection refused) is tried again, and one whose
    /// outcome is unknown only if `repeat` allows. When time runs out, the last reason is
    /// the error.
    pub(crate) async fn on_leader<T, H, R>(
        &self,
        repeat: Repeat,
        here: impl Fn(Duration) -> H,
        there: impl Fn(String, Duration) -> R,
    ) -> Result<T, BackendError>
    where
        H: Future<Output = Result<T, PeerError>>,
        R: Future<Output = Result<T, PeerError>>,
    {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = match self.leader().await {
                None => Err(PeerError::NotLeader { leader_hint: None }),
                Some(Leader::Here) => match tokio::time::timeout(remaining, here(remaining)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(PeerError::Timeout),
                },
                Some(Leader::At(addr)) => there(addr, remaining).await,
            };
            let failure = match outcome {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            let again = failure.certainly_not_applied() && !matches!(failure, PeerError::Refused(_))
                || repeat == Repeat::Idempotent
                    && matches!(failure, PeerError::LeaderChanged | PeerError::Unavailable(_));
            let error = failure.into_backend_error();
            if !again || Instant::now() + RETRY_PAUSE >= deadline {
                return Err(error);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Replicate one write through the leader, wherever it is, and return its result.
    pub async fn write(&self, req: WriteRequest) -> Result<WriteResponse, BackendError> {
        self.write_checked(req, 0).await
    }

    /// [`RaftNode::write`] for a write whose permissions were checked at auth revision
    /// `auth_revision` (0: not checked): every member refuses it at apply, with etcd's
    /// "revision of auth store is old", if the auth state changed in between.
    pub async fn write_checked(
        &self,
        req: WriteRequest,
        auth_revision: u64,
    ) -> Result<WriteResponse, BackendError> {
        let result = self.replicate(req, auth_revision).await;
        // etcd's "failed proposals": the write did not commit (a refusal after commit, e.g.
        // an unknown lease, is the write's result).
        if matches!(&result, Err(e) if !matches!(e, BackendError::Request(_))) {
            crate::metrics::record_failed_proposal();
        }
        result
    }

    async fn replicate(&self, req: WriteRequest, auth_revision: u64) -> Result<WriteResponse, BackendError> {
        #[cfg(feature = "fault-injection")]
        if let Some(acked) = crate::fault::ack_before_commit(&self.raft, self.store(), &req) {
            return acked;
        }
        let started = Instant::now();
        let req = &req;
        let (result, applied_at) = self
            .on_leader(
                Repeat::IfNotApplied,
                // On the leader the write is applied here when the proposal returns.
                |_| async {
                    leader::propose(&self.raft, req.clone(), auth_revision).await.map(|p| (p.result, None))
                },
                |addr, remaining| self.forward(addr, req, auth_revision, remaining),
            )
            .await?;
        // A write forwarded to the leader is answered once the leader applied it; like etcd,
        // answer only once this member applied it too, so that the client reads its own
        // write here, even serializably.
        if let Some(entry) = applied_at {
            self.wait_applied(entry, &result, started + self.request_timeout).await;
        }
        result.map_err(BackendError::Request)
    }

    /// Hand a write to the leader at `addr`: on the forwarding stream, or one request per
    /// write for a leader that has no stream (a member before 0.1's pipelining). Returns the
    /// result and the log index of its entry (0 from a leader before 0.2).
    async fn forward(
        &self,
        addr: String,
        req: &WriteRequest,
        auth_revision: u64,
        remaining: Duration,
    ) -> Result<(Result<WriteResponse, RequestError>, Option<u64>), PeerError> {
        crate::metrics::record_forwarded_write();
        let write = pb::WriteRequest { auth_revision, ..pb::WriteRequest::from(req.clone()) };
        let answer = match self.forwarder.forward(&addr, write.clone(), remaining).await {
            Err(s) if PeerError::from_status(&s) == PeerError::Unimplemented => {
                let mut client = self.channels.client(&addr).map_err(|_| PeerError::NotDelivered)?;
                let mut request = tonic::Request::new(write);
                request.set_timeout(remaining);
                client.forward(request).await.map(tonic::Response::into_inner)
            }
            answer => answer,
        };
        let response = answer.map_err(PeerError::from)?;
        let log_index = response.log_index;
        // An answer this member cannot read: the write happened or not, nobody can tell.
        let result =
            Result::<WriteResponse, RequestError>::try_from(response).map_err(PeerError::Unavailable)?;
        Ok((result, Some(log_index)))
    }

    /// Wait until this member applied the forwarded write's log entry (`entry`; 0 from a
    /// leader before 0.2, which did not say: then until its state reaches the response's
    /// revision), or the deadline passes (the write is committed either way; a member cut
    /// off from the leader answers it anyway).
    async fn wait_applied(
        &self,
        entry: u64,
        result: &Result<WriteResponse, RequestError>,
        deadline: Instant,
    ) {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let caught_up = if entry > 0 {
            self.applied.wait_for(entry, timeout).await.is_ok()
        } else {
            let revision = result.as_ref().map_or(0, |r| r.revision());
            let mut applied = self.revision.clone();
            let reached = tokio::time::timeout(timeout, applied.wait_for(|r| *r >= revision)).await.is_ok();
            reached
        };
        if !caught_up {
            tracing::debug!(entry, "answering a forwarded write before applying it here (timed out)");
        }
    }

    /// Wait until this node's state machine reflects every write acknowledged before the
    /// call (a linearizable read point, from the leader's read index).
    pub async fn linearize(&self) -> Result<(), BackendError> {
        #[cfg(feature = "fault-injection")]
        if crate::fault::skip_read_index() {
            return Ok(());
        }
        let started = Instant::now();
        let index = self
            .on_leader(
                Repeat::Idempotent,
                |_| leader::read_index(&self.raft),
                |addr, remaining| async move {
                    let mut client = self.channels.client(&addr).map_err(|_| PeerError::NotDelivered)?;
                    let mut request = tonic::Request::new(pb::ReadIndexRequest {});
                    request.set_timeout(remaining);
                    let response = client.read_index(request).await.map_err(PeerError::from)?;
                    Ok(response.into_inner().index)
                },
            )
            .await?;
        let remaining = (started + self.request_timeout)
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        match self.applied.wait_for(index, remaining).await {
            Ok(()) => Ok(()),
            Err(WaitError::Timeout) => Err(BackendError::Timeout),
            Err(WaitError::Stopped) => Err(BackendError::Stopped),
        }
    }
}
