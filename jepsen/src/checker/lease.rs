//! Lease checker: a key attached to a lease lives exactly as long as the lease's clients
//! were promised, and not much longer.
//!
//! The history, one key per lease (its `key` field on every event):
//! - `grant` → ok `{"lease": id, "ttl": t}`; `put` (the key, attached to the lease) → ok;
//! - `keepalive` → ok `{"ttl": t}` (0: the lease no longer exists);
//! - `read` → ok `{"present": bool}` (a linearizable read of the key);
//! - `revoke` → ok.
//!
//! What must hold (times are the history's, one clock for the clients):
//! - **Not early.** An acknowledged grant or keepalive of TTL `t` invoked at `s` promises the
//!   lease until at least `s + t` (the leader renews it at or after `s`). So a read that
//!   completed before a promise ran out, and began after the put was acknowledged, sees the
//!   key, and a keepalive that completed before it finds the lease, unless a revoke was
//!   invoked first. (A promise invoked *after* the read still counts: a lease that exists
//!   later existed then, and its key goes only with it.) A lease is timed on its leader's
//!   clock: where a member's clock jumped ahead (`clock_jumps`), a promise may end early by
//!   as much as the clocks jumped before the observation.
//! - **Revoked means gone.** A read that began after a revoke was acknowledged does not see
//!   the key.
//! - **Not late.** Once the last renewal ran out (`end + t` of the last acknowledged one; an
//!   unacknowledged one may still have been applied, up to `start + after_fault`), the key is
//!   gone within `after_expiry`, except that a fault may hold expiry back (a new leader
//!   restarts every timer): a fault that starts before the deadline moves it to the fault's
//!   end plus `after_fault`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::{CheckResult, Validity};
use crate::history::{pair, Event, Kind, Op};

/// How late a key may outlive its lease.
#[derive(Clone, Debug, Default)]
pub struct Bound {
    /// The slack after the lease's last renewal ran out (expiry tick, the revoke's commit).
    pub after_expiry: Duration,
    /// The slack after a fault ends (an election, the new leader's restarted timers), and
    /// after an unacknowledged renewal's invocation (it may reach the leader that late).
    pub after_fault: Duration,
    /// Intervals (start, end) in history nanoseconds during which faults were active.
    pub faults: Vec<(u64, u64)>,
    /// Members' clocks jumping ahead: (when, by how much), in history nanoseconds.
    pub clock_jumps: Vec<(u64, u64)>,
}

impl Bound {
    /// How much earlier than promised a lease may end by `t`: the clock jumps before it.
    fn early_allowance(&self, t: u64) -> u64 {
        self.clock_jumps.iter().filter(|(at, _)| *at <= t).map(|(_, by)| by).sum()
    }
}

