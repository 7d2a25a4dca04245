//! Deterministic simulation of a Cairn cluster (docs/simulation.md).
//!
//! One seed decides everything: the members (the real `cairn_raft::RaftNode`, state machine,
//! MVCC store and etcd API services, on a simulated disk), the clients (etcd gRPC over the
//! simulated network), the network's delays, and the faults. All of it runs on one thread
//! under turmoil (the tokio project's simulator): a virtual clock, a simulated TCP, and a
//! tokio runtime per host seeded from the seed; [`cairn_core::sim`] makes the members' own
//! randomness and blocking work follow the seed too. So [`run`] with the same seed gives
//! the same history, byte for byte, and a failing seed is a reproducible bug report.
//!
//! **Architecture invariant:** only the runtime, clock, network and disk are simulated;
//! the code under test is the code the binary runs (reached through the seams of
//! `cairn_raft::transport`, `cairn_raft::disk` and `cairn_core::sim`).

pub mod net;
pub mod workload;

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_jepsen::checker::{CheckResult, Validity};
use cairn_jepsen::history::{Event, Kind};
use cairn_raft::disk::MemoryDisk;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use workload::Plan;
pub use workload::WorkloadKind;

const PEER_PORT: u16 = 2380;
pub(crate) const CLIENT_PORT: u16 = 2379;
/// How long a member takes at most to give up on a silent peer connection: HTTP/2
/// keepalive's interval plus its timeout (`cairn_raft::network`).
const PEER_KEEPALIVE_DETECTION: Duration = Duration::from_secs(10);
/// How long a member's supervisor waits before it restarts a member that exited (systemd's
/// `RestartSec=1`).
const SUPERVISOR_RESTART: Duration = Duration::from_secs(1);

/// The faults a seed may use: each seed takes a random subset ("swarm testing": a run with
/// few kinds of faults goes deeper into each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Kill a member (its unsynced writes are lost) and restart it later.
    Crash,
    /// Every member loses power at once (unsynced writes lost everywhere), then all restart.
    PowerLoss,
    /// Cut the cluster in two: what the two sides send each other is held until the cut
    /// heals, then delivered in order (as TCP retransmits it).
    Partition,
    /// Cut the cluster in two and drop what the sides send each other: a connection that
    /// lost a segment stays silent for good (a black-holed TCP connection), until HTTP/2
    /// keepalive gives up on it and the member reconnects.
    BlackHole,
    /// Hold the messages between two members, then deliver them late.
    Hold,
    /// Long, varying message delays everywhere.
    SlowNetwork,
    /// Slow fsyncs on every member's disk, for the whole run (so that they overlap the
    /// other faults: a crash during a slow sync loses more).
    SlowDisk,
    /// A member's monotonic clock jumps 1-6 s ahead (its runtime's clock: every timer,
    /// election timeout and lease deadline it keeps), as after a VM's stall.
    ClockJump,
    /// Kill a member, remove it (MemberRemove), wipe its disk; later add it back empty, as
    /// etcd does (MemberAdd, MemberPromote) or with `--join`.
    Member,
    /// A member's next log sync fails with an I/O error: its Raft stops (a fatal storage
    /// error), it shuts down as the binary does (exit 8), losing what was not synced, and
    /// its supervisor restarts it a second later.
    DiskFailure,
}

impl FaultKind {
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Crash,
        FaultKind::PowerLoss,
        FaultKind::Partition,
        FaultKind::BlackHole,
        FaultKind::Hold,
        FaultKind::SlowNetwork,
        FaultKind::SlowDisk,
        FaultKind::ClockJump,
        FaultKind::Member,
        FaultKind::DiskFailure,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::PowerLoss => "power-loss",
            FaultKind::Partition => "partition",
            FaultKind::BlackHole => "black-hole",
            FaultKind::Hold => "hold",
            FaultKind::SlowNetwork => "slow-network",
            FaultKind::SlowDisk => "slow-disk",
            FaultKind::ClockJump => "clock-jump",
            FaultKind::Member => "member",
            FaultKind::DiskFailure => "disk-failure",
        }
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    /// Members (voters).
    pub members: usize,
    /// Concurrent clients of each workload.
    pub clients: usize,
    /// The workloads to run (`None`: the seed chooses a non-empty subset).
    pub workloads: Option<Vec<WorkloadKind>>,
    /// Simulated time the clients run for.
    pub duration: Duration,
    /// The fault kinds to choose from (`None`: the seed chooses a subset of all of them).
    pub faults: Option<Vec<FaultKind>>,
    /// The simulated time each step advances (every host runs once per step).
    pub tick: Duration,
}

