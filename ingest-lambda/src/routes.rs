//! The router: every endpoint (REST and `/mcp`), the JSON fallbacks, the body limit, the error safety net and
//! request tracing.

use crate::error::json_errors;
use crate::handlers::{artifacts, fleet, logs, promote, runs, secrets, system};
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use tower_http::trace::TraceLayer;

/// The API, fully built with `state` applied: the REST routes and the MCP endpoint `/mcp`.
pub fn router(state: AppState) -> Router {
    let rest = rest_router(state.clone());
    let mcp = crate::mcp::mcp_routes(rest.clone(), state);
    rest.merge(mcp)
}

/// The REST API alone (every route but `/mcp`), fully built with `state` applied; the MCP
/// endpoint calls it in-process.
pub fn rest_router(state: AppState) -> Router {
    let body_limit = state.config().limits.body_max_bytes;
    Router::new()
        .route("/health", get(system::health))
        .route("/v1/openapi.json", get(system::openapi_json))
        .route("/v1/runs", post(runs::dispatch).get(runs::list_runs))
        .route("/v1/runs/{id}", get(runs::get_run))
        .route("/v1/runs/{id}/cancel", post(runs::cancel_run))
        .route("/v1/runs/{id}/promote", post(promote::promote_run))
        .route("/v1/runs/{id}/logs", get(logs::logs))
        .route("/v1/runs/{id}/artifacts", get(artifacts::list_artifacts))
        .route("/v1/runs/{id}/artifacts/{*name}", get(artifacts::get_artifact))
        .route("/v1/secrets", get(secrets::list_secrets))
        .route(
            "/v1/secrets/{name}",
            put(secrets::put_secret).delete(secrets::delete_secret),
        )
        .route("/v1/fleet", get(fleet::fleet))
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(json_errors))
        // Default spans carry method, path and version only: no headers, so no keys.
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
