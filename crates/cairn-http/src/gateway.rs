//! etcd's JSON gateway: every route of etcd's `rpc.proto` HTTP annotations, as grpc-gateway
//! serves them, each a call on the gRPC [`Channel`]:
//!
//! - unary calls: the POST body is the request message's JSON (an empty body is the empty
//!   message), the response the response message's JSON;
//! - streams (`/v3/watch`, `/v3/lease/keepalive`, `/v3/election/observe`,
//!   `/v3/maintenance/snapshot`): the body holds one or more request messages, sent in order
//!   and then the sending side closed (as grpc-gateway does: a watch goes on, a keepalive
//!   stream ends); the response is chunked, one `{"result":…}` line per message, and a
//!   failure midway ends it with one `{"error":…}` line.

use std::future::Future;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::v3electionpb::election_client::ElectionClient;
use cairn_proto::v3lockpb::lock_client::LockClient;
use cairn_proto::{etcdserverpb, v3electionpb, v3lockpb};

use crate::error::{stream_error, HttpError};
use crate::HttpOptions;

/// The API prefixes: etcd 3.4 serves `/v3/` and keeps `/v3beta/` and `/v3alpha/` for
/// clients written against 3.3 and 3.2.
pub const PREFIXES: [&str; 3] = ["/v3", "/v3beta", "/v3alpha"];

/// The gateway's routes under every prefix of [`PREFIXES`].
pub fn routes(channel: Channel, max_message_bytes: usize) -> Router {
    // base64 makes bytes 4/3 larger and JSON adds field names: room for the largest gRPC
    // message the member takes, so that the gRPC services answer every size they know
    // ("request is too large", then grpc-go's "received message larger than max").
    let limit =
        Limit { max_message_bytes, body_bytes: max_message_bytes.saturating_mul(4).saturating_add(64 << 10) };
    let api = api_routes(channel, limit);
    let mut router = Router::new();
    for prefix in PREFIXES {
        router = router.nest(prefix, api.clone());
    }
    router
}

/// How large a body may be read, and the gRPC limit to name when it is larger.
#[derive(Clone, Copy)]
struct Limit {
    max_message_bytes: usize,
    body_bytes: usize,
}

