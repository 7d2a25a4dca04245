//! Membership changes (the `member` fault), as `cairn-jepsen`'s member nemesis makes them:
//! kill a member, remove it through another one (MemberRemove), wipe its disk; later add it
//! back empty, either etcd's way (MemberAdd as a learner, start it with
//! `--initial-cluster-state existing`, MemberPromote once it caught up) or Cairn's (start it
//! with `--join`: the leader adds it as a learner and promotes it). The other workloads run
//! throughout; after the run every member must list the same members: every one of the
//! cluster's, each a voter; MemberAdd never hands out a removed member's id.
//!
//! The membership calls run in the simulation, on the `admin` client; only the simulator can
//! crash and start a host, so the admin asks it to (`Admin::to_crash`, `Admin::to_start`).

use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use cairn_jepsen::checker::{CheckResult, Validity};
use cairn_jepsen::history::{pair, Event, Kind};
use cairn_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
};
use serde_json::{json, Value};

use super::{now, Client, Plan, WorkloadKind};
use crate::{member_name, World, PEER_PORT};

/// The admin's process id in the member history.
const PROCESS: u64 = 500;
/// How long one membership step keeps retrying.
const STEP_WITHIN: Duration = Duration::from_secs(30);
/// How long a learner may take to catch up before its promotion.
const PROMOTE_WITHIN: Duration = Duration::from_secs(60);

/// One scheduled membership change.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Job {
    Remove(usize),
    /// Add the member back: etcd's way (`MemberAdd`, `existing`, `MemberPromote`) or with
    /// `--join`.
    Readd(usize, Readd),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Readd {
    MemberAdd,
    Join,
}

/// Where a member stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// A member, running unless another fault stopped it.
    In,
    /// Killed for removal; whether MemberRemove took effect is not known yet.
    Killed { id: u64 },
    /// Removed, its disk wiped, stopped.
    Removed { old: u64 },
}

/// How a member's software starts (read at every start; ignored once its disk holds its
/// member id).
#[derive(Clone, Debug, Default)]
pub(crate) struct Boot {
    /// Added with MemberAdd: `--initial-cluster-state existing`.
    pub existing: bool,
    /// `--join` these peer addresses.
    pub join: Vec<String>,
}

/// The membership changes' shared state: the admin's queue, each member's state and boot
/// configuration, and the simulator's orders.
pub(crate) struct Admin {
    jobs: RefCell<VecDeque<Job>>,
    wake: tokio::sync::Notify,
    pub state: RefCell<Vec<State>>,
    pub boot: RefCell<Vec<Boot>>,
    /// Members the simulator is to crash (their disk keeping only what was synced).
    pub to_crash: RefCell<Vec<usize>>,
    /// Members the simulator is to start.
    pub to_start: RefCell<Vec<usize>>,
    /// Members whose disk and data directory the simulator is to wipe.
    pub to_wipe: RefCell<Vec<usize>>,
}

impl Admin {
    pub fn new(members: usize) -> Admin {
        Admin {
            jobs: RefCell::default(),
            wake: tokio::sync::Notify::new(),
            state: RefCell::new(vec![State::In; members]),
            boot: RefCell::new(vec![Boot::default(); members]),
            to_crash: RefCell::default(),
            to_start: RefCell::default(),
            to_wipe: RefCell::default(),
        }
    }

    pub fn submit(&self, job: Job) {
        self.jobs.borrow_mut().push_back(job);
        self.wake.notify_one();
    }

    /// Whether the simulator may start member `m` after another fault (a member being
    /// removed stays down until the admin starts it).
    pub fn may_start(&self, m: usize) -> bool {
        self.state.borrow()[m] == State::In
    }
}

fn peer_addr(m: usize) -> String {
    format!("{}:{PEER_PORT}", member_name(m))
}

fn is_member(member: &Member, m: usize) -> bool {
    let addr = peer_addr(m);
    member.name == member_name(m)
        || member.peer_ur_ls.iter().any(|u| u.trim_start_matches("http://").trim_end_matches('/') == addr)
}

fn list_json(members: &[Member]) -> Value {
    let mut listed: Vec<Value> = members
        .iter()
        .map(|m| {
            json!({ "id": format!("{:x}", m.id), "name": m.name, "learner": m.is_learner,
                    "peers": m.peer_ur_ls })
        })
        .collect();
    listed.sort_by_key(|v| v["id"].as_str().unwrap_or_default().to_string());
    Value::Array(listed)
}

