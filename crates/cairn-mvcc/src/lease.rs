//! Leases as replicated state: which leases exist, their granted TTL, and which keys are
//! attached to each. Time is not here: when a lease expires is the replication layer's
//! decision (its leader proposes a revoke), so that applying stays deterministic.

use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse,
};

use crate::encoding::{decode_lease, decode_lease_id, encode_lease, encode_lease_id, lease_key_row};
use cairn_core::{Lease, RequestError, MAX_LEASE_TTL};

use crate::engine::Family;
use crate::error::MvccError;
use crate::store::{header, ApplyBatch, MvccStore};
use crate::view::View;

impl MvccStore {
    /// The lease `id`, if it exists.
    pub fn lease(&self, id: i64) -> Result<Option<Lease>, MvccError> {
        self.with_latest(|view| lease_in(view, id))
    }

    /// Every lease, in id order.
    pub fn leases(&self) -> Result<Vec<Lease>, MvccError> {
        let mut out = Vec::new();
        self.with_latest(|view| {
            view.scan(Family::Leases, &[], None, &mut |k, v| {
                out.push(Lease { id: decode_lease_id(k)?, ttl: decode_lease(v)? });
                Ok(true)
            })
        })?;
        Ok(out)
    }

    /// The keys attached to lease `id`, in key order.
    pub fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, MvccError> {
        self.with_latest(|view| attached_keys(view, id))
    }
}

pub(crate) fn lease_in(view: &View<'_>, id: i64) -> Result<Option<Lease>, MvccError> {
    Ok(match view.get(Family::Leases, &encode_lease_id(id))? {
        Some(v) => Some(Lease { id, ttl: decode_lease(&v)? }),
        None => None,
    })
}

fn attached_keys(view: &View<'_>, id: i64) -> Result<Vec<Vec<u8>>, MvccError> {
    let start = encode_lease_id(id);
    let end = id.checked_add(1).map(encode_lease_id);
    let mut keys = Vec::new();
    view.scan(Family::LeaseKeys, &start, end.as_ref().map(|e| e.as_slice()), &mut |k, _| {
        keys.push(k[8..].to_vec());
        Ok(true)
    })?;
    Ok(keys)
}

impl ApplyBatch<'_> {
    pub(crate) fn lease_grant(&mut self, g: &LeaseGrantRequest) -> Result<LeaseGrantResponse, MvccError> {
        // etcd's lessor: id 0 means "no lease" and cannot be granted.
        if g.id == 0 {
            return Err(RequestError::LeaseNotFound.into());
        }
        if g.ttl > MAX_LEASE_TTL {
            return Err(RequestError::LeaseTtlTooLarge.into());
        }
        if lease_in(&self.view(), g.id)?.is_some() {
            return Err(RequestError::LeaseExists.into());
        }
        self.write(Family::Leases, encode_lease_id(g.id).to_vec(), Some(encode_lease(g.ttl)));
        Ok(LeaseGrantResponse {
            header: Some(header(self.current_revision())),
            id: g.id,
            ttl: g.ttl,
            error: String::new(),
        })
    }

    /// Delete the lease and, in one revision, every key attached to it.
    pub(crate) fn lease_revoke(&mut self, r: &LeaseRevokeRequest) -> Result<LeaseRevokeResponse, MvccError> {
        if lease_in(&self.view(), r.id)?.is_none() {
            return Err(RequestError::LeaseNotFound.into());
        }
        let keys = attached_keys(&self.view(), r.id)?;
        let mut w = self.start_revision();
        for key in keys {
            self.delete_range(&mut w, &DeleteRangeRequest { key, ..Default::default() })?;
        }
        let revision = self.read_revision_in(&w);
        self.finish_revision(w);
        self.write(Family::Leases, encode_lease_id(r.id).to_vec(), None);
        Ok(LeaseRevokeResponse { header: Some(header(revision)) })
    }

    /// Move `key`'s attachment from lease `from` to lease `to` (0: none).
    pub(crate) fn attach(&mut self, key: &[u8], from: i64, to: i64) {
        if from == to {
            return;
        }
        if from != 0 {
            self.write(Family::LeaseKeys, lease_key_row(from, key), None);
        }
        if to != 0 {
            self.write(Family::LeaseKeys, lease_key_row(to, key), Some(Vec::new()));
        }
    }
}