impl Options {
    pub fn new(seed: u64) -> Options {
        Options {
            seed,
            members: 3,
            clients: 3,
            workloads: None,
            duration: Duration::from_secs(3),
            faults: None,
            tick: Duration::from_millis(5),
        }
    }
}

/// A fault started or healed at a simulated time.
#[derive(Clone, Debug)]
struct Action {
    at: Duration,
    what: Nemesis,
}

#[derive(Clone, Debug)]
enum Nemesis {
    Crash(usize),
    Restart(usize),
    PowerLoss,
    PowerBack,
    Partition(Vec<usize>, Vec<usize>),
    Heal(Vec<usize>, Vec<usize>),
    BlackHole(Vec<usize>, Vec<usize>),
    Repair,
    Hold(usize, usize),
    Release(usize, usize),
    SlowNetwork,
    FastNetwork,
    /// Member `m`'s clock jumps ahead by this much.
    ClockJump(usize, Duration),
    /// The end of a clock jump's window (the member's clock stays ahead).
    ClockSettled,
    /// Kill member `m` and remove it from the cluster (run by the admin client).
    RemoveMember(usize),
    /// Add member `m` back, empty (run by the admin client, after the removal).
    ReaddMember(usize, workload::member::Readd),
    /// Member `m`'s next log sync fails.
    FailSync(usize),
    /// The end of a disk failure's window.
    DiskRecovered,
}

/// What one seed did and whether its histories are valid.
pub struct Outcome {
    pub seed: u64,
    pub faults: Vec<FaultKind>,
    /// Each workload's history (operations of its clients), in order.
    pub histories: Vec<(WorkloadKind, Vec<Event>)>,
    /// The faults applied, with their simulated times.
    pub nemesis: Vec<String>,
    pub checks: Vec<CheckResult>,
    /// The simulation itself stopped (a member's software failed): the reason.
    pub aborted: Option<String>,
}

impl Outcome {
    pub fn valid(&self) -> bool {
        self.aborted.is_none() && self.checks.iter().all(|c| c.valid != Validity::Invalid)
    }