fn from_json(listed: &Value) -> Vec<Member> {
    let Some(listed) = listed.as_array() else { return Vec::new() };
    listed
        .iter()
        .filter_map(|m| {
            Some(Member {
                id: u64::from_str_radix(m["id"].as_str()?, 16).ok()?,
                name: m["name"].as_str()?.to_string(),
                is_learner: m["learner"].as_bool()?,
                peer_ur_ls: m["peers"]
                    .as_array()?
                    .iter()
                    .filter_map(|u| u.as_str().map(str::to_string))
                    .collect(),
                ..Default::default()
            })
        })
        .collect()
}

/// Gives the simulator a step to act on an order.
async fn let_simulator_act() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Has the simulator wipe member `m`'s disk and data directory.
async fn wipe(admin: &Admin, m: usize) {
    admin.to_wipe.borrow_mut().push(m);
    let_simulator_act().await;
}

/// Before another attempt: false once `deadline` passed, else after a pause.
async fn again(deadline: Duration) -> bool {
    if now() >= deadline {
        return false;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    true
}

impl Client<'_> {
    /// The member list, as the member this client talks to answers it.
    async fn member_list(&mut self) -> Option<Vec<Member>> {
        let value = self
            .op("member-list", "", Value::Null, true, |mut conn| async move {
                let r = conn.cluster.member_list(MemberListRequest { linearizable: true }).await;
                (conn, r.map(|r| list_json(&r.into_inner().members)))
            })
            .await?;
        Some(from_json(&value))
    }

    /// Member `m`'s id, asked of another member (`Some(None)`: not listed; `None`: no one
    /// answered in time).
    async fn id_of(&mut self, m: usize, within: Duration) -> Option<Option<u64>> {
        let deadline = now() + within;
        loop {
            self.avoid(m);
            if let Some(list) = self.member_list().await {
                return Some(list.iter().find(|x| is_member(x, m)).map(|x| x.id));
            }
            if !again(deadline).await {
                return None;
            }
        }
    }

    /// Kills member `m`, removes it, and wipes it once the removal shows.
    async fn remove(&mut self, m: usize) -> State {
        let Some(Some(id)) = self.id_of(m, STEP_WITHIN).await else {
            // No one answered (or it is not listed): the member is left alone.
            return State::In;
        };
        // From here on only the admin starts it again.
        self.admin().state.borrow_mut()[m] = State::Killed { id };
        self.admin().to_crash.borrow_mut().push(m);
        let_simulator_act().await;
        let deadline = now() + STEP_WITHIN;
        loop {
            self.avoid(m);
            let input = json!({ "member": member_name(m), "id": format!("{id:x}") });
            let done = self
                .op("remove", "", input, false, move |mut conn| async move {
                    let r = conn.cluster.member_remove(MemberRemoveRequest { id }).await;
                    let r = match r {
                        // An earlier attempt that timed out took effect.
                        Err(s) if s.code() == tonic::Code::NotFound => Ok(json!("gone")),
                        r => r.map(|_| json!("removed")),
                    };
                    (conn, r)
                })
                .await;
            if done.is_some() {
                break;
            }
            if !again(deadline).await {
                return State::Killed { id };
            }
        }
        // Wipe only once a member list shows the removal applied: an empty disk under a
        // member id that still votes would be a member that forgot its log.
        let deadline = now() + STEP_WITHIN;
        loop {
            if self.id_of(m, STEP_WITHIN).await == Some(None) {
                wipe(self.admin(), m).await;
                return State::Removed { old: id };
            }
            if !again(deadline).await {
                return State::Killed { id };
            }
        }
    }

    /// Brings member `m` back: as it was if its removal never took effect, else empty, added
    /// `how`, and promoted.
    async fn readd(&mut self, m: usize, how: Readd, state: State) -> State {
        let old = match state {
            State::In => return State::In,
            State::Killed { id } => match self.id_of(m, STEP_WITHIN).await {
                // Never removed: back on its own data, as after a crash.
                Some(Some(listed)) if listed == id => return self.start(m, Boot::default()),
                Some(_) => {
                    wipe(self.admin(), m).await;
                    id
                }
                None => return state,
            },
            State::Removed { old } => old,
        };
        match how {
            Readd::Join => {
                let join = (0..self.members()).filter(|&x| x != m).map(peer_addr).collect();
                self.start(m, Boot { existing: false, join });
            }
            Readd::MemberAdd => {
                let deadline = now() + STEP_WITHIN;
                loop {
                    // An earlier attempt that timed out may have taken effect.
                    if self.id_of(m, Duration::ZERO).await.is_some_and(|id| id.is_some()) {
                        break;
                    }
                    self.avoid(m);
                    let url = format!("http://{}", peer_addr(m));
                    let input = json!({ "member": member_name(m), "learner": true });
                    let added = self
                        .op("add", "", input, false, move |mut conn| async move {
                            let add = MemberAddRequest { peer_ur_ls: vec![url], is_learner: true };
                            let r =
                                conn.cluster.member_add(add).await.map(|r| {
                                    json!(format!("{:x}", r.into_inner().member.map_or(0, |x| x.id)))
                                });
                            (conn, r)
                        })
                        .await;
                    if added.is_some() {
                        break;
                    }
                    if !again(deadline).await {
                        return State::Removed { old };
                    }
                }
                self.start(m, Boot { existing: true, join: Vec::new() });
            }
        }
        // Its promotion: by the admin once it caught up (MemberAdd), or by the leader (join).
        let deadline = now() + PROMOTE_WITHIN;
        loop {
            self.avoid(m);
            if let Some(list) = self.member_list().await {
                if let Some(me) = list.iter().find(|x| is_member(x, m)) {
                    if !me.is_learner {
                        return State::In;
                    }
                    if how == Readd::MemberAdd {
                        let id = me.id;
                        let input = json!({ "member": member_name(m), "id": format!("{id:x}") });
                        let promoted = self
                            .op("promote", "", input, false, move |mut conn| async move {
                                let r = conn.cluster.member_promote(MemberPromoteRequest { id }).await;
                                (conn, r.map(|_| json!("promoted")))
                            })
                            .await;
                        if promoted.is_some() {
                            return State::In;
                        }
                    }
                }
            }
            if !again(deadline).await {
                // Still a learner: started, so nothing more for the simulator to hold back.
                return State::In;
            }
        }
    }

    fn admin(&self) -> &Admin {
        &self.world().admin
    }

    fn start(&mut self, m: usize, boot: Boot) -> State {
        let admin = self.admin();
        admin.boot.borrow_mut()[m] = boot;
        admin.state.borrow_mut()[m] = State::In;
        admin.to_start.borrow_mut().push(m);
        State::In
    }
}

