//! Nemeses: faults injected on a schedule (quiet, fault, heal, quiet, ...), each recorded as an
//! interval for the report. Everything is healed at the end ([`Nemesis::heal_all`]) and on drop.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use cairn_tests::etcd_client::{Client, Member, MemberAddOptions};
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
    /// Membership churn: kill a member (a follower, or the leader), remove it (MemberRemove),
    /// wipe its data dir; at heal add it back as a learner (MemberAdd), start it empty with
    /// `--initial-cluster-state existing` and promote it once it has caught up.
    Member,
}

impl NemesisKind {
    /// Every kind, in the order `--nemesis all` runs them and the report's legend lists them.
    pub const ALL: [NemesisKind; 7] = [
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::Partition,
        NemesisKind::Loss,
        NemesisKind::Delay,
        NemesisKind::Clock,
        NemesisKind::Member,
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

/// What the member nemesis left to heal, one step of the re-add at a time (a heal that fails
/// part way leaves the step it reached, and [`Nemesis::heal_all`] carries on from there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MemberFault {
    /// Node `i` (member `id`) was killed; whether its removal took effect was not confirmed.
    /// The heal asks the cluster: still a member, it restarts on its data; gone, it goes on as
    /// [`MemberFault::Removed`].
    Killed { i: usize, id: u64 },
    /// Node `i` is stopped, no longer a member (it was `old`), its data dir empty.
    Removed { i: usize, old: u64 },
    /// Node `i` was added back as learner `id` and started; not promoted yet.
    Learner { i: usize, id: u64 },
}

/// How long the member nemesis keeps retrying one membership call.
const MEMBER_CALL_WITHIN: Duration = Duration::from_secs(30);

/// How a retried membership call went (for the nemesis table): `in 0.4 s`, or
/// `in 8.2 s (17 attempts, last error: etcdserver: unhealthy cluster)`.
struct Tries {
    attempts: usize,
    last_error: Option<String>,
    took: Duration,
}

impl std::fmt::Display for Tries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "in {:.1} s", self.took.as_secs_f64())?;
        match &self.last_error {
            Some(e) if self.attempts > 1 => write!(f, " ({} attempts, last error: {e})", self.attempts),
            _ => Ok(()),
        }
    }
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
    member: Mutex<Option<MemberFault>>,
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
            member: Mutex::default(),
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
        let mut modes = [0usize; NemesisKind::ALL.len()];
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
            NemesisKind::Member => self.remove_member(turn).await,
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
            NemesisKind::Member => self.readd_member().await?,
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
            NemesisKind::Member,
        ] {
            if let Err(e) = self.heal(kind).await {
                if self.kinds.contains(&kind) {
                    eprintln!("cairn-jepsen: healing {kind:?}: {e:#}");
                }
            }
        }
    }

    fn member_fault(&self) -> std::sync::MutexGuard<'_, Option<MemberFault>> {
        self.member.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `text` to the detail of the open interval of `kind` (the report's nemesis table).
    fn note(&self, kind: NemesisKind, text: &str) {
        let mut iv = self.intervals.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = iv.iter_mut().rev().find(|v| v.kind == kind && v.end_s.is_none()) {
            open.detail.push_str(text);
        }
    }

    /// Runs `call` with a client of a live node other than `except` (a different one each
    /// attempt), retrying every error until it succeeds or `within` has passed; each attempt
    /// gets at most 10 s. `call` maps errors that mean "already done" to success itself.
    /// Returns the value and how it took.
    async fn on_members<T, F, Fut>(
        &self,
        except: usize,
        within: Duration,
        what: &str,
        mut call: F,
    ) -> Result<(T, Tries)>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let start = Instant::now();
        let deadline = start + within;
        let mut attempts = 0usize;
        let mut last_error = None;
        loop {
            let others: Vec<usize> = self.cluster.live_nodes().into_iter().filter(|&j| j != except).collect();
            let err = if others.is_empty() {
                anyhow!("no live member to ask")
            } else {
                let j = others[attempts % others.len()];
                let left = deadline.saturating_duration_since(Instant::now());
                let attempt = async {
                    let c = self.cluster.client(j).await?;
                    call(c).await
                };
                match tokio::time::timeout(
                    left.clamp(Duration::from_secs(1), Duration::from_secs(10)),
                    attempt,
                )
                .await
                {
                    Ok(Ok(v)) => {
                        let tries = Tries { attempts: attempts + 1, last_error, took: start.elapsed() };
                        return Ok((v, tries));
                    }
                    Ok(Err(e)) => e.context(format!("through n{}", j + 1)),
                    Err(_) => anyhow!("through n{}: timed out", j + 1),
                }
            };
            attempts += 1;
            if Instant::now() >= deadline {
                return Err(err.context(format!("{what}: giving up after {attempts} attempts in {within:?}")));
            }
            last_error = Some(brief(&err));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The members a live node other than `except` lists.
    async fn member_list(&self, except: usize, within: Duration) -> Result<Vec<Member>> {
        let (list, _) = self
            .on_members(except, within, "member list", |mut c| async move {
                Ok(c.member_list().await?.members().to_vec())
            })
            .await?;
        Ok(list)
    }

    /// The member nemesis's fault: kill a follower (even turns, `remove-follower`) or the leader
    /// (`remove-leader`), remove it through another member, wipe its data dir.
    async fn remove_member(&self, turn: usize) -> Result<(String, Vec<usize>, String)> {
        if let Some(left) = *self.member_fault() {
            anyhow::bail!("the previous member fault is not healed yet ({left:?})");
        }
        let leader = self
            .cluster
            .leader_within(Duration::from_secs(5))
            .await
            .context("no leader to choose the member to remove by")?;
        let (mode, i) = match turn % 2 {
            0 => {
                let followers: Vec<usize> =
                    self.cluster.live_nodes().into_iter().filter(|&j| j != leader).collect();
                if followers.is_empty() {
                    anyhow::bail!("no live follower to remove");
                }
                ("remove-follower", followers[rand::rng().random_range(0..followers.len())])
            }
            _ => ("remove-leader", leader),
        };
        if !self.cluster.live_nodes().iter().any(|&j| j != i) {
            anyhow::bail!("no other live member to remove n{} through", i + 1);
        }
        let id = self.cluster.member_id(i).await.with_context(|| format!("the member id of n{}", i + 1))?;
        self.cluster.kill(i)?;
        *self.member_fault() = Some(MemberFault::Killed { i, id });
        let mut killed = String::from("killed");
        if i == leader {
            // A request sent before the others have elected a successor waits on the dead
            // leader until it times out (10 s on etcd): wait for the election instead.
            let t0 = Instant::now();
            killed = match self.cluster.leader_within(Duration::from_secs(10)).await {
                Ok(l) => format!("killed (n{} leads {:.1} s later)", l + 1, t0.elapsed().as_secs_f64()),
                Err(_) => String::from("killed (no new leader within 10 s)"),
            };
        }
        let removed = self
            .on_members(i, MEMBER_CALL_WITHIN, "member remove", |mut c| async move {
                match c.member_remove(id).await {
                    Ok(_) => Ok(()),
                    // An earlier attempt that timed out took effect.
                    Err(e) if grpc_message(&e).contains("member not found") => Ok(()),
                    Err(e) => Err(e.into()),
                }
            })
            .await;
        let ((), tries) = match removed {
            Ok(r) => r,
            Err(e) => return Err(e.context(format!("n{} (member {id:x}) killed but not removed", i + 1))),
        };
        // Wipe only once a member's list shows the removal applied: an empty data dir under a
        // member id that is still a voter would be a member that forgot its log.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listed = self.member_list(i, Duration::from_secs(5)).await;
            match listed {
                Ok(list) if !list.iter().any(|m| m.id() == id) => break,
                Ok(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                Ok(list) => anyhow::bail!(
                    "n{} (member {id:x}) killed; MemberRemove answered but it is still listed: {:x?}",
                    i + 1,
                    list.iter().map(Member::id).collect::<Vec<_>>()
                ),
                Err(e) => return Err(e.context(format!("n{} (member {id:x}) killed and removed", i + 1))),
            }
        }
        wipe_dir(self.cluster.data_dir(i))?;
        *self.member_fault() = Some(MemberFault::Removed { i, old: id });
        Ok((
            mode.into(),
            vec![i],
            format!("n{} (member {id:x}) {killed}, removed {tries}, data dir wiped", i + 1),
        ))
    }

    /// Heals the member fault, step by step (see [`MemberFault`]); a failing step is left for the
    /// next heal.
    async fn readd_member(&self) -> Result<()> {
        loop {
            let Some(fault) = *self.member_fault() else { return Ok(()) };
            let next = match self.member_step(fault).await {
                Ok(next) => next,
                Err(e) => return Err(e.context(format!("member nemesis at {fault:?}"))),
            };
            *self.member_fault() = next;
        }
    }

    /// One step of healing the member fault: the state after it (`None`: healed).
    async fn member_step(&self, fault: MemberFault) -> Result<Option<MemberFault>> {
        match fault {
            MemberFault::Killed { i, id } => {
                let list = self.member_list(i, MEMBER_CALL_WITHIN).await?;
                if list.iter().any(|m| m.id() == id) {
                    // Never removed: back on its own data, as after a kill.
                    self.cluster.restart(i)?;
                    self.note(NemesisKind::Member, "; still a member: restarted on its data");
                    return Ok(None);
                }
                wipe_dir(self.cluster.data_dir(i))?;
                Ok(Some(MemberFault::Removed { i, old: id }))
            }
            MemberFault::Removed { i, old } => {
                let url = format!("http://{}", self.cluster.advertised_peer_addr(i));
                let (members, tries) = self
                    .on_members(i, MEMBER_CALL_WITHIN, "member add", |mut c| {
                        let url = url.clone();
                        async move {
                            let learner = Some(MemberAddOptions::new().with_is_learner());
                            match c.member_add([url.as_str()], learner).await {
                                Ok(r) => {
                                    let mut all = r.member_list().to_vec();
                                    if let Some(m) = r.member() {
                                        if !all.iter().any(|x| x.id() == m.id()) {
                                            all.push(m.clone());
                                        }
                                    }
                                    Ok(all)
                                }
                                // An earlier attempt that timed out took effect: it is listed.
                                Err(e) if grpc_message(&e).contains("Peer URLs already exists") => {
                                    Ok(c.member_list().await?.members().to_vec())
                                }
                                Err(e) => Err(e.into()),
                            }
                        }
                    })
                    .await?;
                let me =
                    members.iter().find(|m| m.peer_urls().iter().any(|u| same_url(u, &url))).ok_or_else(
                        || anyhow!("MemberAdd of {url} answered, but no member has it: {members:?}"),
                    )?;
                if me.id() == old {
                    anyhow::bail!("{url} still belongs to the removed member {old:x}");
                }
                let id = me.id();
                let initial = self.initial_cluster(&members, i, id);
                self.cluster.start_added(i, &initial)?;
                self.note(NemesisKind::Member, &format!("; re-added as learner {id:x} {tries}"));
                Ok(Some(MemberFault::Learner { i, id }))
            }
            MemberFault::Learner { i, id } => {
                if !self.cluster.is_running(i) {
                    // Started with start_added before: restart keeps those flags.
                    self.cluster.restart(i)?;
                }
                let ((), tries) = self
                    .on_members(i, MEMBER_CALL_WITHIN, "member promote", |mut c| async move {
                        match c.member_promote(id).await {
                            Ok(_) => Ok(()),
                            Err(e) => {
                                let msg = grpc_message(&e);
                                // Not a learner (any more): an earlier attempt that timed out did it.
                                if msg.contains("can only promote a learner member")
                                    && !msg.contains("in sync")
                                {
                                    let list = c.member_list().await?;
                                    if list.members().iter().any(|m| m.id() == id && !m.is_learner()) {
                                        return Ok(());
                                    }
                                }
                                Err(e.into())
                            }
                        }
                    })
                    .await?;
                self.note(NemesisKind::Member, &format!(", promoted {tries}"));
                Ok(None)
            }
        }
    }

    /// ETCD_INITIAL_CLUSTER as `etcdctl member add` prints it: `name=peerURL` for every member,
    /// the new one (`id`) under node `i`'s name; a member not started yet (no name) under the
    /// name of the node with its peer URL.
    fn initial_cluster(&self, members: &[Member], i: usize, id: u64) -> String {
        let mut out = Vec::new();
        for m in members {
            for u in m.peer_urls() {
                let name = if m.id() == id {
                    self.cluster.node_name(i).to_string()
                } else if !m.name().is_empty() {
                    m.name().to_string()
                } else {
                    (0..self.cluster.len())
                        .find(|&j| same_url(u, &format!("http://{}", self.cluster.advertised_peer_addr(j))))
                        .map(|j| self.cluster.node_name(j).to_string())
                        .unwrap_or_default()
                };
                out.push(format!("{name}={u}"));
            }
        }
        out.join(",")
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

/// The message of a gRPC error status (else the error's text).
fn grpc_message(e: &cairn_tests::etcd_client::Error) -> String {
    match cairn_tests::grpc_status(e) {
        Some(s) => s.message().to_string(),
        None => e.to_string(),
    }
}

/// An error in a line: the gRPC message of the client error in it, else the whole chain.
fn brief(err: &anyhow::Error) -> String {
    err.chain()
        .find_map(|e| e.downcast_ref::<cairn_tests::etcd_client::Error>())
        .map(grpc_message)
        .unwrap_or_else(|| format!("{err:#}"))
}

/// Whether two peer URLs name the same address (`http://` and a trailing `/` optional).
fn same_url(a: &str, b: &str) -> bool {
    let bare = |u: &str| {
        let u = u.strip_prefix("http://").unwrap_or(u);
        u.strip_suffix('/').unwrap_or(u).to_string()
    };
    bare(a) == bare(b)
}

/// Empties `dir` (kept, or created with mode 0700 if missing): a node's data dir before it
/// starts again as a new member.
fn wipe_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
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
    fn wipe_dir_empties_and_keeps_the_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("n2");
        std::fs::create_dir_all(d.join("member/wal")).unwrap();
        std::fs::write(d.join("member/wal/0.wal"), b"x").unwrap();
        std::fs::write(d.join("LOCK"), b"").unwrap();
        wipe_dir(&d).unwrap();
        assert!(d.is_dir());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        let missing = tmp.path().join("n3");
        wipe_dir(&missing).unwrap();
        assert!(missing.is_dir());
    }

    #[test]
    fn peer_urls_compare_without_scheme_or_slash() {
        assert!(same_url("http://127.0.0.2:4000", "127.0.0.2:4000"));
        assert!(same_url("http://127.0.0.2:4000/", "http://127.0.0.2:4000"));
        assert!(!same_url("http://127.0.0.2:4000", "http://127.0.0.3:4000"));
    }

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