fn api_routes(ch: Channel, limit: Limit) -> Router {
    let mut r = Router::new();
    // A route for a unary call: `client` is built per call (channels are cheap clones) and
    // takes responses of any size, as etcd's gateway does.
    macro_rules! unary {
        ($($path:literal),+ => $client:ident :: $method:ident($req:ty)) => {{
            let ch = ch.clone();
            let handler = move |headers: http::HeaderMap, body: Body| async move {
                unary(body, limit, move |req: $req| async move {
                    $client::new(ch).max_decoding_message_size(usize::MAX).$method(with_token(&headers, req)).await
                })
                .await
            };
            $( r = r.route($path, post(handler.clone())); )+
        }};
    }
    macro_rules! streaming {
        ($path:literal => $client:ident :: $method:ident($req:ty)) => {{
            let ch = ch.clone();
            r = r.route(
                $path,
                post(move |headers: http::HeaderMap, body: Body| async move {
                    streaming(body, limit, true, move |reqs: Vec<$req>| async move {
                        $client::new(ch)
                            .max_decoding_message_size(usize::MAX)
                            .$method(with_token(&headers, futures::stream::iter(reqs)))
                            .await
                    })
                    .await
                }),
            );
        }};
    }
    // Server-streaming calls take exactly one request message.
    macro_rules! server_streaming {
        ($path:literal => $client:ident :: $method:ident($req:ty)) => {{
            let ch = ch.clone();
            r = r.route(
                $path,
                post(move |headers: http::HeaderMap, body: Body| async move {
                    streaming(body, limit, false, move |mut reqs: Vec<$req>| async move {
                        let req = reqs.pop().unwrap_or_default();
                        $client::new(ch)
                            .max_decoding_message_size(usize::MAX)
                            .$method(with_token(&headers, req))
                            .await
                    })
                    .await
                }),
            );
        }};
    }

    unary!("/kv/range" => KvClient::range(etcdserverpb::RangeRequest));
    unary!("/kv/put" => KvClient::put(etcdserverpb::PutRequest));
    unary!("/kv/deleterange" => KvClient::delete_range(etcdserverpb::DeleteRangeRequest));
    unary!("/kv/txn" => KvClient::txn(etcdserverpb::TxnRequest));
    unary!("/kv/compaction" => KvClient::compact(etcdserverpb::CompactionRequest));
    streaming!("/watch" => WatchClient::watch(etcdserverpb::WatchRequest));

    unary!("/lease/grant" => LeaseClient::lease_grant(etcdserverpb::LeaseGrantRequest));
    unary!("/lease/revoke", "/kv/lease/revoke" => LeaseClient::lease_revoke(etcdserverpb::LeaseRevokeRequest));
    unary!("/lease/timetolive", "/kv/lease/timetolive" => LeaseClient::lease_time_to_live(etcdserverpb::LeaseTimeToLiveRequest));
    unary!("/lease/leases", "/kv/lease/leases" => LeaseClient::lease_leases(etcdserverpb::LeaseLeasesRequest));
    streaming!("/lease/keepalive" => LeaseClient::lease_keep_alive(etcdserverpb::LeaseKeepAliveRequest));

    unary!("/cluster/member/add" => ClusterClient::member_add(etcdserverpb::MemberAddRequest));
    unary!("/cluster/member/remove" => ClusterClient::member_remove(etcdserverpb::MemberRemoveRequest));
    unary!("/cluster/member/update" => ClusterClient::member_update(etcdserverpb::MemberUpdateRequest));
    unary!("/cluster/member/list" => ClusterClient::member_list(etcdserverpb::MemberListRequest));
    unary!("/cluster/member/promote" => ClusterClient::member_promote(etcdserverpb::MemberPromoteRequest));

    unary!("/maintenance/alarm" => MaintenanceClient::alarm(etcdserverpb::AlarmRequest));
    unary!("/maintenance/status" => MaintenanceClient::status(etcdserverpb::StatusRequest));
    unary!("/maintenance/defragment" => MaintenanceClient::defragment(etcdserverpb::DefragmentRequest));
    unary!("/maintenance/hash" => MaintenanceClient::hash(etcdserverpb::HashRequest));
    unary!("/maintenance/hashkv" => MaintenanceClient::hash_kv(etcdserverpb::HashKvRequest));
    unary!("/maintenance/transfer-leadership" => MaintenanceClient::move_leader(etcdserverpb::MoveLeaderRequest));
    server_streaming!("/maintenance/snapshot" => MaintenanceClient::snapshot(etcdserverpb::SnapshotRequest));

    unary!("/lock/lock" => LockClient::lock(v3lockpb::LockRequest));
    unary!("/lock/unlock" => LockClient::unlock(v3lockpb::UnlockRequest));

    unary!("/election/campaign" => ElectionClient::campaign(v3electionpb::CampaignRequest));
    unary!("/election/proclaim" => ElectionClient::proclaim(v3electionpb::ProclaimRequest));
    unary!("/election/leader" => ElectionClient::leader(v3electionpb::LeaderRequest));
    unary!("/election/resign" => ElectionClient::resign(v3electionpb::ResignRequest));
    server_streaming!("/election/observe" => ElectionClient::observe(v3electionpb::LeaderRequest));

    unary!("/auth/enable" => AuthClient::auth_enable(etcdserverpb::AuthEnableRequest));
    unary!("/auth/disable" => AuthClient::auth_disable(etcdserverpb::AuthDisableRequest));
    unary!("/auth/status" => AuthClient::auth_status(etcdserverpb::AuthStatusRequest));
    unary!("/auth/authenticate" => AuthClient::authenticate(etcdserverpb::AuthenticateRequest));
    unary!("/auth/user/add" => AuthClient::user_add(etcdserverpb::AuthUserAddRequest));
    unary!("/auth/user/get" => AuthClient::user_get(etcdserverpb::AuthUserGetRequest));
    unary!("/auth/user/list" => AuthClient::user_list(etcdserverpb::AuthUserListRequest));
    unary!("/auth/user/delete" => AuthClient::user_delete(etcdserverpb::AuthUserDeleteRequest));
    unary!("/auth/user/changepw" => AuthClient::user_change_password(etcdserverpb::AuthUserChangePasswordRequest));
    unary!("/auth/user/grant" => AuthClient::user_grant_role(etcdserverpb::AuthUserGrantRoleRequest));
    unary!("/auth/user/revoke" => AuthClient::user_revoke_role(etcdserverpb::AuthUserRevokeRoleRequest));
    unary!("/auth/role/add" => AuthClient::role_add(etcdserverpb::AuthRoleAddRequest));
    unary!("/auth/role/get" => AuthClient::role_get(etcdserverpb::AuthRoleGetRequest));
    unary!("/auth/role/list" => AuthClient::role_list(etcdserverpb::AuthRoleListRequest));
    unary!("/auth/role/delete" => AuthClient::role_delete(etcdserverpb::AuthRoleDeleteRequest));
    unary!("/auth/role/grant" => AuthClient::role_grant_permission(etcdserverpb::AuthRoleGrantPermissionRequest));
    unary!("/auth/role/revoke" => AuthClient::role_revoke_permission(etcdserverpb::AuthRoleRevokePermissionRequest));

    r.method_not_allowed_fallback(|| async { HttpError::MethodNotAllowed })
}

