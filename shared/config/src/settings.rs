//! One set of settings for every Outpost binary (`outpost dev`, `outpost worker`, `outpost keys`,
//! `outpost-worker`, `ingest-lambda`): the same flag names, environment variables, defaults and
//! checks everywhere, resolved and validated once at start, then passed down as a [`Settings`].
//! Libraries never read the environment themselves.
//!
//! Each value comes from the first of: a command-line flag, its environment variable, the
//! settings file (`--config FILE` / `OUTPOST_CONFIG`, TOML with the same names in snake case), the
//! default below. Flags and variables are parsed by clap (the `*Args` groups each binary flattens
//! into its command); the file by [`SettingsFile`]; [`Settings::resolve`] merges and checks them.
//!
//! | setting | flag / variable | default |
//! |---|---|---|
//! | backend | `--backend` / `OUTPOST_BACKEND` | `embedded` (`aws` inside Lambda) |
//! | data directory | `--data` / `OUTPOST_DATA` | `.outpost` |
//! | workspaces | `--work-dir` / `OUTPOST_WORK_DIR` | the worker's default (see `outpost_worker::identity`) |
//! | operator agents file | `--agents` / `OUTPOST_AGENTS` | `{data}/agents.toml` when it exists |
//! | `shell` agent | `--allow-shell[=BOOL]` / `OUTPOST_ALLOW_SHELL` | on embedded, off on AWS |
//! | local repositories | `--allow-local-repos[=BOOL]` / `OUTPOST_ALLOW_LOCAL_REPOS` | on embedded, off on AWS |
//! | listen address | `--listen` / `OUTPOST_LISTEN` | `127.0.0.1:7331` |
//! | slots | `--slots` / `OUTPOST_SLOTS` | 2 × cores (`outpost dev` accepts 0: API only) |
//! | lease | `--lease-secs` / `OUTPOST_LEASE_SECS` | 30 (3 ..= 43,200) |
//! | attempts | `--max-attempts` / `OUTPOST_MAX_ATTEMPTS` | 3 (≥ 1) |
//! | kill grace | `--kill-grace-secs` / `OUTPOST_KILL_GRACE_SECS` | 5 (≤ 600) |
//! | drain window | `--drain-secs` / `OUTPOST_DRAIN_SECS` | 25 (≤ 3,600) |
//! | deliveries before dead-lettering | `--max-receive-count` / `OUTPOST_MAX_RECEIVE_COUNT` | 5 (embedded queue; on AWS the queue's redrive policy) |
//! | log format | `--log-format` / `OUTPOST_LOG_FORMAT` | `json` on AWS, `text` otherwise |
//! | GitHub API (pull requests) | `--github-api-url` / `OUTPOST_GITHUB_API_URL` | `https://api.github.com` |
//! | sandbox of entries that name none | `--sandbox` / `OUTPOST_SANDBOX` | the strongest the machine supports |
//! | `sandbox = "none"` on AWS | `--allow-unsandboxed[=BOOL]` / `OUTPOST_ALLOW_UNSANDBOXED` | off (refused) |
//! | agents' uids (root worker) | `--agent-uids` / `OUTPOST_AGENT_UIDS` | `200000-200255` |
//! | extra read-only / shared writable folders for agents | `--sandbox-ro`, `--sandbox-rw` / `OUTPOST_SANDBOX_RO`, `OUTPOST_SANDBOX_RW` (`:`-separated) | none |
//! | further CAs the egress proxy trusts for vendor APIs (PEM) | `--egress-ca` / `OUTPOST_EGRESS_CA` | none (the webpki roots) |
//! | fixed addresses of names for the egress proxy | `--egress-resolve NAME=IP` / `OUTPOST_EGRESS_RESOLVE` (`,`-separated) | none (DNS) |
//!
//! | remote executors (AWS workers: ECS tasks, SSM hosts) | `--ecs-*`, `--ssm-*`, `--remote-*` / `OUTPOST_ECS_*`, `OUTPOST_SSM_*`, `OUTPOST_REMOTE_*`; the file's `[remote]` table | none (see [`crate::remote`]) |
//!
//! The log filter is `OUTPOST_LOG` (read by [`crate::telemetry::init_logs`]).

