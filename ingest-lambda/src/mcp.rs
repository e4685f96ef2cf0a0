//! `/mcp`: Outpost's MCP server as stateless streamable HTTP on the API itself
//! (`outpost_mcp::http_service`). A request needs an API key exactly like `/v1` (401 in the API's
//! error shape without one); the tools then call the REST router in-process with that same
//! `Authorization` header, so tenants, keys and error codes are the REST API's.

use crate::auth::Tenant;
use crate::state::AppState;
use axum::extract::Request;
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;
use axum::Router;
use outpost_mcp::McpOptions;
use tower_http::trace::TraceLayer;

/// The path of the MCP endpoint.
pub const MCP_PATH: &str = "/mcp";

/// The `/mcp` route over `rest` (the REST router without `/mcp`).
pub fn mcp_routes(rest: Router, state: AppState) -> Router {
    let options = McpOptions {
        max_wait: state.config().mcp_max_wait,
        ..McpOptions::default()
    };
    let service = outpost_mcp::http_service(rest, options, state.config().limits.body_max_bytes);
    Router::new()
        .route_service(MCP_PATH, service)
        .route_layer(from_fn_with_state(state, require_key))
        // Default spans carry method, path and version only: no headers, so no keys.
        .layer(TraceLayer::new_for_http())
}

/// Lets a request through only with a valid API key (the `Tenant` extractor answers 401).
async fn require_key(_tenant: Tenant, request: Request, next: Next) -> Response {
    next.run(request).await
}
