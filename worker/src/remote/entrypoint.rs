//! `outpost-worker agent-run`: the agent entrypoint, where a remote agent runs (a per-run ECS
//! task's container, or an EC2 host through SSM). It reads one [`RunSpec`] with one HTTP GET of
//! a presigned URL (`--spec-url`, else [`SPEC_URL_ENV`]) and runs that one attempt through the
//! same [`RunPipeline`] as a worker (prepare, sandbox, the process executor, finalize), with:
//!
//! - a write-only store of two presigned POST policies ([`PostArtifactStore`], limited to the
//!   run's `runs/{tenant}/{run}/` and `live/{tenant}/{run}/` prefixes): no AWS credential;
//! - an agents registry holding only the spec's entry, run as a local process;
//! - the worker's default sandbox, built by the same code path as a worker's
//!   ([`WorkerConfig::from_settings`] of the AWS backend's default settings); on an SSM host
//!   `network = "open"` is refused (`sandbox_unavailable`) unless the firewall refuses the
//!   metadata endpoints for the run, which an unprivileged entrypoint cannot install: the host's
//!   instance credentials behind them read every tenant's keys;
//! - the tenant's secrets from where the spec says ([`SecretsFrom`]): the entrypoint's own
//!   `OUTPOST_SECRET_{NAME}` variables ([`EnvSecretStore`], ECS), Parameter Store with the host's
//!   credentials (SSM hosts), or none. `--secrets`, when given, must agree: a spec that asks for
//!   none agrees with any flag, otherwise the kinds must be the same;
//! - pass-through variables from the entrypoint's environment, never one named `OUTPOST_*` or
//!   `AWS_*` ([`refused_env_name`]): the spec URL, the secret variables and cloud credentials
//!   stay out of the agent.
//!
//! Before anything else (while the process is single-threaded, see [`run_process`]) it makes
//! itself non-dumpable (a same-uid agent can then neither ptrace it nor read its
//! `/proc/{pid}/environ` or memory) and takes the spec URL and the secret variables out of its
//! environment. SIGTERM or SIGINT cancels the run: the agent is stopped and the run is finalized
//! (`output.log`, `summary.json`).
//!
//! The exit code is an [`EntrypointExit`] (0 succeeded, 10 failed, 11 timed out, 12 cancelled, 20
//! bad spec, 21 abandoned); stdout is one short JSON line ([`OutcomeLine`], under 512 bytes) for
//! people reading a command's output: the dispatching worker reads `summary.json` from S3, never
//! stdout (SSM keeps only its first 24,000 characters). Logs are tracing lines on stderr; neither
//! the prompt, the spec URL's query nor any secret value is logged.