    /// The history as JSON lines, the faults interleaved as comments: the artefact that
    /// must be identical when a seed is replayed.
    pub fn transcript(&self) -> String {
        let mut out = String::new();
        for line in &self.nemesis {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
        for (kind, events) in &self.histories {
            out.push_str(&format!("## {}\n", kind.name()));
            for e in events {
                out.push_str(&serde_json::to_string(e).expect("events serialize"));
                out.push('\n');
            }
        }
        out
    }

    /// How many operations completed `ok`, over all workloads.
    pub fn ok_operations(&self) -> usize {
        self.histories.iter().flat_map(|(_, h)| h).filter(|e| e.kind == Kind::Ok).count()
    }
}

pub(crate) fn member_name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// The seed's fault schedule: one fault at a time, each lasting 0.5–3 s, with quiet gaps (a
/// slow disk is not scheduled: it lasts the whole run).
fn schedule(rng: &mut SmallRng, kinds: &[FaultKind], members: usize, duration: Duration) -> Vec<Action> {
    let kinds: Vec<FaultKind> = kinds.iter().copied().filter(|k| *k != FaultKind::SlowDisk).collect();
    let mut actions = Vec::new();
    if kinds.is_empty() {
        return actions;
    }
    let mut t = Duration::from_millis(rng.random_range(1000..2500));
    while t < duration {
        let lasts = Duration::from_millis(rng.random_range(500..3000));
        let kind = kinds[rng.random_range(0..kinds.len())];
        let (start, end) = match kind {
            FaultKind::Crash => {
                let m = rng.random_range(0..members);
                (Nemesis::Crash(m), Nemesis::Restart(m))
            }
            FaultKind::PowerLoss => (Nemesis::PowerLoss, Nemesis::PowerBack),
            FaultKind::Partition | FaultKind::BlackHole => {
                let mut order: Vec<usize> = (0..members).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.random_range(0..=i));
                }
                let cut = rng.random_range(1..members);
                let (a, b) = (order[..cut].to_vec(), order[cut..].to_vec());
                if kind == FaultKind::Partition {
                    (Nemesis::Partition(a.clone(), b.clone()), Nemesis::Heal(a, b))
                } else {
                    (Nemesis::BlackHole(a, b), Nemesis::Repair)
                }
            }
            FaultKind::Hold => {
                let a = rng.random_range(0..members);
                let b = (a + rng.random_range(1..members)) % members;
                (Nemesis::Hold(a, b), Nemesis::Release(a, b))
            }
            FaultKind::SlowNetwork => (Nemesis::SlowNetwork, Nemesis::FastNetwork),
            FaultKind::ClockJump => {
                let m = rng.random_range(0..members);
                let by = Duration::from_millis(rng.random_range(1000..6000));
                (Nemesis::ClockJump(m, by), Nemesis::ClockSettled)
            }
            FaultKind::Member => {
                let m = rng.random_range(0..members);
                let how = if rng.random_bool(0.5) {
                    workload::member::Readd::MemberAdd
                } else {
                    workload::member::Readd::Join
                };
                (Nemesis::RemoveMember(m), Nemesis::ReaddMember(m, how))
            }
            FaultKind::DiskFailure => {
                (Nemesis::FailSync(rng.random_range(0..members)), Nemesis::DiskRecovered)
            }
            FaultKind::SlowDisk => unreachable!("a slow disk lasts the whole run: never scheduled"),
        };
        actions.push(Action { at: t, what: start });
        actions.push(Action { at: t + lasts, what: end });
        t += lasts + Duration::from_millis(rng.random_range(300..2000));
    }
    actions
}

/// The shared state of one simulation: what survives a member's crash (its disk) and what
/// the clients record.
pub(crate) struct World {
    disks: RefCell<Vec<MemoryDisk>>,
    histories: Vec<Mutex<Vec<Event>>>,
    append_keys: RefCell<workload::append::Keys>,
    watch_final: RefCell<workload::watch::Final>,
    /// Per member: how far its clock is to jump next, and the wake-up of the task in the
    /// member's runtime that moves it.
    clock_jumps: Vec<(std::cell::Cell<Duration>, tokio::sync::Notify)>,
    admin: workload::member::Admin,
    /// A new disk's fsync delays (for a wiped member).
    sync_delay: Arc<dyn Fn() -> Duration + Send + Sync>,
    data_dirs: Vec<std::path::PathBuf>,
    /// Members whose software stopped by itself (a fatal error), for the simulator to
    /// restart as a supervisor would.
    exited: RefCell<Vec<usize>>,
}

/// One workload's history.
pub(crate) struct History<'a>(&'a Mutex<Vec<Event>>);

impl World {
    /// Member `m`'s process ended without a clean stop: its disk now holds only what was
    /// synced.
    fn lose_unsynced(&self, m: usize) {
        let mut disks = self.disks.borrow_mut();
        disks[m] = disks[m].crashed();
    }

    pub(crate) fn history(&self, kind: WorkloadKind) -> History<'_> {
        History(&self.histories[kind.index()])
    }
}

