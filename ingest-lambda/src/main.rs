//! `ingest-lambda`: the Outpost API as an AWS Lambda function behind API Gateway (HTTP API,
//! payload v2), or as a plain HTTP server for local use and tests.
//!
//! - In Lambda (`AWS_LAMBDA_RUNTIME_API` is set, as the Lambda service does): the axum router is
//!   served through `lambda_http`; the backend defaults to `aws`, and the one set of AWS clients is
//!   made at init and reused by every invocation of this instance. Logs are JSON.
//! - Elsewhere: `--listen` (default 127.0.0.1:7331) over `--backend embedded --data DIR` or
//!   `--backend aws` (names from `OUTPOST_TABLE`, `OUTPOST_QUEUE_URL`, `OUTPOST_DLQ_URL`,
//!   `OUTPOST_BUCKET`; endpoint from `AWS_ENDPOINT_URL`).
//!
//! Settings are those of every Outpost binary (`outpost_config::settings`). This main only
//! resolves them, builds the router and serves it.

use anyhow::Context as _;
use clap::Parser;
use ingest_lambda::lambda::lambda_router;
use ingest_lambda::settings::api_config;
use ingest_lambda::{router, AppState};
use outpost_config::settings::{AgentArgs, BackendArgs, Context, ServeArgs, SettingsArgs};
use outpost_config::Settings;
use std::sync::Arc;

/// The variable the Lambda service sets for its runtime API.
const LAMBDA_RUNTIME_VAR: &str = "AWS_LAMBDA_RUNTIME_API";

/// Serve the Outpost API (in AWS Lambda, or over plain HTTP).
#[derive(Debug, Parser)]
#[command(name = "ingest-lambda", version, about)]
struct Args {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    agents: AgentArgs,
    #[command(flatten)]
    serve: ServeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let in_lambda = std::env::var_os(LAMBDA_RUNTIME_VAR).is_some();
    let args = Args::parse();
    let settings = Settings::resolve(
        &SettingsArgs {
            backend: args.backend,
            agents: args.agents,
            serve: args.serve,
            ..SettingsArgs::default()
        },
        Context { in_lambda },
    )?;
    outpost_config::telemetry::init_logs("info", settings.json_logs());
    let agents = settings.agents()?;
    let opened = settings.open_backend().await?;
    let config = api_config(&settings, &opened, in_lambda);
    tracing::info!(backend = %opened.description, "backend open");
    let state = AppState::new(opened.backend, Arc::new(agents), config);

    if in_lambda {
        tracing::info!("serving through the Lambda runtime API");
        return lambda_http::run(lambda_router(state))
            .await
            .map_err(|e| anyhow::anyhow!("Lambda runtime failed: {e}"));
    }
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "Outpost API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(outpost_config::telemetry::shutdown_signal())
        .await
        .context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}
