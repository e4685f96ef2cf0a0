//! (c) of the AWS table: AWS requests per run on the `ecs` executor, against the process
//! executor measured in the same run, on moto.
//!
//! Both phases go through one fault layer in front of moto (`outpost_testkit::local_ecs`), which
//! counts every request whoever sends it: the API and the worker in this process, and the agent
//! entrypoints (`outpost-worker agent-run`, run as local processes for the tasks moto accepts;
//! their uploads are S3 form POSTs). So the counts of both phases are taken the same way.
//! Waiting polls (`DescribeTasks`) are counted apart and reported per minute of run time (the
//! sum of the runs' `started → finished`): one poll covers every run the worker watches.
//!
//! The floor of the extra requests of an ECS run over a process run: `RunTask`, the spec's
//! `PutObject` and its `GetObject` by the entrypoint, the `set_remote` `UpdateItem` and the
//! `summary.json` `GetObject` (5); the artifacts are uploaded once either way (by the
//! entrypoint's POSTs instead of the worker's PutObjects).

use anyhow::{bail, Context};
use ingest_lambda::{router, ApiConfig, AppState};
use outpost_aws::s3::S3ArtifactStore;
use outpost_aws::AwsClients;
use outpost_core::ports::keys::CreatedKey;
use outpost_core::{AgentRegistry, ApiKeyKind, ExecutorKind, RunId, TenantId};
use outpost_testkit::aws::{emulator_sdk_config, fresh_settings};
use outpost_testkit::local_ecs::LocalEcs;
use outpost_worker::remote::{DispatchConfig, Dispatcher, RemoteArgs};
use outpost_worker::{Worker, WorkerConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PREFIX: &str = "bench-agent-";
const ECS_AGENT: &str = "shell-ecs";
/// The production default poll interval of remote executions.
const POLL: Duration = Duration::from_secs(5);
/// A short run with one agent file (three artifacts), as in (a).
const TASK: &str = "printf ok > \"$OUTPOST_ARTIFACTS_DIR/result.txt\"";

/// Counts of one phase.
struct Phase {
    per_op: BTreeMap<String, u64>,
    runs: usize,
    /// Sum of the runs' started → finished.
    run_time: Duration,
}

impl Phase {
    fn polls(&self) -> u64 {
        self.per_op.get("ecs:DescribeTasks").copied().unwrap_or(0)
    }

    /// Requests per run, waiting polls excluded.
    fn per_run(&self) -> f64 {
        let total: u64 = self.per_op.values().sum::<u64>() - self.polls();
        total as f64 / self.runs as f64
    }
}

/// The built `outpost-worker` beside this binary (the entrypoint the tasks run).
fn entrypoint() -> anyhow::Result<PathBuf> {
    let p = std::env::current_exe()?.with_file_name("outpost-worker");
    if !p.exists() {
        bail!(
            "{} not found: build it with the bench (cargo build --release -p outpost-worker --bins)",
            p.display()
        );
    }
    Ok(p)
}

/// Measures (c) and returns its Markdown rows.
pub async fn run(moto: &str, runs: usize, slots: usize) -> anyhow::Result<String> {
    let ecs = LocalEcs::start(moto, PREFIX, &[ECS_AGENT], entrypoint()?).await?;
    let sdk = emulator_sdk_config(&ecs.layer.endpoint()).await;
    let clients = AwsClients::new(&sdk, None);
    let settings = fresh_settings(&clients, 5).await;
    let backend = outpost_aws::backend(&clients, &settings);
    // The bench's own reads (waiting for the runs) go straight to moto, uncounted.
    let observer = outpost_aws::backend(&AwsClients::new(&emulator_sdk_config(moto).await, None), &settings);
    let tenant: TenantId = "bench".parse()?;
    let key = CreatedKey::generate(tenant.clone(), ApiKeyKind::Test);
    backend.keys.insert_key(&key).await?;
    let mut registry = AgentRegistry::builtin(true);
    let mut remote = registry.get("shell").context("the shell agent")?.clone();
    remote.name = ECS_AGENT.to_owned();
    remote.executor = ExecutorKind::Ecs;
    registry.insert(remote);
    let agents = Arc::new(registry);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = router(AppState::new(backend.clone(), agents.clone(), ApiConfig::default()));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let work = tempfile::tempdir()?;
    let config = WorkerConfig {
        slots,
        lease: Duration::from_secs(120),
        dead_letter_interval: Duration::from_secs(3600),
        presence_interval: Duration::from_secs(3600),
        ..WorkerConfig::new(work.path())
    };
    let args = RemoteArgs {
        ecs_cluster: Some(ecs.cluster.clone()),
        ecs_subnets: vec![ecs.subnet.clone()],
        ecs_security_groups: vec![ecs.security_group.clone()],
        ecs_task_family_prefix: Some(PREFIX.to_owned()),
        remote_poll_ms: Some(u64::try_from(POLL.as_millis()).unwrap_or(5000)),
        ..RemoteArgs::default()
    };
    let worker = Worker::new(backend.clone(), agents.clone(), config);
    let dispatcher = Dispatcher::new(
        args.launchers(&sdk, &backend, &settings)?,
        S3ArtifactStore::new(
            aws_sdk_s3::Client::new(&sdk),
            settings.bucket.clone(),
            settings.presign_expiry,
        ),
        sdk.clone(),
        backend.runs.clone(),
        backend.artifacts.clone(),
        worker.id().clone(),
        DispatchConfig {
            sweep_interval: Duration::from_secs(3600),
            ..DispatchConfig::default()
        },
    );
    let worker = worker.with_remote(Arc::new(dispatcher));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker_task = tokio::spawn(async move {
        worker
            .run(async move {
                let _ = stop_rx.await;
            })
            .await
    });
    let http = reqwest::Client::new();
    let auth = format!("Bearer {}", key.expose());
    // Start-up calls (first receive, presence, drain, sweep) and the API's key cache first.
    http.get(format!("{url}/v1/runs?limit=1"))
        .header("authorization", &auth)
        .send()
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut phases = Vec::new();
    for agent in ["shell", ECS_AGENT] {
        eprintln!("bench(aws): (c) {runs} runs of {agent}");
        let before = ecs.layer.all_calls();
        let ids = dispatch_all(&http, &url, &auth, agent, runs).await?;
        let run_time = wait_all(&observer, &tenant, &ids).await?;
        let after = ecs.layer.all_calls();
        let per_op = after
            .into_iter()
            .filter_map(|(op, n)| {
                let d = n - before.get(&op).copied().unwrap_or(0);
                (d > 0).then_some((op, d))
            })
            .collect();
        phases.push(Phase { per_op, runs, run_time });
    }
    let _ = stop_tx.send(());
    worker_task.await??;
    server.abort();
    Ok(render(&phases[0], &phases[1], slots))
}

async fn dispatch_all(
    http: &reqwest::Client,
    url: &str,
    auth: &str,
    agent: &str,
    runs: usize,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(runs);
    for _ in 0..runs {
        let resp = http
            .post(format!("{url}/v1/runs"))
            .header("authorization", auth)
            .json(&serde_json::json!({"agent": agent, "task": TASK}))
            .send()
            .await?;
        if resp.status().as_u16() != 202 {
            bail!("dispatch answered {}", resp.status());
        }
        let v: serde_json::Value = resp.json().await?;
        ids.push(v["id"].as_str().context("no run id")?.to_owned());
    }
    Ok(ids)
}

/// Waits until every run succeeded; returns the sum of their run times.
async fn wait_all(
    backend: &outpost_core::ports::Backend,
    tenant: &TenantId,
    ids: &[String],
) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut total = Duration::ZERO;
    for id in ids {
        let id: RunId = id.parse()?;
        loop {
            match backend.runs.get(tenant, &id).await? {
                Some(r) if r.status.is_terminal() => {
                    if r.status != outpost_core::RunStatus::Succeeded {
                        bail!("run {id} ended {:?}: {:?}", r.status, r.failure_reason);
                    }
                    if let (Some(s), Some(f)) = (r.started_at, r.finished_at) {
                        total += (f - s).to_std().unwrap_or_default();
                    }
                    break;
                }
                _ if Instant::now() > deadline => bail!("run {id} did not finish within 10 minutes"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    Ok(total)
}

fn render(process: &Phase, ecs: &Phase, slots: usize) -> String {
    let floor_extra = 5.0;
    let extra = ecs.per_run() - process.per_run();
    let minutes = ecs.run_time.as_secs_f64() / 60.0;
    let mut out = format!(
        "\n(c) {} short runs per executor (3 artifacts each), {slots} worker slots; ECS tasks run as local processes by the fault layer in front of moto, which counts every request (API, worker, entrypoints).\n\n",
        ecs.runs
    );
    out.push_str("| (c) requests per run | process executor (baseline, same run) | `ecs` executor | extra | floor of the extra | ratio extra / floor |\n| --- | --- | --- | --- | --- | --- |\n");
    out.push_str(&format!(
        "| all, waiting polls excluded | {:.2} | {:.2} | {extra:.2} | {floor_extra:.0} (RunTask, spec PutObject + GetObject, set_remote UpdateItem, summary GetObject) | {:.2} |\n",
        process.per_run(),
        ecs.per_run(),
        extra / floor_extra
    ));
    out.push_str(&format!(
        "| waiting polls (`DescribeTasks`, every {} s, one per poll for all watched runs) | – | {} in {:.1} min of run time: **{:.1} per minute** | – | ≤ {:.0} per minute (one per interval) | – |\n\n",
        POLL.as_secs(),
        ecs.polls(),
        minutes,
        ecs.polls() as f64 / minutes.max(f64::EPSILON),
        60.0 / POLL.as_secs_f64()
    ));
    out.push_str("| (c) operation | process run | ECS run |\n| --- | --- | --- |\n");
    let ops: std::collections::BTreeSet<&String> = process.per_op.keys().chain(ecs.per_op.keys()).collect();
    for op in ops {
        let per = |p: &Phase| p.per_op.get(op).copied().unwrap_or(0) as f64 / p.runs as f64;
        out.push_str(&format!("| {op} | {:.2} | {:.2} |\n", per(process), per(ecs)));
    }
    out
}