impl History<'_> {
    /// Records an event at the current simulated time (`key` "": none).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        kind: Kind,
        process: u64,
        f: &str,
        key: &str,
        value: Value,
        node: usize,
        error: Option<String>,
    ) {
        let mut events = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let index = events.len();
        let time = turmoil::sim_elapsed().unwrap_or_default().as_nanos() as u64;
        events.push(Event {
            index,
            kind,
            process,
            f: f.to_string(),
            key: (!key.is_empty()).then(|| key.to_string()),
            value,
            time,
            node: Some(node),
            error,
        });
    }
}

/// Run one seed.
pub fn run(opts: &Options) -> Outcome {
    let _deterministic = cairn_core::sim::enter(opts.seed);
    let mut rng = SmallRng::seed_from_u64(opts.seed ^ 0x005e_ed0f_fa17);
    let faults: Vec<FaultKind> = match &opts.faults {
        Some(kinds) => kinds.clone(),
        None => FaultKind::ALL.iter().copied().filter(|_| rng.random_bool(0.5)).collect(),
    };
    let actions = schedule(&mut rng, &faults, opts.members, opts.duration);
    let workloads: Vec<WorkloadKind> = match &opts.workloads {
        Some(kinds) => kinds.clone(),
        None => {
            let chosen: Vec<WorkloadKind> =
                WorkloadKind::ALL.iter().copied().filter(|_| rng.random_bool(0.6)).collect();
            if chosen.is_empty() {
                vec![WorkloadKind::Register]
            } else {
                chosen
            }
        }
    };
    // For the lease checker, when each fault held expiry back. A black-holed connection
    // stays silent after the repair until HTTP/2 keepalive replaces it.
    let fault_windows: Vec<(u64, u64)> = actions
        .chunks(2)
        .map(|pair| {
            let mut end = pair[1].at;
            if matches!(pair[0].what, Nemesis::BlackHole(..)) {
                end = end.max(pair[0].at + PEER_KEEPALIVE_DETECTION);
            }
            (pair[0].at.as_nanos() as u64, end.as_nanos() as u64)
        })
        .collect();
    // The final reads wait until every fault healed and every lease had time to expire.
    let healed =
        fault_windows.iter().map(|(_, end)| Duration::from_nanos(*end)).fold(opts.duration, Duration::max);
    let clock_jumps: Vec<(u64, u64)> = actions
        .iter()
        .filter_map(|a| match a.what {
            Nemesis::ClockJump(_, by) => Some((a.at.as_nanos() as u64, by.as_nanos() as u64)),
            _ => None,
        })
        .collect();
    // With leases, the final reads also wait until every lease had time to expire (the
    // members idle meanwhile: most of a seed's cost, so only then).
    let lease_bound = workload::lease::bound(Vec::new(), Vec::new());
    let expiries = if workloads.contains(&WorkloadKind::Lease) {
        lease_bound.after_fault + Duration::from_secs(workload::lease::TTL as u64)
    } else {
        Duration::ZERO
    };
    let final_at = healed + expiries + Duration::from_secs(1);
    let plan = Plan { members: opts.members, duration: opts.duration, final_at };

    // fsync takes 0.1–1 ms, or 5–50 ms on a slow disk; drawn from the seed.
    let slow = faults.contains(&FaultKind::SlowDisk);
    let disk_rng = Arc::new(Mutex::new(SmallRng::seed_from_u64(opts.seed ^ 0xd15c)));
    let sync_delay: Arc<dyn Fn() -> Duration + Send + Sync> = {
        let rng = disk_rng.clone();
        Arc::new(move || {
            let mut rng = rng.lock().unwrap_or_else(|p| p.into_inner());
            let micros = if slow { rng.random_range(5_000..50_000) } else { rng.random_range(100..1_000) };
            Duration::from_micros(micros)
        })
    };
    let dirs: Vec<tempfile::TempDir> =
        (0..opts.members).map(|_| tempfile::tempdir().expect("a temporary directory")).collect();
    let world = Rc::new(World {
        disks: RefCell::new((0..opts.members).map(|_| MemoryDisk::new(sync_delay.clone())).collect()),
        // One more than the workloads: the member fault's history.
        histories: (0..=WorkloadKind::ALL.len()).map(|_| Mutex::new(Vec::new())).collect(),
        append_keys: RefCell::default(),
        watch_final: RefCell::default(),
        clock_jumps: (0..opts.members).map(|_| Default::default()).collect(),
        admin: workload::member::Admin::new(opts.members),
        sync_delay,
        data_dirs: dirs.iter().map(|d| d.path().to_path_buf()).collect(),
        exited: RefCell::default(),
    });

    let mut sim = turmoil::Builder::new()
        .rng_seed(opts.seed)
        .tick_duration(opts.tick)
        .simulation_duration(opts.duration + Duration::from_secs(120))
        .min_message_latency(Duration::from_micros(100))
        .max_message_latency(Duration::from_millis(2))
        .build();

    let initial_cluster: Vec<(String, String)> =
        (0..opts.members).map(|i| (member_name(i), format!("{}:{PEER_PORT}", member_name(i)))).collect();
    for i in 0..opts.members {
        let name = member_name(i);
        let world = world.clone();
        let initial_cluster = initial_cluster.clone();
        let data_dir = world.data_dirs[i].clone();
        sim.host(name.as_str(), move || {
            let disk = world.disks.borrow()[i].clone();
            let boot = world.admin.boot.borrow()[i].clone();
            let (name, initial_cluster, data_dir) =
                (member_name(i), initial_cluster.clone(), data_dir.clone());
            let span = tracing::info_span!("member", name = %name);
            let world = world.clone();
            let member = async move {
                // Jumps of this member's clock: only a task on its own runtime can move it.
                let clock = world.clone();
                tokio::task::spawn_local(async move {
                    let world = clock;
                    let (by, wake) = &world.clock_jumps[i];
                    loop {
                        wake.notified().await;
                        tokio::time::advance(by.take()).await;
                    }
                });
                let exited = run_member(name, initial_cluster, boot, data_dir, disk).await?;
                if exited {
                    world.exited.borrow_mut().push(i);
                }
                Ok(())
            };
            tracing::Instrument::instrument(member, span)
        });
    }
    for &kind in &workloads {
        for c in 0..opts.clients {
            let world = world.clone();
            let name = format!("{}{}", kind.name(), c + 1);
            sim.client(name.as_str(), async move {
                match kind {
                    WorkloadKind::Register => workload::register::client(c, plan, &world).await,
                    WorkloadKind::Lease => workload::lease::client(c, plan, &world).await,
                    WorkloadKind::Append => workload::append::client(c, plan, &world).await,
                    WorkloadKind::Lock => workload::lock::client(c, plan, &world).await,
                    WorkloadKind::Watch => workload::watch::writer(c, plan, &world).await,
                    WorkloadKind::Member => unreachable!("the member fault's admin is no workload"),
                }
                Ok(())
            });
        }
        if kind == WorkloadKind::Watch {
            for node in 0..opts.members {
                let world = world.clone();
                sim.client(format!("watcher{}", node + 1).as_str(), async move {
                    workload::watch::watcher(node, plan, &world).await;
                    Ok(())
                });
            }
        }
    }

    if faults.contains(&FaultKind::Member) {
        let world = world.clone();
        sim.client("admin", async move {
            workload::member::admin(plan, &world).await;
            Ok(())
        });
    }

    let mut nemesis = Vec::new();
    let mut next = 0;
    // Members that exited on a fatal error, and when their supervisor restarts them.
    let mut supervised: Vec<(Duration, usize)> = Vec::new();
    let mut aborted = None;
    loop {
        let now = sim.elapsed();
        while next < actions.len() && actions[next].at <= now {
            let action = &actions[next];
            nemesis.push(format!("{:>8.3}s {:?}", action.at.as_secs_f64(), action.what));
            apply(&mut sim, &world, &action.what, opts.members);
            next += 1;
        }
        serve_admin(&mut sim, &world, &mut nemesis);
        for m in std::mem::take(&mut *world.exited.borrow_mut()) {
            nemesis.push(format!("{:>8.3}s {} exited on a fatal error", now.as_secs_f64(), member_name(m)));
            world.lose_unsynced(m);
            supervised.push((now + SUPERVISOR_RESTART, m));
        }
        supervised.retain(|&(at, m)| {
            if at > now {
                return true;
            }
            // Unless another fault or the admin stopped or restarted it meanwhile.
            if world.admin.may_start(m) && !sim.is_host_running(member_name(m).as_str()) {
                nemesis.push(format!("{:>8.3}s supervisor: restart {}", now.as_secs_f64(), member_name(m)));
                sim.bounce(member_name(m).as_str());
            }
            false
        });
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                aborted = Some(e.to_string());
                break;
            }
        }
    }
    drop(sim);

    let mut histories = Vec::new();
    let mut checks = Vec::new();
    for kind in workloads {
        let events =
            std::mem::take(&mut *world.histories[kind.index()].lock().unwrap_or_else(|p| p.into_inner()));
        checks.push(match kind {
            WorkloadKind::Register => {
                cairn_jepsen::workload::register::check(&events, Duration::from_secs(30))
            }
            WorkloadKind::Lease => cairn_jepsen::checker::lease::check(
                &events,
                &workload::lease::bound(fault_windows.clone(), clock_jumps.clone()),
            ),
            WorkloadKind::Append => cairn_jepsen::checker::elle::check(&events),
            WorkloadKind::Lock => cairn_jepsen::workload::lock::check(&events),
            WorkloadKind::Watch => cairn_jepsen::workload::watch::check(&events),
            WorkloadKind::Member => unreachable!("the member fault's history is checked below"),
        });
        histories.push((kind, events));
    }
    if faults.contains(&FaultKind::Member) {
        let kind = WorkloadKind::Member;
        let events =
            std::mem::take(&mut *world.histories[kind.index()].lock().unwrap_or_else(|p| p.into_inner()));
        checks.push(workload::member::check(&events, opts.members));
        histories.push((kind, events));
    }
    Outcome { seed: opts.seed, faults, histories, nemesis, checks, aborted }
}

