//! `etcdserverpb.Maintenance` and `etcdserverpb.Cluster`: the parts a client needs to find
//! the leader and the members (status, alarms, member list). Membership changes arrive with
//! the cluster-operations work; until then they answer Unimplemented.

use std::pin::Pin;
use std::sync::Arc;

use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::etcdserverpb::*;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::errors::{backend_status, request_status};
use crate::fill_header;
use crate::Backend;

/// The etcd API version Cairn speaks (clients gate features on it).
pub const API_VERSION: &str = "3.5.0";

pub struct MaintenanceService<B> {
    pub backend: Arc<B>,
    pub enforce: crate::auth::Enforce,
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("cairn: {what} is not supported yet"))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl<B: Backend> Maintenance for MaintenanceService<B> {
    /// etcd's Alarm: GET lists the raised alarms (of one type, or all for NONE), ACTIVATE
    /// raises one, DEACTIVATE clears one (answering with it if it was raised).
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let req = req.into_inner();
        let raised = self.backend.alarms();
        let wanted = cairn_core::Alarm { member_id: req.member_id, alarm: req.alarm };
        let alarms = match alarm_request::AlarmAction::try_from(req.action) {
            Ok(alarm_request::AlarmAction::Get) => raised
                .into_iter()
                .filter(|a| req.alarm == AlarmType::None as i32 || a.alarm == req.alarm)
                .collect(),
            Ok(alarm_request::AlarmAction::Activate) => {
                if AlarmType::try_from(req.alarm).is_err() || req.alarm == AlarmType::None as i32 {
                    return Err(Status::invalid_argument("etcdserver: unknown alarm type"));
                }
                self.backend.set_alarm(wanted, true).await.map_err(backend_status)?;
                vec![wanted]
            }
            Ok(alarm_request::AlarmAction::Deactivate) => {
                if !raised.contains(&wanted) {
                    Vec::new()
                } else {
                    self.backend.set_alarm(wanted, false).await.map_err(backend_status)?;
                    vec![wanted]
                }
            }
            Err(_) => return Err(Status::invalid_argument("etcdserver: unknown alarm action")),
        };
        let mut resp = AlarmResponse {
            alarms: alarms
                .into_iter()
                .map(|a| AlarmMember { member_id: a.member_id, alarm: a.alarm })
                .collect(),
            header: crate::lease::current_header(&*self.backend),
        };
        fill_header(&mut resp.header, &self.backend.status());
        Ok(Response::new(resp))
    }

    async fn status(&self, _req: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let s = self.backend.status();
        let mut resp = StatusResponse {
            version: API_VERSION.to_string(),
            db_size: self.backend.db_size(),
            db_size_in_use: self.backend.db_size(),
            leader: s.leader,
            raft_index: s.raft_index,
            raft_term: s.raft_term,
            raft_applied_index: s.raft_applied_index,
            is_learner: s.is_learner,
            errors: self.backend.alarms().iter().map(alarm_text).collect(),
            header: crate::lease::current_header(&*self.backend),
            ..Default::default()
        };
        fill_header(&mut resp.header, &s);
        // `version` is the etcd API version clients check; Cairn's own rides beside it.
        let mut response = Response::new(resp);
        response.metadata_mut().insert(
            SOFTWARE_VERSION_HEADER,
            tonic::metadata::MetadataValue::from_static(env!("CARGO_PKG_VERSION")),
        );
        if let Ok(fingerprint) = self.backend.key_fingerprint().parse() {
            response.metadata_mut().insert(KEY_FINGERPRINT_HEADER, fingerprint);
        }
        if let Ok(os) = format!("{} {}", std::env::consts::OS, std::env::consts::ARCH).parse() {
            response.metadata_mut().insert(cairn_proto::headers::OS, os);
        }
        Ok(response)
    }

    async fn defragment(
        &self,
        req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        crate::auth::authorize_admin_raw(&*self.backend, self.enforce, req.metadata())?;
        self.backend.defragment().await.map_err(backend_status)?;
        let mut resp = DefragmentResponse::default();
        fill_header(&mut resp.header, &self.backend.status());
        Ok(Response::new(resp))
    }

    /// etcd hashes its whole backend file; Cairn hashes what the members share: the
    /// keyspace with its history, at the current revision (HashKV at 0).
    async fn hash(&self, req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        crate::auth::authorize_admin_raw(&*self.backend, self.enforce, req.metadata())?;
        let h = self.backend.hash_kv(0).await.map_err(backend_status)?;
        let mut resp = HashResponse { hash: h.hash, ..Default::default() };
        fill_header(&mut resp.header, &self.backend.status());
        if let Some(header) = resp.header.as_mut() {
            header.revision = h.revision;
        }
        Ok(Response::new(resp))
    }

    async fn hash_kv(&self, req: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        crate::auth::authorize_admin_raw(&*self.backend, self.enforce, req.metadata())?;
        let h = self.backend.hash_kv(req.into_inner().revision).await.map_err(backend_status)?;
        let mut resp = HashKvResponse {
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.revision,
            ..Default::default()
        };
        fill_header(&mut resp.header, &self.backend.status());
        if let Some(header) = resp.header.as_mut() {
            header.revision = h.revision;
        }
        Ok(Response::new(resp))
    }

    type SnapshotStream = BoxStream<SnapshotResponse>;

    /// The backend's backup, streamed as etcd streams its snapshot: chunks with the bytes
    /// still to come (`etcdctl snapshot save` writes them to a file; `cairn snapshot restore`
    /// reads it).
    async fn snapshot(
        &self,
        req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        crate::auth::authorize_admin_raw(&*self.backend, self.enforce, req.metadata())?;
        let backup = self.backend.backup().await.map_err(backend_status)?;
        let backend = self.backend.clone();
        let stream = futures::stream::unfold((backup, 0u64), move |(mut backup, sent)| {
            let backend = backend.clone();
            async move {
                let chunk = backup.chunks.recv().await?;
                let item = chunk.map_err(backend_status).map(|blob| {
                    let sent = sent + blob.len() as u64;
                    let mut resp = SnapshotResponse {
                        remaining_bytes: backup.size.saturating_sub(sent),
                        blob,
                        ..Default::default()
                    };
                    fill_header(&mut resp.header, &backend.status());
                    if let Some(header) = resp.header.as_mut() {
                        header.revision = backup.revision;
                    }
                    resp
                });
                let sent = sent + item.as_ref().map_or(0, |r| r.blob.len() as u64);
                Some((item, (backup, sent)))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        crate::auth::authorize_admin(&*self.backend, self.enforce, req.metadata())?;
        self.backend.move_leader(req.into_inner().target_id).await.map_err(backend_status)?;
        let mut resp = MoveLeaderResponse::default();
        fill_header(&mut resp.header, &self.backend.status());
        Ok(Response::new(resp))
    }

    async fn downgrade(
        &self,
        _req: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(not_yet("Downgrade"))
    }
}

/// A raised alarm as etcd's Status lists it in `errors`.
fn alarm_text(a: &cairn_core::Alarm) -> String {
    let name =
        AlarmType::try_from(a.alarm).map_or_else(|_| a.alarm.to_string(), |t| t.as_str_name().to_string());
    format!("memberID:{} alarm:{name} ", a.member_id)
}

/// The response header of `Maintenance.Status` that carries Cairn's own version (the
/// `version` field is the etcd API version that clients check).
pub const SOFTWARE_VERSION_HEADER: &str = cairn_proto::headers::SOFTWARE_VERSION;

/// The response header of `Maintenance.Status` that carries the member's cluster key
/// fingerprint ("none" without a key), so that `cairn status` shows whether keys match.
pub const KEY_FINGERPRINT_HEADER: &str = cairn_proto::headers::KEY_FINGERPRINT;

pub struct ClusterService<B> {
    pub backend: Arc<B>,
    pub enforce: crate::auth::Enforce,
}

#[tonic::async_trait]
impl<B: Backend> Cluster for ClusterService<B> {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        crate::auth::authorize_admin(&*self.backend, self.enforce, req.metadata())?;
        let req = req.into_inner();
        let peer_url = cairn_core::validate::peer_url(&req.peer_ur_ls).map_err(request_status)?;
        let (member, members) =
            self.backend.member_add(peer_url, req.is_learner).await.map_err(backend_status)?;
        let mut resp = MemberAddResponse {
            member: Some(to_pb(member)),
            members: members.into_iter().map(to_pb).collect(),
            ..Default::default()
        };
        fill_header(&mut resp.header, &self.backend.status());
        Ok(Response::new(resp))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        crate::auth::authorize_admin(&*self.backend, self.enforce, req.metadata())?;
        let members = self.backend.member_remove(req.into_inner().id).await.map_err(backend_status)?;
        let mut resp =
            MemberRemoveResponse { members: members.into_iter().map(to_pb).collect(), ..Default::default() };
        fill_header(&mut resp.header, &self.backend.status());
        Ok(Response::new(resp))
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        crate::auth::authorize_admin(&*self.backend, self.enforce, req.metadata())?;
        let req = req.into_inner();
        let peer_url = cairn_core::validate::peer_url(&req.peer_ur_ls).map_err(request_status)?;
        let members = self.backend.member_update(req.id, peer_url).await.map_err(backend_status)?;
        let mut resp =
            MemberUpdateResponse { members: members.into_iter().map(to_pb).collect(), ..Default::default() };
        fill_header(&mut resp.header, &self.backend.status());
        Ok(Response::new(resp))
    }

    async fn member_list(
        &self,
        _req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let members = self.backend.members().await.map_err(backend_status)?.into_iter().map(to_pb).collect();
        let mut resp = MemberListResponse { members, ..Default::default() };
        fill_header(&mut resp.header, &self.backend.status());
        Ok(Response::new(resp))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        crate::auth::authorize_admin(&*self.backend, self.enforce, req.metadata())?;
        let members = self.backend.member_promote(req.into_inner().id).await.map_err(backend_status)?;
        let mut resp =
            MemberPromoteResponse { members: members.into_iter().map(to_pb).collect(), ..Default::default() };
        fill_header(&mut resp.header, &self.backend.status());
        Ok(Response::new(resp))
    }
}

fn to_pb(m: cairn_core::Member) -> Member {
    Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}
