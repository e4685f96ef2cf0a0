//! `outpost-bench`: measures the embedded deployment and prints a Markdown table.
//!
//! It starts the real `outpost dev` binary (release build, next to this one) on a free port with
//! a fresh data dir and measures, in one run:
//!
//! - (a0) the floor for (a): `GET /health` at the same concurrency (HTTP + auth-free handler);
//! - (a) `POST /v1/runs` throughput and p50/p99 latency at 64 concurrent clients, with the
//!   workers off so only dispatch is measured; then `kill -9` of the server while dispatches are
//!   in flight, a restart on the same data, and a check that every dispatch that got a 202 is
//!   there (durability);
//! - (b) end-to-end runs/s, dispatch to `succeeded`, of the no-op agent (`shell` running `true`)
//!   with the worker at 2× cores slots, sandboxed (the strongest mode the machine supports),
//!   beside (b'') the same with `--sandbox standard` and (b') with `--sandbox none`;
//! - (c) the floor for (b'): how fast this program itself spawns `sh -c true` with the same
//!   parallelism and nothing else; run as root, also (c'): the same spawn through `setpriv` as
//!   an unprivileged user; and (c''), the floor for (b): `sh -c true` through the exact sandbox
//!   chain the process executor builds;
//! - (d)–(f), the egress proxy ([`egress_mode`]): end-to-end runs/s of an agent making one request
//!   through its run's proxy beside the same agent on the open network, the proxy's added latency
//!   per request and its memory per run. `--egress-only` measures just these.
//!
//! Run: `cargo build --release -p outpost -p outpost-bench -p outpost-confine &&
//! ./target/release/outpost-bench`.
//!
//! With `--aws` it measures the AWS-mode table instead, against moto server (see [`aws_mode`]):
//! `./target/release/outpost-bench --aws`. With `--lambda` it measures the Lambda package
//! (size, zip, init time, memory; see [`lambda_mode`]): `cargo build --profile lambda-zip -p
//! ingest-lambda && cargo build --release -p ingest-lambda -p outpost-bench &&
//! ./target/release/outpost-bench --lambda`.

mod aws_mode;
mod egress_mode;
mod lambda_mode;
mod remote_mode;

use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use outpost_core::ports::keys::CreatedKey;
use outpost_core::{ApiKeyKind, RunId, RunStatus, TenantId};
use outpost_embedded::EmbeddedOptions;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Benchmarks of the embedded Outpost deployment")]
struct Args {
    /// Concurrent HTTP clients for (a) and for dispatching in (b).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds of dispatch load in (a), after a 1 s warm-up.
    #[arg(long, default_value_t = 10)]
    dispatch_secs: u64,
    /// Runs dispatched and completed in (b); spawns in (c).
    #[arg(long, default_value_t = 5000)]
    runs: usize,
    /// Worker slots for (b) and parallelism of (c) (default 2 × cores).
    #[arg(long)]
    slots: Option<usize>,
    /// Also write the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Folder under which the bench makes its data dirs (default: the system temp dir).
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Measure the AWS-mode table (against moto) instead of the embedded one.
    #[arg(long)]
    aws: bool,
    /// moto endpoint for `--aws` (default: OUTPOST_TEST_AWS_ENDPOINT, else one started with
    /// scripts/moto).
    #[arg(long)]
    aws_endpoint: Option<String>,
    /// Runs of the AWS requests-per-run measure.
    #[arg(long, default_value_t = 40)]
    aws_runs: usize,
    /// Samples of the AWS dispatch latency measure.
    #[arg(long, default_value_t = 200)]
    aws_samples: usize,
    /// Measure the Lambda package table (ingest-lambda: size, zip, init, memory) instead.
    #[arg(long)]
    lambda: bool,
    /// The `lambda-zip`-profile ingest-lambda (default: target/lambda-zip/ingest-lambda).
    #[arg(long)]
    lambda_bin: Option<PathBuf>,
    /// The release ingest-lambda, the baseline (default: target/release/ingest-lambda).
    #[arg(long)]
    lambda_release_bin: Option<PathBuf>,
    /// Cold starts per binary in `--lambda`.
    #[arg(long, default_value_t = 7)]
    lambda_starts: usize,
    /// Measure only the egress proxy's rows (d)–(f).
    #[arg(long)]
    egress_only: bool,
}

/// A running `outpost dev`, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn outpost_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().context("no parent dir")?.join("outpost");
    if !p.exists() {
        bail!(
            "{} not found: cargo build --release -p outpost -p outpost-bench",
            p.display()
        );
    }
    Ok(p)
}