/// The admin client: runs the scheduled membership changes in order, then (after every fault
/// healed) brings back any member left out and reads every member's list.
pub(crate) async fn admin(plan: Plan, world: &World) {
    let admin = &world.admin;
    let mut client = Client::new(world, WorkloadKind::Member, PROCESS, 0, plan.members);
    loop {
        let job = admin.jobs.borrow_mut().pop_front();
        match job {
            Some(Job::Remove(m)) => {
                let state = client.remove(m).await;
                admin.state.borrow_mut()[m] = state;
            }
            Some(Job::Readd(m, how)) => {
                let state = admin.state.borrow()[m];
                let state = client.readd(m, how, state).await;
                admin.state.borrow_mut()[m] = state;
            }
            None if now() >= plan.final_at => break,
            None => {
                let _ =
                    tokio::time::timeout(plan.final_at.saturating_sub(now()), admin.wake.notified()).await;
            }
        }
    }
    for m in 0..plan.members {
        let state = admin.state.borrow()[m];
        if state != State::In {
            let state = client.readd(m, Readd::MemberAdd, state).await;
            admin.state.borrow_mut()[m] = state;
        }
    }
    // Every member's own list, until they agree (a follower may apply the last change late).
    let deadline = now() + STEP_WITHIN;
    loop {
        let mut lists = Vec::new();
        for m in 0..plan.members {
            client.at(m);
            let list = client.member_list().await;
            lists.push(list.map(|l| list_json(&l)));
        }
        let agreed = lists.iter().all(|l| l.is_some() && *l == lists[0]);
        if agreed || now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Checks the member history: the last round of lists (one per member) agrees and lists
/// every member of the cluster by name, each a voter; no MemberAdd answered a removed id.
pub(crate) fn check(events: &[Event], members: usize) -> CheckResult {
    let ops = pair(events);
    let lists: Vec<_> = ops.iter().filter(|o| o.f == "member-list").collect();
    let last_round: Vec<_> = lists.iter().rev().take(members).collect();
    let answered: Vec<&Value> = last_round.iter().filter(|o| o.kind == Kind::Ok).map(|o| &o.output).collect();
    // Removed ids, with when their removal was acknowledged.
    let removed: Vec<(String, u64)> = ops
        .iter()
        .filter(|o| o.f == "remove" && o.kind == Kind::Ok)
        .filter_map(|o| Some((o.input["id"].as_str()?.to_string(), o.end?)))
        .collect();
    let mut problems = Vec::new();
    if let Some(first) = answered.first() {
        if answered.iter().any(|l| l != first) {
            problems.push(json!({ "anomaly": "members-disagree", "lists": answered }));
        }
        let listed = first.as_array().cloned().unwrap_or_default();
        let names: BTreeSet<&str> = listed.iter().filter_map(|m| m["name"].as_str()).collect();
        let expected: BTreeSet<String> = (0..members).map(member_name).collect();
        if listed.len() != members || names != expected.iter().map(String::as_str).collect() {
            problems.push(json!({ "anomaly": "wrong-members", "listed": listed }));
        }
        if listed.iter().any(|m| m["learner"].as_bool() != Some(false)) {
            problems.push(json!({ "anomaly": "learner-left", "listed": listed }));
        }
    }
    // MemberAdd gives a new id, never a removed member's (etcd's rule: a removed member that
    // comes back must not be taken for the new one). A member re-joined with `--join` keeps
    // its id, which Cairn derives from its name: not checked.
    for add in ops.iter().filter(|o| o.f == "add" && o.kind == Kind::Ok) {
        let removed_before = |id: &str| removed.iter().any(|(r, at)| r == id && *at < add.start);
        if add.output.as_str().is_some_and(removed_before) {
            problems.push(json!({ "anomaly": "removed-id-reused", "op": add.to_json() }));
        }
    }
    let valid = if !problems.is_empty() {
        Validity::Invalid
    } else if answered.len() < members {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    CheckResult::new(
        "member",
        valid,
        json!({
            "removals": removed.len(),
            "lists_answered": answered.len(),
            "final_list": answered.first(),
            "anomalies": problems,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(lists: &[Value], adds: &[&str], removed: &[&str]) -> Vec<Event> {
        let mut events = Vec::new();
        let mut op = |f: &str, input: Value, output: Value| {
            for (kind, value) in [(Kind::Invoke, input), (Kind::Ok, output)] {
                let index = events.len();
                events.push(Event {
                    index,
                    kind,
                    process: PROCESS,
                    f: f.to_string(),
                    key: None,
                    value,
                    time: index as u64,
                    node: Some(0),
                    error: None,
                });
            }
        };
        for id in removed {
            op("remove", json!({ "member": "n1", "id": id }), json!("removed"));
        }
        for id in adds {
            op("add", json!({ "member": "n1", "learner": true }), json!(id));
        }
        for list in lists {
            op("member-list", Value::Null, list.clone());
        }
        events
    }

    fn list(members: &[(&str, &str, bool)]) -> Value {
        Value::Array(
            members
                .iter()
                .map(|(id, name, learner)| json!({"id": id, "name": name, "learner": learner}))
                .collect(),
        )
    }

    #[test]
    fn agreeing_complete_lists_pass_and_every_departure_from_them_fails() {
        let good = list(&[("a", "n1", false), ("b", "n2", false), ("c", "n3", false)]);
        let check3 = |events: &[Event]| check(events, 3).valid;
        assert_eq!(
            check3(&history(&[good.clone(), good.clone(), good.clone()], &["a"], &["9"])),
            Validity::Valid
        );
        // Members disagree.
        let other = list(&[("a", "n1", false), ("b", "n2", false)]);
        assert_eq!(
            check3(&history(&[good.clone(), other.clone(), good.clone()], &[], &[])),
            Validity::Invalid
        );
        // Agree on a list without n3.
        assert_eq!(check3(&history(&[other.clone(), other.clone(), other], &[], &[])), Validity::Invalid);
        // A learner left.
        let learner = list(&[("a", "n1", true), ("b", "n2", false), ("c", "n3", false)]);
        assert_eq!(
            check3(&history(&[learner.clone(), learner.clone(), learner], &[], &[])),
            Validity::Invalid
        );
        // A member added, then removed: no reuse.
        let mut later = history(&[good.clone(), good.clone(), good.clone()], &["9"], &[]);
        let end = later.len() as u64;
        for (i, (kind, value)) in
            [(Kind::Invoke, json!({"member": "n1", "id": "9"})), (Kind::Ok, json!("removed"))]
                .into_iter()
                .enumerate()
        {
            later.push(Event {
                index: later.len(),
                kind,
                process: PROCESS,
                f: "remove".into(),
                key: None,
                value,
                time: end + i as u64,
                node: Some(0),
                error: None,
            });
        }
        assert_eq!(check3(&later), Validity::Valid);
        // MemberAdd handed out the removed member's id.
        assert_eq!(
            check3(&history(&[good.clone(), good.clone(), good.clone()], &["9"], &["9"])),
            Validity::Invalid
        );
        // A member did not answer: no verdict.
        assert_eq!(check3(&history(&[good.clone(), good], &[], &[])), Validity::Unknown);
    }
}
