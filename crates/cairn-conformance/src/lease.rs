//! Leases: `LeaseBackend` (grant, renew, time, listing) and the writes that use them (put
//! with a lease, revoke).
//!
//! Every lease a test grants is revoked before the test ends, failed or not, so that none
//! expires later and deletes keys in the middle of another test.

use cairn_core::proto::etcdserverpb::{LeaseRevokeRequest, PutRequest};
use cairn_core::proto::mvccpb::event::EventType;
use cairn_core::{Backend, RequestError, WriteRequest};

use crate::check::*;

/// The TTL the tests ask for: long enough not to expire during a slow run.
const TTL: i64 = 120;

fn revoke(id: i64) -> WriteRequest {
    WriteRequest::LeaseRevoke(LeaseRevokeRequest { id })
}

async fn leases<B: Backend>(b: &B) -> Result<Vec<i64>, String> {
    b.leases().await.map_err(|e| failed("leases()", &e))
}

/// Grant `id`, check the answer, and return the granted TTL.
async fn grant<B: Backend>(b: &B, id: i64, ttl: i64) -> Result<i64, String> {
    let what = format!("lease_grant({id}, {ttl})");
    let r = b.lease_grant(id, ttl).await.map_err(|e| failed(&what, &e))?;
    ensure_eq!(r.id, id, "{what}: granted id");
    ensure!(r.ttl >= ttl, "{what}: granted TTL {} is below the requested {ttl}", r.ttl);
    Ok(r.ttl)
}

/// Grant with a chosen id, attach keys by put, list them, ask the time, renew, and revoke:
/// the attached keys go in one revision, and the lease is gone.
pub(crate) async fn grant_attach_and_revoke<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    let id = lease_id(&sp, 1);
    revoke_leftovers(b, &[id]).await;
    let outcome = grant_attach_and_revoke_with(b, &sp, id).await;
    revoke_leftovers(b, &[id]).await;
    outcome
}