use crate::egress::{Egress, EgressConfig};
use crate::executor::{stop_channel, ProcessConfig, ProcessExecutor, Stop};
use crate::pipeline::{EnvLookup, Execution, PipelineConfig, RunPipeline};
use crate::remote::spec::{RunSpec, SecretsFrom, SECRET_ENV_PREFIX, SPEC_URL_ENV, SPEC_VERSION};
use crate::tenant_secrets::TenantSecrets;
use crate::WorkerConfig;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outpost_aws::s3::post::{live_prefix, run_prefix, PostArtifactStore};
use outpost_config::deployment::BackendKind;
use outpost_config::settings::{BackendArgs, ConfigError, LogFormat, SettingsArgs, SettingsFile, WorkerArgs};
use outpost_config::Settings;
use outpost_core::domain::{AgentRegistry, EntrypointExit, ExecutorKind, Outcome, TenantId, TerminalStatus};
use outpost_core::ports::{ArtifactStore, SecretError, SecretInfo, SecretName, SecretStore};
use secrecy::SecretString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The largest run spec read (a spec is a run record, an agent entry and two policies: a few KB,
/// up to the largest prompt a dispatch takes).
pub const MAX_SPEC_BYTES: usize = 8 * 1024 * 1024;
/// How long the spec's GET may take in all.
const SPEC_FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting to S3 (the spec, the uploads).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence while reading an answer or sending a body.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// The stdout line stays under this (a courtesy; never the record).
pub const MAX_LINE_BYTES: usize = 512;

/// `outpost-worker agent-run`: runs one attempt of one run from its run spec.
#[derive(Clone, clap::Args)]
pub struct AgentRunArgs {
    /// Presigned GET URL of the run spec. Default: the OUTPOST_RUN_SPEC_URL variable.
    #[arg(long = "spec-url", value_name = "URL")]
    pub spec_url: Option<String>,
    /// Where the run's folders go. Default: $TMPDIR/outpost-agent-run
    #[arg(long = "work-dir", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Seconds between SIGTERM and SIGKILL when stopping the agent.
    #[arg(long = "kill-grace-secs", default_value_t = 5, value_name = "SECS")]
    pub kill_grace_secs: u64,
    /// Where this host offers the tenant's keys from; when given, the spec must agree.
    #[arg(long, value_enum, value_name = "FROM")]
    pub secrets: Option<SecretsFlag>,
    /// Log format on stderr, `json` or `text`. Default: json
    #[arg(long = "log-format", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl std::fmt::Debug for AgentRunArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRunArgs")
            .field("spec_url", &self.spec_url.as_deref().map(redact_url))
            .field("work_dir", &self.work_dir)
            .field("kill_grace_secs", &self.kill_grace_secs)
            .field("secrets", &self.secrets)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// `--secrets`: the source a launcher set this host up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SecretsFlag {
    /// `OUTPOST_SECRET_{NAME}` variables (ECS task definition `secrets`).
    Env,
    /// Parameter Store with the host's own credentials (SSM hosts).
    Ssm,
    /// None.
    None,
}

impl SecretsFlag {
    fn as_str(self) -> &'static str {
        match self {
            SecretsFlag::Env => "env",
            SecretsFlag::Ssm => "ssm",
            SecretsFlag::None => "none",
        }
    }

    /// Whether a spec asking for `from` may run under this flag: a spec asking for no secrets
    /// always may (it reads nothing); otherwise the sources are the same.
    pub fn agrees_with(self, from: &SecretsFrom) -> bool {
        matches!(
            (self, from),
            (_, SecretsFrom::None) | (SecretsFlag::Env, SecretsFrom::Env) | (SecretsFlag::Ssm, SecretsFrom::Ssm { .. })
        )
    }
}

fn secrets_from_name(from: &SecretsFrom) -> &'static str {
    match from {
        SecretsFrom::None => "none",
        SecretsFrom::Env => "env",
        SecretsFrom::Ssm { .. } => "ssm",
    }
}

/// Why the entrypoint could not start the run (each is [`EntrypointExit::BadSpec`]), or why a
/// write to the entrypoint's secrets was refused.
#[derive(Debug, thiserror::Error)]
pub enum EntrypointError {
    #[error("no run spec URL: give --spec-url or set {SPEC_URL_ENV}")]
    NoSpecUrl,
    #[error("the run spec URL is not an http(s) URL")]
    BadUrl,
    #[error("the run spec could not be fetched from {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the run spec could not be fetched from {url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("the run spec is larger than {MAX_SPEC_BYTES} bytes")]
    TooLarge,
    #[error("the run spec is not a valid spec: {0}")]
    Json(String),
    #[error("the run spec has version {found}; this entrypoint reads version {SPEC_VERSION}")]
    Version { found: u32 },
    #[error("--secrets {flag} disagrees with the run spec, whose secrets come from {spec}")]
    SecretsDisagree { flag: &'static str, spec: &'static str },
    #[error("the run spec's agent entry is {entry:?}, but its run names agent {run:?}")]
    AgentMismatch { entry: String, run: String },
    #[error("the run spec's {which} upload policy is for {found:?}, not the run's {want:?}")]
    WrongPrefix {
        which: &'static str,
        found: String,
        want: String,
    },
    #[error("the settings of the sandbox: {0}")]
    Settings(#[from] ConfigError),
    #[error("cannot create the work dir {}: {source}", .path.display())]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP client could not be made: {0}")]
    Http(#[source] reqwest::Error),
    #[error("the async runtime could not be started: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the agent entrypoint's secrets are read-only")]
    ReadOnly,
}

/// What the entrypoint took out of its own environment at start ([`take_environment`]).
#[derive(Default)]
pub struct Inherited {
    /// [`SPEC_URL_ENV`]'s value.
    pub spec_url: Option<String>,
    /// `OUTPOST_SECRET_{NAME}` → `NAME`, with valid names and values only, sorted by name.
    pub secrets: Vec<(SecretName, SecretString)>,
    /// Names of `OUTPOST_SECRET_*` variables left out (invalid name or value).
    pub skipped: Vec<String>,
}

impl std::fmt::Debug for Inherited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inherited")
            .field("spec_url", &self.spec_url.as_deref().map(redact_url))
            .field(
                "secrets",
                &self.secrets.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            )
            .field("skipped", &self.skipped)
            .finish()
    }
}