/// `msg` as a gRPC request carrying the caller's token: grpc-gateway passes the HTTP
/// `Authorization` header on as the `authorization` metadata, where etcd looks for it.
pub(crate) fn with_token<T>(headers: &http::HeaderMap, msg: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| tonic::metadata::MetadataValue::try_from(v.as_bytes()).ok());
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", token);
    }
    request
}

/// `GET /version`: numeric `X.Y.Z` strings, as clients parse them to pick an API prefix.
pub async fn version(options: HttpOptions) -> Response {
    let cluster = match options.etcd_version.rsplit_once('.') {
        Some((major_minor, _)) => format!("{major_minor}.0"),
        None => options.etcd_version.clone(),
    };
    axum::Json(serde_json::json!({
        "etcdserver": options.etcd_version,
        "etcdcluster": cluster,
        "cairn": options.cairn_version,
    }))
    .into_response()
}

/// The body, up to `limit.body_bytes`.
async fn read_body(body: Body, limit: Limit) -> Result<Bytes, HttpError> {
    axum::body::to_bytes(body, limit.body_bytes).await.map_err(|e| {
        let too_large =
            std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            HttpError::TooLarge { bytes: limit.body_bytes, max: limit.max_message_bytes }
        } else {
            HttpError::BadJson(format!("reading the request body: {e}"))
        }
    })
}

/// The request messages in `body`: JSON values one after another (whitespace between
/// them); an empty body is one empty message, as in grpc-gateway.
fn decode<Req: DeserializeOwned + Default>(body: &[u8], many: bool) -> Result<Vec<Req>, HttpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(vec![Req::default()]);
    }
    let mut reqs = Vec::new();
    for value in serde_json::Deserializer::from_slice(body).into_iter::<Req>() {
        reqs.push(value.map_err(|e| HttpError::BadJson(e.to_string()))?);
        if !many {
            break;
        }
    }
    Ok(reqs)
}