use crate::deployment::{self, BackendKind, OpenBackendError, OpenedBackend};
use crate::remote::{RemoteArgs, RemoteFile, RemoteSettings};
use outpost_core::domain::{AgentRegistry, AgentsFileError, SandboxMode};
use outpost_embedded::EmbeddedOptions;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default address of the API (`outpost dev`, `ingest-lambda` outside Lambda) and default URL of
/// the client commands.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7331";
/// Default data directory, relative to the current directory.
pub const DEFAULT_DATA_DIR: &str = ".outpost";

const MIN_LEASE_SECS: u64 = 3;
/// SQS's cap on a message's visibility timeout.
const MAX_LEASE_SECS: u64 = 12 * 60 * 60;
const MAX_KILL_GRACE_SECS: u64 = 600;
const MAX_DRAIN_SECS: u64 = 3_600;

/// Why settings could not be resolved: one readable line naming the setting and its source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the settings file {path}: {source}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the settings file {path} is not valid: {message}")]
    BadFile { path: String, message: String },
    #[error("{setting} {message}")]
    Invalid { setting: &'static str, message: String },
    #[error(transparent)]
    Agents(#[from] AgentsFileError),
}

pub(crate) fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

/// Where the deployment's state lives: flags every binary has.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BackendArgs {
    /// Settings file (TOML; same names as the flags, in snake case). Flags and variables win.
    #[arg(long = "config", env = "OUTPOST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Backend: `embedded` (SQLite + folders in the data directory) or `aws` (DynamoDB, SQS, S3,
    /// SSM named by OUTPOST_TABLE, OUTPOST_QUEUE_URL, OUTPOST_DLQ_URL, OUTPOST_BUCKET;
    /// AWS_ENDPOINT_URL for an emulator). Default: embedded (aws inside Lambda).
    #[arg(long, env = "OUTPOST_BACKEND")]
    pub backend: Option<BackendKind>,
    /// Data directory (SQLite database and artifacts; agents.toml on either backend).
    /// Default: .outpost
    #[arg(long, env = "OUTPOST_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Deliveries of one message before it is dead-lettered (embedded queue). Default: 5
    #[arg(long, env = "OUTPOST_MAX_RECEIVE_COUNT")]
    pub max_receive_count: Option<u32>,
    /// Log format, `json` or `text`. Default: json on AWS, text otherwise.
    #[arg(long, env = "OUTPOST_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// Which agents exist: flags of every process that dispatches or runs agents.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AgentArgs {
    /// Operator agents file (TOML, `[agents.NAME]` tables) adding to or overriding the built-in
    /// agents. Default: {data}/agents.toml when it exists.
    #[arg(long, env = "OUTPOST_AGENTS", value_name = "FILE")]
    pub agents: Option<PathBuf>,
    /// Enable the `shell` agent (runs the task as a sh script). Default: on embedded, off on AWS.
    #[arg(long, env = "OUTPOST_ALLOW_SHELL", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub allow_shell: Option<bool>,
}

/// How the API serves.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port). Default: 127.0.0.1:7331
    #[arg(long, env = "OUTPOST_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Accept repositories on this machine (`file://`, `http://` to localhost) in dispatches.
    /// Default: on embedded, off on AWS (tenants share the fleet).
    #[arg(long, env = "OUTPOST_ALLOW_LOCAL_REPOS", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub allow_local_repos: Option<bool>,
    /// Base URL of the GitHub REST API (GitHub Enterprise), for promote's pull requests.
    #[arg(long, env = "OUTPOST_GITHUB_API_URL", value_name = "URL")]
    pub github_api_url: Option<String>,
}