/// Takes [`SPEC_URL_ENV`] and every `OUTPOST_SECRET_*` variable out of this process's
/// environment and returns them. Call it while the process has one thread (before any runtime
/// starts): changing the environment races with other threads reading it.
pub fn take_environment() -> Inherited {
    let mut inherited = Inherited::default();
    let mut remove = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().map(str::to_owned) else {
            continue;
        };
        if name == SPEC_URL_ENV {
            inherited.spec_url = value.into_string().ok().filter(|v| !v.is_empty());
            remove.push(name);
        } else if let Some(secret) = name.strip_prefix(SECRET_ENV_PREFIX) {
            let parsed = secret.parse::<SecretName>().ok().zip(
                value
                    .into_string()
                    .ok()
                    .filter(|v| outpost_core::ports::secrets::check_secret_value(v).is_ok()),
            );
            match parsed {
                Some((n, v)) => inherited.secrets.push((n, SecretString::from(v))),
                None => inherited.skipped.push(name.clone()),
            }
            remove.push(name);
        }
    }
    for name in remove {
        std::env::remove_var(name);
    }
    inherited.secrets.sort_by(|a, b| a.0.cmp(&b.0));
    inherited
}

/// Makes this process non-dumpable: processes of the same uid (the agent, on an SSM host) can
/// neither ptrace it nor read its memory or `/proc/{pid}/environ` (which still holds the
/// variables [`take_environment`] removed).
pub fn forbid_dumps() -> Result<(), nix::Error> {
    nix::sys::prctl::set_dumpable(false)
}

/// Whether the agent may never receive the entrypoint's variable `name` (any case): `OUTPOST_*`
/// (the spec URL, the secret variables) and `AWS_*` (cloud credentials and settings).
pub fn refused_env_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("OUTPOST_") || upper.starts_with("AWS_")
}

/// The agent's pass-through variables: the entrypoint's environment minus [`refused_env_name`].
pub fn agent_env_lookup() -> EnvLookup {
    Arc::new(|name: &str| {
        if refused_env_name(name) {
            None
        } else {
            std::env::var_os(name)
        }
    })
}

/// The whole mode, as `main` runs it: non-dumpable, the environment taken, a runtime, the run,
/// the stdout line. Returns the process's exit code. Call it first thing (single-threaded).
pub fn run_process(args: AgentRunArgs) -> i32 {
    let dumps = forbid_dumps();
    let inherited = take_environment();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("outpost-worker agent-run: {}", EntrypointError::Runtime(e));
            print_line(&OutcomeLine::bad_spec(None));
            return EntrypointExit::BadSpec.code();
        }
    };
    let json = args.log_format.unwrap_or(LogFormat::Json) == LogFormat::Json;
    outpost_config::telemetry::init_logs("info", json);
    if let Err(e) = dumps {
        tracing::warn!(error = %e, "cannot make the entrypoint non-dumpable");
    }
    let (exit, line) = runtime.block_on(agent_run(args, inherited));
    print_line(&line);
    exit.code()
}

/// Runs the run of the spec to its end (see the module docs). Returns how it ended and the
/// stdout line.
pub async fn agent_run(args: AgentRunArgs, inherited: Inherited) -> (EntrypointExit, OutcomeLine) {
    // Signals first: a SIGTERM from now on cancels the run instead of killing the entrypoint.
    let (stop, signal) = stop_channel();
    let signals = tokio::spawn(async move {
        outpost_config::telemetry::shutdown_signal().await;
        tracing::info!("stop signal received: cancelling the run");
        stop.request(Stop::Cancel);
        // Keep the handle: the request stays up until the run is over.
        std::future::pending::<()>().await;
    });
    let result = match Entrypoint::start(&args, inherited).await {
        Ok(entry) => {
            let run_id = entry.spec.run.id.as_str().to_owned();
            let execution = entry.pipeline.run(&entry.spec.run, signal).await;
            exit_of(&execution, &run_id)
        }
        Err(e) => {
            // One readable line for whoever reads the task's or command's output.
            eprintln!("outpost-worker agent-run: {e}");
            tracing::error!(error = %e, "the run could not be started");
            (EntrypointExit::BadSpec, OutcomeLine::bad_spec(None))
        }
    };
    signals.abort();
    result
}

