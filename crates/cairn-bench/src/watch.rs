//! Watch fan-out: `--watchers` watches on one key, all on the first endpoint, spread over
//! streams of `--watchers-per-stream`; `--clients` putters write that key (through every
//! endpoint). Each value starts with the put's sequence number, so every delivered event is
//! matched to its put: latency is from the put's acknowledgement to the event's arrival
//! (0 when the event arrives first, which happens: a member applies before the client hears
//! back from the leader).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cairn_client::Transport;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::{watch_request, PutRequest, WatchCreateRequest, WatchRequest};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tonic::Status;

use crate::args::BenchArgs;
use crate::report::new_histogram;
use crate::runner::{run_clients, ClientResult, Op, Shared};

/// The watched key.
const WATCH_KEY: &[u8] = b"cairn-bench/watch";

/// Per put sequence number: when it was acknowledged, or how many events came first.
enum Ack {
    At(Instant),
    Early(u64),
}

#[derive(Default)]
struct Acks {
    by_seq: Mutex<HashMap<u64, Ack>>,
    /// Events that arrived before their put's acknowledgement (recorded as latency 0).
    early: AtomicU64,
    delivered: AtomicU64,
    puts_acked: AtomicU64,
}

impl Acks {
    fn acked(&self, seq: u64) {
        let mut map = self.by_seq.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Ack::Early(n)) = map.insert(seq, Ack::At(Instant::now())) {
            self.early.fetch_add(n, Ordering::Relaxed);
        }
        self.puts_acked.fetch_add(1, Ordering::Relaxed);
    }

    /// The latency of an event for put `seq` arriving now, if its put was acknowledged.
    fn delivered(&self, seq: u64) -> Option<Duration> {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let mut map = self.by_seq.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(&seq) {
            Some(Ack::At(t)) => Some(t.elapsed()),
            Some(Ack::Early(n)) => {
                *n += 1;
                None
            }
            None => {
                map.insert(seq, Ack::Early(1));
                None
            }
        }
    }
}

/// Puts of the watched key, each value carrying a run-wide sequence number.
struct WatchPut {
    kv: KvClient<Transport>,
    next_seq: Arc<AtomicU64>,
    acks: Arc<Acks>,
    value_size: usize,
}

impl Op for WatchPut {
    async fn call(&mut self, _seq: u64) -> Result<(), Status> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut value = seq.to_be_bytes().to_vec();
        value.resize(self.value_size, b'v');
        self.kv.put(PutRequest { key: WATCH_KEY.to_vec(), value, ..Default::default() }).await?;
        self.acks.acked(seq);
        Ok(())
    }
}

/// Opens one stream with `count` watchers on the watched key; returns when all are created,
/// with the task that then receives events into its histogram.
async fn open_stream(
    channel: Transport,
    count: usize,
    acks: Arc<Acks>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<Histogram<u64>>>> {
    // Every create request is queued before the call: a server may send the response headers
    // only with its first message (etcd's grpc-go does), so awaiting the call on an empty
    // request stream would wait forever.
    let (tx, rx) = mpsc::channel(count.max(1));
    for _ in 0..count {
        let create = WatchCreateRequest { key: WATCH_KEY.to_vec(), ..Default::default() };
        tx.send(WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) })
            .await
            .map_err(|_| anyhow!("watch request channel closed while creating watchers"))?;
    }
    let mut client = WatchClient::new(channel);
    let mut stream = client.watch(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let mut created = 0;
    while created < count {
        match stream.message().await? {
            Some(r) if r.created => created += 1,
            Some(r) if r.canceled => bail!("watch canceled on create: {}", r.cancel_reason),
            Some(_) => {}
            None => bail!("watch stream ended while creating watchers"),
        }
    }
    Ok(tokio::spawn(async move {
        let _keep_open = tx;
        let mut hist = new_histogram();
        loop {
            let r = tokio::select! {
                _ = stop.changed() => break,
                r = stream.message() => match r? {
                    Some(r) => r,
                    None => break,
                },
            };
            for ev in r.events {
                let Some(kv) = ev.kv else { continue };
                let Some(seq) = kv.value.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
                else {
                    continue;
                };
                if let Some(latency) = acks.delivered(seq) {
                    hist.saturating_record(latency.as_micros().max(1) as u64);
                }
            }
        }
        Ok(hist)
    }))
}

