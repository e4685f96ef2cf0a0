//! `outpost-worker`: a worker process over an embedded data directory. Composes the embedded
//! backend, the agents registry (built-ins plus an optional operator TOML file) and a [`Worker`],
//! and drains cleanly on SIGTERM or SIGINT.

use anyhow::Context;
use clap::Parser;
use outpost_shared::domain::AgentRegistry;
use outpost_shared::embedded::{self, EmbeddedOptions};
use outpost_worker::config::default_slots;
use outpost_worker::{Worker, WorkerConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Runs Outpost agent runs from the queue of an embedded data directory.
#[derive(Debug, Parser)]
#[command(name = "outpost-worker", version)]
struct Args {
    /// Data directory (the same one `outpost dev` uses).
    #[arg(long, env = "OUTPOST_DATA")]
    data: PathBuf,
    /// Concurrent runs (default: 2 × available cores).
    #[arg(long)]
    slots: Option<usize>,
    /// Run lease and message visibility, in seconds.
    #[arg(long, default_value_t = 30)]
    lease_secs: u64,
    /// Claims before a lost run fails with worker_lost.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Operator agents TOML file (adds agents or overrides built-in ones).
    #[arg(long)]
    agents: Option<PathBuf>,
    /// Enable the `shell` agent (runs the task as a sh script; for local use only).
    #[arg(long)]
    allow_shell: bool,
    /// Log as JSON lines.
    #[arg(long)]
    json_logs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    outpost_shared::telemetry::init_logs("info", args.json_logs);
    anyhow::ensure!(args.lease_secs >= 1, "--lease-secs must be at least 1");
    anyhow::ensure!(args.max_attempts >= 1, "--max-attempts must be at least 1");
    let slots = args.slots.unwrap_or_else(default_slots);
    anyhow::ensure!(slots >= 1, "--slots must be at least 1");

    let backend = embedded::open(&args.data, EmbeddedOptions::default())
        .with_context(|| format!("opening the data directory {}", args.data.display()))?;
    let mut agents = AgentRegistry::builtin(args.allow_shell);
    if let Some(file) = &args.agents {
        agents.apply_file(file)?;
    }
    let config = WorkerConfig {
        slots,
        lease: Duration::from_secs(args.lease_secs),
        max_attempts: args.max_attempts,
        ..WorkerConfig::new(args.data.join("work"))
    };
    let worker = Worker::new(backend, Arc::new(agents), config);
    tracing::info!(worker_id = %worker.id(), data = %args.data.display(), "outpost-worker starting");
    worker.run(outpost_shared::telemetry::shutdown_signal()).await?;
    Ok(())
}
