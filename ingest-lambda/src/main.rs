//! `ingest-lambda`: the Outpost API as an AWS Lambda function behind API Gateway (HTTP API,
//! payload v2), or as a plain HTTP server for local use and tests.
//!
//! - In Lambda (`AWS_LAMBDA_RUNTIME_API` is set, as the Lambda service does): the axum router is
//!   served through `lambda_http`; the backend defaults to `aws`, and the one set of AWS clients is
//!   made at init and reused by every invocation of this instance. Logs are JSON.
//! - Elsewhere: `--listen` (default 127.0.0.1:8080) over `--backend embedded --data DIR` or
//!   `--backend aws` (names from `OUTPOST_TABLE`, `OUTPOST_QUEUE_URL`, `OUTPOST_DLQ_URL`,
//!   `OUTPOST_BUCKET`; endpoint from `AWS_ENDPOINT_URL`).
//!
//! Logs go to stderr, filtered by `OUTPOST_LOG` (default `info`).

use anyhow::Context;
use clap::Parser;
use ingest_lambda::lambda::lambda_router;
use ingest_lambda::{router, ApiConfig, AppState};
use outpost_config::deployment::{open_backend, BackendKind};
use outpost_core::AgentRegistry;
use outpost_embedded::EmbeddedOptions;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The variable the Lambda service sets for its runtime API.
const LAMBDA_RUNTIME_VAR: &str = "AWS_LAMBDA_RUNTIME_API";

/// Serve the Outpost API (in AWS Lambda, or over plain HTTP).
#[derive(Debug, Parser)]
#[command(name = "ingest-lambda", version, about)]
struct Args {
    /// Backend: `embedded` or `aws` (default: `aws` inside Lambda, `embedded` elsewhere).
    #[arg(long, env = "OUTPOST_BACKEND")]
    backend: Option<BackendKind>,
    /// Address to listen on (not in Lambda).
    #[arg(long, default_value = "127.0.0.1:8080", env = "OUTPOST_LISTEN")]
    listen: SocketAddr,
    /// Data directory of the embedded backend (SQLite file and artifacts).
    #[arg(long, env = "OUTPOST_DATA", required_if_eq("backend", "embedded"))]
    data: Option<PathBuf>,
    /// Operator agents file (TOML) adding to or overriding the built-in agents.
    #[arg(long, env = "OUTPOST_AGENTS")]
    agents: Option<PathBuf>,
    /// Enable the `shell` agent (runs the task as a sh script); for local use only.
    #[arg(long)]
    allow_shell: bool,
    /// Accept repositories on this machine (`file://`, `http://` to localhost) in dispatches
    /// (default: yes on the embedded backend, no on AWS, where tenants share the fleet).
    #[arg(long, env = "OUTPOST_ALLOW_LOCAL_REPOS")]
    allow_local_repos: Option<bool>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let in_lambda = std::env::var_os(LAMBDA_RUNTIME_VAR).is_some();
    outpost_config::telemetry::init_logs("info", in_lambda);
    let args = Args::parse();
    let kind = args.backend.unwrap_or(if in_lambda {
        BackendKind::Aws
    } else {
        BackendKind::Embedded
    });

    let mut agents = AgentRegistry::builtin(args.allow_shell);
    if let Some(path) = &args.agents {
        agents.apply_file(path)?;
    }
    let data = match (&args.data, kind) {
        (Some(d), _) => d.clone(),
        (None, BackendKind::Embedded) => {
            anyhow::bail!("--data (or OUTPOST_DATA) is required with the embedded backend")
        }
        (None, BackendKind::Aws) => PathBuf::new(),
    };
    let opened = open_backend(kind, &data, EmbeddedOptions::default()).await?;
    let mut config = ApiConfig::default();
    config.limits.allow_local_repos = args.allow_local_repos.unwrap_or(kind == BackendKind::Embedded);
    if in_lambda {
        // API Gateway ends an integration after 30 s: an MCP `wait` must answer before that.
        config.mcp_max_wait = std::time::Duration::from_secs(25);
    }
    if let Some(expiry) = opened.presign_expiry {
        config.presign_expiry = expiry;
    }
    tracing::info!(backend = %opened.description, "backend open");
    let state = AppState::new(opened.backend, Arc::new(agents), config);

    if in_lambda {
        tracing::info!("serving through the Lambda runtime API");
        return lambda_http::run(lambda_router(state))
            .await
            .map_err(|e| anyhow::anyhow!("Lambda runtime failed: {e}"));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "Outpost API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(outpost_config::telemetry::shutdown_signal())
        .await
        .context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}
