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

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_jepsen::checker::{CheckResult, Validity};
use cairn_jepsen::history::{Event, Kind};
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use cairn_raft::disk::MemoryDisk;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const PEER_PORT: u16 = 2380;
const CLIENT_PORT: u16 = 2379;

/// The faults a seed may use: each seed takes a random subset ("swarm testing": a run with
/// few kinds of faults goes deeper into each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Kill a member (its unsynced writes are lost) and restart it later.
    Crash,
    /// Every member loses power at once (unsynced writes lost everywhere), then all restart.
    PowerLoss,
    /// Cut the cluster in two.
    Partition,
    /// Hold the messages between two members, then deliver them late.
    Hold,
    /// Long, varying message delays everywhere.
    SlowNetwork,
    /// Slow fsyncs on every member's disk, for the whole run (so that they overlap the
    /// other faults: a crash during a slow sync loses more).
    SlowDisk,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Crash,
        FaultKind::PowerLoss,
        FaultKind::Partition,
        FaultKind::Hold,
        FaultKind::SlowNetwork,
        FaultKind::SlowDisk,
    ];

    /// The fault kind of this name ([`FaultKind::name`]).
    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::PowerLoss => "power-loss",
            FaultKind::Partition => "partition",
            FaultKind::Hold => "hold",
            FaultKind::SlowNetwork => "slow-network",
            FaultKind::SlowDisk => "slow-disk",
        }
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    /// Members (voters).
    pub members: usize,
    /// Concurrent clients.
    pub clients: usize,
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
            clients: 4,
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
    Heal,
    Hold(usize, usize),
    Release(usize, usize),
    SlowNetwork,
    FastNetwork,
}

/// What one seed did and whether its history is valid.
pub struct Outcome {
    pub seed: u64,
    pub faults: Vec<FaultKind>,
    /// The history (operations of the clients), in order.
    pub events: Vec<Event>,
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
        for e in &self.events {
            out.push_str(&serde_json::to_string(e).expect("events serialize"));
            out.push('\n');
        }
        out
    }
}

fn member_name(i: usize) -> String {
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
            FaultKind::Partition => {
                let mut order: Vec<usize> = (0..members).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.random_range(0..=i));
                }
                let cut = rng.random_range(1..members);
                (Nemesis::Partition(order[..cut].to_vec(), order[cut..].to_vec()), Nemesis::Heal)
            }
            FaultKind::Hold => {
                let a = rng.random_range(0..members);
                let b = (a + rng.random_range(1..members)) % members;
                (Nemesis::Hold(a, b), Nemesis::Release(a, b))
            }
            FaultKind::SlowNetwork => (Nemesis::SlowNetwork, Nemesis::FastNetwork),
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
struct World {
    disks: RefCell<Vec<MemoryDisk>>,
    events: Mutex<Vec<Event>>,
}

