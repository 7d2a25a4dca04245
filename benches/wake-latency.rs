//! How long it takes to wake a sleeping thread on this machine: the cost every hand-off
//! between threads pays on a put's way (gRPC, the Raft core, the log syncer, replication,
//! the state machine). Built and run by `benches/wake-latency.sh`; std only.
//!
//! Prints the p50/p90 of a round trip between two threads that sleep while they wait
//! (two wake-ups, as a tokio worker or the log syncer thread does) and of one between two
//! threads that spin (no wake-up: the floor).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const ROUNDS: usize = 20_000;

fn report(what: &str, mut nanos: Vec<u64>) {
    nanos.sort_unstable();
    let at = |q: usize| nanos[nanos.len() * q / 100] as f64 / 1000.0;
    println!("{what}: p50 {:.1} µs, p90 {:.1} µs", at(50), at(90));
}

fn sleeping_round_trips() -> Vec<u64> {
    let (to_echo, echo_in) = mpsc::channel::<u64>();
    let (echo_out, back) = mpsc::channel::<u64>();
    let echo = std::thread::spawn(move || {
        while let Ok(v) = echo_in.recv() {
            let _ = echo_out.send(v);
        }
    });
    let mut nanos = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS as u64 {
        // Let the echo thread (and its vCPU) go idle first, as between two puts.
        let idle = Instant::now();
        while idle.elapsed() < Duration::from_micros(200) {
            std::hint::spin_loop();
        }
        let started = Instant::now();
        to_echo.send(i).expect("echo thread alive");
        back.recv().expect("echo thread alive");
        nanos.push(started.elapsed().as_nanos() as u64);
    }
    drop(to_echo);
    echo.join().expect("echo thread");
    nanos
}

fn spinning_round_trips() -> Vec<u64> {
    const STOP: u64 = u64::MAX;
    // Odd: a ping waiting for its pong; the echo answers by adding one.
    let cell = Arc::new(AtomicU64::new(0));
    let echo_cell = cell.clone();
    let echo = std::thread::spawn(move || loop {
        let v = echo_cell.load(Ordering::Acquire);
        if v == STOP {
            return;
        }
        if v % 2 == 1 {
            echo_cell.store(v + 1, Ordering::Release);
        }
        std::hint::spin_loop();
    });
    let mut nanos = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS as u64 {
        let ping = 2 * i + 1;
        let started = Instant::now();
        cell.store(ping, Ordering::Release);
        while cell.load(Ordering::Acquire) != ping + 1 {
            std::hint::spin_loop();
        }
        nanos.push(started.elapsed().as_nanos() as u64);
    }
    cell.store(STOP, Ordering::Release);
    echo.join().expect("echo thread");
    nanos
}

fn main() {
    report("round trip, sleeping threads (two wake-ups)", sleeping_round_trips());
    report("round trip, spinning threads (no wake-up)", spinning_round_trips());
}
