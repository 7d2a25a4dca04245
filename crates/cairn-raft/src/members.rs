//! Member attributes in the replicated state: each member publishes its name, URLs and
//! version once it serves (a `Command::SetMember`), and every member lists the cluster from
//! its own state, without asking the others. Stored as metadata rows of the state machine
//! (`member/<id>`: a format byte, then the protobuf `cairnpb.MemberAttributes`), so they
//! travel in snapshots like the rest of the state.

use cairn_core::{BackendError, Member};
use cairn_mvcc::{ApplyBatch, MvccError, MvccStore};
use prost::Message;

use crate::pb::MemberAttributes;

const PREFIX: &[u8] = b"member/";
const FORMAT_V1: u8 = 1;

fn key(id: u64) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Record `attributes` in the batch being applied.
pub(crate) fn apply(batch: &mut ApplyBatch<'_>, attributes: &MemberAttributes) {
    let mut value = vec![FORMAT_V1];
    value.extend(attributes.encode_to_vec());
    batch.put_meta(&key(attributes.id), &value);
}

/// Every published member's attributes, by id.
pub fn published(store: &MvccStore) -> Result<Vec<MemberAttributes>, MvccError> {
    store
        .meta_with_prefix(PREFIX)?
        .into_iter()
        .map(|(k, v)| match v.split_first() {
            Some((&FORMAT_V1, rest)) => MemberAttributes::decode(rest)
                .map_err(|e| MvccError::Corrupt(format!("member attributes {k:x?}: {e}"))),
            _ => Err(MvccError::Corrupt(format!("member attributes {k:x?} of an unknown format"))),
        })
        .collect()
}

/// The ids of the members that ever started (published their attributes), read on tokio's
/// blocking pool.
pub(crate) async fn published_ids(
    store: &MvccStore,
) -> Result<std::collections::BTreeSet<u64>, BackendError> {
    let store = store.clone();
    let published = cairn_core::blocking(move || Ok(published(&store)?)).await?;
    Ok(published.into_iter().map(|a| a.id).collect())
}

impl crate::RaftNode {
    /// The members of the current membership config, with the attributes they published.
    /// A member that has not published (a 0.1 member in a mixed cluster) is asked for its
    /// client URLs over the peer protocol, all such members at once, as 0.1 did.
    pub async fn member_list(&self) -> Result<Vec<Member>, BackendError> {
        let published = self.read(published).await?;
        let membership = self.membership();
        let asked = membership.nodes().map(|(id, _)| async {
            match published.iter().find(|a| a.id == *id) {
                Some(a) => a.client_urls.clone(),
                None => self.member_client_urls(*id).await,
            }
        });
        let client_urls = futures::future::join_all(asked).await;
        // A member added with MemberAdd has no name until it starts and publishes one.
        let name = |id: u64, node: &crate::types::PeerNode| match published.iter().find(|a| a.id == id) {
            Some(a) if !a.name.is_empty() => a.name.clone(),
            _ => node.name.clone(),
        };
        Ok(membership
            .nodes()
            .zip(client_urls)
            .map(|((id, node), client_urls)| Member {
                id: *id,
                name: name(*id, node),
                peer_urls: vec![format!("http://{}", node.peer_addr)],
                client_urls,
                is_learner: !membership.voter_ids().any(|v| v == *id),
            })
            .collect())
    }

    /// The members that ever started (published their attributes).
    pub(crate) async fn published_ids(&self) -> Result<std::collections::BTreeSet<u64>, BackendError> {
        published_ids(self.store()).await
    }

    /// Publish this member's attributes if the replicated state does not hold them yet.
    /// `Ok(false)`: not now (its client URLs are not known yet, or a member of the cluster
    /// runs a version that cannot apply the command): try again later.
    pub async fn publish_self(&self) -> Result<bool, BackendError> {
        let Some(client_urls) = self.client_urls.get().cloned() else { return Ok(false) };
        let membership = self.membership();
        let Some(me) = membership.nodes().find(|(id, _)| **id == self.id).map(|(_, n)| n.clone()) else {
            return Ok(false);
        };
        let wanted = MemberAttributes {
            id: self.id,
            name: self.name.clone(),
            peer_urls: vec![format!("http://{}", me.peer_addr)],
            client_urls,
            version: env!("CARGO_PKG_VERSION").to_string(),
            stay_learner: self.stay_learner,
        };
        let current = self.read(published).await?;
        if current.contains(&wanted) {
            return Ok(true);
        }
        // Every member must be able to apply the command (a 0.1 member would stop on it): one
        // that published is (versions never go back), another must say its version.
        for (id, _) in membership.nodes() {
            let known = *id == self.id || current.iter().any(|a| a.id == *id);
            if !known && self.member_version(*id).await.is_none() {
                return Ok(false);
            }
        }
        let wanted = &wanted;
        self.on_leader(
            crate::route::Repeat::Idempotent,
            |_| crate::leader::publish(&self.raft, wanted.clone()),
            |addr, remaining| async move {
                let mut client = self.channels.client(&addr).map_err(|_| crate::PeerError::NotDelivered)?;
                let mut request = tonic::Request::new(wanted.clone());
                request.set_timeout(remaining);
                client.publish(request).await.map_err(crate::PeerError::from)?;
                Ok(())
            },
        )
        .await?;
        tracing::info!(client_urls = ?wanted.client_urls, "published this member's attributes");
        Ok(true)
    }
}
