//! How long leadership takes to move when the server holding it dies: three processes, each
//! embedding a Cairn member (one cluster) and campaigning in one [`cairn::Election`] under
//! a lease of `--ttl` seconds; the winner's process is killed (SIGKILL, no resignation), and
//! the time until another process wins is measured. The killed process is restarted on its
//! data directory before the next round. Reported apart: rounds where the killed process
//! also held the Raft leadership (a Raft election runs too) and rounds where it did not.
//!
//! `cargo run --release -p cairn --example election_handover -- [--rounds N] [--ttl S]`
//! (docs/benchmarks.md, issue 15). Expect about the lease TTL: a dead leader's lease must
//! expire before anyone else may lead, and nothing can tell a slow leader from a dead one
//! sooner.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a measuring tool: printing is its output

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        return child(&args[2..]);
    }
    let flag = |name: &str, default: u64| -> u64 {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
    };
    let (rounds, ttl) = (flag("--rounds", 8), flag("--ttl", 3));
    if rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    parent(rounds, ttl)
}

/// One member and one candidate: prints `READY`, `ROLE <raft role>` on each change and
/// `LEADER <unix ms>` when it wins the election; then holds it until killed.
fn child(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [name, dir, client, peer, cluster, ttl] = args else {
        return Err("child <name> <dir> <client> <peer> <cluster> <ttl>".into());
    };
    let ttl: i64 = ttl.parse()?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let node = cairn::Node::builder()
            .name(name.as_str())
            .data_dir(dir.as_str())
            .client_addr(client.as_str())
            .peer_addr(peer.as_str())
            .configure(|c| c.initial_cluster = Some(cluster.clone()))
            .start()
            .await?;
        println!("READY");
        let mut roles = node.roles();
        tokio::spawn(async move {
            loop {
                let role = *roles.borrow_and_update();
                println!("ROLE {role:?}");
                if roles.changed().await.is_err() {
                    return;
                }
            }
        });
        let client = node.client();
        let lease = loop {
            // Until the cluster has a leader (right after a restart) a grant can fail.
            match cairn::Lease::grant(&client, ttl).await {
                Ok(lease) => break lease,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let election = cairn::Election::new(&client, "bench/handover");
        let _leading = election.campaign(&lease, name.as_bytes().to_vec()).await?;
        println!("LEADER {}", now_ms());
        std::future::pending::<()>().await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

struct Member {
    name: String,
    args: Vec<String>,
    process: Child,
}

/// What a child printed, tagged with its index.
enum Event {
    Ready(usize),
    Role(usize, String),
    Leader(usize, u128),
}

fn spawn(i: usize, args: &[String], events: &mpsc::Sender<Event>) -> std::io::Result<Child> {
    let mut process = Command::new(std::env::current_exe()?)
        .arg("child")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = BufReader::new(process.stdout.take().expect("piped"));
    let events = events.clone();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let mut words = line.split_whitespace();
            let event = match (words.next(), words.next()) {
                (Some("READY"), _) => Event::Ready(i),
                (Some("ROLE"), Some(role)) => Event::Role(i, role.to_string()),
                (Some("LEADER"), Some(ms)) => Event::Leader(i, ms.parse().unwrap_or(0)),
                _ => continue,
            };
            if events.send(event).is_err() {
                return;
            }
        }
    });
    Ok(process)
}

/// Records `event`; a won election is returned as (member, unix ms).
fn note(
    event: Event,
    roles: &mut [String],
    ready: &mut [bool; 3],
    leader: &mut Option<usize>,
) -> Option<(usize, u128)> {
    match event {
        Event::Ready(i) => ready[i] = true,
        Event::Role(i, role) => roles[i] = role,
        Event::Leader(i, at) => {
            *leader = Some(i);
            return Some((i, at));
        }
    }
    None
}

fn free_addr() -> std::io::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}

fn parent(rounds: u64, ttl: u64) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let peers: Vec<String> = (0..3).map(|_| free_addr()).collect::<Result<_, _>>()?;
    let cluster: Vec<String> = peers.iter().enumerate().map(|(i, p)| format!("n{}={p}", i + 1)).collect();
    let (tx, events) = mpsc::channel();
    let mut members = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        let name = format!("n{}", i + 1);
        let args = vec![
            name.clone(),
            dir.path().join(&name).display().to_string(),
            free_addr()?,
            peer.clone(),
            cluster.join(","),
            ttl.to_string(),
        ];
        let process = spawn(i, &args, &tx)?;
        members.push(Member { name, args, process });
    }
    let mut roles = vec![String::new(); 3];
    let mut ready = [false; 3];
    let mut leader: Option<usize> = None;
    let wait = Duration::from_secs(60);
    // Hand-over times, [killed a Raft follower, killed the Raft leader].
    let mut samples: [Vec<u128>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        // Every member up, the Raft roles settled, and an election winner.
        let winner = loop {
            let settled = roles.iter().all(|r| r == "Leader" || r == "Follower");
            if let (Some(w), true, true) = (leader, settled, ready.iter().all(|r| *r)) {
                break w;
            }
            note(events.recv_timeout(wait)?, &mut roles, &mut ready, &mut leader);
        };
        // Let a restarted member catch up before the next kill.
        std::thread::sleep(Duration::from_secs(1));
        while let Ok(event) = events.try_recv() {
            note(event, &mut roles, &mut ready, &mut leader);
        }
        let raft_leader = roles[winner] == "Leader";
        let killed_at = now_ms();
        members[winner].process.kill()?;
        members[winner].process.wait()?;
        (roles[winner], ready[winner], leader) = (String::new(), false, None);
        let moved = loop {
            if let Some((i, at)) = note(events.recv_timeout(wait)?, &mut roles, &mut ready, &mut leader) {
                if i != winner {
                    break at.saturating_sub(killed_at);
                }
            }
        };
        eprintln!(
            "round {round}: killed {} ({}), leadership moved in {moved} ms",
            members[winner].name,
            if raft_leader { "also the Raft leader" } else { "a Raft follower" }
        );
        samples[usize::from(raft_leader)].push(moved);
        // Restart the killed member; its candidate queues behind the new winner.
        let args = members[winner].args.clone();
        members[winner].process = spawn(winner, &args, &tx)?;
    }
    for m in &mut members {
        let _ = m.process.kill();
        let _ = m.process.wait();
    }
    println!("election hand-over after a SIGKILL of the leading process, lease TTL {ttl} s:");
    for (label, mut s) in
        [("the Raft leader killed too", samples[1].clone()), ("a Raft follower killed", samples[0].clone())]
    {
        if s.is_empty() {
            println!("  {label}: no round");
            continue;
        }
        s.sort_unstable();
        println!(
            "  {label}: {} rounds, min {} ms, median {} ms, max {} ms",
            s.len(),
            s[0],
            s[s.len() / 2],
            s[s.len() - 1]
        );
    }
    Ok(())
}
