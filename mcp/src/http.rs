//! The streamable HTTP transport of `/mcp`: stateless (no `Mcp-Session-Id`, nothing kept between
//! requests, so any instance can serve any request), JSON answers when a call sends no
//! notification first (SSE otherwise, e.g. progress of `dispatch` with `wait`), POST only (GET
//! and DELETE answer 405, as the spec allows a server without a standalone stream).

use crate::access::InProcessApi;
use crate::server::{McpOptions, OutpostMcp};
use axum::Router;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::sync::Arc;

/// The `/mcp` service type.
pub type McpHttpService = StreamableHttpService<OutpostMcp<InProcessApi>, NeverSessionManager>;

/// The `/mcp` endpoint over `api` (the REST router of the same process, without `/mcp`).
///
/// Requests must be authenticated before they reach it (the API mounts it behind its key
/// check); the `Host` header is not restricted, because a caller needs a valid API key anyway and
/// behind API Gateway the host is the gateway's. `max_body_bytes` bounds a request body.
pub fn http_service(api: Router, options: McpOptions, max_body_bytes: usize) -> McpHttpService {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_sse_retry(None)
        .with_max_request_body_bytes(max_body_bytes)
        .disable_allowed_hosts();
    let access = InProcessApi::new(api);
    StreamableHttpService::new(
        move || Ok(OutpostMcp::new(access.clone(), options.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}
