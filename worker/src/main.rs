//! `outpost-worker`: a worker process, on the embedded backend (a data directory shared with
//! `outpost dev`) or on AWS (the ECS Fargate service: DynamoDB, SQS, S3, SSM, names from
//! `OUTPOST_TABLE`, `OUTPOST_QUEUE_URL`, `OUTPOST_DLQ_URL`, `OUTPOST_BUCKET`). Composes the
//! backend, the agents registry (built-ins plus an optional operator TOML file) and a [`Worker`],
//! and drains on SIGTERM or SIGINT: it stops receiving, lets in-flight runs finish within the
//! drain timeout, then stops and releases the rest so another worker takes them.
//!
//! Settings are those of every Outpost binary (`outpost_config::settings`): the same flags,
//! variables, optional settings file and defaults as `outpost worker`. Logs are JSON lines on
//! AWS (CloudWatch) and text elsewhere, unless `--log-format` says.

use clap::Parser;
use outpost_config::settings::{AgentArgs, BackendArgs, Context, SettingsArgs, WorkerArgs};
use outpost_config::Settings;
use outpost_worker::{Worker, WorkerConfig};
use std::sync::Arc;

/// Runs Outpost agent runs from the queue.
#[derive(Debug, Parser)]
#[command(name = "outpost-worker", version)]
struct Args {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    agents: AgentArgs,
    #[command(flatten)]
    worker: WorkerArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `outpost __confine …` is the agents' sandbox helper when no outpost-confine is installed.
    outpost_worker::sandbox::serve_confine();
    let args = Args::parse();
    let settings = Settings::resolve(
        &SettingsArgs {
            backend: args.backend,
            agents: args.agents,
            worker: args.worker,
            ..SettingsArgs::default()
        },
        Context::default(),
    )?;
    outpost_config::telemetry::init_logs("info", settings.json_logs());
    let slots = settings.require_slots()?;
    let agents = settings.agents()?;
    let opened = settings.open_backend().await?;
    let worker = Worker::new(opened.backend, Arc::new(agents), WorkerConfig::from_settings(&settings));
    tracing::info!(worker_id = %worker.id(), backend = %opened.description, slots, "outpost-worker starting");
    worker.run(outpost_config::telemetry::shutdown_signal()).await?;
    tracing::info!("outpost-worker stopped");
    Ok(())
}
