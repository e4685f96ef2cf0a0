//! The AWS-mode table of `outpost-bench`, measured against moto server in one run:
//!
//! - (a) AWS requests per run, by API operation, for a short run with 3 artifacts (`output.log`,
//!   `summary.json`, one agent file): the API and a worker run in this process over the real AWS
//!   adapters, every SDK client carries a [`RequestCounter`] interceptor, and the count covers
//!   everything sent from the first dispatch until every run is finished and acknowledged.
//!   Heartbeats do not happen (the lease is longer than a run) and the worker's timed chores
//!   (fleet presence, dead-letter drain) are set far apart so they fall outside the window. The
//!   API's key lookup is cached per process for a minute, so it is warmed before counting, as on
//!   any API instance past its first request.
//! - (b) dispatch latency through the API (`POST /v1/runs` over loopback HTTP: auth from the
//!   cache, validation, DynamoDB PutItem, SQS SendMessage) against its floor, the raw PutItem +
//!   SendMessage pair with the same SDK clients, interleaved sample by sample so both see the
//!   same emulator load.
//! - (c) AWS requests per run of the `ecs` executor against the process executor, and its
//!   waiting polls per minute of run time (see [`crate::remote_mode`]).

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use ingest_lambda::{router, ApiConfig, AppState};
use outpost_aws::{AwsClients, RequestCounter};
use outpost_core::ports::keys::CreatedKey;
use outpost_core::ports::Backend;
use outpost_core::{AgentRegistry, ApiKeyKind, RunId, TenantId};
use outpost_testkit::aws::{emulator_sdk_config, fresh_settings};
use outpost_worker::{Worker, WorkerConfig};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The run of (a): three artifacts in all.
const SHORT_RUN_TASK: &str = "printf ok > \"$OUTPOST_ARTIFACTS_DIR/result.txt\"";

/// Settings of the AWS table.
pub struct AwsBenchArgs {
    /// moto endpoint; started from `scripts/moto` when absent.
    pub endpoint: Option<String>,
    /// Runs of (a).
    pub runs: usize,
    /// Samples of each of (b)'s two measures.
    pub samples: usize,
    /// Worker slots in (a).
    pub slots: usize,
}

/// moto started by the bench (by pid: `scripts/moto` started it in its own session), stopped on
/// drop.
pub struct Moto(u32);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

/// moto's endpoint: `explicit`, else `OUTPOST_TEST_AWS_ENDPOINT`, else one started here (stopped
/// when the guard drops).
pub fn moto_endpoint(explicit: Option<&str>) -> anyhow::Result<(Option<Moto>, String)> {
    match explicit {
        Some(e) => Ok((None, e.to_owned())),
        None => match std::env::var("OUTPOST_TEST_AWS_ENDPOINT") {
            Ok(e) if !e.is_empty() => Ok((None, e)),
            _ => start_moto(),
        },
    }
}