async fn grant_attach_and_revoke_with<B: Backend>(b: &B, sp: &Space<'_>, id: i64) -> Outcome {
    clear(b, sp).await?;
    let before = current(b).await?;
    let granted = grant(b, id, TTL).await?;
    ensure_eq!(current(b).await?, before, "revisions().current after a lease grant (a grant changes no key)");
    refused(b.lease_grant(id, TTL).await, RequestError::LeaseExists, &format!("lease_grant({id}) again"))?;
    ensure!(leases(b).await?.contains(&id), "leases() does not list the granted lease {id}");

    let (k1, k2, k3) = (sp.key("k1"), sp.key("k2"), sp.key("k3"));
    put(b, PutRequest { lease: id, ..put_req(&k2, "2") }, "put k2 with the lease").await?;
    put(b, PutRequest { lease: id, ..put_req(&k1, "1") }, "put k1 with the lease").await?;
    put_value(b, &k3, "3").await?;
    let kv = get_some(b, &k1, "after put k1 with the lease").await?;
    ensure_eq!(kv.lease, id, "k1's lease");
    let kv = get_some(b, &k3, "after put k3 without a lease").await?;
    ensure_eq!(kv.lease, 0, "k3's lease");
    let keys = b.lease_keys(id).await.map_err(|e| failed("lease_keys()", &e))?;
    let keys: Vec<String> = keys.iter().map(|k| sp.name(k)).collect();
    ensure_eq!(keys, vec!["k1", "k2"], "lease_keys({id}), in key order");

    let time = b.lease_time(id).await.map_err(|e| failed("lease_time()", &e))?;
    let time = time.ok_or_else(|| format!("lease_time({id}) is None for a granted lease"))?;
    ensure!(time.granted >= TTL, "lease_time({id}): granted {} below the requested TTL {TTL}", time.granted);
    ensure_eq!(time.granted, granted, "lease_time({id}): granted vs the TTL the grant answered");
    ensure!(
        0 < time.remaining && time.remaining <= time.granted,
        "lease_time({id}): expected 0 < remaining <= granted, got remaining {} granted {}",
        time.remaining,
        time.granted
    );
    let ttl = b.lease_renew(id).await.map_err(|e| failed("lease_renew()", &e))?;
    ensure!(ttl > 0, "lease_renew({id}) of a live lease returned TTL {ttl}");

    let r0 = current(b).await?;
    let resp = write(b, revoke(id), "revoke the lease").await?;
    ensure_eq!(
        resp.revision(),
        r0 + 1,
        "revoke of a lease with two keys: header revision (one for both deletes)"
    );
    ensure_eq!(current(b).await?, r0 + 1, "revisions().current after the revoke");
    ensure!(
        get(b, &k1).await?.is_none() && get(b, &k2).await?.is_none(),
        "keys of a revoked lease still exist"
    );
    ensure!(get(b, &k3).await?.is_some(), "a key without a lease was deleted by the revoke");
    let evs = b.events(r0 + 1, r0 + 1, 10, false).await.map_err(|e| failed("events() of the revoke", &e))?;
    let got: Vec<(i64, Vec<(i32, String)>)> = evs
        .iter()
        .map(|r| {
            (
                r.revision,
                r.events.iter().map(|e| (e.r#type, sp.name(&e.kv.clone().unwrap_or_default().key))).collect(),
            )
        })
        .collect();
    let del = EventType::Delete as i32;
    ensure_eq!(
        got,
        vec![(r0 + 1, vec![(del, "k1".to_string()), (del, "k2".to_string())])],
        "events of the revoke (type, key)"
    );

    ensure!(!leases(b).await?.contains(&id), "leases() still lists the revoked lease {id}");
    let time = b.lease_time(id).await.map_err(|e| failed("lease_time() after the revoke", &e))?;
    ensure!(time.is_none(), "lease_time({id}) of a revoked lease: expected None, got {time:?}");
    let keys = b.lease_keys(id).await.map_err(|e| failed("lease_keys() after the revoke", &e))?;
    ensure!(
        keys.is_empty(),
        "lease_keys({id}) of a revoked lease: {:?}",
        keys.iter().map(|k| sp.name(k)).collect::<Vec<_>>()
    );
    let ttl = b.lease_renew(id).await.map_err(|e| failed("lease_renew() after the revoke", &e))?;
    ensure_eq!(ttl, 0, "lease_renew({id}) of a revoked lease");
    refused(b.write(revoke(id)).await, RequestError::LeaseNotFound, "revoking the lease again")?;
    ensure_eq!(current(b).await?, r0 + 1, "revisions().current after a refused revoke");
    Ok(())
}

/// A key follows its latest put: a put with another lease moves it, a put without a lease
/// detaches it, `ignore_lease` keeps it, a delete detaches it.
pub(crate) async fn keys_move_between_leases<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    let ids = [lease_id(&sp, 1), lease_id(&sp, 2)];
    revoke_leftovers(b, &ids).await;
    let outcome = keys_move_between_leases_with(b, &sp, ids).await;
    revoke_leftovers(b, &ids).await;
    outcome
}

async fn keys_move_between_leases_with<B: Backend>(b: &B, sp: &Space<'_>, [l1, l2]: [i64; 2]) -> Outcome {
    clear(b, sp).await?;
    grant(b, l1, TTL).await?;
    grant(b, l2, TTL).await?;
    let k = |n: &str| sp.key(n);
    let with = |n: &str, lease: i64| PutRequest { lease, ..put_req(&k(n), n) };
    for (what, req) in [
        ("put a with lease 1", with("a", l1)),
        ("put b with lease 1", with("b", l1)),
        ("put c with lease 1", with("c", l1)),
        ("put d with lease 1", with("d", l1)),
        ("put e with lease 1", with("e", l1)),
        ("put b with lease 2", with("b", l2)),
        ("put c without a lease", with("c", 0)),
        ("put d with ignore_lease", PutRequest { ignore_lease: true, ..put_req(&k("d"), "d2") }),
    ] {
        put(b, req, what).await?;
    }
    delete(b, delete_req(&k("e"), b"", false), "delete e").await?;
    let names = |keys: Vec<Vec<u8>>| keys.iter().map(|key| sp.name(key)).collect::<Vec<_>>();
    let keys1 = b.lease_keys(l1).await.map_err(|e| failed("lease_keys(1)", &e))?;
    ensure_eq!(names(keys1), vec!["a", "d"], "lease 1's keys (b moved to lease 2, c detached, e deleted)");
    let keys2 = b.lease_keys(l2).await.map_err(|e| failed("lease_keys(2)", &e))?;
    ensure_eq!(names(keys2), vec!["b"], "lease 2's keys");
    for (n, lease) in [("a", l1), ("b", l2), ("c", 0), ("d", l1)] {
        ensure_eq!(get_some(b, &k(n), "after moving keys").await?.lease, lease, "{n}'s lease");
    }

    // Revoking lease 1 deletes exactly its keys, in one revision.
    let r0 = current(b).await?;
    ensure_eq!(
        write(b, revoke(l1), "revoke lease 1").await?.revision(),
        r0 + 1,
        "revoke lease 1: header revision"
    );
    let left = range(b, range_req(&sp.start(), &sp.end()), "range after revoking lease 1").await?;
    ensure_eq!(sp.names(&left.kvs), vec!["b", "c"], "keys left after revoking lease 1");
    Ok(())
}

/// Ids nobody granted: renew answers 0, time None, revoke and put are refused.
pub(crate) async fn unknown_lease_ids<B: Backend>(b: &B, base: &str) -> Outcome {
    let sp = Space::new(base);
    clear(b, &sp).await?;
    let id = unknown_lease(b, &sp).await?;
    let ttl = b.lease_renew(id).await.map_err(|e| failed("lease_renew() of an unknown id", &e))?;
    ensure_eq!(ttl, 0, "lease_renew({id}) of an unknown id");
    let time = b.lease_time(id).await.map_err(|e| failed("lease_time() of an unknown id", &e))?;
    ensure!(time.is_none(), "lease_time({id}) of an unknown id: expected None, got {time:?}");
    let keys = b.lease_keys(id).await.map_err(|e| failed("lease_keys() of an unknown id", &e))?;
    ensure!(keys.is_empty(), "lease_keys({id}) of an unknown id returned {} keys", keys.len());
    let before = current(b).await?;
    refused(
        b.write(revoke(id)).await,
        RequestError::LeaseNotFound,
        &format!("revoking the unknown lease {id}"),
    )?;
    let req = PutRequest { lease: id, ..put_req(&sp.key("k"), "v") };
    refused(b.write(WriteRequest::Put(req)).await, RequestError::LeaseNotFound, "put with an unknown lease")?;
    ensure_eq!(current(b).await?, before, "revisions().current after refused lease writes");
    ensure!(get(b, &sp.key("k")).await?.is_none(), "a put with an unknown lease wrote its key");
    Ok(())
}

/// `lease_grant(0, ..)` lets the backend choose a (non-zero) id; a lease without keys
/// revokes without taking a revision.
pub(crate) async fn grant_with_id_zero<B: Backend>(b: &B, _base: &str) -> Outcome {
    let r = b.lease_grant(0, TTL).await.map_err(|e| failed("lease_grant(0, ..)", &e))?;
    let id = r.id;
    let outcome = grant_with_id_zero_then(b, id, r.ttl).await;
    if id != 0 {
        revoke_leftovers(b, &[id]).await;
    }
    outcome
}

async fn grant_with_id_zero_then<B: Backend>(b: &B, id: i64, ttl: i64) -> Outcome {
    ensure!(id != 0, "lease_grant(0, ..) answered id 0: the backend must choose one");
    ensure!(ttl >= TTL, "lease_grant(0, {TTL}): granted TTL {ttl} below the requested one");
    ensure!(leases(b).await?.contains(&id), "leases() does not list the lease {id} granted with id 0");
    let time = b.lease_time(id).await.map_err(|e| failed("lease_time()", &e))?;
    ensure!(time.is_some(), "lease_time({id}) is None for a granted lease");
    let before = current(b).await?;
    let resp = write(b, revoke(id), "revoke a lease without keys").await?;
    ensure_eq!(resp.revision(), before, "revoke of a lease without keys: header revision (no key changes)");
    ensure_eq!(current(b).await?, before, "revisions().current after revoking a lease without keys");
    ensure!(!leases(b).await?.contains(&id), "leases() still lists the revoked lease {id}");
    Ok(())
}