/// `outpost dev` over `data`; `sandbox` sets the agents' sandbox mode (`--sandbox`; by default
/// the strongest this machine supports).
fn start_server(data: &Path, slots: usize, sandbox: Option<&str>) -> anyhow::Result<Server> {
    let mut cmd = Command::new(outpost_bin()?);
    cmd.args(["dev", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(["--slots", &slots.to_string()]);
    if let Some(mode) = sandbox {
        cmd.args(["--sandbox", mode]);
    }
    let mut child = cmd
        .env("OUTPOST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start outpost dev")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut url = None;
    for line in lines.by_ref() {
        let line = line?;
        if let Some(u) = line.trim().strip_prefix("URL:") {
            url = Some(u.trim().to_owned());
        }
        if line.starts_with("Try it") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let url = url.context("outpost dev printed no URL")?;
    Ok(Server { child, url })
}

/// Creates a bench tenant key directly in the data dir (as `outpost keys create` does).
async fn make_key(data: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(data)?;
    let backend = outpost_embedded::open(data, EmbeddedOptions::default())?;
    let key = CreatedKey::generate("bench".parse::<TenantId>()?, ApiKeyKind::Test);
    backend.keys.insert_key(&key).await?;
    Ok(key.expose().to_owned())
}

struct LoadResult {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
    accepted: Vec<String>,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

#[derive(Clone, Copy)]
enum Load {
    Health,
    Dispatch,
}

/// `clients` concurrent loops for `duration` (after `warmup`), or until `stop` is set.
async fn http_load(
    url: &str,
    key: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    load: Load,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<LoadResult> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).build()?;
    let body = serde_json::json!({"agent": "shell", "task": "true"}).to_string();
    let measuring = Arc::new(AtomicBool::new(false));
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + warmup + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, body, hist, requests, errors, accepted, measuring, stop) = (
            http.clone(),
            body.clone(),
            hist.clone(),
            requests.clone(),
            errors.clone(),
            accepted.clone(),
            measuring.clone(),
            stop.clone(),
        );
        let (health_url, runs_url, auth) = (
            format!("{url}/health"),
            format!("{url}/v1/runs"),
            format!("Bearer {key}"),
        );
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
            let mut ids = Vec::new();
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let resp = match load {
                    Load::Health => http.get(&health_url).send().await,
                    Load::Dispatch => {
                        http.post(&runs_url)
                            .header("authorization", &auth)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                    }
                };
                let ok = match resp {
                    Ok(r) if r.status().is_success() => match load {
                        Load::Health => r.bytes().await.is_ok(),
                        Load::Dispatch => match r.json::<serde_json::Value>().await {
                            Ok(v) => {
                                if let Some(id) = v["id"].as_str() {
                                    ids.push(id.to_owned());
                                }
                                true
                            }
                            Err(_) => false,
                        },
                    },
                    _ => false,
                };
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        requests.fetch_add(1, Ordering::Relaxed);
                        if let Some(h) = local.as_mut() {
                            let _ = h.record(t.elapsed().as_micros() as u64);
                        }
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if let (Some(h), Ok(mut all)) = (local, hist.lock()) {
                let _ = all.add(h);
            }
            if let Ok(mut all) = accepted.lock() {
                all.extend(ids);
            }
        }));
    }
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut elapsed = None;
    for t in tasks {
        if stop.load(Ordering::Relaxed) && elapsed.is_none() {
            elapsed = Some(started.elapsed());
        }
        t.await?;
    }
    let elapsed = elapsed.unwrap_or_else(|| started.elapsed()).min(duration);
    let hist = Arc::try_unwrap(hist)
        .ok()
        .context("histogram still shared")?
        .into_inner()
        .ok()
        .context("poisoned")?;
    let accepted = Arc::try_unwrap(accepted)
        .ok()
        .context("ids still shared")?
        .into_inner()
        .ok()
        .context("poisoned")?;
    Ok(LoadResult {
        requests: requests.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        hist,
        accepted,
    })
}