/// How a worker runs.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WorkerArgs {
    /// Concurrent runs. Default: 2 × CPU cores (`outpost dev --slots 0` runs no worker).
    #[arg(long, env = "OUTPOST_SLOTS")]
    pub slots: Option<usize>,
    /// Seconds of a run's lease and message visibility (3..=43200); heartbeats every third of it.
    /// Default: 30
    #[arg(long, env = "OUTPOST_LEASE_SECS")]
    pub lease_secs: Option<u64>,
    /// Claims before a run whose worker keeps dying fails with `worker_lost`. Default: 3
    #[arg(long, env = "OUTPOST_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// Seconds between SIGTERM and SIGKILL when stopping an agent. Default: 5
    #[arg(long, env = "OUTPOST_KILL_GRACE_SECS")]
    pub kill_grace_secs: Option<u64>,
    /// Seconds in-flight runs get to finish after SIGTERM before they are stopped and released
    /// (ECS waits `stopTimeout`, at most 120 s). Default: 25
    #[arg(long, env = "OUTPOST_DRAIN_SECS")]
    pub drain_secs: Option<u64>,
    /// Where run workspaces go. Default: {data}/work embedded, $TMPDIR/outpost-work on AWS or
    /// when the worker is root (agents, run as other uids, never pass through the data dir).
    #[arg(long, env = "OUTPOST_WORK_DIR", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Sandbox of agent entries that name none: strict, standard or none. Default: the
    /// strongest this machine supports (see docs/SECURITY.md).
    #[arg(long, env = "OUTPOST_SANDBOX", value_name = "MODE")]
    pub sandbox: Option<SandboxMode>,
    /// Let entries with `sandbox = "none"` run on the AWS backend (refused there otherwise).
    #[arg(long, env = "OUTPOST_ALLOW_UNSANDBOXED", num_args = 0..=1, default_missing_value = "true")]
    pub allow_unsandboxed: Option<bool>,
    /// uids (and gids) a root worker gives its runs' agents, one per run. Default: 200000-200255
    #[arg(long, env = "OUTPOST_AGENT_UIDS", value_name = "FIRST-LAST")]
    pub agent_uids: Option<String>,
    /// A further folder every agent sees read-only (where agent CLIs are installed); repeatable.
    #[arg(
        long = "sandbox-ro",
        env = "OUTPOST_SANDBOX_RO",
        value_name = "DIR",
        value_delimiter = ':'
    )]
    pub sandbox_ro: Vec<PathBuf>,
    /// A folder every agent may write (a cache shared between runs: weakens isolation);
    /// repeatable.
    #[arg(
        long = "sandbox-rw",
        env = "OUTPOST_SANDBOX_RW",
        value_name = "DIR",
        value_delimiter = ':'
    )]
    pub sandbox_rw: Vec<PathBuf>,
    /// A PEM file of further CAs the runs' egress proxy trusts for vendor APIs (an operator's
    /// TLS-inspecting gateway, a test stand-in); agents never see it.
    #[arg(long, env = "OUTPOST_EGRESS_CA", value_name = "FILE")]
    pub egress_ca: Option<PathBuf>,
    /// A fixed address for a host name, used by the egress proxy instead of DNS (still checked
    /// against the refused address classes); repeatable.
    #[arg(
        long = "egress-resolve",
        env = "OUTPOST_EGRESS_RESOLVE",
        value_name = "NAME=IP",
        value_delimiter = ','
    )]
    pub egress_resolve: Vec<String>,
}

/// `json` or `text` logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// Everything a binary parsed from its command line and environment.
#[derive(Debug, Clone, Default)]
pub struct SettingsArgs {
    pub backend: BackendArgs,
    pub agents: AgentArgs,
    pub serve: ServeArgs,
    pub worker: WorkerArgs,
    /// Only `outpost-worker` (AWS builds) takes these flags; elsewhere they stay empty.
    pub remote: RemoteArgs,
}

