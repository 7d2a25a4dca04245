//! Free-port allocation for clusters started concurrently (parallel tests in one process and
//! several test processes at once).
//!
//! Candidates come from a process-wide counter seeded from the pid and the clock, inside a range
//! below Linux's ephemeral range (32768+) so outgoing connections cannot take them, and each
//! candidate is checked by binding it. There is still a window between the check and the server
//! binding the port; [`crate::Cluster::start`] retries with fresh ports when a node fails with
//! "address already in use".

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use anyhow::{bail, Result};

const LOW: u32 = 10_000;
const SPAN: u32 = 22_000; // 10000..32000

static NEXT: AtomicU32 = AtomicU32::new(0);

fn seed() -> u32 {
    static SEED: OnceLock<u32> = OnceLock::new();
    *SEED.get_or_init(|| {
        let pid = std::process::id();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        pid.wrapping_mul(7919).wrapping_add(nanos / 1000) % SPAN
    })
}

fn candidate() -> u16 {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (LOW + (seed().wrapping_add(n)) % SPAN) as u16
}

/// A port that is currently free on `ip` (checked by binding it).
pub fn free_port(ip: Ipv4Addr) -> Result<u16> {
    for _ in 0..2_000 {
        let port = candidate();
        if TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free TCP port found on {ip} after 2000 candidates")
}