/// (a) with a kill -9 in the middle of a second load, then a durability check.
async fn durability_check(data: &Path, key: &str, clients: usize) -> anyhow::Result<(usize, usize)> {
    let server = start_server(data, 0, None)?;
    let stop = Arc::new(AtomicBool::new(false));
    let url = server.url.clone();
    let load = {
        let (key, stop) = (key.to_owned(), stop.clone());
        tokio::spawn(async move {
            http_load(
                &url,
                &key,
                clients,
                Duration::ZERO,
                Duration::from_secs(10),
                Load::Dispatch,
                stop,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut server = server;
    let pid = server.child.id().to_string();
    // SIGKILL while requests are in flight: no shutdown path runs.
    Command::new("kill").args(["-KILL", &pid]).status()?;
    let _ = server.child.wait();
    stop.store(true, Ordering::Relaxed);
    let result = load.await??;
    let backend = outpost_embedded::open(data, EmbeddedOptions::default())?;
    let mut missing = 0;
    for id in &result.accepted {
        let run_id: RunId = id.parse()?;
        match backend.runs.get_by_id(&run_id).await? {
            Some(r) if r.status == RunStatus::Queued => {}
            _ => missing += 1,
        }
    }
    let depth = backend.queue.depth().await?;
    if depth.visible < result.accepted.len() as u64 {
        missing += result.accepted.len() - depth.visible as usize;
    }
    Ok((result.accepted.len(), missing))
}

/// The no-op run of (b): `shell` running `true`.
const NO_OP: (&str, &str) = ("shell", "true");

/// (b), (d): dispatch `runs` runs of `agent` on `task` with `clients` concurrent clients, wait
/// for all to end; runs/s and how many succeeded.
async fn end_to_end(
    data: &Path,
    key: &str,
    clients: usize,
    runs: usize,
    slots: usize,
    sandbox: Option<&str>,
    (agent, task): (&str, &str),
) -> anyhow::Result<(f64, usize)> {
    let server = start_server(data, slots, sandbox)?;
    let http = reqwest::Client::new();
    let runs_url = format!("{}/v1/runs", server.url);
    let auth = format!("Bearer {key}");
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, runs_url, auth, next) = (http.clone(), runs_url.clone(), auth.clone(), next.clone());
        let (agent, task) = (agent.to_owned(), task.to_owned());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < runs as u64 {
                let r = http
                    .post(&runs_url)
                    .header("authorization", &auth)
                    .json(&serde_json::json!({"agent": agent, "task": task}))
                    .send()
                    .await?;
                if r.status().as_u16() != 202 {
                    bail!("dispatch answered {}", r.status());
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    // Wait until nothing is queued or running.
    let fleet_url = format!("{}/v1/fleet", server.url);
    loop {
        let f: serde_json::Value = http
            .get(&fleet_url)
            .header("authorization", &auth)
            .send()
            .await?
            .json()
            .await?;
        let busy = f["queue"]["visible"].as_u64().unwrap_or(1)
            + f["queue"]["in_flight"].as_u64().unwrap_or(1)
            + f["running"].as_u64().unwrap_or(1);
        if busy == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("runs did not finish in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let elapsed = started.elapsed();
    drop(server);
    let backend = outpost_embedded::open(data, EmbeddedOptions::default())?;
    let tenant: TenantId = "bench".parse()?;
    let filter = outpost_core::ports::RunFilter {
        status: Some(RunStatus::Succeeded),
        agent: None,
    };
    let mut succeeded = 0;
    let mut cursor = None;
    loop {
        let page = backend.runs.list(&tenant, &filter, 100, cursor.as_ref()).await?;
        succeeded += page.items.len();
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    if succeeded < runs {
        // Say why some did not succeed: a bench that hides its failures measures nothing.
        let failed = outpost_core::ports::RunFilter {
            status: Some(RunStatus::Failed),
            agent: None,
        };
        let page = backend.runs.list(&tenant, &failed, 3, None).await?;
        for run in page.items {
            let log = backend
                .artifacts
                .read_range(
                    &outpost_core::ports::RunKey {
                        tenant: tenant.clone(),
                        run: run.id.clone(),
                    },
                    "output.log",
                    0,
                    600,
                )
                .await
                .ok()
                .flatten()
                .map(|c| String::from_utf8_lossy(&c.data).into_owned())
                .unwrap_or_default();
            eprintln!(
                "bench: {} failed ({:?}, exit {:?}): {log}",
                run.id, run.failure_reason, run.exit_code
            );
        }
    }
    Ok((runs as f64 / elapsed.as_secs_f64(), succeeded))
}

/// (c): spawn `sh -c true` `total` times with `parallelism` at once, through `wrapper` (a
/// program and its arguments before `sh`) when given.
async fn spawn_floor(total: usize, parallelism: usize, wrapper: Option<Vec<String>>) -> anyhow::Result<f64> {
    let mut argv: Vec<std::ffi::OsString> = wrapper.unwrap_or_default().into_iter().map(Into::into).collect();
    argv.extend(["sh", "-c", "true"].map(std::ffi::OsString::from));
    spawn_lanes(total, vec![argv; parallelism]).await
}

/// Spawns `total` processes, one lane per argv at once, each lane its own argv over and over;
/// the rate of successful exits.
async fn spawn_lanes(total: usize, lanes: Vec<Vec<std::ffi::OsString>>) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for argv in lanes {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let Some((program, args)) = argv.split_first() else {
                bail!("an empty command");
            };
            while next.fetch_add(1, Ordering::Relaxed) < total as u64 {
                let status = tokio::process::Command::new(program)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await?;
                if !status.success() {
                    bail!("{program:?} failed: {status}");
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// (c''): the floor of the sandbox: spawn `sh -c true` through the exact chain the process
/// executor builds for a `shell` run (`outpost_worker::sandbox::Sandbox::plan`: outpost-confine,
/// bubblewrap, outpost-confine), one lane per slot, each with its own run folders (and uid,
/// when root). Returns the rate and the mode.
async fn sandbox_floor(total: usize, parallelism: usize, root: &Path) -> anyhow::Result<(f64, String)> {
    use outpost_worker::sandbox::{Request, Sandbox, SandboxConfig};
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sandbox = Sandbox::new(SandboxConfig::default(), &path);
    let spec = outpost_core::domain::AgentRegistry::builtin(true);
    let shell = spec.get("shell").context("no shell agent")?;
    let sh = std::path::PathBuf::from("/bin/sh");
    let args = vec!["-c".to_owned(), "true".to_owned()];
    let mut lanes = Vec::new();
    let mut held = Vec::new();
    let mut mode = String::new();
    for lane in 0..parallelism {
        let lease = sandbox.acquire_user().transpose().map_err(anyhow::Error::msg)?;
        let user = lease.as_ref().map(outpost_worker::sandbox::uids::UidLease::user);
        let dir = root.join(format!("floor-{lane}"));
        let (ws, home) = (dir.join("ws"), dir.join("home"));
        for d in [&ws, &home] {
            std::fs::create_dir_all(d)?;
            if let Some(u) = user {
                u.own_folder(d)?;
            }
        }
        if user.is_some() {
            outpost_worker::identity::pass_through_only(&dir)?;
            outpost_worker::identity::pass_through_only(root)?;
        }
        let name = format!("bench-floor-{lane}");
        let plan = sandbox
            .plan(&Request {
                mode: shell.sandbox,
                network: shell.network,
                limits: shell.limits,
                memory_mb: shell.memory_mb,
                user,
                ws: &ws,
                home: &home,
                program: &sh,
                args: &args,
                run_name: &name,
                egress: None,
            })
            .map_err(anyhow::Error::msg)?;
        mode = plan.record.mode.to_string();
        let mut argv = vec![plan.program.clone().into_os_string()];
        argv.extend(plan.args.iter().cloned());
        lanes.push(argv);
        held.push((lease, plan));
    }
    let rate = spawn_lanes(total, lanes).await?;
    for (_, plan) in held {
        if let Some(cg) = plan.cgroup {
            cg.remove();
        }
    }
    Ok((rate, mode))
}

/// (d)–(f): the egress proxy's rows (see [`egress_mode`]).
async fn egress_rows(root: &Path, args: &Args, slots: usize) -> anyhow::Result<String> {
    let standin = egress_mode::standin().await?;
    let runs = args.runs;
    let mut e2e = Vec::new();
    for (name, agent) in [("proxy", "req-proxy"), ("open", "req-open")] {
        eprintln!("bench: (d) end to end, one vendor request per run, {name}");
        let data = root.join(format!("d-{name}"));
        let key = make_key(&data).await?;
        std::fs::write(data.join("agents.toml"), egress_mode::agents_toml(standin))?;
        let backend = outpost_embedded::open(&data, EmbeddedOptions::default())?;
        backend
            .secrets
            .put_secret(
                &"bench".parse::<TenantId>()?,
                &"BENCH_KEY".parse()?,
                &egress_mode::BENCH_KEY.to_owned().into(),
            )
            .await?;
        drop(backend);
        e2e.push(end_to_end(&data, &key, args.clients, runs, slots, None, (agent, "one request")).await?);
    }
    eprintln!("bench: (e) the proxy's added latency per request");
    let (proxied, direct) = egress_mode::latency(standin, 2000).await?;
    eprintln!("bench: (f) the proxy's memory per run");
    let kb = egress_mode::memory_per_run(standin, 500).await?;
    let ((proxy_rate, proxy_ok), (open_rate, open_ok)) = (e2e[0], e2e[1]);
    Ok(format!(
        "| (d) end to end, `curl` one vendor request per run, `network = \"allow\"`, key injected, {slots} slots | {proxy_rate:.0} runs/s ({proxy_ok}/{runs}) | (d0) the same agent with `network = \"open\"`, key in its environment: {open_rate:.0} runs/s ({open_ok}/{runs}) | (d)/(d0) = {r:.2} | – |\n{latency}",
        r = proxy_rate / open_rate,
        latency = egress_mode::render_latency(&proxied, &direct, kb, 500),
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let slots = args.slots.unwrap_or(2 * cores);
    if args.lambda {
        let (lambda_default, release_default) = lambda_mode::default_bins();
        let (_moto, endpoint) = aws_mode::moto_endpoint(args.aws_endpoint.as_deref())?;
        let table = lambda_mode::run(&lambda_mode::LambdaBenchArgs {
            lambda_bin: args.lambda_bin.clone().unwrap_or(lambda_default),
            release_bin: args.lambda_release_bin.clone().unwrap_or(release_default),
            endpoint,
            starts: args.lambda_starts.max(1),
        })
        .await?;
        println!("{table}");
        if let Some(out) = args.out {
            std::fs::write(out, &table)?;
        }
        return Ok(());
    }
    if args.aws {
        let table = aws_mode::run(&aws_mode::AwsBenchArgs {
            endpoint: args.aws_endpoint.clone(),
            runs: args.aws_runs,
            samples: args.aws_samples,
            slots: args.slots.unwrap_or(8),
        })
        .await?;
        println!("{table}");
        if let Some(out) = args.out {
            std::fs::write(out, &table)?;
        }
        return Ok(());
    }
    let dir = match &args.data_root {
        Some(root) => tempfile::tempdir_in(root)?,
        None => tempfile::tempdir()?,
    };
    let egress_rows = egress_rows(dir.path(), &args, slots).await?;
    if args.egress_only {
        println!("{egress_rows}");
        if let Some(out) = args.out {
            std::fs::write(out, &egress_rows)?;
        }
        return Ok(());
    }
    eprintln!(
        "bench: {cores} cores, {} clients, {slots} slots, {} runs",
        args.clients, args.runs
    );

    // (a0) and (a): API only (no worker), fresh data dir.
    let data_a = dir.path().join("a");
    let key = make_key(&data_a).await?;
    let server = start_server(&data_a, 0, None)?;
    let never = Arc::new(AtomicBool::new(false));
    let secs = Duration::from_secs(args.dispatch_secs);
    eprintln!("bench: (a0) GET /health floor");
    let health = http_load(
        &server.url,
        &key,
        args.clients,
        Duration::from_secs(1),
        secs,
        Load::Health,
        never.clone(),
    )
    .await?;
    eprintln!("bench: (a) POST /v1/runs");
    let dispatch = http_load(
        &server.url,
        &key,
        args.clients,
        Duration::from_secs(1),
        secs,
        Load::Dispatch,
        never.clone(),
    )
    .await?;
    drop(server);
    eprintln!("bench: (a) durability: kill -9 under load, restart, check every 202");
    let data_k = dir.path().join("k");
    let key_k = make_key(&data_k).await?;
    let (acked, missing) = durability_check(&data_k, &key_k, args.clients).await?;

    eprintln!("bench: (c) spawn floor");
    let floor = spawn_floor(args.runs, slots, None).await?;
    // Run as root, the worker starts every agent as an unprivileged user through setpriv
    // (outpost_worker::identity): (c') is the floor of that spawn.
    let unprivileged = match outpost_worker::identity::AgentUser::default_for_this_process() {
        Some(user) => match outpost_worker::identity::find_setpriv(std::ffi::OsStr::new("/usr/bin:/bin")) {
            Some(setpriv) => {
                eprintln!("bench: (c') spawn floor as an unprivileged user through setpriv");
                let mut wrapper = vec![setpriv.display().to_string()];
                wrapper.extend(outpost_worker::identity::setpriv_args(user));
                Some(spawn_floor(args.runs, slots, Some(wrapper)).await?)
            }
            None => None,
        },
        None => None,
    };
    eprintln!("bench: (c'') spawn floor through the sandbox chain");
    // Beside the workers' own work dir: agents of a root worker must pass through every folder
    // above their run (the bench's private temp dir is 0700).
    let floor_root = std::env::temp_dir().join(format!("outpost-bench-floor-{}", std::process::id()));
    std::fs::create_dir_all(&floor_root)?;
    let floor_result = sandbox_floor(args.runs, slots, &floor_root).await;
    let _ = std::fs::remove_dir_all(&floor_root);
    let (sandboxed_floor, mode) = floor_result?;
    eprintln!("bench: (b) end to end, sandboxed (the strongest mode this machine supports)");
    let data_b = dir.path().join("b");
    let key_b = make_key(&data_b).await?;
    let (e2e, succeeded) = end_to_end(&data_b, &key_b, args.clients, args.runs, slots, None, NO_OP).await?;
    eprintln!("bench: (b'') end to end, sandbox = standard (no namespaces)");
    let data_s = dir.path().join("s");
    let key_s = make_key(&data_s).await?;
    let (e2e_std, succeeded_std) =
        end_to_end(&data_s, &key_s, args.clients, args.runs, slots, Some("standard"), NO_OP).await?;
    eprintln!("bench: (b') end to end, sandbox = none");
    let data_n = dir.path().join("n");
    let key_n = make_key(&data_n).await?;
    let (e2e_none, succeeded_none) =
        end_to_end(&data_n, &key_n, args.clients, args.runs, slots, Some("none"), NO_OP).await?;

    let table = format!(
        "| measure | result | baseline (same run) | ratio | target |\n\
         | --- | --- | --- | --- | --- |\n\
         | (a) dispatch `POST /v1/runs`, {c} clients | {dr:.0}/s, p50 {d50:.2} ms, p99 {d99:.2} ms, {de} errors | (a0) `GET /health`: {hr:.0}/s, p99 {h99:.2} ms | {ra:.2}× of floor rate | ≥ 2,000/s, p99 ≤ 20 ms |\n\
         | (a) durability: `kill -9` under load | {acked} accepted, {missing} missing after restart | – | – | 0 missing |\n\
         | (b) end to end, `shell` `true`, {slots} slots, sandboxed | {e2e:.0} runs/s ({succeeded}/{runs} succeeded) | (b') the same with `--sandbox none`: {e2e_none:.0} runs/s ({succeeded_none}/{runs}) | (b)/(b') = {rs:.2} | ≥ 500 runs/s, ≥ 0.5 |\n\
         | (b) as above | {e2e:.0} runs/s | (c'') `sh -c true` through the sandbox chain ({mode}), {slots} at once: {sandboxed_floor:.0}/s | (b)/(c'') = {rsf:.2} | – |\n\
         | (b'') end to end, `--sandbox standard` (uid, Landlock, limits; no namespaces) | {e2e_std:.0} runs/s ({succeeded_std}/{runs}) | (b') `--sandbox none`: {e2e_none:.0} runs/s | (b'')/(b') = {rstd:.2} | – |\n\
         | (b') end to end, `--sandbox none` | {e2e_none:.0} runs/s | (c) `sh -c true` spawn, {slots} at once: {floor:.0}/s | (b')/(c) = {rb:.2} | ≥ 0.5 |\n{unpriv}{egress_rows}",
        c = args.clients,
        dr = dispatch.rate(),
        d50 = dispatch.ms(0.5),
        d99 = dispatch.ms(0.99),
        de = dispatch.errors,
        hr = health.rate(),
        h99 = health.ms(0.99),
        ra = dispatch.rate() / health.rate(),
        runs = args.runs,
        rb = e2e_none / floor,
        rs = e2e / e2e_none,
        rsf = e2e / sandboxed_floor,
        rstd = e2e_std / e2e_none,
        unpriv = unprivileged.map_or_else(String::new, |u| format!(
            "| (b') as above (the worker is root: each run's agent has its own uid) | {e2e_none:.0} runs/s | (c') `setpriv … sh -c true` spawn, {slots} at once: {u:.0}/s | (b')/(c') = {r:.2} | – |\n",
            r = e2e_none / u
        )),
    );
    println!("{table}");
    println!(
        "machine: {cores} cores; data under {root}; (a) {dn} dispatches in {ds:.1} s; (b) {runs} runs.",
        root = dir.path().display(),
        dn = dispatch.requests,
        ds = dispatch.elapsed.as_secs_f64(),
        runs = args.runs
    );
    if let Some(out) = args.out {
        std::fs::write(out, &table)?;
    }
    Ok(())
}
