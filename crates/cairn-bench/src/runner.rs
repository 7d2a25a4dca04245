//! The closed-loop (or, with --rate, open-loop) client driver shared by every workload:
//! connections, the stop condition, per-client HDR histograms, the per-second timeline, the
//! progress bar and the load generator's own CPU time.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use cairn_client::Transport;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::StatusRequest;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tonic::transport::Endpoint;
use tonic::Status;

use crate::args::BenchArgs;
use crate::report::{figures, new_histogram, new_second_histogram, spectrum, Report, Second};

/// `http://host:port` for `host:port` (an explicit scheme is kept).
pub fn endpoint_url(e: &str) -> String {
    let e = e.trim();
    if e.contains("://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

/// One HTTP/2 connection to `url`.
pub async fn connect(url: &str) -> Result<Transport> {
    let channel = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("bad endpoint {url}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(cairn_client::channel_transport(channel))
}

/// `count` connections, round-robin over `urls`.
pub async fn connect_all(urls: &[String], count: usize) -> Result<Vec<Transport>> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        out.push(connect(&urls[i % urls.len()]).await?);
    }
    Ok(out)
}

/// The endpoints to load: all of them, or (--leader-only) the one whose member id is the
/// leader every answering member names.
pub async fn resolve_endpoints(args: &BenchArgs) -> Result<Vec<String>> {
    let urls: Vec<String> = args.endpoints.iter().map(|e| endpoint_url(e)).collect();
    if !args.leader_only {
        return Ok(urls);
    }
    for url in &urls {
        let Ok(ch) = connect(url).await else { continue };
        let Ok(status) = MaintenanceClient::new(ch).status(StatusRequest {}).await else { continue };
        let status = status.into_inner();
        let member = status.header.map(|h| h.member_id).unwrap_or(0);
        if status.leader != 0 && status.leader == member {
            return Ok(vec![url.clone()]);
        }
    }
    Err(anyhow!("--leader-only: no endpoint among {urls:?} says it is the leader"))
}

/// Run-wide state every client reads.
pub struct Shared {
    pub start: Instant,
    deadline: Option<Instant>,
    /// Operations still to start when --total is given (may go negative).
    remaining: Option<AtomicI64>,
    /// Successful operations so far (for the progress bar).
    pub ops: AtomicU64,
    pub errors: AtomicU64,
    /// Per-second histograms, merged into by each client when its second rolls over.
    seconds: Mutex<Vec<Histogram<u64>>>,
}

impl Shared {
    pub fn new(total: Option<u64>, duration: Option<Duration>) -> Arc<Shared> {
        let start = Instant::now();
        Arc::new(Shared {
            start,
            deadline: duration.map(|d| start + d),
            remaining: total.map(|t| AtomicI64::new(t.min(i64::MAX as u64) as i64)),
            ops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            seconds: Mutex::new(Vec::new()),
        })
    }

    /// Claims the next operation: false when the run is over.
    fn claim(&self) -> bool {
        if let Some(deadline) = self.deadline {
            if Instant::now() >= deadline {
                return false;
            }
        }
        match &self.remaining {
            Some(r) => r.fetch_sub(1, Ordering::Relaxed) > 0,
            None => true,
        }
    }

    fn merge_second(&self, second: usize, h: &Histogram<u64>) {
        let mut seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        while seconds.len() <= second {
            seconds.push(new_second_histogram());
        }
        let _ = seconds[second].add(h);
    }
}

/// What one client measured.
pub struct ClientResult {
    pub hist: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
}

impl ClientResult {
    pub fn new() -> ClientResult {
        ClientResult { hist: new_histogram(), errors: BTreeMap::new() }
    }
}

impl Default for ClientResult {
    fn default() -> Self {
        Self::new()
    }
}

/// A gRPC code's name as in the table and JSON (`Unavailable`, ...).
pub fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
}

/// One workload step. Implementations hold their clients (sharing a connection) and state.
pub trait Op: Send + 'static {
    /// Performs operation number `seq` of this client.
    fn call(&mut self, seq: u64) -> impl Future<Output = Result<(), Status>> + Send;
}

