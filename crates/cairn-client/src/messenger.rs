//! A service messenger: the product's node-to-node messages ("reload your configuration",
//! "drop this cache entry"), to one server or to all, through the cluster instead of direct
//! connections between servers.
//!
//! Each server opens an inbox: `<prefix>inbox/<server>` holds the id of a lease the server
//! keeps alive. A message to a server is a key `<prefix>msg/<server>/<id>` attached to that
//! lease, so the messages of a server that died go away with its lease, and a message to a
//! server without an inbox is refused ([`Error::NoInbox`]). The server receives its messages
//! by listing then watching its own prefix, and deletes each one when it acknowledges it:
//! a message is delivered at least once — again after a restart if it was not acknowledged
//! (while the old lease lives) — and its id lets the receiver drop a duplicate.
//!
//! Values are JSON ([`Message`]), so `etcdctl get --prefix` shows the traffic.
//!
//! ```no_run
//! # async fn demo(client: cairn_client::Client) -> Result<(), cairn_client::Error> {
//! use futures::StreamExt;
//! let messenger = cairn_client::Messenger::new(&client, "product/messages/", "server-1");
//! let inbox = messenger.open_inbox(10).await?;
//! messenger.broadcast("reload feeds").await?;
//! let mut incoming = Box::pin(inbox.messages());
//! while let Some(message) = incoming.next().await {
//!     let message = message?;
//!     println!("{} from {}: {}", message.id, message.from, message.body);
//!     inbox.ack(&message.id).await?; // not delivered again
//! }
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, WatchCreateRequest};
use cairn_proto::mvccpb::event::EventType;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::concurrency::Lease;
use crate::{prefix_end, Client, Error};

/// One message, as stored and as received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Unique per message (the sender's name, its clock, process and count): a receiver
    /// that may see a message twice remembers the ids it handled.
    pub id: String,
    /// The sending server.
    pub from: String,
    /// The receiving server.
    pub to: String,
    /// What the product sends (its own format; JSON, say).
    pub body: String,
}

/// The messenger under one key prefix, as seen by one server.
#[derive(Clone, Debug)]
pub struct Messenger {
    client: Client,
    prefix: String,
    server: String,
}

/// A server's open inbox: while it lives, messages can be sent to the server. Dropped, its
/// lease is no longer kept alive and the inbox and its messages go away after the TTL;
/// [`Inbox::close`] removes them at once.
pub struct Inbox {
    messenger: Messenger,
    lease: Lease,
}

impl Messenger {
    /// The messenger of `server` under `prefix` (e.g. `"product/messages/"`).
    pub fn new(client: &Client, prefix: impl Into<String>, server: impl Into<String>) -> Messenger {
        Messenger { client: client.clone(), prefix: prefix.into(), server: server.into() }
    }

    fn inbox_key(&self, server: &str) -> String {
        format!("{}inbox/{server}", self.prefix)
    }

    fn messages_prefix(&self, server: &str) -> String {
        format!("{}msg/{server}/", self.prefix)
    }

    /// Opens this server's inbox under a lease of `ttl` seconds, kept alive in the
    /// background. Messages sent to an earlier inbox of this server and not acknowledged
    /// (its lease still lives) move under the new lease and are received again.
    pub async fn open_inbox(&self, ttl: i64) -> Result<Inbox, Error> {
        let lease = Lease::grant(&self.client, ttl).await?;
        self.client
            .put_request(PutRequest {
                key: self.inbox_key(&self.server).into_bytes(),
                value: lease.id().to_string().into_bytes(),
                lease: lease.id(),
                ..Default::default()
            })
            .await?;
        for key in self.keys_under(&self.messages_prefix(&self.server)).await? {
            // The same value, under the new lease (a message acknowledged meanwhile is gone:
            // the put would bring it back without its value, so it is skipped).
            let moved = PutRequest { key, lease: lease.id(), ignore_value: true, ..Default::default() };
            if let Err(status) = self.client.put_request(moved).await {
                if status.code() != tonic::Code::InvalidArgument {
                    return Err(status.into());
                }
            }
        }
        Ok(Inbox { messenger: self.clone(), lease })
    }

    /// The servers with an open inbox.
    pub async fn servers(&self) -> Result<Vec<String>, Error> {
        let prefix = format!("{}inbox/", self.prefix);
        let keys = self.keys_under(&prefix).await?;
        Ok(keys.iter().map(|key| String::from_utf8_lossy(&key[prefix.len()..]).into_owned()).collect())
    }

