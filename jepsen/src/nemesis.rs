//! Nemeses: faults injected on a schedule (quiet, fault, heal, quiet, ...), each recorded as an
//! interval for the report. Everything is healed at the end ([`Nemesis::heal_all`]) and on drop.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use cairn_tests::Cluster;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;

use crate::net::Firewall;
use crate::proxy::Proxy;

/// A fault family. Each cycle picks the next family (round robin) and one of its modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NemesisKind {
    /// kill -9 then restart on the same data dir: a random node, the leader, or a majority.
    Kill,
    /// SIGSTOP / SIGCONT: a random node or the leader.
    Pause,
    /// iptables partitions: isolate the leader, majority/minority halves, majorities ring.
    Partition,
    /// iptables random packet loss (statistic match) on every peer link.
    Loss,
    /// Delay and jitter on peer links through the userspace proxies.
    Delay,
    /// Clock skew with libfaketime (monotonic clock untouched).
    Clock,
}

impl NemesisKind {
    /// Every kind, in the order `--nemesis all` runs them and the report's legend lists them.
    pub const ALL: [NemesisKind; 6] = [
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::Partition,
        NemesisKind::Loss,
        NemesisKind::Delay,
        NemesisKind::Clock,
    ];
}

/// One fault, as the report shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Interval {
    pub kind: NemesisKind,
    pub mode: String,
    /// Node indexes (0-based) affected.
    pub nodes: Vec<usize>,
    /// Seconds since the start of the test.
    pub start_s: f64,
    pub end_s: Option<f64>,
    pub detail: String,
}

/// Timing of the nemesis schedule.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Healthy time between faults.
    pub quiet: Duration,
    /// How long each fault lasts.
    pub fault: Duration,
}

pub struct Nemesis {
    cluster: Arc<Cluster>,
    firewall: Option<Arc<Firewall>>,
    proxies: Vec<Proxy>,
    clock_files: Vec<PathBuf>,
    kinds: Vec<NemesisKind>,
    start: Instant,
    killed: Mutex<BTreeSet<usize>>,
    paused: Mutex<BTreeSet<usize>>,
    pub intervals: Mutex<Vec<Interval>>,
}

impl Nemesis {
    pub fn new(
        cluster: Arc<Cluster>,
        firewall: Option<Arc<Firewall>>,
        proxies: Vec<Proxy>,
        clock_files: Vec<PathBuf>,
        kinds: Vec<NemesisKind>,
        start: Instant,
    ) -> Nemesis {
        Nemesis {
            cluster,
            firewall,
            proxies,
            clock_files,
            kinds,
            start,
            killed: Mutex::default(),
            paused: Mutex::default(),
            intervals: Mutex::default(),
        }
    }

    fn now_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    async fn leader_or_random(&self) -> usize {
        match self.cluster.leader_within(Duration::from_secs(3)).await {
            Ok(l) => l,
            Err(_) => rand::rng().random_range(0..self.cluster.len()),
        }
    }

