//! (c) of the AWS table: AWS requests per run on the `ecs` and `ssm` executors, each against the
//! process executor measured in the same run through the same layer, on moto.
//!
//! Each executor's two phases go through one fault layer in front of moto
//! (`outpost_testkit::local_ecs`, `local_ssm`), which counts every request whoever sends it: the
//! API and the worker in this process, and the agent entrypoints (`outpost-worker agent-run`, run
//! as local processes for the tasks and commands moto accepts; their uploads are S3 form POSTs).
//! So both phases are counted the same way. Waiting polls (`DescribeTasks`,
//! `GetCommandInvocation`) are counted apart and reported per minute of run time (the sum of the
//! runs' `started → finished`); one `DescribeTasks` covers every run the worker watches, one
//! `GetCommandInvocation` one command.
//!
//! The floor of the extra requests of an ECS run over a process run: `RunTask`, the spec's
//! `PutObject` and its `GetObject` by the entrypoint, the `set_remote` `UpdateItem` and the
//! `summary.json` `GetObject` (5); the artifacts are uploaded once either way (by the
//! entrypoint's POSTs instead of the worker's PutObjects). An SSM run has `SendCommand` for
//! `RunTask` and reads the tenant's keys on the host (one `GetParametersByPath`): 6. The SSM
//! stand-in answers `InvocationDoesNotExist` twice per command, as SSM does for 1–2 s; those
//! retries are among the polls.

use anyhow::{bail, Context};
use ingest_lambda::{router, ApiConfig, AppState};
use outpost_aws::s3::S3ArtifactStore;
use outpost_aws::AwsClients;
use outpost_config::remote::{RemoteArgs, RemoteSettings};
use outpost_core::ports::keys::CreatedKey;
use outpost_core::{AgentRegistry, ApiKeyKind, ExecutorKind, RunId, TenantId};
use outpost_testkit::aws::{emulator_sdk_config, fresh_settings};
use outpost_testkit::aws_faults::FaultLayer;
use outpost_testkit::local_ecs::LocalEcs;
use outpost_testkit::local_ssm::LocalSsm;
use outpost_worker::remote::{DispatchConfig, Dispatcher};
use outpost_worker::{Worker, WorkerConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PREFIX: &str = "bench-agent-";
const ECS_AGENT: &str = "shell-ecs";
const SSM_AGENT: &str = "shell-ssm";
/// The user the SSM hosts' entrypoint runs as.
const RUN_AS: &str = "nobody";
/// What an ECS run must add to a process run.
const ECS_FLOOR: (f64, &str) = (
    5.0,
    "RunTask, spec PutObject + GetObject, set_remote UpdateItem, summary GetObject",
);
/// What an SSM run must add: as ECS, with SendCommand, and the host's own read of the tenant's keys.
const SSM_FLOOR: (f64, &str) = (
    6.0,
    "SendCommand, spec PutObject + GetObject, set_remote UpdateItem, summary GetObject, the host's GetParametersByPath",
);
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
    /// The executor's waiting poll (counted apart).
    poll_op: &'static str,
}

impl Phase {
    fn polls(&self) -> u64 {
        self.per_op.get(self.poll_op).copied().unwrap_or(0)
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

/// One remote executor to measure: its agent entry, the worker settings that give it, and its
/// waiting poll.
struct Remote<'a> {
    layer: &'a FaultLayer,
    agent: &'static str,
    executor: ExecutorKind,
    args: RemoteArgs,
    poll_op: &'static str,
}

/// Measures (c) and returns its Markdown rows.
pub async fn run(moto: &str, runs: usize, slots: usize) -> anyhow::Result<String> {
    let entrypoint = entrypoint()?;
    let ecs = LocalEcs::start(moto, PREFIX, &[ECS_AGENT], entrypoint.clone()).await?;
    let poll_ms = Some(u64::try_from(POLL.as_millis()).unwrap_or(5000));
    let (process, on_ecs) = measure(
        moto,
        Remote {
            layer: &ecs.layer,
            agent: ECS_AGENT,
            executor: ExecutorKind::Ecs,
            args: RemoteArgs {
                ecs_cluster: Some(ecs.cluster.clone()),
                ecs_subnets: vec![ecs.subnet.clone()],
                ecs_security_groups: vec![ecs.security_group.clone()],
                ecs_task_family_prefix: Some(PREFIX.to_owned()),
                remote_poll_ms: poll_ms,
                ..RemoteArgs::default()
            },
            poll_op: "ecs:DescribeTasks",
        },
        runs,
        slots,
    )
    .await?;
    let mut out = render_intro(runs, slots);
    out.push_str(&render("ecs", &process, &on_ecs, ECS_FLOOR));
    // The SSM hosts' entrypoint drops to an unprivileged user (`setpriv`): root only.
    if nix::unistd::geteuid().is_root() {
        let host = "i-0bench00000000001";
        let ssm = LocalSsm::start(moto, &[(host, true)], Vec::new()).await?;
        let work = host_work_dir()?;
        let (process, on_ssm) = measure(
            moto,
            Remote {
                layer: &ssm.layer,
                agent: SSM_AGENT,
                executor: ExecutorKind::Ssm,
                args: RemoteArgs {
                    ssm_host_ids: vec![host.to_owned()],
                    ssm_entrypoint: Some(entrypoint.display().to_string()),
                    ssm_run_as: Some(RUN_AS.to_owned()),
                    ssm_work_dir: Some(work.path().display().to_string()),
                    remote_poll_ms: poll_ms,
                    ..RemoteArgs::default()
                },
                poll_op: "ssm:GetCommandInvocation",
            },
            runs,
            slots,
        )
        .await?;
        out.push_str(&render("ssm", &process, &on_ssm, SSM_FLOOR));
    } else {
        out.push_str(
            "
(c) `ssm`: not measured (the bench is not root; the hosts' entrypoint drops to `nobody`).
",
        );
    }
    Ok(out)
}

/// A folder for the SSM host's run workspaces, owned by [`RUN_AS`].
fn host_work_dir() -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("outpost-bench-ssm-")
        .tempdir_in("/tmp")?;
    let nobody = std::fs::read_to_string("/etc/passwd")?
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(RUN_AS))
                .then(|| f.nth(1))
                .flatten()?
                .parse::<u32>()
                .ok()
        })
        .context("no user nobody")?;
    std::os::unix::fs::chown(dir.path(), Some(nobody), None)?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// Runs `runs` process runs, then `runs` runs of `remote`'s entry, on a worker with `remote`'s
