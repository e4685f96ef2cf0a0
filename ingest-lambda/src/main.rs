//! `ingest-lambda`: serves the Outpost API over the embedded backend (SQLite + a folder) for
//! local use; later the AWS Lambda entry point.
//!
//! Logs go to stderr, filtered by `OUTPOST_LOG` (as the other binaries; default `info`; request
//! spans and their timings are at `debug`: `OUTPOST_LOG=info,tower_http=debug`).

use anyhow::Context;
use clap::Parser;
use ingest_lambda::{router, ApiConfig, AppState};
use outpost_shared::AgentRegistry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Serve the Outpost API over the embedded backend.
#[derive(Debug, Parser)]
#[command(name = "ingest-lambda", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "OUTPOST_LISTEN")]
    listen: SocketAddr,
    /// Data directory of the embedded backend (SQLite file and artifacts).
    #[arg(long, env = "OUTPOST_DATA")]
    data: PathBuf,
    /// Operator agents file (TOML) adding to or overriding the built-in agents.
    #[arg(long, env = "OUTPOST_AGENTS")]
    agents: Option<PathBuf>,
    /// Enable the `shell` agent (runs the task as a sh script); for local use only.
    #[arg(long)]
    allow_shell: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    outpost_shared::telemetry::init_logs("info", false);
    let args = Args::parse();

    let mut agents = AgentRegistry::builtin(args.allow_shell);
    if let Some(path) = &args.agents {
        agents.apply_file(path)?;
    }
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create data directory {}", args.data.display()))?;
    let backend = outpost_shared::embedded::open(&args.data, Default::default())
        .with_context(|| format!("cannot open the embedded backend in {}", args.data.display()))?;
    let state = AppState::new(backend, Arc::new(agents), ApiConfig::default());

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, data = %args.data.display(), "Outpost API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(outpost_shared::telemetry::shutdown_signal())
        .await
        .context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}