impl World {
    fn record(
        &self,
        kind: Kind,
        process: u64,
        f: &str,
        key: &str,
        value: Value,
        node: usize,
        error: Option<String>,
    ) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let index = events.len();
        let time = turmoil::sim_elapsed().unwrap_or_default().as_nanos() as u64;
        events.push(Event {
            index,
            kind,
            process,
            f: f.to_string(),
            key: Some(key.to_string()),
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
    let mut rng = SmallRng::seed_from_u64(opts.seed ^ 0x5eed_0f_fa17);
    let faults: Vec<FaultKind> = match &opts.faults {
        Some(kinds) => kinds.clone(),
        None => FaultKind::ALL.iter().copied().filter(|_| rng.random_bool(0.5)).collect(),
    };
    let actions = schedule(&mut rng, &faults, opts.members, opts.duration);

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
    let world = Rc::new(World {
        disks: RefCell::new((0..opts.members).map(|_| MemoryDisk::new(sync_delay.clone())).collect()),
        events: Mutex::new(Vec::new()),
    });
    let dirs: Vec<tempfile::TempDir> =
        (0..opts.members).map(|_| tempfile::tempdir().expect("a temporary directory")).collect();

    let mut sim = turmoil::Builder::new()
        .rng_seed(opts.seed)
        .tick_duration(opts.tick)
        .simulation_duration(opts.duration + Duration::from_secs(120))
        .min_message_latency(Duration::from_micros(100))
        .max_message_latency(Duration::from_millis(2))
        .build();

    let initial_cluster: Vec<(String, String)> =
        (0..opts.members).map(|i| (member_name(i), format!("{}:{PEER_PORT}", member_name(i)))).collect();
    for (i, dir) in dirs.iter().enumerate() {
        let name = member_name(i);
        let world = world.clone();
        let initial_cluster = initial_cluster.clone();
        let data_dir = dir.path().to_path_buf();
        sim.host(name.as_str(), move || {
            let disk = world.disks.borrow()[i].clone();
            let (name, initial_cluster, data_dir) =
                (member_name(i), initial_cluster.clone(), data_dir.clone());
            async move { run_member(name, initial_cluster, data_dir, disk).await }
        });
    }
    for c in 0..opts.clients {
        let world = world.clone();
        let members = opts.members;
        let duration = opts.duration;
        sim.client(format!("c{}", c + 1).as_str(), async move {
            register_client(c, members, duration, &world).await;
            Ok(())
        });
    }

    let mut nemesis = Vec::new();
    let mut next = 0;
    let mut aborted = None;
    loop {
        let now = sim.elapsed();
        while next < actions.len() && actions[next].at <= now {
            let action = &actions[next];
            nemesis.push(format!("{:>8.3}s {:?}", action.at.as_secs_f64(), action.what));
            apply(&mut sim, &world, &action.what, opts.members);
            next += 1;
        }
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

    let events = std::mem::take(&mut *world.events.lock().unwrap_or_else(|p| p.into_inner()));
    let checks = vec![cairn_jepsen::workload::register::check(&events, Duration::from_secs(30))];
    Outcome { seed: opts.seed, faults, events, nemesis, checks, aborted }
}

fn apply(sim: &mut turmoil::Sim<'_>, world: &World, what: &Nemesis, members: usize) {
    let name = member_name;
    match what {
        Nemesis::Crash(m) => {
            sim.crash(name(*m).as_str());
            // What the crashed process's disk holds now: only what was synced.
            let mut disks = world.disks.borrow_mut();
            disks[*m] = disks[*m].crashed();
        }
        Nemesis::Restart(m) => sim.bounce(name(*m).as_str()),
        Nemesis::PowerLoss => {
            let mut disks = world.disks.borrow_mut();
            for (m, disk) in disks.iter_mut().enumerate() {
                sim.crash(name(m).as_str());
                *disk = disk.crashed();
            }
        }
        Nemesis::PowerBack => {
            for m in 0..members {
                sim.bounce(name(m).as_str());
            }
        }
        Nemesis::Partition(a, b) => {
            for x in a {
                for y in b {
                    sim.partition(name(*x).as_str(), name(*y).as_str());
                }
            }
        }
        Nemesis::Heal => {
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
    }
}

/// One member's software: the Raft node on its disk, and the etcd API on its client port.
async fn run_member(
    name: String,
    initial_cluster: Vec<(String, String)>,
    data_dir: std::path::PathBuf,
    disk: MemoryDisk,
) -> turmoil::Result {
    let cfg = cairn_raft::NodeConfig {
        name: name.clone(),
        data_dir: data_dir.clone(),
        peer_listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, PEER_PORT)),
        initial_cluster,
        heartbeat_interval: Duration::from_millis(100),
        election_timeout: Duration::from_millis(1000),
        snapshot_count: 500,
        request_timeout: Duration::from_secs(5),
        join: Vec::new(),
        existing: false,
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
    let routes = cairn_api::client_routes(backend, cairn_api::Limits::default());
    let incoming = net::client_listener(CLIENT_PORT).await?;
    tonic::transport::Server::builder().add_routes(routes).serve_with_incoming(incoming).await?;
    Ok(())
}

/// Keys the register workload spreads over.
const KEYS: u64 = 3;
/// How long a client waits for one operation.
const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// A register client (the `cairn-jepsen` register workload's operations: linearizable read,
/// write, compare-and-set), recording a history the register checker reads.
async fn register_client(c: usize, members: usize, duration: Duration, world: &World) {
    let mut rng = SmallRng::seed_from_u64(cairn_core::sim::random_u64());
    let mut process = c as u64;
    let mut node = c % members;
    let mut kv = KvClient::new(net::channel(&member_name(node), CLIENT_PORT));
    while turmoil::sim_elapsed().unwrap_or_default() < duration {
        let key = format!("r{}", rng.random_range(0..KEYS));
        let (a, b) = (rng.random_range(0..5i64), rng.random_range(0..5i64));
        let choice = rng.random_range(0..4);
        let f = match choice {
            0 | 1 => "read",
            2 => "write",
            _ => "cas",
        };
        let input = match f {
            "read" => Value::Null,
            "write" => json!(a),
            _ => json!([a, b]),
        };
        world.record(Kind::Invoke, process, f, &key, input.clone(), node, None);
        let call = async {
            match f {
                "read" => {
                    let r = kv
                        .range(RangeRequest { key: key.clone().into_bytes(), ..Default::default() })
                        .await?;
                    let value =
                        r.into_inner().kvs.first().map(|kv| register_value(&kv.value)).unwrap_or(Value::Null);
                    Ok::<_, tonic::Status>(Ok(value))
                }
                "write" => {
                    kv.put(PutRequest {
                        key: key.clone().into_bytes(),
                        value: a.to_string().into_bytes(),
                        ..Default::default()
                    })
                    .await?;
                    Ok(Ok(json!(a)))
                }
                _ => {
                    let txn = TxnRequest {
                        compare: vec![Compare {
                            result: CompareResult::Equal as i32,
                            target: CompareTarget::Value as i32,
                            key: key.clone().into_bytes(),
                            target_union: Some(TargetUnion::Value(a.to_string().into_bytes())),
                            ..Default::default()
                        }],
                        success: vec![RequestOp {
                            request: Some(Op::RequestPut(PutRequest {
                                key: key.clone().into_bytes(),
                                value: b.to_string().into_bytes(),
                                ..Default::default()
                            })),
                        }],
                        failure: vec![],
                    };
                    let r = kv.txn(txn).await?.into_inner();
                    Ok(if r.succeeded { Ok(json!([a, b])) } else { Err(json!([a, b])) })
                }
            }
        };
        match tokio::time::timeout(OP_TIMEOUT, call).await {
            Ok(Ok(Ok(value))) => world.record(Kind::Ok, process, f, &key, value, node, None),
            Ok(Ok(Err(value))) => world.record(Kind::Fail, process, f, &key, value, node, None),
            outcome => {
                let error = match outcome {
                    Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
                    _ => "timed out".to_string(),
                };
                if f == "read" {
                    // A read that failed changed nothing.
                    world.record(Kind::Fail, process, f, &key, Value::Null, node, Some(error));
                } else {
                    // It may or may not have happened: this process never issues another.
                    world.record(Kind::Info, process, f, &key, input, node, Some(error));
                    process += 1000;
                }
                node = (node + 1) % members;
                kv = KvClient::new(net::channel(&member_name(node), CLIENT_PORT));
            }
        }
    }
}

fn register_value(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes).ok().and_then(|s| s.parse::<i64>().ok()) {
        Some(n) => json!(n),
        None => json!(String::from_utf8_lossy(bytes)),
    }
}