/// The exit code and stdout line of an execution.
fn exit_of(execution: &Execution, run_id: &str) -> (EntrypointExit, OutcomeLine) {
    match execution {
        Execution::Finished { outcome, artifacts } => {
            let exit = exit_for(outcome);
            if !artifacts
                .iter()
                .any(|a| a.name == outpost_core::domain::run_files::SUMMARY_JSON)
            {
                tracing::warn!("summary.json was not stored: the dispatcher has only the exit code");
            }
            tracing::info!(status = ?outcome.status, exit = exit.code(), "run finished");
            (exit, OutcomeLine::of(run_id, outcome))
        }
        Execution::Abandoned => {
            tracing::warn!("run abandoned: nothing was recorded");
            (
                EntrypointExit::Abandoned,
                OutcomeLine {
                    run_id: Some(run_id.to_owned()),
                    status: "abandoned",
                    exit_code: None,
                    failure_reason: None,
                },
            )
        }
    }
}

/// The entrypoint's exit code of a finished run.
pub fn exit_for(outcome: &Outcome) -> EntrypointExit {
    match outcome.status {
        TerminalStatus::Succeeded => EntrypointExit::Succeeded,
        TerminalStatus::Failed => EntrypointExit::Failed,
        TerminalStatus::TimedOut => EntrypointExit::TimedOut,
        TerminalStatus::Cancelled => EntrypointExit::Cancelled,
    }
}

/// The stdout line: `{"run_id":…,"status":…,"exit_code":…,"failure_reason":…}`, where
/// `exit_code` is the agent's (as in `summary.json`) and `status` is the run's terminal status,
/// `abandoned` or `bad_spec`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutcomeLine {
    pub run_id: Option<String>,
    pub status: &'static str,
    pub exit_code: Option<i32>,
    pub failure_reason: Option<&'static str>,
}

impl OutcomeLine {
    fn of(run_id: &str, outcome: &Outcome) -> Self {
        Self {
            run_id: Some(run_id.to_owned()),
            status: match outcome.status {
                TerminalStatus::Succeeded => "succeeded",
                TerminalStatus::Failed => "failed",
                TerminalStatus::TimedOut => "timed_out",
                TerminalStatus::Cancelled => "cancelled",
            },
            exit_code: outcome.exit_code,
            failure_reason: outcome.reason.map(outpost_core::domain::FailureReason::as_str),
        }
    }

    fn bad_spec(run_id: Option<String>) -> Self {
        Self {
            run_id,
            status: "bad_spec",
            exit_code: None,
            failure_reason: None,
        }
    }

    /// The line, under [`MAX_LINE_BYTES`] (the run id is left out if it would not be).
    pub fn to_json(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        if text.len() < MAX_LINE_BYTES {
            return text;
        }
        serde_json::to_string(&Self {
            run_id: None,
            ..self.clone()
        })
        .unwrap_or_default()
    }
}

fn print_line(line: &OutcomeLine) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.to_json());
    let _ = out.flush();
}

/// `url` without its query and fragment (a presigned URL's query is its signature).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.to_string()
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// A run ready to go: its spec and the pipeline that runs it.
struct Entrypoint {
    spec: RunSpec,
    pipeline: RunPipeline,
}

