//! The HTTP side's one error type, rendered as grpc-gateway renders errors: a JSON body
//! `{"error": text, "message": text, "code": gRPC code}` with the HTTP status grpc-gateway
//! gives that code.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tonic::{Code, Status};

#[derive(Debug)]
pub enum HttpError {
    /// The body is not the JSON of the request message (serde's message).
    BadJson(String),
    /// The body is far larger than any request the member takes (the gRPC services answer
    /// the others themselves): grpc-go's ResourceExhausted, as etcd's gateway passes on.
    TooLarge { bytes: usize, max: usize },
    /// The gRPC call failed: etcd's code and text, passed through.
    Grpc(Status),
    /// No route for this path.
    NotFound(String),
    /// A route exists for this path, but not for this method.
    MethodNotAllowed,
    /// Refused before any call (e.g. a cluster action without its header).
    Forbidden(String),
}

impl HttpError {
    /// The gRPC code and text of the body.
    fn code_and_text(&self) -> (Code, String) {
        match self {
            HttpError::BadJson(e) => (Code::InvalidArgument, e.clone()),
            HttpError::TooLarge { bytes, max } => (
                Code::ResourceExhausted,
                format!("grpc: received message larger than max ({bytes} vs. {max})"),
            ),
            HttpError::Grpc(s) => (s.code(), s.message().to_string()),
            HttpError::NotFound(path) => (Code::NotFound, format!("no such path: {path}")),
            HttpError::MethodNotAllowed => (Code::Unimplemented, "method not allowed: use POST".to_string()),
            HttpError::Forbidden(why) => (Code::PermissionDenied, why.clone()),
        }
    }

    fn http_status(&self) -> StatusCode {
        match self {
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            _ => http_status(self.code_and_text().0),
        }
    }

    /// The JSON body (also the `error` object of a failed stream, see [`stream_error`]).
    pub fn body(&self) -> serde_json::Value {
        let (code, text) = self.code_and_text();
        serde_json::json!({ "error": text, "message": text, "code": code as i32 })
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (code, text) = self.code_and_text();
        write!(f, "{text} ({code:?})")
    }
}

impl std::error::Error for HttpError {}

impl From<Status> for HttpError {
    fn from(s: Status) -> Self {
        HttpError::Grpc(s)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.http_status(), axum::Json(self.body())).into_response()
    }
}

/// grpc-gateway's mapping of gRPC codes to HTTP statuses (`runtime.HTTPStatusFromCode`),
/// as etcd 3.4's gateway (grpc-gateway v1) applies it: FailedPrecondition is 412.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The message a stream ends with when its call fails midway (grpc-gateway v1's
/// `{"error":{"grpc_code":…,"http_code":…,"message":…,"http_status":…}}`).
pub fn stream_error(status: &Status) -> serde_json::Value {
    let http = http_status(status.code());
    serde_json::json!({
        "error": {
            "grpc_code": status.code() as i32,
            "http_code": http.as_u16(),
            "message": status.message(),
            "http_status": http.canonical_reason().unwrap_or(""),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_errors_keep_etcd_text_and_code() {
        let e =
            HttpError::Grpc(Status::out_of_range("etcdserver: mvcc: required revision has been compacted"));
        assert_eq!(e.http_status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.body(),
            serde_json::json!({
                "error": "etcdserver: mvcc: required revision has been compacted",
                "message": "etcdserver: mvcc: required revision has been compacted",
                "code": 11
            })
        );
        let e = HttpError::Grpc(Status::not_found("etcdserver: requested lease not found"));
        assert_eq!(e.http_status(), StatusCode::NOT_FOUND);
        let e = HttpError::Grpc(Status::failed_precondition("etcdserver: lease already exists"));
        assert_eq!(e.http_status(), StatusCode::PRECONDITION_FAILED);
    }

    #[test]
    fn a_far_too_large_body_is_grpcs_resource_exhausted() {
        let e = HttpError::TooLarge { bytes: 10, max: 5 };
        assert_eq!(e.http_status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.body()["code"], 8);
        assert_eq!(e.body()["error"], "grpc: received message larger than max (10 vs. 5)");
    }
}
