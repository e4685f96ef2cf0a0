//! Request extractors whose rejections speak the API's error shape: a JSON body (content type,
//! size limit, syntax vs. schema errors with the field at fault), a query string, and run paths.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use outpost_core::RunId;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A JSON request body of type `T`.
///
/// - no or another content type → 415 `unsupported_media_type`
/// - larger than `DispatchLimits::body_max_bytes` → 413 `payload_too_large`
/// - not JSON → 400 `invalid_json`
/// - JSON that does not fit `T` (unknown or missing field, wrong type) → 422 `validation_failed`
///   with the field at fault
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be JSON with 'Content-Type: application/json'",
            ));
        }
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A JSON request body of type `T` that may also be empty (then `T::default()`); otherwise as
/// [`JsonBody`].
#[derive(Debug, Clone)]
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let json_type = is_json(req.headers());
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be JSON with 'Content-Type: application/json' (or empty)",
            ));
        }
        parse_json(&bytes).map(Self)
    }
}

/// The whole body, within `DispatchLimits::body_max_bytes` (413 `payload_too_large` beyond).
async fn read_body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let limit = state.config().limits.body_max_bytes;
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {limit} bytes"),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request body could not be read",
            )
        }
    })
}

/// Parses a JSON body into `T`, mapping errors as [`JsonBody`] documents.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| describe_json_error::<T>(bytes, &e))
}

fn describe_json_error<T: DeserializeOwned>(bytes: &[u8], e: &serde_json::Error) -> ApiError {
    if !e.is_data() {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the request body is not valid JSON: {e}"),
        );
    }
    let message = without_location(&e.to_string());
    let field = named_field(&message, "unknown field `")
        .or_else(|| named_field(&message, "missing field `"))
        .or_else(|| culprit_field::<T>(bytes));
    match field {
        Some(field) => ApiError::validation(field.clone(), format!("{field}: {message}")),
        None => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", message),
    }
}

/// serde_json appends ` at line L column C`; the field says more than the position.
fn without_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => message[..i].to_owned(),
        _ => message.to_owned(),
    }
}

/// The name in backticks after `prefix`, as serde writes unknown and missing fields.
fn named_field(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    let end = rest.find('`')?;
    Some(rest[..end].to_owned())
}

/// The member of a JSON object whose removal makes the error go away (or turn into "missing
/// field" for it): the field with the wrong type. Runs on the error path only.
fn culprit_field<T: DeserializeOwned>(bytes: &[u8]) -> Option<String> {
    let object: Map<String, Value> = serde_json::from_slice(bytes).ok()?;
    for key in object.keys() {
        let mut without = object.clone();
        without.remove(key);
        match serde_json::from_value::<T>(Value::Object(without)) {
            Ok(_) => return Some(key.clone()),
            Err(e) if named_field(&e.to_string(), "missing field `").as_deref() == Some(key) => {
                return Some(key.clone())
            }
            Err(_) => {}
        }
    }
    None
}

/// `application/json`, with parameters, or any `+json` type.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// A query string of type `T`; a bad one → 400 `invalid_query`.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(ApiQuery(q)),
            Err(rejection) => Err(ApiError::invalid_query(rejection.body_text())),
        }
    }
}

/// The `{id}` of a run path. An id that does not parse is a run that does not exist: 404.
#[derive(Debug, Clone)]
pub struct RunPath(pub RunId);

impl<S: Send + Sync> FromRequestParts<S> for RunPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::run_not_found())?;
        id.parse().map(RunPath).map_err(|_| ApiError::run_not_found())
    }
}

/// The `{id}` and `{*name}` of an artifact path.
#[derive(Debug, Clone)]
pub struct ArtifactPath(pub RunId, pub String);

impl<S: Send + Sync> FromRequestParts<S> for ArtifactPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((id, name)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found("no such artifact"))?;
        let id = id.parse().map_err(|_| ApiError::run_not_found())?;
        Ok(ArtifactPath(id, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_api::DispatchRequest;

    fn err(body: &str) -> ApiError {
        parse_json::<DispatchRequest>(body.as_bytes()).expect_err("refused")
    }

    #[test]
    fn syntax_errors_are_invalid_json() {
        for body in [
            "",
            "{",
            "{\"agent\": }",
            "not json",
            "{\"agent\":\"a\",\"task\":\"t\"} x",
        ] {
            let e = err(body);
            assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "invalid_json"), "{body}");
        }
    }

    #[test]
    fn schema_errors_name_the_field() {
        let e = err(r#"{"agent":"a","task":"t","colour":"red"}"#);
        assert_eq!(
            (e.status, e.field.as_deref()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("colour"))
        );
        assert!(e.message.contains("unknown field"), "{}", e.message);
        assert!(!e.message.contains("line 1"), "{}", e.message);

        let e = err(r#"{"agent":"a"}"#);
        assert_eq!(e.field.as_deref(), Some("task"));

        let e = err(r#"{"agent":"a","task":"t","timeout_secs":"soon"}"#);
        assert_eq!(e.field.as_deref(), Some("timeout_secs"), "{}", e.message);
        let e = err(r#"{"agent":"a","task":"t","timeout_secs":-5}"#);
        assert_eq!(e.field.as_deref(), Some("timeout_secs"), "{}", e.message);

        let e = err(r#"{"agent":7,"task":"t"}"#);
        assert_eq!(e.field.as_deref(), Some("agent"), "{}", e.message);

        let e = err(r#"["agent"]"#);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
        );
        assert_eq!(e.field, None);
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        for (ct, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("text/+json", false),
            ("+json", false),
        ] {
            h.insert(CONTENT_TYPE, ct.parse().expect("header"));
            assert_eq!(is_json(&h), ok, "{ct}");
        }
    }
}