impl Entrypoint {
    /// Reads and checks the spec, then composes the pipeline.
    async fn start(args: &AgentRunArgs, inherited: Inherited) -> Result<Self, EntrypointError> {
        if !inherited.skipped.is_empty() {
            tracing::warn!(variables = ?inherited.skipped, "left out secret variables with an invalid name or value");
        }
        let url = args
            .spec_url
            .clone()
            .or(inherited.spec_url)
            .ok_or(EntrypointError::NoSpecUrl)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(EntrypointError::Http)?;
        let spec = fetch_spec(&http, &url).await?;
        check_spec(&spec, args.secrets)?;
        tracing::info!(
            run_id = %spec.run.id,
            tenant = %spec.run.tenant,
            agent = %spec.run.agent,
            attempt = spec.run.attempts,
            secrets = secrets_from_name(&spec.secrets),
            "run spec read"
        );

        // The sandbox and the kill grace exactly as a worker of the AWS backend builds them.
        let work_dir = args
            .work_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("outpost-agent-run"));
        let settings = Settings::merge(
            &SettingsArgs {
                backend: BackendArgs {
                    backend: Some(BackendKind::Aws),
                    ..BackendArgs::default()
                },
                worker: WorkerArgs {
                    kill_grace_secs: Some(args.kill_grace_secs),
                    work_dir: Some(work_dir),
                    ..WorkerArgs::default()
                },
                ..SettingsArgs::default()
            },
            &SettingsFile::default(),
            outpost_config::settings::Context::default(),
        )?;
        let worker = WorkerConfig::from_settings(&settings);
        std::fs::create_dir_all(&worker.work_dir).map_err(|source| EntrypointError::WorkDir {
            path: worker.work_dir.clone(),
            source,
        })?;

        let store: Arc<dyn ArtifactStore> =
            Arc::new(PostArtifactStore::new(spec.artifacts.clone(), spec.live.clone(), http));
        let mut agents = AgentRegistry::builtin(false);
        let others: Vec<_> = agents.enabled().cloned().collect();
        for mut other in others {
            other.enabled = false;
            agents.insert(other);
        }
        let mut entry = spec.agent.clone();
        entry.executor = ExecutorKind::Process;
        entry.enabled = true;
        agents.insert(entry);
        // An SSM host's instance role (even AmazonSSMManagedInstanceCore alone) reads every
        // parameter, every tenant's keys among them, from its metadata endpoint: an agent there
        // may have `network = "open"` only where the firewall refuses that endpoint for it.
        let mut sandbox = worker.sandbox.clone();
        sandbox.refuse_open_unfirewalled =
            spec.agent.executor == ExecutorKind::Ssm || args.secrets == Some(SecretsFlag::Ssm);
        let executor = ProcessExecutor::new(ProcessConfig {
            kill_grace: worker.kill_grace,
            sandbox,
        });
        let egress = Egress::new(EgressConfig::default())
            .map(Arc::new)
            .map_err(|e| e.to_string());
        let mut pipeline = RunPipeline::new(
            store,
            Arc::new(agents),
            Arc::new(executor),
            PipelineConfig::new(worker.work_dir.clone()),
        )
        .with_egress_result(egress)
        .with_env_lookup(agent_env_lookup());
        if let Err(why) = pipeline.egress_ready() {
            tracing::warn!(%why, "no egress proxy: runs that need one fail");
        }
        let secrets: Option<Arc<dyn SecretStore>> = match &spec.secrets {
            SecretsFrom::None => None,
            SecretsFrom::Env => Some(Arc::new(EnvSecretStore::new(
                spec.run.tenant.clone(),
                inherited.secrets,
            ))),
            SecretsFrom::Ssm { prefix } => {
                let clients = outpost_aws::AwsClients::from_env(None).await;
                Some(Arc::new(outpost_aws::ssm::SsmSecretStore::new(
                    clients.ssm,
                    prefix.clone(),
                )))
            }
        };
        if let Some(store) = secrets {
            pipeline = pipeline.with_tenant_secrets(Arc::new(TenantSecrets::new(store, worker.secrets_ttl)));
        }
        Ok(Self { spec, pipeline })
    }
}

