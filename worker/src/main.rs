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
//!
//! `outpost-worker agent-run …` (AWS builds) is the agent entrypoint of remote executions (a
//! per-run ECS task, an SSM host): it runs one run from its run spec and exits with an
//! `EntrypointExit` code (`outpost_worker::remote::entrypoint`).

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
    /// The remote executors (AWS builds): ECS tasks and SSM hosts.
    #[cfg(feature = "aws")]
    #[command(flatten)]
    remote: outpost_config::remote::RemoteArgs,
}

/// `outpost-worker agent-run`: runs one run of a remote executor from its run spec.
#[cfg(feature = "aws")]
#[derive(Debug, Parser)]
#[command(name = "outpost-worker agent-run", version)]
struct AgentRun {
    #[command(flatten)]
    args: outpost_worker::remote::entrypoint::AgentRunArgs,
}

fn main() -> anyhow::Result<()> {
    // `outpost __confine …` is the agents' sandbox helper when no outpost-confine is installed.
    outpost_worker::sandbox::serve_confine();
    #[cfg(feature = "aws")]
    if std::env::args_os().nth(1).is_some_and(|a| a == "agent-run") {
        // Still one thread: the entrypoint changes its own environment before any runtime starts.
        std::process::exit(agent_run());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

/// The agent entrypoint's exit code; a bad command line is a bad spec (nothing ran).
#[cfg(feature = "aws")]
fn agent_run() -> i32 {
    use outpost_core::domain::EntrypointExit;
    // The first item is taken as the program's name: "agent-run".
    match AgentRun::try_parse_from(std::env::args_os().skip(1)) {
        Ok(cli) => outpost_worker::remote::entrypoint::run_process(cli.args),
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                EntrypointExit::BadSpec.code()
            } else {
                0
            }
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::resolve(
        &SettingsArgs {
            backend: args.backend,
            agents: args.agents,
            worker: args.worker,
            #[cfg(feature = "aws")]
            remote: args.remote,
            ..SettingsArgs::default()
        },
        Context::default(),
    )?;
    outpost_config::telemetry::init_logs("info", settings.json_logs());
    let slots = settings.require_slots()?;
    let agents = Arc::new(settings.agents()?);
    let opened = settings.open_backend().await?;
    #[cfg(feature = "aws")]
    let backend = opened.backend.clone();
    #[cfg_attr(not(feature = "aws"), allow(unused_mut))]
    let mut worker = Worker::new(
        opened.backend,
        Arc::clone(&agents),
        WorkerConfig::from_settings(&settings),
    );
    #[cfg(feature = "aws")]
    if let Some(dispatcher) = outpost_worker::remote::dispatcher(&settings.remote, &backend, worker.id()).await? {
        tracing::info!(executors = ?dispatcher.kinds(), "remote executors configured");
        let dispatcher = Arc::new(dispatcher);
        let probe = outpost_worker::remote::DispatchProbe {
            dispatcher: Arc::clone(&dispatcher),
            agents,
        };
        worker = worker.with_remote(dispatcher).with_availability_probe(Arc::new(probe));
    }
    tracing::info!(worker_id = %worker.id(), backend = %opened.description, slots, "outpost-worker starting");
    worker.run(outpost_config::telemetry::shutdown_signal()).await?;
    tracing::info!("outpost-worker stopped");
    Ok(())
}
