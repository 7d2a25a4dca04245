//! Watch clients: `cairn-jepsen`'s watch workload. Writers put unique values to a few keys
//! under `w/`; one watcher per member watches the prefix from revision 1 on that member,
//! resuming after the last revision it saw whenever its stream breaks (or stays silent for
//! 5 s). After every fault healed, writer 0 reads the final state, and each watcher waits
//! (up to 30 s) until it has seen the last write. Checked by `cairn-jepsen`'s watch checker:
//! ordered, gap-free, agreeing streams that end in the final state, with every acknowledged
//! write and no failed one.

use std::time::Duration;

use cairn_jepsen::history::Kind;
use cairn_jepsen::workload::watch::WATCHER_PROCESS;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest, WatchCreateRequest, WatchRequest};
use cairn_proto::mvccpb::event::EventType;
use futures::StreamExt;
use rand::Rng;
use serde_json::{json, Value};

use super::{client_rng, now, Client, Plan, WorkloadKind};
use crate::{member_name, net, World, CLIENT_PORT};

const PREFIX: &str = "w/";
/// The end of the range `PREFIX` starts.
const PREFIX_END: &str = "w0";
/// How many keys the writers spread over.
const KEYS: u64 = 4;
/// How long a watcher keeps waiting for the last write after the final read.
const CATCH_UP: Duration = Duration::from_secs(30);
/// A stream silent this long (its member paused, cut off or gone) is opened again.
const SILENCE: Duration = Duration::from_secs(5);

/// (revision, key, value or `None` for a delete)
type Seen = Vec<(i64, String, Option<String>)>;

/// What writer 0's final read found: the revision of the last write under the prefix.
#[derive(Default)]
pub(crate) struct Final {
    last_write: Option<i64>,
}

pub(crate) async fn writer(c: usize, plan: Plan, world: &World) {
    let mut rng = client_rng();
    let mut client = Client::new(world, WorkloadKind::Watch, 400 + c as u64, c % plan.members, plan.members);
    let mut n = 0u64;
    while now() < plan.duration {
        n += 1;
        // Unique over all writers: the checker finds each acknowledged value in the events.
        let value = c as u64 * 1_000_000 + n;
        let key = format!("{PREFIX}{}", rng.random_range(0..KEYS));
        let k = key.clone().into_bytes();
        client
            .op("write", &key, json!(value), false, |mut conn| async move {
                let put = PutRequest { key: k, value: value.to_string().into_bytes(), ..Default::default() };
                let r = conn.kv.put(put).await;
                (conn, r.map(|_| json!(value)))
            })
            .await;
    }
    if c != 0 {
        return;
    }
    if let Some(wait) = plan.final_at.checked_sub(now()) {
        tokio::time::sleep(wait).await;
    }
    for _ in 0..10 {
        let read = client
            .op("final-read", "", Value::Null, true, |mut conn| async move {
                let range = RangeRequest {
                    key: PREFIX.as_bytes().to_vec(),
                    range_end: PREFIX_END.as_bytes().to_vec(),
                    ..Default::default()
                };
                let r = conn.kv.range(range).await.map(|r| {
                    let kvs = r.into_inner().kvs;
                    // The writers only put: the newest mod revision under the prefix is the
                    // last event every watcher must reach (the store's own revision also
                    // counts the other workloads' writes, which no watcher sees).
                    let last = kvs.iter().map(|kv| kv.mod_revision).max().unwrap_or(0);
                    let map: serde_json::Map<String, Value> = kvs
                        .iter()
                        .map(|kv| {
                            (
                                String::from_utf8_lossy(&kv.key).to_string(),
                                json!([String::from_utf8_lossy(&kv.value), kv.mod_revision]),
                            )
                        })
                        .collect();
                    json!({ "revision": last, "kvs": map })
                });
                (conn, r)
            })
            .await;
        if let Some(read) = read {
            world.watch_final.borrow_mut().last_write = read["revision"].as_i64();
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Whether a watcher is done: it has the final read's last write, or gave up waiting.
fn finished(plan: Plan, world: &World, seen: &Seen) -> bool {
    let caught_up =
        world.watch_final.borrow().last_write.is_some_and(|t| seen.last().map_or(0, |e| e.0) >= t);
    caught_up || now() >= plan.final_at + CATCH_UP
}

/// The watcher of member `node`: its events, recorded as one `watch` operation that completes
/// when it has caught up with the final read (or gave up waiting).
pub(crate) async fn watcher(node: usize, plan: Plan, world: &World) {
    let history = world.history(WorkloadKind::Watch);
    let process = WATCHER_PROCESS + node as u64;
    let start_revision = 1;
    history.record(
        Kind::Invoke,
        process,
        "watch",
        "",
        json!({ "start_revision": start_revision }),
        node,
        None,
    );
    let mut seen: Seen = Vec::new();
    let mut reconnects = 0u64;
    let mut first = true;
    while !finished(plan, world, &seen) {
        if !first {
            reconnects += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        first = false;
        let next = seen.last().map_or(start_revision, |e| e.0 + 1);
        follow(node, next, plan, world, &mut seen).await;
    }
    let events: Vec<Value> = seen.iter().map(|(r, k, v)| json!([r, k, v])).collect();
    history.record(
        Kind::Ok,
        process,
        "watch",
        "",
        json!({ "start_revision": start_revision, "events": events, "reconnects": reconnects }),
        node,
        None,
    );
}

/// One watch stream on member `node` from revision `next`, until it breaks, goes silent, or
/// the watcher has caught up.
async fn follow(node: usize, next: i64, plan: Plan, world: &World, seen: &mut Seen) {
    let mut watch = WatchClient::new(net::channel(&member_name(node), CLIENT_PORT));
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: PREFIX.as_bytes().to_vec(),
            range_end: PREFIX_END.as_bytes().to_vec(),
            start_revision: next,
            progress_notify: true,
            ..Default::default()
        })),
    };
    // The request stream stays open after the create (a closed one ends the watch).
    let requests = futures::stream::iter([create]).chain(futures::stream::pending());
    let opened = tokio::time::timeout(SILENCE, watch.watch(requests)).await;
    let Ok(Ok(stream)) = opened else { return };
    let mut stream = stream.into_inner();
    while !finished(plan, world, seen) {
        let message = match tokio::time::timeout(SILENCE, stream.message()).await {
            Ok(Ok(Some(m))) => m,
            _ => return,
        };
        if message.canceled {
            return;
        }
        for event in message.events {
            let Some(kv) = event.kv else { continue };
            let value = match EventType::try_from(event.r#type) {
                Ok(EventType::Delete) => None,
                _ => Some(String::from_utf8_lossy(&kv.value).to_string()),
            };
            seen.push((kv.mod_revision, String::from_utf8_lossy(&kv.key).to_string(), value));
        }
    }
}
