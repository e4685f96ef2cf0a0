//! The router: every endpoint (REST and `/mcp`), the JSON fallbacks, the body limit, the error safety net and
//! request tracing.
//!
//! Each REST route is declared once, in [`rest_routes`], by naming its handler in `routes!`: the path and
//! method come from the handler's `#[utoipa::path]`, and the same declaration feeds both the axum router and
//! the OpenAPI document ([`crate::openapi::document_json`]), so a route cannot be served undocumented or
//! documented unserved.

use crate::error::json_errors;
use crate::handlers::{artifacts, fleet, logs, promote, runs, secrets, system};
use crate::openapi::ApiDoc;
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    let (routes, _document) = rest_routes().split_for_parts();
    routes
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(json_errors))
        // Default spans carry method, path and version only: no headers, so no keys.
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Every REST route with its OpenAPI operation, before state, fallbacks and layers. The document starts
/// from [`ApiDoc`] (info, tags, security, schemas) and gains one operation per handler named here. Handlers
/// sharing a path share one `routes!` (it registers its whole method router on every path it names).
pub(crate) fn rest_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::health))
        .routes(routes!(system::openapi_json))
        .routes(routes!(runs::dispatch, runs::list_runs))
        .routes(routes!(runs::get_run))
        .routes(routes!(runs::cancel_run))
        .routes(routes!(promote::promote_run))
        .routes(routes!(logs::logs))
        .routes(routes!(artifacts::list_artifacts))
        .routes(routes!(artifacts::get_artifact))
        .routes(routes!(secrets::list_secrets))
        .routes(routes!(secrets::put_secret, secrets::delete_secret))
        .routes(routes!(fleet::fleet))
}