/// The settings file: the same settings, by the flags' names in snake case.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    pub backend: Option<String>,
    pub data: Option<PathBuf>,
    pub max_receive_count: Option<u32>,
    pub log_format: Option<LogFormat>,
    pub agents: Option<PathBuf>,
    pub allow_shell: Option<bool>,
    pub listen: Option<String>,
    pub allow_local_repos: Option<bool>,
    pub github_api_url: Option<String>,
    pub slots: Option<usize>,
    pub lease_secs: Option<u64>,
    pub max_attempts: Option<u32>,
    pub kill_grace_secs: Option<u64>,
    pub drain_secs: Option<u64>,
    pub work_dir: Option<PathBuf>,
    pub sandbox: Option<SandboxMode>,
    pub allow_unsandboxed: Option<bool>,
    pub agent_uids: Option<String>,
    pub sandbox_ro: Option<Vec<PathBuf>>,
    pub sandbox_rw: Option<Vec<PathBuf>>,
    pub egress_ca: Option<PathBuf>,
    pub egress_resolve: Option<Vec<String>>,
    /// The remote executors (`[remote]`).
    pub remote: Option<RemoteFile>,
}

impl SettingsFile {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::BadFile {
            path: path.display().to_string(),
            message: e.message().to_owned(),
        })
    }
}

/// Defaults that depend on where the process runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context {
    /// Inside AWS Lambda (`AWS_LAMBDA_RUNTIME_API` set): the backend defaults to `aws`.
    pub in_lambda: bool,
}

/// The resolved, checked settings of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub backend: BackendKind,
    pub data_dir: PathBuf,
    pub max_receive_count: u32,
    pub log_format: LogFormat,
    /// The operator agents file to apply, if any (explicit, or `{data}/agents.toml` found).
    pub agents_file: Option<PathBuf>,
    pub allow_shell: bool,
    pub listen: String,
    pub allow_local_repos: bool,
    /// Without a trailing `/`; `None` keeps promote's default (`https://api.github.com`).
    pub github_api_url: Option<String>,
    /// Concurrent runs; 0 only where the binary allows it (see [`Settings::require_slots`]).
    pub slots: usize,
    pub lease: Duration,
    pub max_attempts: u32,
    pub kill_grace: Duration,
    pub drain: Duration,
    /// Explicit workspace folder; `None` leaves the choice to the worker.
    pub work_dir: Option<PathBuf>,
    /// Sandbox of entries that name none (`None`: the strongest the machine supports).
    pub sandbox: Option<SandboxMode>,
    /// `sandbox = "none"` allowed on the AWS backend.
    pub allow_unsandboxed: bool,
    /// First and last uid of a root worker's agents.
    pub agent_uids: (u32, u32),
    pub sandbox_ro: Vec<PathBuf>,
    pub sandbox_rw: Vec<PathBuf>,
    /// Further CAs of the egress proxy (a PEM file), read by the worker at start.
    pub egress_ca: Option<PathBuf>,
    /// Fixed addresses of names for the egress proxy.
    pub egress_resolve: Vec<(String, std::net::IpAddr)>,
    /// The remote executors an AWS worker starts runs on.
    pub remote: RemoteSettings,
}

/// Reads `NAME=IP` (a host name, an IPv4 or IPv6 address).
pub fn parse_resolve(s: &str) -> Result<(String, std::net::IpAddr), String> {
    let (name, ip) = s.split_once('=').ok_or_else(|| format!("{s:?} must be NAME=IP"))?;
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() || name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{s:?}: NAME must be a host name"));
    }
    let ip = ip
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("{s:?}: {ip:?} is not an IP address"))?;
    Ok((name, ip))
}

/// The uids of a root worker's agents by default: above every distribution's system and
/// login users and the usual subordinate ranges of `/etc/subuid` (100000..165535).
pub const DEFAULT_AGENT_UIDS: (u32, u32) = (200_000, 200_255);

