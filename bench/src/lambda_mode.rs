//! The Lambda-package table of `outpost-bench`: what a cold start of the `ingest-lambda` function
//! costs, for the binary built with the `lambda-zip` profile (stripped, LTO) against the plain
//! release build as the baseline, measured in one run:
//!
//! - the binary's size, and the size of the zip that is uploaded (`bootstrap` alone, as
//!   infra/README.md packages it; Lambda's limits are 50 MB zipped and 250 MB unzipped);
//! - init time: from starting the process to its first `GET /invocation/next`, under the Lambda
//!   runtime emulator of `outpost-testkit` (what Lambda reports as `Init Duration`), median of
//!   several cold starts, with the AWS backend on moto as in production (the one set of SDK
//!   clients is made at init);
//! - peak memory (`VmHWM` of the process) after init and after a burst of requests through the
//!   emulated API Gateway (health checks, authenticated run listings and dispatches).

use anyhow::{bail, Context};
use outpost_aws::{AwsClients, AwsSettings};
use outpost_core::ports::keys::CreatedKey;
use outpost_core::{ApiKeyKind, TenantId};
use outpost_testkit::aws::{deployment_env, emulator_sdk_config, fresh_settings};
use outpost_testkit::lambda_gateway::{GatewayConfig, LambdaFunction, LambdaGateway};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Settings of the Lambda table.
pub struct LambdaBenchArgs {
    /// The `lambda-zip`-profile binary.
    pub lambda_bin: PathBuf,
    /// The release binary (baseline).
    pub release_bin: PathBuf,
    /// moto endpoint.
    pub endpoint: String,
    /// Cold starts per binary.
    pub starts: usize,
}

/// What one binary measured.
struct Figures {
    size: u64,
    zipped: u64,
    init_ms: f64,
    hwm_init_kb: u64,
    hwm_after_kb: u64,
}

/// Requests of the burst after init, per kind.
const BURST: usize = 50;

/// Measures both binaries and returns the Markdown table.
pub async fn run(args: &LambdaBenchArgs) -> anyhow::Result<String> {
    for bin in [&args.lambda_bin, &args.release_bin] {
        if !bin.is_file() {
            bail!(
                "{} not found: cargo build --profile lambda-zip -p ingest-lambda && cargo build --release -p ingest-lambda",
                bin.display()
            );
        }
    }
    let sdk = emulator_sdk_config(&args.endpoint).await;
    let clients = AwsClients::new(&sdk, None);
    let settings = fresh_settings(&clients, 5).await;
    let backend = outpost_aws::backend(&clients, &settings);
    let key = CreatedKey::generate("bench".parse::<TenantId>()?, ApiKeyKind::Test);
    backend.keys.insert_key(&key).await?;

    let lambda = measure(&args.lambda_bin, args, &settings, key.expose()).await?;
    let release = measure(&args.release_bin, args, &settings, key.expose()).await?;
    Ok(render(&lambda, &release, args.starts))
}

async fn measure(bin: &Path, args: &LambdaBenchArgs, settings: &AwsSettings, key: &str) -> anyhow::Result<Figures> {
    let size = std::fs::metadata(bin)?.len();
    let zipped = zipped_size(bin)?;
    let mut inits = Vec::with_capacity(args.starts);
    let (mut hwm_init_kb, mut hwm_after_kb) = (0, 0);
    for start in 0..args.starts {
        let gateway = LambdaGateway::start_with(function(bin, &args.endpoint, settings), GatewayConfig::default())
            .await
            .with_context(|| format!("{} did not start", bin.display()))?;
        let init = gateway.init_duration(0).context("no init time")?;
        inits.push(init.as_secs_f64() * 1000.0);
        let pid = gateway.pid(0).context("the function is not running")?;
        hwm_init_kb = hwm_init_kb.max(peak_rss_kb(pid)?);
        if start == 0 {
            burst(gateway.url(), key).await?;
            hwm_after_kb = peak_rss_kb(pid)?;
        }
    }
    inits.sort_by(f64::total_cmp);
    Ok(Figures {
        size,
        zipped,
        init_ms: inits[inits.len() / 2],
        hwm_init_kb,
        hwm_after_kb,
    })
}