/// Starts moto through `scripts/moto start`; returns its pid guard and endpoint.
fn start_moto() -> anyhow::Result<(Option<Moto>, String)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/moto");
    let out = Command::new(script)
        .args(["start", "/tmp/outpost-bench-moto.log"])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {script}"))?;
    if !out.status.success() {
        bail!("scripts/moto start failed");
    }
    let line = String::from_utf8(out.stdout)?;
    let mut parts = line.split_whitespace();
    let (Some(pid), Some(endpoint)) = (parts.next(), parts.next()) else {
        bail!("scripts/moto printed {line:?}");
    };
    let pid: u32 = pid.parse()?;
    Ok((Some(Moto(pid)), endpoint.to_owned()))
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Runs both measures and returns the Markdown table.
pub async fn run(args: &AwsBenchArgs) -> anyhow::Result<String> {
    let (_moto, endpoint) = moto_endpoint(args.endpoint.as_deref())?;
    eprintln!("bench(aws): moto at {endpoint}");
    let sdk = emulator_sdk_config(&endpoint).await;
    let counter = RequestCounter::new();
    let counted = AwsClients::new(&sdk, Some(&counter));
    let plain = AwsClients::new(&sdk, None);
    let settings = fresh_settings(&plain, 5).await;
    let floor_settings = fresh_settings(&plain, 5).await;
    let backend = outpost_aws::backend(&counted, &settings);
    let observer = outpost_aws::backend(&plain, &settings);

    let tenant: TenantId = "bench".parse()?;
    let key = CreatedKey::generate(tenant.clone(), ApiKeyKind::Test);
    observer.keys.insert_key(&key).await?;
    let agents = Arc::new(AgentRegistry::builtin(true));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = router(AppState::new(backend.clone(), agents.clone(), ApiConfig::default()));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let auth = format!("Bearer {}", key.expose());

    // ---- (a) requests per run ------------------------------------------------------------------
    let work = tempfile::tempdir()?;
    let config = WorkerConfig {
        slots: args.slots,
        lease: Duration::from_secs(120),
        dead_letter_interval: Duration::from_secs(3600),
        presence_interval: Duration::from_secs(3600),
        ..WorkerConfig::new(work.path())
    };
    let worker = Worker::new(backend.clone(), agents.clone(), config);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker_task = tokio::spawn(async move {
        worker
            .run(async move {
                let _ = stop_rx.await;
            })
            .await
    });
    // Let the worker's start-up calls (first presence report, first drain, first receive) go out,
    // and warm the API's key cache.
    let warm = http
        .get(format!("{url}/v1/runs?limit=1"))
        .header("authorization", &auth)
        .send()
        .await?;
    if !warm.status().is_success() {
        bail!("GET /v1/runs answered {}", warm.status());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    counter.reset();
    let started = Instant::now();
    let mut ids = Vec::with_capacity(args.runs);
    let mut pending = Vec::new();
    for _ in 0..args.runs {
        let (http, url, auth) = (http.clone(), url.clone(), auth.clone());
        pending.push(tokio::spawn(async move {
            let resp = http
                .post(format!("{url}/v1/runs"))
                .header("authorization", auth)
                .json(&serde_json::json!({"agent": "shell", "task": SHORT_RUN_TASK}))
                .send()
                .await?;
            if resp.status().as_u16() != 202 {
                bail!("dispatch answered {}", resp.status());
            }
            let v: serde_json::Value = resp.json().await?;
            v["id"].as_str().map(str::to_owned).context("no run id")
        }));
        if pending.len() == args.slots {
            for p in pending.drain(..) {
                ids.push(p.await??);
            }
        }
    }
    for p in pending.drain(..) {
        ids.push(p.await??);
    }
    wait_all_done(&observer, &tenant, &ids).await?;
    let elapsed = started.elapsed();
    let counts = counter.snapshot();
    let _ = stop_tx.send(());
    worker_task.await??;
    let artifacts_per_run = {
        let id: RunId = ids[0].parse()?;
        observer.runs.get(&tenant, &id).await?.map_or(0, |r| r.artifacts.len())
    };

    // ---- (b) dispatch latency vs the raw pair ------------------------------------------------------
    let body = serde_json::json!({"agent": "shell", "task": SHORT_RUN_TASK}).to_string();
    let mut api = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut raw = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for i in 0..(args.samples + 20) {
        let t = Instant::now();
        let resp = http
            .post(format!("{url}/v1/runs"))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        if resp.status().as_u16() != 202 {
            bail!("dispatch answered {}", resp.status());
        }
        resp.bytes().await?;
        let api_us = t.elapsed().as_micros() as u64;
        let t = Instant::now();
        raw_pair(&counted, &floor_settings, i).await?;
        let raw_us = t.elapsed().as_micros() as u64;
        // The first 20 of each warm connections and caches.
        if i >= 20 {
            api.record(api_us.max(1))?;
            raw.record(raw_us.max(1))?;
        }
    }
    server.abort();

    // ---- (c) requests per run of the ecs executor --------------------------------------------------
    let remote = crate::remote_mode::run(&endpoint, args.runs.min(20), args.slots).await?;
    Ok(render(args, &counts, elapsed, artifacts_per_run, &api, &raw) + &remote)
}

/// The floor of a dispatch: one PutItem of a run-sized item and one SendMessage of a task-sized
/// body, as the API sends them.
async fn raw_pair(clients: &AwsClients, settings: &outpost_aws::AwsSettings, i: usize) -> anyhow::Result<()> {
    use aws_sdk_dynamodb::types::AttributeValue as Av;
    let id = RunId::generate();
    clients
        .dynamodb
        .put_item()
        .table_name(&settings.table)
        .item("pk", Av::S(id.as_str().to_owned()))
        .item("tenant_id", Av::S("bench".into()))
        .item("created_at", Av::S(chrono::Utc::now().to_rfc3339()))
        .item("status", Av::S("queued".into()))
        .item("agent", Av::S("shell".into()))
        .item("task", Av::S(SHORT_RUN_TASK.into()))
        .item("timeout_secs", Av::N("600".into()))
        .item("attempts", Av::N("0".into()))
        .item("n", Av::N(i.to_string()))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await
        .context("PutItem")?;
    clients
        .sqs
        .send_message()
        .queue_url(&settings.queue_url)
        .message_body(serde_json::json!({"run_id": id.as_str(), "tenant": "bench"}).to_string())
        .message_group_id("bench")
        .send()
        .await
        .context("SendMessage")?;
    Ok(())
}

/// Waits until every run is terminal and the queue holds nothing in flight (all acknowledged).
async fn wait_all_done(observer: &Backend, tenant: &TenantId, ids: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut remaining: Vec<RunId> = ids.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    while !remaining.is_empty() {
        let mut still = Vec::new();
        for id in remaining {
            match observer.runs.get(tenant, &id).await? {
                Some(r) if r.status.is_terminal() => {
                    if r.status != outpost_core::RunStatus::Succeeded {
                        bail!("run {id} ended {:?}: {:?}", r.status, r.failure_reason);
                    }
                }
                _ => still.push(id),
            }
        }
        remaining = still;
        if Instant::now() > deadline {
            bail!("{} runs did not finish within 5 minutes", remaining.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let d = observer.queue.depth().await?;
        if d.visible == 0 && d.in_flight == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("messages still in flight after every run finished: {d:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn render(
    args: &AwsBenchArgs,
    counts: &BTreeMap<(String, String), u64>,
    elapsed: Duration,
    artifacts_per_run: usize,
    api: &Histogram<u64>,
    raw: &Histogram<u64>,
) -> String {
    let n = args.runs as f64;
    let total: u64 = counts.values().sum();
    let mut out = String::new();
    out.push_str(&format!(
        "AWS mode on moto: (a) {} short runs ({} artifacts each), {} worker slots, {:.1} s.\n\n",
        args.runs,
        artifacts_per_run,
        args.slots,
        elapsed.as_secs_f64()
    ));
    out.push_str("| (a) AWS API operation | requests | per run |\n| --- | --- | --- |\n");
    for ((service, op), c) in counts {
        out.push_str(&format!("| {service} {op} | {c} | {:.2} |\n", *c as f64 / n));
    }
    // The floor: PutItem + SendMessage (dispatch), UpdateItem ×2 (claim, finish), one PutObject per
    // artifact, and the receive and the delete shared by a full batch of 10.
    let floor = 4.0 + artifacts_per_run as f64 + 2.0 / 10.0;
    out.push_str(&format!(
        "| **total** | {total} | **{:.2}** (floor {floor:.2}; ratio {:.2}; target ≤ 8) |\n\n",
        total as f64 / n,
        (total as f64 / n) / floor
    ));
    let (a50, a99, r50, r99) = (ms(api, 0.5), ms(api, 0.99), ms(raw, 0.5), ms(raw, 0.99));
    out.push_str("| (b) dispatch latency | p50 | p99 | mean |\n| --- | --- | --- | --- |\n");
    out.push_str(&format!(
        "| API `POST /v1/runs` | {a50:.2} ms | {a99:.2} ms | {:.2} ms |\n",
        api.mean() / 1000.0
    ));
    out.push_str(&format!(
        "| floor: raw PutItem + SendMessage | {r50:.2} ms | {r99:.2} ms | {:.2} ms |\n",
        raw.mean() / 1000.0
    ));
    out.push_str(&format!(
        "| **ratio** API / floor | **{:.2}** | {:.2} | {:.2} (target ≤ 1.3) |\n",
        a50 / r50,
        a99 / r99,
        api.mean() / raw.mean()
    ));
    out.push_str(&format!("\n{} samples each, interleaved.\n", args.samples));
    out
}
