//! Deterministic simulation support: the one switch that makes a member reproducible.
//!
//! A simulator (`cairn-sim`) runs whole members on one thread under a virtual clock. For a
//! seed to replay exactly, nothing the members do may depend on the operating system's
//! randomness or on other threads. [`enter`] installs, for the calling thread, a random
//! number generator seeded by the simulation; while it is installed:
//! - [`random_u64`] (lease ids, member ids, nonces, temporary names) and [`SimRng`] (Raft's
//!   election timeouts) draw from it;
//! - [`crate::blocking`] and [`run_blocking`] run their work inline instead of on tokio's
//!   blocking pool (a pool thread would finish at a time no seed decides).
//!
//! Outside a simulation (every real process) nothing is installed: randomness comes from
//! `rand` and blocking work goes to the pool, exactly as before this module existed.

use std::cell::RefCell;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

thread_local! {
    static SIM_RNG: RefCell<Option<SmallRng>> = const { RefCell::new(None) };
}

/// Uninstalls the simulation's generator when dropped.
#[must_use = "the simulation ends when the guard is dropped"]
pub struct SimGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for SimGuard {
    fn drop(&mut self) {
        SIM_RNG.with(|r| *r.borrow_mut() = None);
    }
}

/// Make this thread deterministic, with randomness drawn from `seed`, until the guard drops.
pub fn enter(seed: u64) -> SimGuard {
    SIM_RNG.with(|r| *r.borrow_mut() = Some(SmallRng::seed_from_u64(seed)));
    SimGuard { _not_send: std::marker::PhantomData }
}

/// Whether this thread runs a simulation.
pub fn is_simulated() -> bool {
    SIM_RNG.with(|r| r.borrow().is_some())
}

/// A random u64: from the simulation's generator when one is installed, else from `rand`.
pub fn random_u64() -> u64 {
    SIM_RNG.with(|r| match r.borrow_mut().as_mut() {
        Some(rng) => rng.random(),
        None => rand::random(),
    })
}

/// Fill `out` with random bytes (see [`random_u64`]).
pub fn fill_random(out: &mut [u8]) {
    SIM_RNG.with(|r| match r.borrow_mut().as_mut() {
        Some(rng) => rng.fill(out),
        None => rand::fill(out),
    })
}

/// A generator for code that wants a `rand::Rng`: seeded from [`random_u64`], so it is
/// reproducible in a simulation and fresh otherwise.
pub fn rng() -> SmallRng {
    SmallRng::seed_from_u64(random_u64())
}

/// Run blocking `work`: inline in a simulation, else on tokio's blocking pool. A task
/// cancelled before it ran (the runtime is stopping) is an error of kind `Interrupted`.
pub async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    if is_simulated() {
        return Ok(work());
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Ok(value),
        Err(e) if e.is_cancelled() => {
            Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "the runtime is stopping"))
        }
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_draws_and_the_guard_uninstalls_it() {
        let draws = |seed| {
            let _sim = enter(seed);
            assert!(is_simulated());
            let mut bytes = [0u8; 16];
            fill_random(&mut bytes);
            (random_u64(), random_u64(), bytes)
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        assert!(!is_simulated());
    }
}
