//! `outpost mcp`: Outpost's MCP server on stdio, a client of a running API (`--url`/`OUTPOST_URL`,
//! `--api-key`/`OUTPOST_API_KEY`), for `claude mcp add outpost -- outpost mcp`. Stdout carries
//! only MCP JSON-RPC; logs go to stderr (`OUTPOST_LOG`, default `warn`).

use crate::ApiArgs;
use anyhow::Context;
use outpost_api::client::OutpostClient;
use outpost_mcp::{McpOptions, RemoteApi};
use std::process::ExitCode;

pub async fn run(api: &ApiArgs) -> anyhow::Result<ExitCode> {
    outpost_config::telemetry::init_logs("warn", false);
    if api.api_key.is_none() {
        anyhow::bail!("no API key: pass --api-key or set OUTPOST_API_KEY (outpost dev prints one at first start)");
    }
    let client = OutpostClient::new(&api.url, api.api_key.clone())?;
    tracing::info!(url = %client.base_url(), "serving MCP on stdio");
    outpost_mcp::serve_stdio(RemoteApi::new(client), McpOptions::default())
        .await
        .context("MCP over stdio")?;
    Ok(ExitCode::SUCCESS)
}