/// executor, everything through `remote.layer`; returns both phases.
async fn measure(moto: &str, remote: Remote<'_>, runs: usize, slots: usize) -> anyhow::Result<(Phase, Phase)> {
    let sdk = emulator_sdk_config(&remote.layer.endpoint()).await;
    let clients = AwsClients::new(&sdk, None);
    let settings = fresh_settings(&clients, 5).await;
    let backend = outpost_aws::backend(&clients, &settings);
    // The bench's own reads (waiting for the runs) go straight to moto, uncounted.
    let observer = outpost_aws::backend(&AwsClients::new(&emulator_sdk_config(moto).await, None), &settings);
    let tenant: TenantId = "bench".parse()?;
    let key = CreatedKey::generate(tenant.clone(), ApiKeyKind::Test);
    backend.keys.insert_key(&key).await?;
    let mut registry = AgentRegistry::builtin(true);
    let mut entry = registry.get("shell").context("the shell agent")?.clone();
    entry.name = remote.agent.to_owned();
    entry.executor = remote.executor;
    registry.insert(entry);
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
    let worker = Worker::new(backend.clone(), agents.clone(), config);
    let dispatcher = Dispatcher::new(
        outpost_worker::remote::launchers(&RemoteSettings::merge(&remote.args, None)?, &sdk, &backend, &settings),
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
            secrets_prefix: settings.secrets_prefix.clone(),
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
    for agent in ["shell", remote.agent] {
        eprintln!("bench(aws): (c) {runs} runs of {agent}");
        let before = remote.layer.all_calls();
        let ids = dispatch_all(&http, &url, &auth, agent, runs).await?;
        let run_time = wait_all(&observer, &tenant, &ids).await?;
        let after = remote.layer.all_calls();
        let per_op = after
            .into_iter()
            .filter_map(|(op, n)| {
                let d = n - before.get(&op).copied().unwrap_or(0);
                (d > 0).then_some((op, d))
            })
            .collect();
        phases.push(Phase {
            per_op,
            runs,
            run_time,
            poll_op: remote.poll_op,
        });
    }
    let _ = stop_tx.send(());
    worker_task.await??;
    server.abort();
    let remote_phase = phases.pop().context("two phases")?;
    let process = phases.pop().context("two phases")?;
    Ok((process, remote_phase))
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

fn render_intro(runs: usize, slots: usize) -> String {
    format!(
        "\n(c) {runs} short runs per executor (3 artifacts each), {slots} worker slots; ECS tasks and SSM commands run as local processes by the fault layer in front of moto, which counts every request (API, worker, entrypoints). Each executor's baseline is a process-executor phase through the same layer in the same run.\n\n| (c) requests per run | process executor (baseline) | remote executor | extra | floor of the extra | ratio extra / floor |\n| --- | --- | --- | --- | --- | --- |\n"
    )
}

/// The row of one executor, its waiting polls, and its operations.
fn render(name: &str, process: &Phase, remote: &Phase, floor: (f64, &str)) -> String {
    let (floor_extra, floor_what) = floor;
    let extra = remote.per_run() - process.per_run();
    let minutes = remote.run_time.as_secs_f64() / 60.0;
    let mut out = format!(
        "| `{name}`, all requests but waiting polls | {:.2} | {:.2} | {extra:.2} | {floor_extra:.0} ({floor_what}) | {:.2} |\n",
        process.per_run(),
        remote.per_run(),
        extra / floor_extra
    );
    out.push_str(&format!(
        "| `{name}` waiting polls (`{}` every {} s) | – | {} in {:.1} min of run time: **{:.1} per minute** | – | – | – |\n",
        remote.poll_op,
        POLL.as_secs(),
        remote.polls(),
        minutes,
        remote.polls() as f64 / minutes.max(f64::EPSILON),
    ));
    let ops: std::collections::BTreeSet<&String> = process.per_op.keys().chain(remote.per_op.keys()).collect();
    let line: Vec<String> = ops
        .into_iter()
        .map(|op| {
            let per = |p: &Phase| p.per_op.get(op).copied().unwrap_or(0) as f64 / p.runs as f64;
            format!("{op} {:.2}→{:.2}", per(process), per(remote))
        })
        .collect();
    out.push_str(&format!(
        "| `{name}` per operation (process→remote) | {} | | | | |\n",
        line.join(", ")
    ));
    out
}
