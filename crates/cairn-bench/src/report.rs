//! The result of one run: figures from the merged HDR histogram, errors by gRPC code, a
//! per-second timeline; printed as a table or as one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, 1 µs to 10 minutes, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// The per-second histograms of the timeline (2 significant digits: enough for p50/p99 of
/// one second, a tenth of the memory).
pub(crate) fn new_second_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid histogram bounds")
}

/// One run's figures. `cairn bench --json` prints exactly this object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Report {
    pub workload: String,
    /// The endpoints actually loaded (after --leader-only).
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub connections: usize,
    pub key_size: usize,
    pub value_size: usize,
    pub key_space: u64,
    /// Target rate (ops/s), if any.
    pub rate: Option<f64>,
    /// Successful operations (watch: events delivered to watchers).
    pub ops: u64,
    /// Failed operations (any gRPC error or timeout).
    pub errors: u64,
    /// Failures by gRPC code name (`Unavailable`, `DeadlineExceeded`, ...).
    pub errors_by_code: BTreeMap<String, u64>,
    /// Wall time of the measured phase (not the prefill), seconds.
    pub duration_s: f64,
    pub ops_per_sec: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// CPU time (user + system) the load generator itself used during the measured phase,
    /// seconds: on a small machine it competes with the servers.
    pub client_cpu_s: f64,
    /// Workload-specific figures (e.g. `cas_succeeded`, `lease_grants`, `watch_puts`,
    /// `events_lost`, `prefill_keys_per_sec`).
    pub extra: BTreeMap<String, f64>,
    /// (percentile, ms) points of the latency distribution, for plots.
    pub percentiles: Vec<(f64, f64)>,
    /// One entry per second of the run.
    pub timeline: Vec<Second>,
}

/// One second of a run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Second {
    /// Seconds since the start of the measured phase (the end of this second).
    pub t_s: f64,
    pub ops: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The figures of a histogram: (mean, p50, p90, p99, p99.9, max) in ms; zeros when empty.
pub(crate) fn figures(h: &Histogram<u64>) -> [f64; 6] {
    if h.is_empty() {
        return [0.0; 6];
    }
    [
        h.mean() / 1000.0,
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
    ]
}

/// Points of the percentile spectrum, denser towards the tail (as HdrHistogram's percentile
/// plots): p = 100·(1 − 2^(−i/4)) up to 99.9999, then the max at 100.
pub(crate) fn spectrum(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for i in 0.. {
        let p = 100.0 * (1.0 - 0.5_f64.powf(f64::from(i) / 4.0));
        if p > 99.9999 {
            break;
        }
        out.push((p, ms(h.value_at_percentile(p))));
    }
    out.push((100.0, ms(h.max())));
    out
}

impl Report {
    /// The human-readable table (`cairn bench` without `--json`).
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} against {} ({} clients, {} connections, key {} B, value {} B, key space {}{})",
            self.workload,
            self.endpoints.join(","),
            self.clients,
            self.connections,
            self.key_size,
            self.value_size,
            self.key_space,
            self.rate.map(|r| format!(", target {r:.0} ops/s")).unwrap_or_default()
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "  {:<16}{:>12}", "ops", self.ops);
        let _ = writeln!(s, "  {:<16}{:>12.2}", "duration s", self.duration_s);
        let _ = writeln!(s, "  {:<16}{:>12.1}", "ops/s", self.ops_per_sec);
        let _ = writeln!(s, "  {:<16}{:>12}", "errors", self.errors);
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "  latency ms {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "mean", "p50", "p90", "p99", "p99.9", "max"
        );
        let _ = writeln!(
            s,
            "  {:<10} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            "", self.mean_ms, self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms
        );
        if !self.errors_by_code.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "  errors by code");
            for (code, n) in &self.errors_by_code {
                let _ = writeln!(s, "    {code:<20}{n:>10}");
            }
        }
        if !self.extra.is_empty() {
            let _ = writeln!(s);
            for (k, v) in &self.extra {
                let _ = writeln!(s, "  {k:<26}{v:>14.3}");
            }
        }
        let _ = writeln!(s);
        let per_op = if self.ops > 0 {
            format!(" ({:.1} µs per op)", self.client_cpu_s * 1e6 / self.ops as f64)
        } else {
            String::new()
        };
        let _ = writeln!(s, "  load generator CPU {:.2} s{per_op}", self.client_cpu_s);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_and_spectrum_of_a_known_distribution() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 10).unwrap();
        }
        let [mean, p50, p90, p99, _, max] = figures(&h);
        assert!((mean - 5.005).abs() < 0.01, "{mean}");
        assert!((p50 - 5.0).abs() < 0.01, "{p50}");
        assert!((p90 - 9.0).abs() < 0.01, "{p90}");
        assert!((p99 - 9.9).abs() < 0.01, "{p99}");
        assert!((max - 10.0).abs() < 0.01, "{max}");
        let sp = spectrum(&h);
        assert_eq!(sp.first().map(|p| p.0), Some(0.0));
        assert_eq!(sp.last().map(|p| p.0), Some(100.0));
        assert!(sp.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{sp:?}");
    }

    #[test]
    fn empty_histogram_gives_zeros() {
        assert_eq!(figures(&new_histogram()), [0.0; 6]);
        assert!(spectrum(&new_histogram()).is_empty());
    }
}