    fn random_nodes(&self, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..self.cluster.len()).collect();
        all.shuffle(&mut rand::rng());
        all.truncate(k);
        all.sort_unstable();
        all
    }

    /// Runs the schedule until `deadline`, then heals everything.
    pub async fn run(&self, schedule: Schedule, deadline: Instant) {
        if self.kinds.is_empty() {
            return;
        }
        let mut turn = rand::rng().random_range(0..self.kinds.len());
        let mut modes = [0usize; 6];
        loop {
            let quiet_until = Instant::now() + schedule.quiet;
            if quiet_until + Duration::from_secs(1) >= deadline {
                break;
            }
            tokio::time::sleep_until(quiet_until.into()).await;
            let kind = self.kinds[turn % self.kinds.len()];
            turn += 1;
            let m = modes[kind as usize];
            modes[kind as usize] += 1;
            let start_s = self.now_s();
            let (mode, nodes, detail) = match self.inject(kind, m).await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("cairn-jepsen: nemesis {kind:?} failed to start: {e:#}");
                    (String::from("error"), Vec::new(), format!("{e:#}"))
                }
            };
            let idx = {
                let mut iv = self.intervals.lock().unwrap_or_else(|p| p.into_inner());
                iv.push(Interval { kind, mode, nodes, start_s, end_s: None, detail });
                iv.len() - 1
            };
            let until = (Instant::now() + schedule.fault).min(deadline);
            tokio::time::sleep_until(until.into()).await;
            if let Err(e) = self.heal(kind).await {
                eprintln!("cairn-jepsen: healing {kind:?} failed: {e:#}");
            }
            let end = self.now_s();
            self.intervals.lock().unwrap_or_else(|p| p.into_inner())[idx].end_s = Some(end);
            if Instant::now() >= deadline {
                break;
            }
        }
        self.heal_all().await;
    }

    /// Starts one fault; returns (mode, nodes, detail).
    async fn inject(&self, kind: NemesisKind, turn: usize) -> Result<(String, Vec<usize>, String)> {
        let n = self.cluster.len();
        let majority = n / 2 + 1;
        match kind {
            NemesisKind::Kill => {
                let (mode, nodes) = match turn % 3 {
                    0 => ("random", self.random_nodes(1)),
                    1 => ("leader", vec![self.leader_or_random().await]),
                    _ => ("majority", self.random_nodes(majority)),
                };
                for &i in &nodes {
                    self.cluster.kill(i)?;
                    self.killed.lock().unwrap_or_else(|p| p.into_inner()).insert(i);
                }
                Ok((mode.into(), nodes, "SIGKILL".into()))
            }
            NemesisKind::Pause => {
                let (mode, nodes) = match turn % 2 {
                    0 => ("random", self.random_nodes(1)),
                    _ => ("leader", vec![self.leader_or_random().await]),
                };
                for &i in &nodes {
                    if self.cluster.is_running(i) {
                        self.cluster.pause(i)?;
                        self.paused.lock().unwrap_or_else(|p| p.into_inner()).insert(i);
                    }
                }
                Ok((mode.into(), nodes, "SIGSTOP".into()))
            }
            NemesisKind::Partition => {
                let fw = self.firewall()?;
                match turn % 3 {
                    0 => {
                        let l = self.leader_or_random().await;
                        fw.split(&[l], n)?;
                        Ok(("isolate-leader".into(), vec![l], format!("n{} alone", l + 1)))
                    }
                    1 => {
                        let minority = self.random_nodes(n - majority);
                        fw.split(&minority, n)?;
                        Ok((
                            "majority-minority".into(),
                            minority.clone(),
                            format!("minority {:?}", minority.iter().map(|i| i + 1).collect::<Vec<_>>()),
                        ))
                    }
                    _ => {
                        let cut = ring_cuts(n, &self.random_nodes(n));
                        for &(a, b) in &cut {
                            fw.cut(a, b)?;
                        }
                        let desc: Vec<String> =
                            cut.iter().map(|(a, b)| format!("n{}-n{}", a + 1, b + 1)).collect();
                        Ok(("majorities-ring".into(), (0..n).collect(), format!("cut {}", desc.join(" "))))
                    }
                }
            }
            NemesisKind::Loss => {
                let fw = self.firewall()?;
                let p = [0.2, 0.4][turn % 2];
                fw.loss(p)?;
                Ok(("random-loss".into(), (0..n).collect(), format!("drop p={p} on every peer link")))
            }
            NemesisKind::Delay => {
                if self.proxies.is_empty() {
                    anyhow::bail!("no delay proxies (the run was started without the delay nemesis)");
                }
                if turn & 1 == 0 {
                    for p in &self.proxies {
                        p.delay.set(50, 50);
                    }
                    Ok(("all-links".into(), (0..n).collect(), "50-100 ms each way".into()))
                } else {
                    let i = self.random_nodes(1)[0];
                    self.proxies[i].delay.set(400, 200);
                    Ok(("one-node".into(), vec![i], format!("to/from n{}: 400-600 ms", i + 1)))
                }
            }
            NemesisKind::Clock => {
                if self.clock_files.is_empty() {
                    anyhow::bail!("no libfaketime files (the run was started without the clock nemesis)");
                }
                let nodes = self.random_nodes(rand::rng().random_range(1..=n));
                let mut desc = Vec::new();
                for &i in &nodes {
                    let secs: i64 = {
                        let mut rng = rand::rng();
                        let s = rng.random_range(1..=if turn & 1 == 0 { 5 } else { 60 });
                        if rng.random_bool(0.5) {
                            s
                        } else {
                            -s
                        }
                    };
                    std::fs::write(&self.clock_files[i], format!("{secs:+}\n"))?;
                    desc.push(format!("n{} {secs:+}s", i + 1));
                }
                Ok(("skew".into(), nodes, desc.join(", ")))
            }
        }
    }

    fn firewall(&self) -> Result<&Firewall> {
        self.firewall.as_deref().ok_or_else(|| anyhow::anyhow!("no firewall set up"))
    }

    async fn heal(&self, kind: NemesisKind) -> Result<()> {
        match kind {
            NemesisKind::Kill => {
                let killed: Vec<usize> =
                    std::mem::take(&mut *self.killed.lock().unwrap_or_else(|p| p.into_inner()))
                        .into_iter()
                        .collect();
                for i in killed {
                    self.cluster.restart(i)?;
                }
            }
            NemesisKind::Pause => {
                let paused: Vec<usize> =
                    std::mem::take(&mut *self.paused.lock().unwrap_or_else(|p| p.into_inner()))
                        .into_iter()
                        .collect();
                for i in paused {
                    if self.cluster.is_running(i) {
                        self.cluster.resume(i)?;
                    }
                }
            }
            NemesisKind::Partition | NemesisKind::Loss => self.firewall()?.heal()?,
            NemesisKind::Delay => {
                for p in &self.proxies {
                    p.delay.set(0, 0);
                }
            }
            NemesisKind::Clock => {
                for f in &self.clock_files {
                    std::fs::write(f, "+0\n")?;
                }
            }
        }
        Ok(())
    }

    /// Heals every fault (errors are printed, the rest still healed).
    pub async fn heal_all(&self) {
        for kind in [
            NemesisKind::Pause,
            NemesisKind::Partition,
            NemesisKind::Delay,
            NemesisKind::Clock,
            NemesisKind::Kill,
        ] {
            if let Err(e) = self.heal(kind).await {
                if self.kinds.contains(&kind) {
                    eprintln!("cairn-jepsen: healing {kind:?}: {e:#}");
                }
            }
        }
    }

    pub fn intervals(&self) -> Vec<Interval> {
        self.intervals.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Nemesis {
    fn drop(&mut self) {
        // Synchronous part of heal_all: resume paused nodes, drop rules.
        for i in std::mem::take(&mut *self.paused.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = self.cluster.resume(i);
        }
        if let Some(fw) = &self.firewall {
            let _ = fw.heal();
        }
    }
}

/// Links to cut so that, in the ring order `perm`, every node still reaches a majority (itself
/// and its nearest neighbours) but no two nodes agree on which majority: Jepsen's
/// "majorities ring". With 3 nodes: one cut link.
pub fn ring_cuts(n: usize, perm: &[usize]) -> Vec<(usize, usize)> {
    let majority = n / 2 + 1;
    // Each node keeps k neighbours on each side: 1 + 2k >= majority.
    let k = (majority - 1).div_ceil(2);
    let mut cuts = Vec::new();
    for a in 0..n {
        for b in (a + 1)..n {
            let d = b - a;
            let dist = d.min(n - d);
            if dist > k {
                cuts.push((perm[a], perm[b]));
            }
        }
    }
    if cuts.is_empty() && n == 3 {
        cuts.push((perm[0], perm[1]));
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majorities_ring_leaves_each_node_a_majority() {
        for n in [3usize, 5, 7] {
            let perm: Vec<usize> = (0..n).collect();
            let cuts = ring_cuts(n, &perm);
            assert!(!cuts.is_empty(), "n={n}");
            let mut views = Vec::new();
            for a in 0..n {
                let view: BTreeSet<usize> = (0..n)
                    .filter(|&b| a == b || !cuts.iter().any(|&(x, y)| (x, y) == (a, b) || (y, x) == (a, b)))
                    .collect();
                assert!(view.len() > n / 2, "n={n} node {a} sees {view:?}");
                views.push(view);
            }
            let distinct: BTreeSet<_> = views.iter().collect();
            assert!(distinct.len() > 1, "majorities differ");
        }
    }
}