/// Carries out the admin client's orders: crash, wipe, start a member.
fn serve_admin(sim: &mut turmoil::Sim<'_>, world: &World, nemesis: &mut Vec<String>) {
    let at = sim.elapsed().as_secs_f64();
    for m in std::mem::take(&mut *world.admin.to_crash.borrow_mut()) {
        nemesis.push(format!("{at:>8.3}s admin: crash {}", member_name(m)));
        crash(sim, world, m);
    }
    for m in std::mem::take(&mut *world.admin.to_wipe.borrow_mut()) {
        nemesis.push(format!("{at:>8.3}s admin: wipe {}", member_name(m)));
        world.disks.borrow_mut()[m] = MemoryDisk::new(world.sync_delay.clone());
        let dir = &world.data_dirs[m];
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("a member's data directory can be made again");
    }
    for m in std::mem::take(&mut *world.admin.to_start.borrow_mut()) {
        nemesis.push(format!(
            "{at:>8.3}s admin: start {} {:?}",
            member_name(m),
            world.admin.boot.borrow()[m]
        ));
        sim.bounce(member_name(m).as_str());
    }
}

/// Kill member `m`'s process: its disk keeps only what was synced.
fn crash(sim: &mut turmoil::Sim<'_>, world: &World, m: usize) {
    sim.crash(member_name(m).as_str());
    world.lose_unsynced(m);
}

