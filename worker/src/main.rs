//! `outpost-worker`: a worker process, on the embedded backend (a data directory shared with
//! `outpost dev`) or on AWS (the ECS Fargate service: DynamoDB, SQS, S3, SSM, names from
//! `OUTPOST_TABLE`, `OUTPOST_QUEUE_URL`, `OUTPOST_DLQ_URL`, `OUTPOST_BUCKET`). Composes the
//! backend, the agents registry (built-ins plus an optional operator TOML file) and a [`Worker`],
//! and drains on SIGTERM or SIGINT: it stops receiving, lets in-flight runs finish within the
//! drain timeout, then stops and releases the rest so another worker takes them.
//!
//! Logs are JSON lines on AWS (CloudWatch) and text elsewhere, unless `--log-format` says.

use anyhow::Context;
use clap::Parser;
use outpost_config::deployment::{open_backend, BackendKind};
use outpost_core::domain::AgentRegistry;
use outpost_embedded::EmbeddedOptions;
use outpost_worker::config::default_slots;
use outpost_worker::{Worker, WorkerConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Runs Outpost agent runs from the queue.
#[derive(Debug, Parser)]
#[command(name = "outpost-worker", version)]
struct Args {
    /// Backend: `embedded` (a data directory) or `aws`.
    #[arg(long, env = "OUTPOST_BACKEND", default_value = "embedded")]
    backend: BackendKind,
    /// Data directory (embedded: the same one `outpost dev` uses).
    #[arg(long, env = "OUTPOST_DATA")]
    data: Option<PathBuf>,
    /// Where run workspaces go (default: `{data}/work` embedded, `$TMPDIR/outpost-work` on AWS or
    /// when the worker is root, so that agents, run as `nobody`, never pass through the data dir).
    #[arg(long, env = "OUTPOST_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Concurrent runs (default: 2 × available cores).
    #[arg(long, env = "OUTPOST_SLOTS")]
    slots: Option<usize>,
    /// Run lease and message visibility, in seconds.
    #[arg(long, default_value_t = 30)]
    lease_secs: u64,
    /// Claims before a lost run fails with worker_lost.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Seconds in-flight runs get to finish after SIGTERM (ECS waits `stopTimeout`, at most 120 s).
    #[arg(long, env = "OUTPOST_DRAIN_SECS", default_value_t = 25)]
    drain_secs: u64,
    /// Operator agents TOML file (adds agents or overrides built-in ones).
    #[arg(long, env = "OUTPOST_AGENTS")]
    agents: Option<PathBuf>,
    /// Enable the `shell` agent (runs the task as a sh script; for local use and tests only).
    #[arg(long)]
    allow_shell: bool,
    /// `json` or `text` (default: json on AWS, text embedded).
    #[arg(long, env = "OUTPOST_LOG_FORMAT")]
    log_format: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let json = match args.log_format.as_deref() {
        None => args.backend == BackendKind::Aws,
        Some("json") => true,
        Some("text") => false,
        Some(other) => anyhow::bail!("--log-format must be json or text, not {other:?}"),
    };
    outpost_config::telemetry::init_logs("info", json);
    anyhow::ensure!(args.lease_secs >= 1, "--lease-secs must be at least 1");
    anyhow::ensure!(args.max_attempts >= 1, "--max-attempts must be at least 1");
    let slots = args.slots.unwrap_or_else(default_slots);
    anyhow::ensure!(slots >= 1, "--slots must be at least 1");

    let (data, work_dir) = match (args.backend, &args.data) {
        (BackendKind::Embedded, None) => {
            anyhow::bail!("--data (or OUTPOST_DATA) is required with the embedded backend")
        }
        (BackendKind::Embedded, Some(d)) => (
            d.clone(),
            args.work_dir
                .clone()
                .unwrap_or_else(|| outpost_worker::identity::default_work_dir(d)),
        ),
        (BackendKind::Aws, d) => (
            d.clone().unwrap_or_default(),
            args.work_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("outpost-work")),
        ),
    };
    if args.backend == BackendKind::Embedded {
        std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    }
    let opened = open_backend(args.backend, &data, EmbeddedOptions::default()).await?;
    let mut agents = AgentRegistry::builtin(args.allow_shell);
    if let Some(file) = &args.agents {
        agents.apply_file(file)?;
    }
    let config = WorkerConfig {
        slots,
        lease: Duration::from_secs(args.lease_secs),
        max_attempts: args.max_attempts,
        drain_timeout: Duration::from_secs(args.drain_secs),
        ..WorkerConfig::new(work_dir)
    };
    let worker = Worker::new(opened.backend, Arc::new(agents), config);
    tracing::info!(worker_id = %worker.id(), backend = %opened.description, slots, "outpost-worker starting");
    worker.run(outpost_config::telemetry::shutdown_signal()).await?;
    tracing::info!("outpost-worker stopped");
    Ok(())
}
