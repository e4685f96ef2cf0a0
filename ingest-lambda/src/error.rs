//! The API's one error shape, `ErrorBody { error: { code, message, field? } }`, and the mapping
//! of every failure (validation, auth, store, queue, axum's own rejections) onto it.
//!
//! Backend failures answer with a generic message; their detail goes to the log (`tracing`),
//! never to the client.

use axum::http::header::{HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use outpost_api::{ErrorBody, ErrorDetail};
use outpost_core::ports::{ArtifactError, KeyError, QueueError, StoreError};
use outpost_core::ValidationError;

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// Sets the request field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The answer for a run that does not exist, belongs to another tenant, or whose id does not
    /// parse: all three look the same, so a run's existence is never revealed.
    pub fn run_not_found() -> Self {
        Self::not_found("no such run")
    }

    pub fn invalid_query(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A field that fails validation: 422 `validation_failed` with the field.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", message).with_field(field)
    }

    /// A backend that did not answer or failed; `what` names it in the client's message and
    /// `detail` goes to the log only.
    pub fn unavailable(what: &str, detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(backend = what, error = %detail, "backend failure");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the {what} is unavailable; try again shortly"),
        )
    }

    /// A failure that should not happen; `detail` goes to the log only.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }

    /// The body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
                field: self.field.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut resp = (status, axum::Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::validation(e.field, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::run_not_found(),
            StoreError::BadCursor => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_cursor",
                "cursor is not one this API handed out; start again without it",
            ),
            StoreError::Conflict { status, .. } => Self::conflict(format!("the run is {status}")),
            StoreError::Backend(err) => Self::unavailable("run store", &err),
            other @ (StoreError::AlreadyExists(_) | StoreError::LeaseLost(_)) => Self::internal(&other),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Backend(err) => Self::unavailable("task queue", &err),
            other @ QueueError::StaleReceipt => Self::internal(&other),
        }
    }
}

impl From<ArtifactError> for ApiError {
    fn from(e: ArtifactError) -> Self {
        match e {
            ArtifactError::BadName(_) => Self::not_found("no such artifact"),
            ArtifactError::Backend(err) => Self::unavailable("artifact store", &err),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Backend(err) => Self::unavailable("key store", &err),
        }
    }
}

/// The error code a bare status stands for, for answers that reach the client without an
/// `ApiError` (see [`json_errors`]).
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "validation_failed",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// Middleware safety net: an error answer that is not JSON (a default rejection of axum or
/// tower-http) is rewritten into the one error shape, keeping its status and headers.
pub async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let message = status.canonical_reason().unwrap_or("request failed").to_lowercase();
    let fresh = ApiError::new(status, code_for_status(status), message).into_response();
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.extend(fresh_parts.headers);
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use outpost_core::RunStatus;

    async fn body_of(resp: Response) -> ErrorBody {
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        serde_json::from_slice(&bytes).expect("error body")
    }

    #[tokio::test]
    async fn errors_render_the_one_shape() {
        let resp = ApiError::validation("task", "task: must not be empty").into_response();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = body_of(resp).await;
        assert_eq!(body.error.code, "validation_failed");
        assert_eq!(body.error.field.as_deref(), Some("task"));
    }

    #[tokio::test]
    async fn unauthorized_asks_for_a_bearer_token() {
        let resp = ApiError::unauthorized("missing key").into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
    }

    #[test]
    fn store_errors_map_to_statuses_without_detail() {
        let backend = StoreError::Backend("disk I/O error at /secret/path".into());
        let e = ApiError::from(backend);
        assert_eq!((e.status, e.code), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
        assert!(!e.message.contains("/secret/path"));
        assert_eq!(ApiError::from(StoreError::NotFound).status, StatusCode::NOT_FOUND);
        assert_eq!(ApiError::from(StoreError::BadCursor).code, "invalid_cursor");
        let id = outpost_core::RunId::generate();
        let conflict = StoreError::Conflict {
            id: id.clone(),
            status: RunStatus::Succeeded,
            message: "done".into(),
        };
        assert_eq!(ApiError::from(conflict).status, StatusCode::CONFLICT);
        let e = ApiError::from(StoreError::AlreadyExists(id));
        assert_eq!((e.status, e.code), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
        let e = ApiError::from(QueueError::Backend("sqs down".into()));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.message.contains("sqs down"));
        assert_eq!(
            ApiError::from(ArtifactError::BadName("../x".into())).status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn validation_errors_keep_their_field() {
        let e = ApiError::from(ValidationError::new(
            "timeout_secs",
            "is 5; it must be between 10 and 86400 seconds",
        ));
        assert_eq!(e.field.as_deref(), Some("timeout_secs"));
        assert_eq!(e.message, "timeout_secs: is 5; it must be between 10 and 86400 seconds");
    }

    #[tokio::test]
    async fn non_json_errors_are_rewritten_keeping_headers() {
        let resp = Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header("allow", "GET,HEAD")
            .header(CONTENT_TYPE, "text/plain")
            .body(axum::body::Body::from("nope"))
            .expect("response");
        let resp = json_errors(resp).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            resp.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some("GET,HEAD")
        );
        assert_eq!(body_of(resp).await.error.code, "method_not_allowed");

        let ok = Response::builder()
            .status(StatusCode::OK)
            .body(axum::body::Body::from("log bytes"))
            .expect("response");
        let ok = json_errors(ok).await;
        let bytes = ok.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&bytes[..], b"log bytes");
    }
}
