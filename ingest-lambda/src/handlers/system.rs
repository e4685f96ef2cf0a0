//! Health, the OpenAPI document, and the JSON answers for unknown routes and wrong methods.

use super::TAG_SYSTEM;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use outpost_api::Health;

/// Longest request path quoted back in a 404.
const MAX_QUOTED_PATH: usize = 200;

#[utoipa::path(
    get,
    path = "/health",
    tag = TAG_SYSTEM,
    summary = "Liveness",
    security(()),
    responses((status = 200, description = "The API is up", body = Health))
)]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = TAG_SYSTEM,
    summary = "This API's OpenAPI 3.1 document",
    security(()),
    responses((status = 200, description = "The document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        state.openapi_json(),
    )
        .into_response()
}

/// Any path no route matches.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(MAX_QUOTED_PATH).collect();
    ApiError::not_found(format!("no endpoint {method} {path}"))
}

/// A known path with a method it does not serve (the `Allow` header lists the right ones).
pub async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("method {method} is not allowed on this path"),
    )
}
