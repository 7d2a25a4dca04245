//! Forwarding client writes from a follower to the leader over one long-lived
//! `Peer/ForwardStream` per leader address. Under load a forwarded write then costs one
//! message on an open stream instead of an HTTP/2 request of its own (stream setup,
//! headers, a task on each side), and concurrent writes share TCP segments.
//!
//! Outcomes are reported as the unary `Peer/Forward` would report them, as a
//! `tonic::Status`: a stream that could not be opened fails its writes with the connect
//! error (nothing was delivered, the caller may retry); a stream that breaks later fails
//! its writes in flight with `Unavailable` (they may or may not apply).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::network::PeerChannels;
use crate::pb::{forwarded_result, ForwardedResult, ForwardedWrite, WriteRequest, WriteResponse};

type Answer = oneshot::Sender<Result<WriteResponse, Status>>;

/// One stream to one leader address.
struct Link {
    writes: mpsc::UnboundedSender<ForwardedWrite>,
    /// Writes sent and not yet answered; `None` once the stream is gone (a new link is made).
    pending: Mutex<Option<HashMap<u64, Answer>>>,
    next_id: AtomicU64,
}

impl Link {
    /// Register a write's answer under a fresh id; hands the answer back if the link is
    /// closed (then a new link must carry the write).
    fn register(&self, answer: Answer) -> Result<u64, Answer> {
        match self.pending.lock().expect("forward pending map poisoned").as_mut() {
            Some(pending) => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                pending.insert(id, answer);
                Ok(id)
            }
            None => Err(answer),
        }
    }

    /// Fail every write in flight with `status` and refuse new ones.
    fn close(&self, status: &Status) {
        let pending = self.pending.lock().expect("forward pending map poisoned").take();
        for (_, answer) in pending.into_iter().flatten() {
            let _ = answer.send(Err(status.clone()));
        }
    }

    fn answer(&self, result: ForwardedResult) {
        let answer = match self.pending.lock().expect("forward pending map poisoned").as_mut() {
            Some(pending) => pending.remove(&result.id),
            None => None,
        };
        let Some(answer) = answer else { return };
        let outcome = match result.outcome {
            Some(forwarded_result::Outcome::Response(r)) => Ok(r),
            Some(forwarded_result::Outcome::Failure(f)) => {
                Err(Status::with_details(f.code.into(), f.message, f.details.into()))
            }
            None => Err(Status::internal("the leader answered a forwarded write with nothing")),
        };
        let _ = answer.send(outcome);
    }
}

/// The forwarding streams of one member, by leader address. Cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    channels: PeerChannels,
    links: Arc<Mutex<HashMap<String, Arc<Link>>>>,
}

impl Forwarder {
    pub fn new(channels: PeerChannels) -> Forwarder {
        Forwarder { channels, links: Arc::default() }
    }

    /// Hand `write` to the leader at `addr` and wait (at most `timeout`) for its result.
    pub async fn forward(
        &self,
        addr: &str,
        write: WriteRequest,
        timeout: Duration,
    ) -> Result<WriteResponse, Status> {
        let (tx, rx) = oneshot::channel();
        let (link, id) = self.enqueue(addr, tx)?;
        // Sending fails only if the link's task has ended; then `close` answered (or will
        // answer) this write.
        let _ = link.writes.send(ForwardedWrite { id, write: Some(write) });
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Status::unavailable("forwarding stream closed")),
            Err(_) => {
                if let Some(pending) = link.pending.lock().expect("forward pending map poisoned").as_mut() {
                    pending.remove(&id);
                }
                Err(Status::deadline_exceeded("forwarded write timed out"))
            }
        }
    }

    /// Register a write on the open link to `addr`, opening one if there is none.
    fn enqueue(&self, addr: &str, answer: Answer) -> Result<(Arc<Link>, u64), Status> {
        let mut links = self.links.lock().expect("forward link map poisoned");
        let answer = match links.get(addr) {
            Some(link) => match link.register(answer) {
                Ok(id) => return Ok((link.clone(), id)),
                Err(answer) => answer,
            },
            None => answer,
        };
        let (link, id) = self.open(addr, answer)?;
        links.insert(addr.to_string(), link.clone());
        Ok((link, id))
    }

    /// Open a link to `addr` carrying `first` (registered before the link's task starts, so
    /// that a stream failing at once still answers it).
    fn open(&self, addr: &str, first: Answer) -> Result<(Arc<Link>, u64), Status> {
        let mut client = self.channels.client(addr).map_err(|e| Status::unavailable(e.to_string()))?;
        let (writes, outgoing) = mpsc::unbounded_channel();
        let id = 1;
        let pending = Mutex::new(Some(HashMap::from([(id, first)])));
        let link = Arc::new(Link { writes, pending, next_id: AtomicU64::new(id + 1) });
        let task_link = link.clone();
        tokio::spawn(async move {
            let link = task_link;
            // The request side ends with the answers: a leader that ends the stream (it
            // is shutting down) must not be kept waiting for our half to close.
            let (answers_ended, request_end) = oneshot::channel::<()>();
            let outgoing =
                tokio_stream::wrappers::UnboundedReceiverStream::new(outgoing).take_until(request_end);
            let mut results = match client.forward_stream(outgoing).await {
                Ok(response) => response.into_inner(),
                // Not opened: nothing was delivered (a connect error stays one for the caller).
                Err(status) => return link.close(&status),
            };
            let end = loop {
                match results.next().await {
                    Some(Ok(result)) => link.answer(result),
                    Some(Err(status)) => {
                        break Status::unavailable(format!("forwarding stream broke: {status}"))
                    }
                    None => break Status::unavailable("forwarding stream ended"),
                }
            };
            link.close(&end);
            drop(answers_ended);
        });
        Ok((link, id))
    }
}
