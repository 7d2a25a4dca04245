//! `v3electionpb.Election`, as etcd serves it: a client of this member's own KV, Lease and
//! Watch services running the election recipe of `cairn-client` (etcd's
//! `concurrency.Election`). The candidate keeps its lease alive; the server does not.

use std::pin::Pin;

use cairn_client::concurrency::{self, prefix_of, Leader};
use cairn_client::Client;
use cairn_proto::v3electionpb::election_server::Election;
use cairn_proto::v3electionpb::*;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::lock::{
    authorize_keys, authorize_prefix, lease_or_grant, recipe_status, READ, READ_AND_WRITE, WRITE,
};

pub struct ElectionService {
    pub client: Client,
    /// The caller's permissions (the client above checks none).
    pub permissions: std::sync::Arc<dyn crate::auth::Permissions>,
}

fn leader_of(key: Option<LeaderKey>) -> Result<Leader, Status> {
    let key = key.ok_or_else(|| Status::unknown("\"leader\" field must be provided"))?;
    Ok(Leader { key: key.key, revision: key.rev, lease: key.lease })
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(&self, req: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        let prefix = prefix_of(req.get_ref().name.clone());
        authorize_prefix(&*self.permissions, req.metadata(), &prefix, READ_AND_WRITE)?;
        let CampaignRequest { name, lease, value } = req.into_inner();
        let lease = lease_or_grant(&self.client, lease).await?;
        let (leader, header) = concurrency::campaign(&self.client, &prefix_of(name.clone()), lease, value)
            .await
            .map_err(recipe_status)?;
        let leader = LeaderKey { name, key: leader.key, rev: leader.revision, lease: leader.lease };
        Ok(Response::new(CampaignResponse { header: Some(header), leader: Some(leader) }))
    }

    async fn proclaim(&self, req: Request<ProclaimRequest>) -> Result<Response<ProclaimResponse>, Status> {
        if let Some(leader) = &req.get_ref().leader {
            authorize_keys(&*self.permissions, req.metadata(), &leader.key, b"", READ_AND_WRITE)?;
        }
        let ProclaimRequest { leader, value } = req.into_inner();
        let header =
            concurrency::proclaim(&self.client, &leader_of(leader)?, value).await.map_err(recipe_status)?;
        Ok(Response::new(ProclaimResponse { header: Some(header) }))
    }

    async fn leader(&self, req: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        let prefix = prefix_of(req.get_ref().name.clone());
        authorize_prefix(&*self.permissions, req.metadata(), &prefix, READ)?;
        match concurrency::leader(&self.client, &prefix).await.map_err(recipe_status)? {
            (header, Some(kv)) => Ok(Response::new(LeaderResponse { header: Some(header), kv: Some(kv) })),
            (_, None) => Err(Status::unknown("election: no leader")),
        }
    }

    type ObserveStream = ObserveStream;

    async fn observe(&self, req: Request<LeaderRequest>) -> Result<Response<Self::ObserveStream>, Status> {
        authorize_prefix(&*self.permissions, req.metadata(), &prefix_of(req.get_ref().name.clone()), READ)?;
        let election = cairn_client::Election::new(&self.client, req.into_inner().name);
        let stream = election.observe().map(|item| match item {
            Ok((header, kv)) => Ok(LeaderResponse { header: Some(header), kv: Some(kv) }),
            Err(e) => Err(recipe_status(e)),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn resign(&self, req: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        if let Some(leader) = &req.get_ref().leader {
            authorize_keys(&*self.permissions, req.metadata(), &leader.key, b"", WRITE)?;
        }
        let leader = leader_of(req.into_inner().leader)?;
        let header = concurrency::resign(&self.client, &leader).await.map_err(recipe_status)?;
        Ok(Response::new(ResignResponse { header: Some(header) }))
    }
}
