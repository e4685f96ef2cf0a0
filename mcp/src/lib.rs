//! Outpost's MCP (Model Context Protocol) server, built on the official Rust SDK `rmcp`.
//!
//! One implementation of the tools ([`OutpostMcp`]) calls the Outpost REST API through the typed
//! client [`outpost_api::client::OutpostClient`]; where its requests go is an [`ApiAccess`]:
//!
//! - [`RemoteApi`]: over the network to `OUTPOST_URL` with `OUTPOST_API_KEY` (reqwest); served on
//!   stdio by [`serve_stdio`] for `outpost mcp`.
//! - [`InProcessApi`]: straight into the API's own axum router ([`RouterTransport`], `oneshot`),
//!   forwarding the `Authorization` header of the `/mcp` request being served; mounted at `/mcp`
//!   by [`http_service`] as stateless streamable HTTP (no sessions, JSON answers), so it works
//!   behind API Gateway + Lambda with no network hop and exactly the REST API's keys, tenant
//!   isolation and error codes.
//!
//! Tools (each declared once, with rmcp's `#[tool]`, in `tools.rs`): `dispatch`, `list_runs`,
//! `get_run`, `cancel_run`, `promote`, `fleet_status`. An API
//! failure is a tool error result (`isError: true`) whose text is the REST error body,
//! `{"error":{"code","message"}}`. `dispatch` with `wait: true` runs as an MCP task
//! (tasks extension, SEP-2663) for clients that declare it: the task id is the run id.

mod access;
mod http;
mod server;
mod tools;

pub use access::{ApiAccess, InProcessApi, RemoteApi, RouterTransport, IN_PROCESS_BASE};
pub use http::{http_service, McpHttpService};
pub use server::{McpOptions, OutpostMcp};
pub use tools::{DispatchArgs, PromoteArgs, RunIdArgs};

/// Serves the tools on stdin/stdout until the client closes the stream; nothing else is written
/// to stdout.
pub async fn serve_stdio(api: RemoteApi, options: McpOptions) -> Result<(), McpServeError> {
    use rmcp::ServiceExt;
    let running = OutpostMcp::new(api, options)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpServeError(e.to_string()))?;
    running.waiting().await.map_err(|e| McpServeError(e.to_string()))?;
    Ok(())
}

/// The stdio server could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
#[error("MCP server failed: {0}")]
pub struct McpServeError(String);