/// Reads `FIRST-LAST` (1000 <= FIRST <= LAST).
pub fn parse_uid_range(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} must be FIRST-LAST with 1000 <= FIRST <= LAST < 4294967294");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let first: u32 = a.trim().parse().map_err(|_| bad())?;
    let last: u32 = b.trim().parse().map_err(|_| bad())?;
    if first < 1000 || last < first || last >= u32::MAX - 1 {
        return Err(bad());
    }
    Ok((first, last))
}

/// Twice the available cores (at least 2).
pub fn default_slots() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get) * 2
}

impl Settings {
    /// Merges flags/variables (`args`) over the settings file (when `args` names one) over the
    /// defaults, and checks every value.
    pub fn resolve(args: &SettingsArgs, context: Context) -> Result<Self, ConfigError> {
        let file = match &args.backend.config {
            Some(path) => SettingsFile::read(path)?,
            None => SettingsFile::default(),
        };
        Self::merge(args, &file, context)
    }

    /// [`Settings::resolve`] with the file already read.
    pub fn merge(args: &SettingsArgs, file: &SettingsFile, context: Context) -> Result<Self, ConfigError> {
        let (b, a, s, w) = (&args.backend, &args.agents, &args.serve, &args.worker);
        let backend = match (b.backend, &file.backend) {
            (Some(kind), _) => kind,
            (None, Some(name)) => name
                .parse()
                .map_err(|e| invalid("backend", format!("in the settings file: {e}")))?,
            (None, None) if context.in_lambda => BackendKind::Aws,
            (None, None) => BackendKind::Embedded,
        };
        let embedded = backend == BackendKind::Embedded;
        let data_dir = b
            .data
            .clone()
            .or_else(|| file.data.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("--data", "must not be empty"));
        }
        let max_receive_count = b.max_receive_count.or(file.max_receive_count).unwrap_or(5);
        if max_receive_count == 0 {
            return Err(invalid("--max-receive-count", "must be at least 1"));
        }
        let log_format =
            b.log_format
                .or(file.log_format)
                .unwrap_or(if embedded { LogFormat::Text } else { LogFormat::Json });
        let agents_file = a.agents.clone().or_else(|| file.agents.clone()).or_else(|| {
            let default = data_dir.join("agents.toml");
            default.is_file().then_some(default)
        });
        let allow_shell = a.allow_shell.or(file.allow_shell).unwrap_or(embedded);
        let listen = s
            .listen
            .clone()
            .or_else(|| file.listen.clone())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        if listen.trim().is_empty() {
            return Err(invalid("--listen", "must be an address such as 127.0.0.1:7331"));
        }
        let allow_local_repos = s.allow_local_repos.or(file.allow_local_repos).unwrap_or(embedded);
        let github_api_url = s
            .github_api_url
            .clone()
            .or_else(|| file.github_api_url.clone())
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty());
        if let Some(url) = github_api_url.as_deref() {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(invalid(
                    "--github-api-url",
                    format!("must be an http(s) URL, not {url:?}"),
                ));
            }
        }
        let slots = w.slots.or(file.slots).unwrap_or_else(default_slots);
        let lease_secs = w.lease_secs.or(file.lease_secs).unwrap_or(30);
        if !(MIN_LEASE_SECS..=MAX_LEASE_SECS).contains(&lease_secs) {
            return Err(invalid(
                "--lease-secs",
                format!(
                    "must be {MIN_LEASE_SECS} to {MAX_LEASE_SECS} (heartbeats run every third of it), not {lease_secs}"
                ),
            ));
        }
        let max_attempts = w.max_attempts.or(file.max_attempts).unwrap_or(3);
        if max_attempts == 0 {
            return Err(invalid("--max-attempts", "must be at least 1"));
        }
        let kill_grace_secs = w.kill_grace_secs.or(file.kill_grace_secs).unwrap_or(5);
        if kill_grace_secs > MAX_KILL_GRACE_SECS {
            return Err(invalid(
                "--kill-grace-secs",
                format!("must be at most {MAX_KILL_GRACE_SECS}, not {kill_grace_secs}"),
            ));
        }
        let drain_secs = w.drain_secs.or(file.drain_secs).unwrap_or(25);
        if drain_secs > MAX_DRAIN_SECS {
            return Err(invalid(
                "--drain-secs",
                format!("must be at most {MAX_DRAIN_SECS}, not {drain_secs}"),
            ));
        }
        let work_dir = w.work_dir.clone().or_else(|| file.work_dir.clone());
        let sandbox = w.sandbox.or(file.sandbox);
        let allow_unsandboxed = w.allow_unsandboxed.or(file.allow_unsandboxed).unwrap_or(false);
        let agent_uids = match w.agent_uids.as_ref().or(file.agent_uids.as_ref()) {
            None => DEFAULT_AGENT_UIDS,
            Some(range) => parse_uid_range(range).map_err(|e| invalid("--agent-uids", e))?,
        };
        let pick = |flag: &Vec<PathBuf>, file: &Option<Vec<PathBuf>>| {
            if flag.is_empty() {
                file.clone().unwrap_or_default()
            } else {
                flag.clone()
            }
        };
        let sandbox_ro = pick(&w.sandbox_ro, &file.sandbox_ro);
        let sandbox_rw = pick(&w.sandbox_rw, &file.sandbox_rw);
        for p in sandbox_ro.iter().chain(&sandbox_rw) {
            if !p.is_absolute() {
                return Err(invalid(
                    "--sandbox-ro/--sandbox-rw",
                    format!("{} is not an absolute path", p.display()),
                ));
            }
        }
        let egress_ca = w.egress_ca.clone().or_else(|| file.egress_ca.clone());
        let resolve = if w.egress_resolve.is_empty() {
            file.egress_resolve.clone().unwrap_or_default()
        } else {
            w.egress_resolve.clone()
        };
        let egress_resolve = resolve
            .iter()
            .map(|r| parse_resolve(r).map_err(|e| invalid("--egress-resolve", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let remote = RemoteSettings::merge(&args.remote, file.remote.as_ref())?;
        Ok(Self {
            backend,
            data_dir,
            max_receive_count,
            log_format,
            agents_file,
            allow_shell,
            listen,
            allow_local_repos,
            github_api_url,
            slots,
            lease: Duration::from_secs(lease_secs),
            max_attempts,
            kill_grace: Duration::from_secs(kill_grace_secs),
            drain: Duration::from_secs(drain_secs),
            work_dir,
            sandbox,
            allow_unsandboxed,
            agent_uids,
            sandbox_ro,
            sandbox_rw,
            egress_ca,
            egress_resolve,
            remote,
        })
    }

    /// The slot count, for a process that must run a worker.
    pub fn require_slots(&self) -> Result<usize, ConfigError> {
        if self.slots == 0 {
            Err(invalid("--slots", "must be at least 1 for a worker process"))
        } else {
            Ok(self.slots)
        }
    }

    /// Whether logs are JSON lines.
    pub fn json_logs(&self) -> bool {
        self.log_format == LogFormat::Json
    }

    /// The built-in agents (with `shell` when allowed) plus the operator file, if any.
    pub fn agents(&self) -> Result<AgentRegistry, ConfigError> {
        let mut agents = AgentRegistry::builtin(self.allow_shell);
        if let Some(path) = &self.agents_file {
            agents.apply_file(path)?;
        }
        Ok(agents)
    }

    /// Opens the selected backend: the embedded one in the data directory (created if needed),
    /// or the AWS one from the environment.
    pub async fn open_backend(&self) -> Result<OpenedBackend, OpenBackendError> {
        if self.backend == BackendKind::Embedded {
            std::fs::create_dir_all(&self.data_dir).map_err(|e| OpenBackendError::DataDir {
                path: self.data_dir.display().to_string(),
                source: e,
            })?;
        }
        let opts = EmbeddedOptions {
            max_receive_count: self.max_receive_count,
            ..EmbeddedOptions::default()
        };
        deployment::open_backend(self.backend, &self.data_dir, opts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: SettingsArgs, file: SettingsFile) -> Result<Settings, ConfigError> {
        Settings::merge(&args, &file, Context::default())
    }

    #[test]
    fn defaults_are_the_embedded_deployment() {
        let s = resolve(SettingsArgs::default(), SettingsFile::default()).expect("defaults");
        assert_eq!(s.backend, BackendKind::Embedded);
        assert_eq!(s.data_dir, PathBuf::from(".outpost"));
        assert!(s.allow_shell && s.allow_local_repos);
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.listen, DEFAULT_LISTEN);
        assert_eq!(s.slots, default_slots());
        assert_eq!(
            (s.lease, s.max_attempts, s.kill_grace, s.drain, s.max_receive_count),
            (
                Duration::from_secs(30),
                3,
                Duration::from_secs(5),
                Duration::from_secs(25),
                5
            )
        );
        assert_eq!(s.github_api_url, None);
        assert_eq!(s.work_dir, None);
    }

    #[test]
    fn sandbox_settings_come_from_flags_or_the_file_and_are_checked() {
        let d = resolve(SettingsArgs::default(), SettingsFile::default()).expect("defaults");
        assert_eq!(
            (d.sandbox, d.allow_unsandboxed, d.agent_uids),
            (None, false, DEFAULT_AGENT_UIDS)
        );
        let file: SettingsFile =
            toml::from_str("sandbox = \"standard\"\nagent_uids = \"300000-300009\"\nsandbox_ro = [\"/opt/clis\"]\n")
                .expect("file");
        let s = resolve(SettingsArgs::default(), file.clone()).expect("file values");
        assert_eq!(s.sandbox, Some(SandboxMode::Standard));
        assert_eq!(s.agent_uids, (300_000, 300_009));
        assert_eq!(s.sandbox_ro, [PathBuf::from("/opt/clis")]);
        let mut args = SettingsArgs::default();
        args.worker.sandbox = Some(SandboxMode::Strict);
        args.worker.allow_unsandboxed = Some(true);
        let s = resolve(args, file).expect("flags win");
        assert_eq!((s.sandbox, s.allow_unsandboxed), (Some(SandboxMode::Strict), true));
        for bad in ["10-20", "300000", "5000-4000", "a-b"] {
            let mut args = SettingsArgs::default();
            args.worker.agent_uids = Some(bad.to_owned());
            let err = resolve(args, SettingsFile::default()).expect_err(bad).to_string();
            assert!(
                err.contains("--agent-uids") && err.contains("FIRST-LAST"),
                "{bad}: {err}"
            );
        }
        let mut args = SettingsArgs::default();
        args.worker.sandbox_rw = vec![PathBuf::from("relative/cache")];
        let err = resolve(args, SettingsFile::default())
            .expect_err("relative")
            .to_string();
        assert!(err.contains("absolute"), "{err}");
    }

    #[test]
    fn egress_settings_are_read_and_checked() {
        let file: SettingsFile = toml::from_str(
            "egress_ca = \"/etc/ca.pem\"\negress_resolve = [\"Vendor.Test.=198.18.0.7\", \"v6.test=[::2]\"]\n",
        )
        .expect("file");
        let s = resolve(SettingsArgs::default(), file).expect("file values");
        assert_eq!(s.egress_ca, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            s.egress_resolve,
            [
                ("vendor.test".to_owned(), "198.18.0.7".parse().expect("ip")),
                ("v6.test".to_owned(), "::2".parse().expect("ip"))
            ]
        );
        for bad in ["vendor.test", "1.2.3.4=5.6.7.8", "vendor.test=nope"] {
            let mut args = SettingsArgs::default();
            args.worker.egress_resolve = vec![bad.to_owned()];
            let err = resolve(args, SettingsFile::default()).expect_err(bad).to_string();
            assert!(err.contains("--egress-resolve"), "{bad}: {err}");
        }
    }

    #[test]
    fn aws_turns_off_shell_and_local_repos_and_logs_json() {
        let args = SettingsArgs {
            backend: BackendArgs {
                backend: Some(BackendKind::Aws),
                ..Default::default()
            },
            ..Default::default()
        };
        let s = resolve(args, SettingsFile::default()).expect("aws");
        assert!(!s.allow_shell && !s.allow_local_repos);
        assert_eq!(s.log_format, LogFormat::Json);
        let lambda = Settings::merge(
            &SettingsArgs::default(),
            &SettingsFile::default(),
            Context { in_lambda: true },
        )
        .expect("lambda");
        assert_eq!(lambda.backend, BackendKind::Aws);
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let file: SettingsFile = toml::from_str(
            r#"
            backend = "embedded"
            lease_secs = 60
            slots = 7
            allow_shell = false
            github_api_url = "https://ghe.example.com/api/v3/"
            "#,
        )
        .expect("toml");
        let args = SettingsArgs {
            worker: WorkerArgs {
                lease_secs: Some(9),
                ..Default::default()
            },
            ..Default::default()
        };
        let s = resolve(args, file).expect("merged");
        assert_eq!(s.lease, Duration::from_secs(9), "the flag wins");
        assert_eq!(s.slots, 7, "the file beats the default");
        assert!(!s.allow_shell);
        assert_eq!(s.github_api_url.as_deref(), Some("https://ghe.example.com/api/v3"));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let mut args = SettingsArgs::default();
        args.worker.lease_secs = Some(1);
        let err = resolve(args, SettingsFile::default()).expect_err("lease too short");
        assert!(err.to_string().starts_with("--lease-secs must be 3 to 43200"), "{err}");

        let mut args = SettingsArgs::default();
        args.worker.max_attempts = Some(0);
        let err = resolve(args, SettingsFile::default()).expect_err("no attempts");
        assert_eq!(err.to_string(), "--max-attempts must be at least 1");

        let file = SettingsFile {
            backend: Some("sqlite".into()),
            ..Default::default()
        };
        let err = resolve(SettingsArgs::default(), file).expect_err("unknown backend");
        assert!(err.to_string().contains("`embedded` or `aws`"), "{err}");

        let err = toml::from_str::<SettingsFile>("lease = 3").expect_err("unknown key");
        assert!(err.to_string().contains("unknown field"), "{err}");

        let s = resolve(SettingsArgs::default(), SettingsFile::default()).expect("defaults");
        let zero = Settings { slots: 0, ..s };
        assert!(zero.require_slots().is_err());
    }

    #[test]
    fn the_settings_file_is_read_and_its_errors_are_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("outpost.toml");
        std::fs::write(&path, "slots = 3\ndrain_secs = 40\n").expect("write");
        let args = SettingsArgs {
            backend: BackendArgs {
                config: Some(path.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let s = Settings::resolve(&args, Context::default()).expect("file");
        assert_eq!((s.slots, s.drain), (3, Duration::from_secs(40)));

        std::fs::write(&path, "slots = \"many\"\n").expect("write");
        let err = Settings::resolve(&args, Context::default()).expect_err("bad type");
        assert!(err.to_string().starts_with("the settings file"), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
    }

    #[test]
    fn the_data_dirs_agents_file_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("agents.toml"), "[agents.mine]\ncommand = [\"true\"]\n").expect("write");
        let mut args = SettingsArgs::default();
        args.backend.data = Some(dir.path().to_path_buf());
        let s = resolve(args, SettingsFile::default()).expect("settings");
        assert_eq!(s.agents_file, Some(dir.path().join("agents.toml")));
    }
}