fn ttl_of(op: &Op) -> Option<u64> {
    op.output.get("ttl").and_then(Value::as_u64).or_else(|| op.input.get("ttl").and_then(Value::as_u64))
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Checks every lease's key in `events` (a lease workload's history).
pub fn check(events: &[Event], bound: &Bound) -> CheckResult {
    let ops = pair(events);
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &ops {
        if let Some(k) = &op.key {
            by_key.entry(k.as_str()).or_default().push(op);
        }
    }
    let mut faults = bound.faults.clone();
    faults.sort_unstable();
    let slack = bound.after_expiry.as_nanos() as u64;
    let fault_slack = bound.after_fault.as_nanos() as u64;
    let (mut anomalies, mut leases, mut reads) = (Vec::new(), 0usize, 0usize);
    for (key, ops) in &by_key {
        let of = |f: &'static str| ops.iter().copied().filter(move |o| o.f == f);
        let Some(grant) = of("grant").find(|o| o.kind == Kind::Ok) else { continue };
        leases += 1;
        let put_done = of("put").filter(|o| o.kind == Kind::Ok).filter_map(|o| o.end).min();
        // A revoke may take effect from its invocation on (unless it certainly failed).
        let revoke_from =
            of("revoke").filter(|o| o.kind != Kind::Fail).map(|o| o.start).min().unwrap_or(u64::MAX);
        let revoked_by = of("revoke").filter(|o| o.kind == Kind::Ok).filter_map(|o| o.end).min();
        let renewals: Vec<&Op> = std::iter::once(grant)
            .chain(of("keepalive").filter(|o| o.kind != Kind::Fail && ttl_of(o).is_none_or(|t| t > 0)))
            .collect();
        // The latest promise (by its invocation) and the latest possible expiry.
        let mut promised: Option<(u64, &Op)> = None;
        let mut expiry = 0u64;
        for r in &renewals {
            let Some(ttl) = ttl_of(r) else { continue };
            let ttl_ns = ttl * 1_000_000_000;
            if r.kind == Kind::Ok {
                if promised.is_none_or(|(until, _)| r.start + ttl_ns > until) {
                    promised = Some((r.start + ttl_ns, r));
                }
                expiry = expiry.max(r.end.unwrap_or(r.start) + ttl_ns);
            } else {
                expiry = expiry.max(r.start + fault_slack + ttl_ns);
            }
        }
        let mut deadline = expiry + slack;
        for &(start, end) in &faults {
            if start <= deadline {
                deadline = deadline.max(end + fault_slack);
            }
        }
        if let Some(revoked) = revoked_by {
            deadline = deadline.min(revoked);
        }
        let excerpt = |culprit: &Op| -> Value {
            let mut shown: Vec<Value> = vec![grant.to_json()];
            shown.extend(of("put").map(|o| o.to_json()));
            if let Some((_, p)) = promised {
                if !std::ptr::eq(p, grant) {
                    shown.push(p.to_json());
                }
            }
            shown.extend(of("revoke").map(|o| o.to_json()));
            shown.push(culprit.to_json());
            Value::Array(shown)
        };
        for op in ops.iter().filter(|o| o.kind == Kind::Ok) {
            let Some(end) = op.end else { continue };
            let early = |what: &str| {
                let allowance = bound.early_allowance(end);
                promised.filter(|(until, _)| end + allowance < *until && end < revoke_from).map(
                    |(until, _)| {
                        json!({
                            "key": key,
                            "anomaly": what,
                            "promised_until_s": secs(until),
                            "ops": excerpt(op),
                        })
                    },
                )
            };
            match op.f.as_str() {
                "read" => {
                    reads += 1;
                    let present = op.output.get("present").and_then(Value::as_bool).unwrap_or(false);
                    if !present && put_done.is_some_and(|done| op.start >= done) {
                        anomalies.extend(early("key gone while its lease was promised"));
                    }
                    if present && revoked_by.is_some_and(|r| op.start > r) {
                        anomalies.push(json!({
                            "key": key,
                            "anomaly": "key read after its lease's revoke was acknowledged",
                            "ops": excerpt(op),
                        }));
                    } else if present && op.start > deadline {
                        anomalies.push(json!({
                            "key": key,
                            "anomaly": "key outlived its lease by more than the bound",
                            "expired_by_s": secs(expiry),
                            "deadline_s": secs(deadline),
                            "ops": excerpt(op),
                        }));
                    }
                }
                "keepalive" if ttl_of(op) == Some(0) => {
                    anomalies.extend(early("lease gone while it was promised"));
                }
                _ => {}
            }
        }
    }
    let valid = if !anomalies.is_empty() {
        Validity::Invalid
    } else if leases == 0 || reads == 0 {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    let count = anomalies.len();
    anomalies.truncate(10);
    CheckResult::new(
        "lease",
        valid,
        json!({
            "leases": leases,
            "reads": reads,
            "anomaly_count": count,
            "anomalies": anomalies,
            "after_expiry_s": bound.after_expiry.as_secs_f64(),
            "after_fault_s": bound.after_fault.as_secs_f64(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    struct H(Vec<Event>);

    impl H {
        /// One complete operation of process `p` on key `k`, from `start` to `end` seconds.
        fn op(&mut self, p: u64, f: &str, input: Value, kind: Kind, output: Value, (start, end): (f64, f64)) {
            let mut e = |kind, value, t: f64| {
                let index = self.0.len();
                self.0.push(Event {
                    index,
                    kind,
                    process: p,
                    f: f.to_string(),
                    key: Some("k".into()),
                    value,
                    time: (t * S as f64) as u64,
                    node: None,
                    error: None,
                })
            };
            e(Kind::Invoke, input, start);
            e(kind, output, end);
        }

        fn granted(ttl: u64) -> H {
            let mut h = H(Vec::new());
            h.op(0, "grant", json!({"ttl": ttl}), Kind::Ok, json!({"lease": 7, "ttl": ttl}), (0.0, 0.1));
            h.op(0, "put", json!({"lease": 7}), Kind::Ok, json!({"lease": 7}), (0.1, 0.2));
            h
        }

        fn read(&mut self, present: bool, at: f64) {
            self.op(1, "read", json!({"lease": 7}), Kind::Ok, json!({"present": present}), (at, at + 0.01));
        }
    }

    fn bound() -> Bound {
        Bound {
            after_expiry: Duration::from_secs(2),
            after_fault: Duration::from_secs(2),
            faults: vec![],
            clock_jumps: vec![],
        }
    }

    #[test]
    fn a_key_kept_alive_that_vanishes_is_early() {
        let mut h = H::granted(2);
        h.op(0, "keepalive", json!({"lease": 7}), Kind::Ok, json!({"ttl": 2}), (1.5, 1.6));
        h.read(true, 1.0);
        h.read(false, 3.0); // promised until 3.5
        let r = check(&h.0, &bound());
        assert_eq!(r.valid, Validity::Invalid, "{}", r.details);
        assert_eq!(r.details["anomalies"][0]["anomaly"], "key gone while its lease was promised");

        // After the promise ran out it may go; a revoke invoked before may take it too.
        let mut h = H::granted(2);
        h.op(0, "keepalive", json!({"lease": 7}), Kind::Ok, json!({"ttl": 2}), (1.5, 1.6));
        h.read(false, 3.6);
        assert_eq!(check(&h.0, &bound()).valid, Validity::Valid);
        let mut h = H::granted(2);
        h.op(0, "revoke", json!({"lease": 7}), Kind::Info, Value::Null, (0.5, 0.6));
        h.read(false, 1.0);
        assert_eq!(check(&h.0, &bound()).valid, Validity::Valid);
    }

    #[test]
    fn a_clock_jump_excuses_only_as_much_early_expiry_as_it_jumped() {
        let early = |jump: f64| {
            let mut h = H::granted(2);
            h.op(0, "keepalive", json!({"lease": 7}), Kind::Ok, json!({"ttl": 2}), (1.5, 1.6));
            h.read(false, 2.5); // promised until 3.5: 1 s early (the read ends at 2.51)
            let mut b = bound();
            b.clock_jumps = vec![(S, (jump * S as f64) as u64)];
            check(&h.0, &b).valid
        };
        assert_eq!(early(0.5), Validity::Invalid);
        assert_eq!(early(1.0), Validity::Valid);
        // A jump after the observation excuses nothing.
        let mut h = H::granted(2);
        h.op(0, "keepalive", json!({"lease": 7}), Kind::Ok, json!({"ttl": 2}), (1.5, 1.6));
        h.read(false, 2.5);
        let mut b = bound();
        b.clock_jumps = vec![(3 * S, 5 * S)];
        assert_eq!(check(&h.0, &b).valid, Validity::Invalid);
    }

    #[test]
    fn a_keepalive_that_finds_no_lease_while_promised_is_early() {
        let mut h = H::granted(5);
        h.read(true, 1.0);
        h.op(0, "keepalive", json!({"lease": 7}), Kind::Ok, json!({"ttl": 0}), (2.0, 2.1));
        let r = check(&h.0, &bound());
        assert_eq!(r.details["anomalies"][0]["anomaly"], "lease gone while it was promised", "{}", r.details);
    }

    #[test]
    fn a_key_outliving_its_lease_is_late_unless_a_fault_held_it() {
        let mut h = H::granted(2);
        h.read(true, 4.5); // expiry 2.1 + slack 2 = 4.1
        let r = check(&h.0, &bound());
        assert_eq!(r.details["anomalies"][0]["anomaly"], "key outlived its lease by more than the bound");

        let mut b = bound();
        b.faults = vec![(3 * S, 4 * S)]; // starts before the deadline: deadline 6
        assert_eq!(check(&h.0, &b).valid, Validity::Valid);
        b.faults = vec![(5 * S, 9 * S)]; // starts after it: no excuse
        assert_eq!(check(&h.0, &b).valid, Validity::Invalid);
    }

    #[test]
    fn a_revoked_key_must_not_be_read() {
        let mut h = H::granted(10);
        h.op(0, "revoke", json!({"lease": 7}), Kind::Ok, json!({"lease": 7}), (0.5, 0.6));
        h.read(true, 0.7);
        let r = check(&h.0, &bound());
        assert_eq!(
            r.details["anomalies"][0]["anomaly"],
            "key read after its lease's revoke was acknowledged"
        );
    }
}