    /// Every key under `prefix` (keys only, in key order).
    async fn keys_under(&self, prefix: &str) -> Result<Vec<Vec<u8>>, Error> {
        let range = RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            keys_only: true,
            ..Default::default()
        };
        Ok(self.client.range(range).await?.kvs.into_iter().map(|kv| kv.key).collect())
    }

    /// Sends `body` to `server`; returns the message's id. Fails with [`Error::NoInbox`]
    /// when the server has no open inbox (it is down, or never started).
    pub async fn send(&self, server: &str, body: impl Into<String>) -> Result<String, Error> {
        let inbox = self.client.get(self.inbox_key(server)).await?;
        let lease = inbox
            .kvs
            .first()
            .and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse::<i64>().ok())
            .ok_or_else(|| Error::NoInbox(server.to_string()))?;
        let message = Message {
            id: self.new_id(),
            from: self.server.clone(),
            to: server.to_string(),
            body: body.into(),
        };
        let key = format!("{}{}", self.messages_prefix(server), message.id);
        let value = serde_json::to_vec(&message).map_err(Error::Encode)?;
        match self
            .client
            .put_request(PutRequest { key: key.into_bytes(), value, lease, ..Default::default() })
            .await
        {
            Ok(_) => Ok(message.id),
            // The inbox's lease ended between the read and the put (etcd's "requested lease
            // not found", the only NotFound a put has): the server is gone.
            Err(status) if status.code() == tonic::Code::NotFound => Err(Error::NoInbox(server.to_string())),
            Err(status) => Err(status.into()),
        }
    }

    /// Sends `body` to every server with an open inbox (this one included); returns the
    /// servers it reached. A server whose inbox closes meanwhile is left out.
    pub async fn broadcast(&self, body: impl Into<String>) -> Result<Vec<String>, Error> {
        let body = body.into();
        let mut reached = Vec::new();
        for server in self.servers().await? {
            match self.send(&server, body.clone()).await {
                Ok(_) => reached.push(server),
                Err(Error::NoInbox(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(reached)
    }

    fn new_id(&self) -> String {
        static SENT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let n = SENT.fetch_add(1, Ordering::Relaxed);
        format!("{}-{nanos:x}-{:x}-{n:x}", self.server, std::process::id())
    }
}

impl Inbox {
    /// The lease the inbox lives under.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Every message to this server not yet acknowledged, then each new one, in the order
    /// they were sent; the stream ends with an error if the watch is canceled (compaction)
    /// or the cluster cannot be reached.
    pub fn messages(&self) -> impl Stream<Item = Result<Message, Error>> + Send + 'static {
        let client = self.messenger.client.clone();
        let prefix = self.messenger.messages_prefix(&self.messenger.server);
        crate::spawn_stream(move |tx| async move {
            let end = prefix_end(prefix.as_bytes());
            let pending = client
                .range(RangeRequest {
                    key: prefix.clone().into_bytes(),
                    range_end: end.clone(),
                    sort_target: cairn_proto::etcdserverpb::range_request::SortTarget::Create as i32,
                    sort_order: cairn_proto::etcdserverpb::range_request::SortOrder::Ascend as i32,
                    ..Default::default()
                })
                .await?;
            for kv in &pending.kvs {
                if tx.send(decode(&kv.value)).await.is_err() {
                    return Ok(());
                }
            }
            let from = crate::header_revision(&pending.header) + 1;
            let mut watch = client
                .watch(WatchCreateRequest {
                    key: prefix.into_bytes(),
                    range_end: end,
                    start_revision: from,
                    ..Default::default()
                })
                .await?;
            loop {
                for event in watch.next_events().await?.events {
                    let created = event.kv.as_ref().filter(|kv| kv.version == 1);
                    if event.r#type != EventType::Put as i32 {
                        continue;
                    }
                    if let Some(kv) = created {
                        if tx.send(decode(&kv.value)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        })
    }

    /// Acknowledges message `id`: it is not delivered again.
    pub async fn ack(&self, id: &str) -> Result<(), Error> {
        let key = format!("{}{id}", self.messenger.messages_prefix(&self.messenger.server));
        self.messenger
            .client
            .delete(DeleteRangeRequest { key: key.into_bytes(), ..Default::default() })
            .await?;
        Ok(())
    }

    /// Closes the inbox now: its key and every message still in it are deleted.
    pub async fn close(self) -> Result<(), Error> {
        self.lease.revoke().await
    }
}

fn decode(value: &[u8]) -> Result<Message, Error> {
    serde_json::from_slice(value).map_err(|source| Error::Decode { key: "a message".into(), source })
}