/// The resident set size of process `pid` (`VmRSS` of `/proc/<pid>/status`), bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("--server-pid {pid}: reading /proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kb * 1024)
}

/// The watch workload's measured phase.
pub async fn run_watch(
    args: &BenchArgs,
    endpoints: &[String],
    channels: &[Transport],
    shared: &Arc<Shared>,
    period: Option<Duration>,
) -> Result<(ClientResult, BTreeMap<String, f64>)> {
    let acks = Arc::new(Acks::default());
    // Watchers on the first endpoint only, over their own connections (one per 100 streams).
    let streams = args.watchers.div_ceil(args.watchers_per_stream);
    let mut watch_channels = Vec::new();
    for _ in 0..streams.div_ceil(100) {
        watch_channels.push(crate::runner::connect(&endpoints[0]).await?);
    }
    let rss_before = args.server_pid.map(rss_bytes).transpose()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut receivers = Vec::new();
    let mut left = args.watchers;
    for s in 0..streams {
        let n = left.min(args.watchers_per_stream);
        left -= n;
        let ch = watch_channels[s % watch_channels.len()].clone();
        receivers.push(open_stream(ch, n, acks.clone(), stop_rx.clone()).await.context("creating watchers")?);
    }
    let rss_watchers = args.server_pid.map(rss_bytes).transpose()?;
    let next_seq = Arc::new(AtomicU64::new(0));
    let ops = (0..args.clients)
        .map(|c| WatchPut {
            kv: KvClient::new(channels[c % channels.len()].clone()),
            next_seq: next_seq.clone(),
            acks: acks.clone(),
            value_size: args.value_size,
        })
        .collect();
    let puts = run_clients(shared, ops, period, args.timeout).await?;
    // Drain: every acknowledged put must reach every watcher.
    let expected = acks.puts_acked.load(Ordering::Relaxed) * args.watchers as u64;
    let drain_until = Instant::now() + Duration::from_secs(5);
    while acks.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut result = ClientResult::new();
    result.errors = puts.errors.clone();
    let _ = stop_tx.send(true);
    for r in receivers {
        match r.await.context("a watch task panicked")? {
            Ok(h) => result.hist.add(&h).map_err(|e| anyhow!("merging histograms: {e}"))?,
            Err(e) => *result.errors.entry(format!("watch stream: {e}")).or_default() += 1,
        }
    }
    // Events that beat their put's acknowledgement: latency 0.
    let early = acks.early.load(Ordering::Relaxed);
    let delivered = acks.delivered.load(Ordering::Relaxed);
    result.hist.saturating_record_n(0, early);
    let mut extra = BTreeMap::new();
    let [_, put_p50, _, put_p99, _, _] = crate::report::figures(&puts.hist);
    extra.insert("watch_puts".into(), acks.puts_acked.load(Ordering::Relaxed) as f64);
    extra.insert("watch_put_p50_ms".into(), put_p50);
    extra.insert("watch_put_p99_ms".into(), put_p99);
    extra.insert("watchers".into(), args.watchers as f64);
    extra.insert("events_expected".into(), expected as f64);
    extra.insert("events_delivered".into(), delivered as f64);
    extra.insert("events_lost".into(), expected.saturating_sub(delivered) as f64);
    extra.insert("events_before_ack".into(), early as f64);
    if let (Some(before), Some(with)) = (rss_before, rss_watchers) {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        extra.insert("server_rss_before_mib".into(), mib(before));
        extra.insert("server_rss_watchers_mib".into(), mib(with));
        let per = (with as f64 - before as f64) / args.watchers as f64;
        extra.insert("server_bytes_per_watcher".into(), per);
    }
    Ok((result, extra))
}