fn json_response<T: Serialize>(msg: &T) -> Response {
    match serde_json::to_vec(msg) {
        Ok(bytes) => ([(http::header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => HttpError::Grpc(Status::internal(format!("encoding the response: {e}"))).into_response(),
    }
}

async fn unary<Req, Resp, F, Fut>(body: Body, limit: Limit, call: F) -> Response
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let result = async {
        let body = read_body(body, limit).await?;
        let req = decode::<Req>(&body, false)?.pop().unwrap_or_default();
        Ok::<_, HttpError>(call(req).await?.into_inner())
    };
    match result.await {
        Ok(resp) => json_response(&resp),
        Err(e) => e.into_response(),
    }
}

/// A streaming call: `many` whether the body may hold several request messages (client
/// streams) or exactly one (server streams).
async fn streaming<Req, Resp, F, Fut>(body: Body, limit: Limit, many: bool, call: F) -> Response
where
    Req: DeserializeOwned + Default,
    Resp: Serialize + Send + 'static,
    F: FnOnce(Vec<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Streaming<Resp>>, Status>>,
{
    let result = async {
        let body = read_body(body, limit).await?;
        // grpc-gateway decodes a stream's body while the call runs, so a decoding error
        // ends the call: Unknown (HTTP 500), as etcd's gateway answers.
        let reqs = decode::<Req>(&body, many).map_err(|e| match e {
            HttpError::BadJson(text) => HttpError::Grpc(Status::unknown(text)),
            other => other,
        })?;
        Ok::<_, HttpError>(call(reqs).await?.into_inner())
    };
    match result.await {
        Ok(responses) => {
            ([(http::header::CONTENT_TYPE, "application/json")], Body::from_stream(result_lines(responses)))
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    result: &'a T,
}

/// One `{"result":…}` line per message; a failure is the last line, `{"error":…}`.
fn result_lines<Resp: Serialize + Send + 'static>(
    responses: Streaming<Resp>,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    futures::stream::unfold(Some(responses), |state| async move {
        let mut responses = state?;
        let (line, more) = match responses.next().await? {
            Ok(msg) => match serde_json::to_vec(&Envelope { result: &msg }) {
                Ok(line) => (line, true),
                Err(e) => (error_line(&Status::internal(format!("encoding the response: {e}"))), false),
            },
            Err(status) => (error_line(&status), false),
        };
        let mut line = line;
        line.push(b'\n');
        Some((Ok(Bytes::from(line)), more.then_some(responses)))
    })
}

fn error_line(status: &Status) -> Vec<u8> {
    serde_json::to_vec(&stream_error(status)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::etcdserverpb::{
        LeaseKeepAliveResponse, RangeRequest, RangeResponse, ResponseHeader, WatchRequest,
    };
    use cairn_proto::mvccpb::KeyValue;

    #[test]
    fn responses_use_grpc_gateway_json() {
        let resp = RangeResponse {
            header: Some(ResponseHeader { cluster_id: u64::MAX, member_id: 7, revision: 3, raft_term: 2 }),
            kvs: vec![KeyValue {
                key: b"foo".to_vec(),
                create_revision: 2,
                mod_revision: 3,
                version: 2,
                value: b"bar".to_vec(),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        let json = serde_json::to_value(&resp).expect("encode");
        assert_eq!(
            json,
            serde_json::json!({
                "header": {"cluster_id": "18446744073709551615", "member_id": "7", "revision": "3", "raft_term": "2"},
                "kvs": [{"key": "Zm9v", "create_revision": "2", "mod_revision": "3", "version": "2", "value": "YmFy"}],
                "count": "1"
            })
        );
        // A keepalive of an unknown lease: TTL 0 is omitted, not "0".
        let ka = LeaseKeepAliveResponse { header: None, id: 123, ttl: 0 };
        assert_eq!(serde_json::to_value(ka).expect("encode"), serde_json::json!({"ID": "123"}));
    }

    #[test]
    fn requests_take_proto_and_camel_names_enum_names_and_ignore_unknown_fields() {
        let reqs: Vec<RangeRequest> = decode(
            br#"{"key":"Zm9v","range_end":"Zm9w","sortOrder":"DESCEND","sort_target":2,"limit":"3","bogus":1}"#,
            false,
        )
        .expect("decode");
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].key, b"foo");
        assert_eq!(reqs[0].range_end, b"fop");
        assert_eq!(reqs[0].sort_order, 2);
        assert_eq!(reqs[0].sort_target, 2);
        assert_eq!(reqs[0].limit, 3);
        let camel: Vec<RangeRequest> = decode(br#"{"key":"Zm9v","rangeEnd":"Zm9w"}"#, false).expect("decode");
        assert_eq!(camel[0].range_end, b"fop");
    }

    #[test]
    fn bodies_hold_one_or_many_messages_and_bad_json_is_invalid_argument() {
        let empty: Vec<RangeRequest> = decode(b"  \n", false).expect("decode");
        assert_eq!(empty, vec![RangeRequest::default()]);
        let two: Vec<WatchRequest> =
            decode(br#"{"create_request":{"key":"YQ=="}} {"progress_request":{}}"#, true).expect("decode");
        assert_eq!(two.len(), 2);
        for bad in [&b"{bad"[..], br#"{"key":5}"#, br#"{"limit":"x"}"#] {
            match decode::<RangeRequest>(bad, false) {
                Err(HttpError::BadJson(_)) => {}
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
            }
        }
    }
}