/// One GET of the spec, at most [`MAX_SPEC_BYTES`], parsed and its version checked.
async fn fetch_spec(http: &reqwest::Client, url: &str) -> Result<RunSpec, EntrypointError> {
    let parsed = url::Url::parse(url).map_err(|_| EntrypointError::BadUrl)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(EntrypointError::BadUrl);
    }
    let shown = redact_url(url);
    let fetch = |source: reqwest::Error| EntrypointError::Fetch {
        url: shown.clone(),
        source: source.without_url(),
    };
    let mut res = http
        .get(parsed)
        .timeout(SPEC_FETCH_TIMEOUT)
        .send()
        .await
        .map_err(fetch)?;
    if !res.status().is_success() {
        return Err(EntrypointError::Status {
            url: shown.clone(),
            status: res.status().as_u16(),
        });
    }
    if res.content_length().is_some_and(|n| n > MAX_SPEC_BYTES as u64) {
        return Err(EntrypointError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(fetch)? {
        if body.len() + chunk.len() > MAX_SPEC_BYTES {
            return Err(EntrypointError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    parse_spec(&body)
}

/// The spec in `body`: its version first (a spec of another version need not parse as this
/// one), then the whole. Errors say where, never what (the spec holds the prompt).
pub fn parse_spec(body: &[u8]) -> Result<RunSpec, EntrypointError> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: u32,
    }
    let where_ = |e: serde_json::Error| {
        EntrypointError::Json(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    };
    let v: Versioned = serde_json::from_slice(body).map_err(where_)?;
    if v.version != SPEC_VERSION {
        return Err(EntrypointError::Version { found: v.version });
    }
    serde_json::from_slice(body).map_err(where_)
}

/// The checks of a spec before anything runs: the secrets flag agrees, the agent entry is the
/// run's, and the upload policies are for the run's own prefixes.
pub fn check_spec(spec: &RunSpec, flag: Option<SecretsFlag>) -> Result<(), EntrypointError> {
    if let Some(flag) = flag {
        if !flag.agrees_with(&spec.secrets) {
            return Err(EntrypointError::SecretsDisagree {
                flag: flag.as_str(),
                spec: secrets_from_name(&spec.secrets),
            });
        }
    }
    if spec.agent.name != spec.run.agent {
        return Err(EntrypointError::AgentMismatch {
            entry: spec.agent.name.clone(),
            run: spec.run.agent.clone(),
        });
    }
    let key = crate::pipeline::run_key(&spec.run);
    for (which, post, want) in [
        ("artifacts", &spec.artifacts, run_prefix(&key)),
        ("live log", &spec.live, live_prefix(&key)),
    ] {
        if post.key_prefix != want {
            return Err(EntrypointError::WrongPrefix {
                which,
                found: post.key_prefix.clone(),
                want,
            });
        }
    }
    Ok(())
}

/// The tenant's secrets as ECS gave them to the entrypoint (`OUTPOST_SECRET_{NAME}`, see
/// [`take_environment`]): one tenant's, read-only, in memory. Writes answer an error.
pub struct EnvSecretStore {
    tenant: TenantId,
    secrets: Vec<(SecretName, SecretString)>,
    read_at: DateTime<Utc>,
}

impl EnvSecretStore {
    /// `tenant`'s `secrets` (any other tenant has none).
    pub fn new(tenant: TenantId, mut secrets: Vec<(SecretName, SecretString)>) -> Self {
        secrets.sort_by(|a, b| a.0.cmp(&b.0));
        secrets.dedup_by(|a, b| a.0 == b.0);
        Self {
            tenant,
            secrets,
            read_at: Utc::now(),
        }
    }

    fn of(&self, tenant: &TenantId) -> &[(SecretName, SecretString)] {
        if *tenant == self.tenant {
            &self.secrets
        } else {
            &[]
        }
    }
}

impl std::fmt::Debug for EnvSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvSecretStore")
            .field("tenant", &self.tenant)
            .field(
                "names",
                &self.secrets.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn read_only() -> SecretError {
    SecretError::Backend(Box::new(EntrypointError::ReadOnly))
}

#[async_trait]
impl SecretStore for EnvSecretStore {
    async fn put_secret(&self, tenant: &TenantId, name: &SecretName, value: &SecretString) -> Result<(), SecretError> {
        let _ = (tenant, name, value);
        Err(read_only())
    }

    async fn get_secret(&self, tenant: &TenantId, name: &SecretName) -> Result<Option<SecretString>, SecretError> {
        Ok(self.of(tenant).iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()))
    }

    async fn list_secrets(&self, tenant: &TenantId) -> Result<Vec<SecretInfo>, SecretError> {
        Ok(self
            .of(tenant)
            .iter()
            .map(|(name, _)| SecretInfo {
                name: name.clone(),
                updated_at: self.read_at,
            })
            .collect())
    }

    async fn delete_secret(&self, tenant: &TenantId, name: &SecretName) -> Result<bool, SecretError> {
        let _ = (tenant, name);
        Err(read_only())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn name(n: &str) -> SecretName {
        n.parse().expect("a secret name")
    }

    #[test]
    fn the_flag_must_agree_with_the_spec() {
        let ssm = SecretsFrom::Ssm { prefix: "/o".into() };
        assert!(SecretsFlag::Env.agrees_with(&SecretsFrom::Env));
        assert!(SecretsFlag::Ssm.agrees_with(&ssm));
        for flag in [SecretsFlag::Env, SecretsFlag::Ssm, SecretsFlag::None] {
            assert!(flag.agrees_with(&SecretsFrom::None), "{flag:?}");
        }
        assert!(!SecretsFlag::Ssm.agrees_with(&SecretsFrom::Env));
        assert!(!SecretsFlag::Env.agrees_with(&ssm));
        assert!(!SecretsFlag::None.agrees_with(&SecretsFrom::Env));
    }

    #[test]
    fn cloud_and_outpost_variables_never_reach_the_agent() {
        for refused in [
            "OUTPOST_RUN_SPEC_URL",
            "OUTPOST_SECRET_X",
            "AWS_ACCESS_KEY_ID",
            "aws_secret_access_key",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        ] {
            assert!(refused_env_name(refused), "{refused}");
        }
        for given in ["PATH_EXTRA", "ANTHROPIC_API_KEY", "MY_OUTPOST_X", "AWSX"] {
            assert!(!refused_env_name(given), "{given}");
        }
    }

    #[tokio::test]
    async fn the_env_store_is_one_tenants_and_read_only() {
        let acme: TenantId = "acme".parse().expect("tenant");
        let other: TenantId = "other".parse().expect("tenant");
        let store = EnvSecretStore::new(
            acme.clone(),
            vec![
                (name("B_KEY"), SecretString::from("b")),
                (name("A_KEY"), SecretString::from("a")),
            ],
        );
        let listed: Vec<String> = store
            .list_secrets(&acme)
            .await
            .expect("list")
            .into_iter()
            .map(|i| i.name.as_str().to_owned())
            .collect();
        assert_eq!(listed, ["A_KEY", "B_KEY"]);
        let got = store.get_secret(&acme, &name("B_KEY")).await.expect("get");
        assert_eq!(got.as_ref().map(ExposeSecret::expose_secret), Some("b"));
        assert!(store.list_secrets(&other).await.expect("list").is_empty());
        assert!(store.get_secret(&other, &name("A_KEY")).await.expect("get").is_none());
        assert!(store
            .put_secret(&acme, &name("C"), &SecretString::from("c"))
            .await
            .is_err());
        assert!(store.delete_secret(&acme, &name("A_KEY")).await.is_err());
        assert!(!format!("{store:?}").contains("\"a\""));
    }

    #[test]
    fn specs_of_another_version_or_not_json_are_refused_without_their_content() {
        assert!(matches!(
            parse_spec(br#"{"version": 2, "anything": "else"}"#),
            Err(EntrypointError::Version { found: 2 })
        ));
        let e = parse_spec(b"{not json").expect_err("bad json");
        assert!(matches!(e, EntrypointError::Json(_)), "{e}");
        let e = parse_spec(br#"{"version": 1, "run": "the secret prompt"}"#).expect_err("bad shape");
        assert!(!e.to_string().contains("secret prompt"), "{e}");
    }

    #[test]
    fn the_line_is_short_and_urls_lose_their_query() {
        let line = OutcomeLine::of("r1", &Outcome::succeeded()).to_json();
        assert_eq!(
            line,
            r#"{"run_id":"r1","status":"succeeded","exit_code":0,"failure_reason":null}"#
        );
        let long = OutcomeLine {
            run_id: Some("x".repeat(600)),
            ..OutcomeLine::bad_spec(None)
        };
        assert!(long.to_json().len() < MAX_LINE_BYTES);
        assert_eq!(
            redact_url("https://b.s3.amazonaws.com/specs/t/r/1.json?X-Amz-Signature=abc"),
            "https://b.s3.amazonaws.com/specs/t/r/1.json"
        );
    }
}