/// Runs `op` in a loop until the run is over: back to back, or every `period` (open loop,
/// latency from the scheduled start). Records each success's latency, each failure's code.
/// `histograms` are the client's own and its per-second one, made before any client starts.
async fn client_loop<O: Op>(
    shared: Arc<Shared>,
    mut op: O,
    histograms: (ClientResult, Histogram<u64>),
    period: Option<Duration>,
    timeout: Duration,
) -> ClientResult {
    let (mut result, mut second_hist) = histograms;
    let mut second = 0usize;
    let mut next = Instant::now();
    let mut seq = 0u64;
    while shared.claim() {
        let scheduled = match period {
            Some(p) => {
                next += p;
                tokio::time::sleep_until(next.into()).await;
                next
            }
            None => Instant::now(),
        };
        let outcome = tokio::time::timeout(timeout, op.call(seq)).await;
        seq += 1;
        let end = Instant::now();
        match outcome {
            Ok(Ok(())) => {
                let us = end.duration_since(scheduled).as_micros().max(1) as u64;
                result.hist.saturating_record(us);
                let s = end.duration_since(shared.start).as_secs() as usize;
                if s != second && !second_hist.is_empty() {
                    shared.merge_second(second, &second_hist);
                    second_hist.reset();
                }
                second = s;
                second_hist.saturating_record(us);
                shared.ops.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(status)) => {
                *result.errors.entry(code_name(status.code())).or_default() += 1;
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                *result.errors.entry(code_name(tonic::Code::DeadlineExceeded)).or_default() += 1;
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if !second_hist.is_empty() {
        shared.merge_second(second, &second_hist);
    }
    result
}

/// The open-loop period of one client for a total target rate, if any.
pub fn client_period(rate: Option<f64>, clients: usize) -> Option<Duration> {
    rate.map(|r| Duration::from_secs_f64(clients as f64 / r))
}

/// Spawns `ops.len()` clients and waits for them; returns the merged result and the wall
/// time and CPU time of the phase.
pub async fn run_clients<O: Op>(
    shared: &Arc<Shared>,
    ops: Vec<O>,
    period: Option<Duration>,
    timeout: Duration,
) -> Result<ClientResult> {
    // Each client's histograms take ~200 KB of zeroed memory: made inside the clients, 256 of
    // them were allocated while the first clients' requests were in flight, and the load
    // generator's own page faults showed up as the first second's tail.
    let histograms: Vec<_> = ops.iter().map(|_| (ClientResult::new(), new_second_histogram())).collect();
    let mut tasks = Vec::with_capacity(ops.len());
    for (op, histograms) in ops.into_iter().zip(histograms) {
        tasks.push(tokio::spawn(client_loop(shared.clone(), op, histograms, period, timeout)));
    }
    let mut merged = ClientResult::new();
    for t in tasks {
        let r = t.await.context("a client task panicked")?;
        merged.hist.add(&r.hist).map_err(|e| anyhow!("merging histograms: {e}"))?;
        for (code, n) in r.errors {
            *merged.errors.entry(code).or_default() += n;
        }
    }
    Ok(merged)
}

/// CPU time (user + system) of this process so far.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A progress bar on stderr, if wanted and stderr is a terminal; updated from `shared` until
/// the returned handle is finished.
pub struct Progress {
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn start(
        shared: &Arc<Shared>,
        enabled: bool,
        what: &str,
        total: Option<u64>,
        duration: Option<Duration>,
    ) -> Progress {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress { bar: None, task: None };
        }
        let (len, template) = match (total, duration) {
            (Some(t), _) => (t, "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}"),
            (None, Some(d)) => (d.as_millis() as u64, "{prefix} [{elapsed_precise}] {wide_bar} {msg}"),
            (None, None) => (0, "{prefix} [{elapsed_precise}] {spinner} {msg}"),
        };
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_prefix(what.to_string());
        let (b, s) = (bar.clone(), shared.clone());
        let by_count = total.is_some();
        let task = tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let ops = s.ops.load(Ordering::Relaxed);
                let now = Instant::now();
                let rate = (ops - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
                last = (now, ops);
                if by_count {
                    b.set_position(ops + s.errors.load(Ordering::Relaxed));
                } else {
                    b.set_position(now.duration_since(s.start).as_millis() as u64);
                }
                b.set_message(format!(
                    "{ops} ops, {rate:.0} ops/s, {} errors",
                    s.errors.load(Ordering::Relaxed)
                ));
            }
        });
        Progress { bar: Some(bar), task: Some(task) }
    }

    pub fn finish(self) {
        if let Some(t) = self.task {
            t.abort();
        }
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

/// Builds the report of a measured phase.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
pub fn build_report(
    args: &BenchArgs,
    endpoints: &[String],
    connections: usize,
    shared: &Shared,
    result: &ClientResult,
    elapsed: Duration,
    cpu: Duration,
    extra: BTreeMap<String, f64>,
) -> Report {
    let [mean_ms, p50_ms, p90_ms, p99_ms, p999_ms, max_ms] = figures(&result.hist);
    let ops = result.hist.len();
    let errors = result.errors.values().sum();
    let seconds = shared.seconds.lock().unwrap_or_else(|e| e.into_inner());
    let timeline = seconds
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let [_, p50, _, p99, _, _] = figures(h);
            Second { t_s: (i + 1) as f64, ops: h.len(), p50_ms: p50, p99_ms: p99 }
        })
        .collect();
    let duration_s = elapsed.as_secs_f64();
    Report {
        workload: args.workload.name().to_string(),
        endpoints: endpoints.to_vec(),
        clients: args.clients,
        connections,
        key_size: args.key_size,
        value_size: args.value_size,
        key_space: args.key_space,
        rate: args.rate,
        ops,
        errors,
        errors_by_code: result.errors.clone(),
        duration_s,
        ops_per_sec: if duration_s > 0.0 { ops as f64 / duration_s } else { 0.0 },
        mean_ms,
        p50_ms,
        p90_ms,
        p99_ms,
        p999_ms,
        max_ms,
        client_cpu_s: cpu.as_secs_f64(),
        extra,
        percentiles: spectrum(&result.hist),
        timeline,
    }
}
