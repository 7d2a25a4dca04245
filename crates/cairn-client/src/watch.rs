//! One watch on its own stream, and the wait-for-predecessors loop of locks and elections.

use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::*;
use cairn_proto::mvccpb::event::EventType;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::{prefix_end, Client, Error};

/// A single watch: the responses after the "created" one. Dropping it closes the stream,
/// which cancels the watch on the server.
pub struct WatchStream {
    // Kept open: closing the request side would end the watch.
    _requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

impl WatchStream {
    pub(crate) async fn open(client: &Client, create: WatchCreateRequest) -> Result<WatchStream, Error> {
        let (tx, rx) = mpsc::channel(1);
        let request =
            WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) };
        tx.send(request).await.map_err(|_| Error::WatchEnded("request stream closed".into()))?;
        let mut responses = client.watch_client().watch(ReceiverStream::new(rx)).await?.into_inner();
        // The first response confirms the creation (or says why the watch was refused).
        match responses.message().await? {
            Some(r) if r.canceled => Err(canceled(&r)),
            Some(r) if r.created => Ok(WatchStream { _requests: tx, responses }),
            Some(_) => Err(Error::WatchEnded("the server sent events before confirming the watch".into())),
            None => Err(Error::WatchEnded("stream closed before the watch was created".into())),
        }
    }

    /// The next response; `Ok(None)` when the server closed the stream. A response with
    /// `canceled` set is the last one.
    pub async fn next(&mut self) -> Result<Option<WatchResponse>, Error> {
        Ok(self.responses.message().await?)
    }

    /// The next response, for callers that need the watch to go on: a cancellation or the
    /// end of the stream is an error.
    pub async fn next_events(&mut self) -> Result<WatchResponse, Error> {
        match self.next().await? {
            Some(r) if r.canceled => Err(canceled(&r)),
            Some(r) => Ok(r),
            None => Err(Error::WatchEnded("stream closed".into())),
        }
    }
}

fn canceled(r: &WatchResponse) -> Error {
    if r.compact_revision > 0 {
        Error::WatchEnded(format!("required revision {} has been compacted", r.compact_revision))
    } else {
        Error::WatchEnded(format!("canceled by the server: {}", r.cancel_reason))
    }
}

/// Waits until `key` is deleted, watching from `revision`. Returns early (Ok) when the
/// history from `revision` was compacted: the caller looks again.
async fn wait_delete(client: &Client, key: &[u8], revision: i64) -> Result<(), Error> {
    let create = WatchCreateRequest {
        key: key.to_vec(),
        start_revision: revision,
        filters: vec![FilterType::Noput as i32],
        ..Default::default()
    };
    let mut watch = match WatchStream::open(client, create).await {
        Ok(w) => w,
        Err(Error::WatchEnded(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    loop {
        match watch.next().await? {
            Some(r) if r.events.iter().any(|e| e.r#type == EventType::Delete as i32) => return Ok(()),
            Some(r) if r.canceled && r.compact_revision > 0 => return Ok(()),
            Some(r) if r.canceled => return Err(canceled(&r)),
            Some(_) => {}
            None => return Err(Error::WatchEnded("stream closed while waiting for a delete".into())),
        }
    }
}

/// Waits until no key under `prefix` with a create revision ≤ `max_create_revision` is
/// left: the predecessors of a lock waiter or a candidate (etcd's `waitDeletes`). Waits on
/// the youngest predecessor each time, so each departure wakes only its successor.
pub async fn wait_deletes(
    client: &Client,
    prefix: &[u8],
    max_create_revision: i64,
) -> Result<ResponseHeader, Error> {
    loop {
        let resp = client
            .range(RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                sort_order: SortOrder::Descend as i32,
                sort_target: SortTarget::Create as i32,
                limit: 1,
                max_create_revision,
                ..Default::default()
            })
            .await?;
        let Some(last) = resp.kvs.first() else {
            return Ok(resp.header.unwrap_or_default());
        };
        wait_delete(client, &last.key, crate::header_revision(&resp.header)).await?;
    }
}

/// The oldest key under `prefix` (the lock holder or the elected leader), if any.
pub(crate) async fn first_created(client: &Client, prefix: &[u8]) -> Result<RangeResponse, Error> {
    Ok(client.range(first_created_request(prefix)).await?)
}

pub(crate) fn first_created_request(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        limit: 1,
        ..Default::default()
    }
}
