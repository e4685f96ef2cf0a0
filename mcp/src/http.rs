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
    // One server (and tool router) for the process, cloned for each request.
    let server = OutpostMcp::new(InProcessApi::new(api), options);
    StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::{json, Value};
    use tower::ServiceExt;

    /// A REST API that knows no run: every request is the API's 404.
    fn no_runs() -> Router {
        Router::new().fallback(|| async {
            (
                http::StatusCode::NOT_FOUND,
                [(http::header::CONTENT_TYPE, "application/json")],
                r#"{"error":{"code":"not_found","message":"no such run"}}"#,
            )
        })
    }

    /// One sessionless JSON-RPC request to `/mcp`; the JSON answer.
    async fn rpc(body: Value) -> Value {
        let service = http_service(no_runs(), McpOptions::default(), 1 << 20);
        let request = http::Request::post("http://outpost.test/mcp")
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("mcp-protocol-version", "2025-11-25")
            .body(axum::body::Body::from(body.to_string()))
            .expect("request");
        let response = service.oneshot(request).await.expect("response");
        assert_eq!(response.status(), http::StatusCode::OK);
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        serde_json::from_slice(&bytes).expect("a JSON answer")
    }

    fn call(id: u64, name: &str, arguments: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": arguments}})
    }

    #[tokio::test]
    async fn tools_are_listed_once_each_with_their_annotations() {
        let listed = rpc(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).await;
        let tools = listed["result"]["tools"].as_array().expect("tools");
        let names: Vec<_> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(
            names,
            [
                "cancel_run",
                "dispatch",
                "fleet_status",
                "get_run",
                "list_runs",
                "promote"
            ]
        );
        let cancel = &tools[0];
        assert_eq!(
            cancel["annotations"],
            json!({"title": "Cancel a run", "readOnlyHint": false, "destructiveHint": true,
                   "idempotentHint": true, "openWorldHint": false})
        );
        assert_eq!(tools[2]["inputSchema"], json!({"type": "object", "properties": {}}));
        assert!(listed["result"].get("ttlMs").is_none(), "{listed}");
    }

    #[tokio::test]
    async fn bad_arguments_and_api_errors_are_tool_errors_with_the_rest_body() {
        let invalid = rpc(call(2, "get_run", json!({}))).await;
        assert_eq!(invalid["result"]["isError"], true, "{invalid}");
        let error = &invalid["result"]["structuredContent"]["error"];
        assert_eq!(error["code"], "validation_failed", "{invalid}");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("invalid arguments: missing field `run_id`")),
            "{invalid}"
        );

        let missing = rpc(call(
            3,
            "cancel_run",
            json!({"run_id": "run_00000000000000000000000000"}),
        ))
        .await;
        assert_eq!(missing["result"]["isError"], true, "{missing}");
        assert_eq!(
            missing["result"]["structuredContent"],
            json!({"error": {"code": "not_found", "message": "no such run", "status": 404}})
        );

        let unknown = rpc(call(4, "nope", json!({}))).await;
        assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
        assert_eq!(unknown["error"]["message"], "unknown tool: nope", "{unknown}");
    }
}