fn function(bin: &Path, endpoint: &str, settings: &AwsSettings) -> LambdaFunction {
    let mut env = deployment_env(endpoint, settings);
    env.push(("OUTPOST_LOG".to_owned(), "warn".to_owned()));
    LambdaFunction {
        env,
        ..LambdaFunction::new(bin)
    }
}

/// `BURST` health checks, run listings and dispatches through the gateway.
async fn burst(url: &str, key: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let auth = format!("Bearer {key}");
    for _ in 0..BURST {
        let health = http.get(format!("{url}/health")).send().await?;
        anyhow::ensure!(health.status().is_success(), "GET /health: {}", health.status());
        let list = http
            .get(format!("{url}/v1/runs"))
            .header("authorization", &auth)
            .send()
            .await?;
        anyhow::ensure!(list.status().is_success(), "GET /v1/runs: {}", list.status());
        let dispatch = http
            .post(format!("{url}/v1/runs"))
            .header("authorization", &auth)
            .json(&serde_json::json!({"agent": "claude", "task": "say hello"}))
            .send()
            .await?;
        anyhow::ensure!(
            dispatch.status().as_u16() == 202,
            "POST /v1/runs: {}",
            dispatch.status()
        );
    }
    Ok(())
}

/// `VmHWM` (peak resident set) of `pid`, in KiB.
fn peak_rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/PID/status")?;
    let kb = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM without a value")?
        .parse()?;
    Ok(kb)
}

/// Size of a zip holding `bin` as `bootstrap`, made with the `zip` CLI as infra/README.md does.
fn zipped_size(bin: &Path) -> anyhow::Result<u64> {
    let dir = tempfile::tempdir()?;
    let bootstrap = dir.path().join("bootstrap");
    std::fs::copy(bin, &bootstrap)?;
    let zip = dir.path().join("function.zip");
    let status = Command::new("zip")
        .arg("-q")
        .arg("-j")
        .arg(&zip)
        .arg(&bootstrap)
        .status()
        .context("cannot run zip (apt-get install zip)")?;
    anyhow::ensure!(status.success(), "zip failed: {status}");
    Ok(std::fs::metadata(&zip)?.len())
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn mib_kb(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".to_owned()
    }
}

fn render(l: &Figures, r: &Figures, starts: usize) -> String {
    let rows = [
        (
            "binary size",
            mb(l.size),
            mb(r.size),
            ratio(l.size as f64, r.size as f64),
        ),
        (
            "zip (`bootstrap`)",
            mb(l.zipped),
            mb(r.zipped),
            ratio(l.zipped as f64, r.zipped as f64),
        ),
        (
            "init, process start → first `/next` (median)",
            format!("{:.1} ms", l.init_ms),
            format!("{:.1} ms", r.init_ms),
            ratio(l.init_ms, r.init_ms),
        ),
        (
            "peak memory after init (VmHWM)",
            mib_kb(l.hwm_init_kb),
            mib_kb(r.hwm_init_kb),
            ratio(l.hwm_init_kb as f64, r.hwm_init_kb as f64),
        ),
        (
            "peak memory after the burst (VmHWM)",
            mib_kb(l.hwm_after_kb),
            mib_kb(r.hwm_after_kb),
            ratio(l.hwm_after_kb as f64, r.hwm_after_kb as f64),
        ),
    ];
    let mut t = format!(
        "| ingest-lambda ({starts} cold starts each, AWS backend on moto, burst = {BURST} × (health, list, dispatch)) | `lambda-zip` profile | release (baseline) | lambda / release |\n| --- | --- | --- | --- |\n"
    );
    for (what, a, b, q) in rows {
        t.push_str(&format!("| {what} | {a} | {b} | {q} |\n"));
    }
    t
}

/// Where `cargo build --profile lambda-zip` and `--release` put the binary, beside this workspace.
pub fn default_bins() -> (PathBuf, PathBuf) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    (
        target.join("lambda-zip").join("ingest-lambda"),
        target.join("release").join("ingest-lambda"),
    )
}