fn apply(sim: &mut turmoil::Sim<'_>, world: &World, what: &Nemesis, members: usize) {
    let name = member_name;
    match what {
        Nemesis::Crash(m) => crash(sim, world, *m),
        Nemesis::Restart(m) => {
            if world.admin.may_start(*m) {
                sim.bounce(name(*m).as_str());
            }
        }
        Nemesis::PowerLoss => {
            for m in 0..members {
                crash(sim, world, m);
            }
        }
        Nemesis::PowerBack => {
            for m in (0..members).filter(|&m| world.admin.may_start(m)) {
                sim.bounce(name(m).as_str());
            }
        }
        Nemesis::Partition(a, b) => {
            for x in a {
                for y in b {
                    sim.hold(name(*x).as_str(), name(*y).as_str());
                }
            }
        }
        Nemesis::Heal(a, b) => {
            for x in a {
                for y in b {
                    sim.release(name(*x).as_str(), name(*y).as_str());
                }
            }
        }
        Nemesis::BlackHole(a, b) => {
            for x in a {
                for y in b {
                    sim.partition(name(*x).as_str(), name(*y).as_str());
                }
            }
        }
        Nemesis::Repair => {
            for x in 0..members {
                for y in x + 1..members {
                    sim.repair(name(x).as_str(), name(y).as_str());
                }
            }
        }
        Nemesis::Hold(a, b) => sim.hold(name(*a).as_str(), name(*b).as_str()),
        Nemesis::Release(a, b) => sim.release(name(*a).as_str(), name(*b).as_str()),
        Nemesis::SlowNetwork => sim.set_max_message_latency(Duration::from_millis(300)),
        Nemesis::FastNetwork => sim.set_max_message_latency(Duration::from_millis(2)),
        Nemesis::ClockJump(m, by) => {
            let (pending, wake) = &world.clock_jumps[*m];
            pending.set(pending.get() + *by);
            wake.notify_one();
        }
        Nemesis::ClockSettled => {}
        Nemesis::FailSync(m) => world.disks.borrow()[*m].fail_next_sync(),
        Nemesis::DiskRecovered => {}
        Nemesis::RemoveMember(m) => world.admin.submit(workload::member::Job::Remove(*m)),
        Nemesis::ReaddMember(m, how) => world.admin.submit(workload::member::Job::Readd(*m, *how)),
    }
}

/// One member's software: the Raft node on its disk, and the etcd API on its client port.
/// Returns `true` when it stopped by itself on a fatal error (the binary exits 8 then).
async fn run_member(
    name: String,
    initial_cluster: Vec<(String, String)>,
    boot: workload::member::Boot,
    data_dir: std::path::PathBuf,
    disk: MemoryDisk,
) -> turmoil::Result<bool> {
    let cfg = cairn_raft::NodeConfig {
        name: name.clone(),
        data_dir: data_dir.clone(),
        peer_listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, PEER_PORT)),
        initial_cluster,
        heartbeat_interval: Duration::from_millis(100),
        election_timeout: Duration::from_millis(1000),
        snapshot_count: 500,
        request_timeout: Duration::from_secs(5),
        join: boot.join,
        existing: boot.existing,
        auto_promote: true,
        promotion: cairn_raft::Promotion::default(),
        cluster_key: cairn_raft::ClusterKey::none(),
        dead_members: None,
        peer_tls: None,
        max_request_bytes: cairn_raft::network::DEFAULT_MAX_REQUEST_BYTES,
        corrupt_check_interval: None,
        sealer: None,
        memory: Some(disk),
        transport: Some(Arc::new(net::TurmoilTransport)),
    };
    let node = cairn_raft::RaftNode::start(cfg).await.map_err(|e| format!("{name} did not start: {e}"))?;
    let backend =
        cairn::RaftBackend::serve_node(node, data_dir, vec![format!("http://{name}:{CLIENT_PORT}")]);
    let routes = cairn_api::client_routes(backend.clone(), cairn_api::Limits::default());
    let incoming = net::client_listener(CLIENT_PORT).await?;
    let serve = tonic::transport::Server::builder().add_routes(routes).serve_with_incoming(incoming);
    tokio::select! {
        served = serve => {
            served?;
            Ok(false)
        }
        why = backend.failed() => {
            // As the binary: stop the node and exit (code 8), for the supervisor to restart.
            tracing::error!("raft stopped on a fatal error: {why}");
            backend.shutdown().await;
            Ok(true)
        }
    }
}
