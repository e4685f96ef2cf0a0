//! Agents are data: a registry of built-in agent CLIs plus an operator TOML file that adds or
//! overrides entries.
//!
//! A command is an argv template. `{prompt}` is replaced by the task text as one argument (never
//! through a shell), `{run_id}` by the run's id. Nothing else is interpolated.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub mod builtin;
pub mod egress;
pub mod sandbox;

pub use egress::{HostRule, KeyInjection};
pub use sandbox::{NetworkPolicy, RunLimits, SandboxMode};

/// How the worker reads an agent's own account of its run (final answer, error, usage, session
/// id) from its output after it exits; see `outpost_worker::agent_output`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OutputReader {
    /// Nothing is read: the exit code alone decides.
    #[default]
    None,
    /// Claude Code `--output-format stream-json`: the final `result` event.
    Claude,
    /// Codex `exec --json` JSONL: `thread.started`, `turn.completed`, errors, last agent message.
    Codex,
    /// Gemini CLI `--output-format stream-json`/`json`.
    Gemini,
    /// Aider's text output (`Tokens: … Cost: …` lines, litellm errors).
    Aider,
    /// Grok CLI's text output (no usage reported).
    Grok,
}

/// One agent CLI Outpost can run.
///
/// Semantics of the command line: `{prompt}` is the task text inside one argument, never
/// through a shell (`--prompt={prompt}` keeps a task that starts with `-` from being read as an
/// option); `{run_id}` is the run's id anywhere in an argument;
/// `{base_url_args}` (a whole argument) expands to [`base_url_args`](Self::base_url_args) when a
/// [`base_url`](Self::base_url) is set and to nothing otherwise; `{without_repo_args}` (a whole
/// argument) to [`without_repo_args`](Self::without_repo_args) when the run has no repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentSpec {
    pub name: String,
    /// argv template; `{prompt}`, `{run_id}` and `{base_url_args}` are substituted.
    pub command: Vec<String>,
    /// Env var the CLI reads its vendor API key from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
    /// Other names the key may be stored under (a tenant secret or the worker's environment),
    /// tried in order when `key_env` itself is not set; the value is given to the agent as
    /// `key_env`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_aliases: Vec<String>,
    /// Further env vars passed from the worker's environment to the agent, by name.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Fixed env vars of the agent (non-interactive, telemetry and update checks off, state in
    /// HOME); `{home}` in a value is the run's HOME.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Files written into the agent's private HOME before it starts (path relative to HOME →
    /// content), e.g. settings that select an auth method. `{home}` in content is the run's HOME.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub home_files: BTreeMap<String, String>,
    /// Env var the CLI reads its vendor API base URL from (set to `base_url` when one is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url_env: Option<String>,
    /// Arguments that point the CLI at `base_url` when it takes the URL on its command line
    /// (`{base_url}` substituted); placed where the command has `{base_url_args}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_url_args: Vec<String>,
    /// The vendor API base URL to point the agent at (an operator's gateway, a test stand-in,
    /// the key-injecting proxy); the CLI's own default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Arguments for a run without a repository (an empty workspace), placed where the command
    /// has `{without_repo_args}`: e.g. aider's `--no-git`, so it does not `git init` the folder,
    /// while on a clone it uses git for its repository map.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub without_repo_args: Vec<String>,
    /// How the agent's final answer, error, usage and session id are read from its output.
    #[serde(default)]
    pub output: OutputReader,
    /// Timeout used when a dispatch gives none.
    #[serde(default = "default_timeout_secs")]
    pub default_timeout_secs: u32,
    /// Seconds without any output after which the agent is stopped (`timed_out`, reason
    /// `idle`), when a dispatch gives none; `None` never stops an agent for silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u32>,
    /// Workspace paths that are the CLI's own files, never the agent's change: kept out of
    /// `diff.patch`, the changed files and `files/` artifacts. Anchored at the workspace root;
    /// `*` matches within one path component; a trailing `/` names a folder and all below it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    /// The CLI release(s) this entry was verified against, e.g. `@openai/codex 0.171.x`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_with: Option<String>,
    /// vCPU units for a per-run task (ECS; 1024 = 1 vCPU); informational for the process executor.
    #[serde(default = "default_cpu")]
    pub cpu: u32,
    /// Memory in MiB: the run's memory limit (the process executor's cgroup, an ECS task's
    /// size); exceeding it fails the run with `memory_limit`.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// How the runs are confined; `None` takes the worker's default (the strongest mode the
    /// machine supports). `none` must be named and is refused on AWS unless forced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxMode>,
    /// What the agent may reach on the network (`allow` for the vendor CLIs: their vendor
    /// through the key-holding proxy and nothing else; `none` for `shell`).
    #[serde(default = "default_network")]
    pub network: NetworkPolicy,
    /// With `network = "allow"`, the hosts the run's proxy lets the agent reach besides its
    /// vendor (see [`HostRule`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub allow_hosts: Vec<HostRule>,
    /// Set when the CLI takes a base URL: the worker's proxy holds the vendor key and the agent
    /// only ever sees a per-run placeholder (see [`KeyInjection`]). Without it the key is given
    /// in the agent's environment (scrubbed from its output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_injection: Option<KeyInjection>,
    /// Processes, CPU, disk and output caps of one run.
    #[serde(default)]
    pub limits: RunLimits,
    /// Where its runs' agents run: a sandboxed process of the worker, a per-run ECS task or an
    /// SSM host (see [`crate::domain::remote`]).
    #[serde(default)]
    pub executor: crate::domain::ExecutorKind,
    /// Disabled agents are listed nowhere and refused at dispatch.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    #[serde(default)]
    pub description: String,
}

fn default_timeout_secs() -> u32 {
    1800
}
fn default_cpu() -> u32 {
    1024
}
fn default_memory_mb() -> u32 {
    2048
}
fn default_network() -> NetworkPolicy {
    NetworkPolicy::Open
}
fn default_enabled() -> bool {
    true
}

/// The placeholder argument that expands to `base_url_args`.
pub const BASE_URL_ARGS: &str = "{base_url_args}";
/// The placeholder argument that expands to `without_repo_args` for a run without a repository.
pub const WITHOUT_REPO_ARGS: &str = "{without_repo_args}";

impl AgentSpec {
    /// The timeout of `run` on this entry, in seconds: the run's own, or (when it asked for none,
    /// 0) this entry's default.
    pub fn timeout_secs_for(&self, run: &crate::domain::Run) -> u32 {
        if run.timeout_secs == 0 {
            self.default_timeout_secs
        } else {
            run.timeout_secs
        }
    }

    /// A new agent with `command` and every other field at its default.
    pub fn new(name: &str, command: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            key_env: None,
            key_aliases: Vec::new(),
            pass_env: Vec::new(),
            env: BTreeMap::new(),
            home_files: BTreeMap::new(),
            base_url_env: None,
            base_url_args: Vec::new(),
            base_url: None,
            without_repo_args: Vec::new(),
            output: OutputReader::None,
            default_timeout_secs: default_timeout_secs(),
            idle_timeout_secs: None,
            ignore: Vec::new(),
            verified_with: None,
            cpu: default_cpu(),
            memory_mb: default_memory_mb(),
            sandbox: None,
            network: default_network(),
            allow_hosts: Vec::new(),
            key_injection: None,
            limits: RunLimits::default(),
            executor: crate::domain::ExecutorKind::Process,
            enabled: true,
            description: String::new(),
        }
    }

    /// The concrete argv for one run without a repository.
    pub fn argv(&self, prompt: &str, run_id: &str) -> Vec<String> {
        self.argv_for(prompt, run_id, false)
    }

    /// The concrete argv for one run; `with_repo` when its workspace is a clone.
    pub fn argv_for(&self, prompt: &str, run_id: &str, with_repo: bool) -> Vec<String> {
        let mut out = Vec::with_capacity(self.command.len() + self.base_url_args.len());
        for part in &self.command {
            match part.as_str() {
                "{prompt}" => out.push(prompt.to_owned()),
                "{run_id}" => out.push(run_id.to_owned()),
                BASE_URL_ARGS => {
                    if let Some(url) = &self.base_url {
                        out.extend(self.base_url_args.iter().map(|a| a.replace("{base_url}", url)));
                    }
                }
                WITHOUT_REPO_ARGS => {
                    if !with_repo {
                        out.extend(self.without_repo_args.iter().cloned());
                    }
                }
                // `{run_id}` first: a prompt that contains the text `{run_id}` stays as written.
                other => out.push(other.replace("{run_id}", run_id).replace("{prompt}", prompt)),
            }
        }
        out
    }

    /// Names the agent's key is looked up under, in order: `key_env`, then `key_aliases`.
    pub fn key_names(&self) -> impl Iterator<Item = &str> {
        self.key_env.iter().chain(self.key_aliases.iter()).map(String::as_str)
    }

    /// The fixed env vars with `{home}` replaced, plus `base_url_env` when a base URL is set.
    pub fn fixed_env(&self, home: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.replace("{home}", home)))
            .collect();
        if let (Some(var), Some(url)) = (&self.base_url_env, &self.base_url) {
            out.push((var.clone(), url.clone()));
        }
        out
    }

    /// Where the proxy sends this agent's vendor requests when it holds the key: the entry's
    /// `base_url` (a gateway, a test stand-in) or else the injection's `upstream`.
    pub fn injection_upstream(&self) -> Option<&str> {
        let k = self.key_injection.as_ref()?;
        Some(self.base_url.as_deref().unwrap_or(&k.upstream))
    }

    /// Whether `rel` (a `/`-separated path relative to the workspace root) is one of the CLI's
    /// own files per [`ignore`](Self::ignore).
    pub fn ignores(&self, rel: &str) -> bool {
        self.ignore.iter().any(|p| ignore_matches(p, rel))
    }
}

/// `pattern` against `rel`: anchored at the workspace root, `*` within one component; a pattern
/// that names a folder (with or without a trailing `/`) also matches everything below it.
pub fn ignore_matches(pattern: &str, rel: &str) -> bool {
    let pat: Vec<&str> = pattern.trim_end_matches('/').split('/').collect();
    let path: Vec<&str> = rel.split('/').collect();
    path.len() >= pat.len() && pat.iter().zip(&path).all(|(p, c)| glob_component(p, c))
}

/// `*` matches any run of characters within one component.
fn glob_component(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Why the operator's agents file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AgentsFileError {
    #[error("cannot read agents file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("agents file {path} is not valid TOML for agents: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("agent {name:?} in {path}: {problem}")]
    Invalid {
        path: String,
        name: String,
        problem: String,
    },
}

#[derive(Deserialize)]
struct AgentsFile {
    #[serde(default)]
    agents: BTreeMap<String, AgentEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentEntry {
    command: Option<Vec<String>>,
    key_env: Option<String>,
    key_aliases: Option<Vec<String>>,
    pass_env: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    home_files: Option<BTreeMap<String, String>>,
    base_url_env: Option<String>,
    base_url_args: Option<Vec<String>>,
    base_url: Option<String>,
    without_repo_args: Option<Vec<String>>,
    output: Option<OutputReader>,
    default_timeout_secs: Option<u32>,
    idle_timeout_secs: Option<u32>,
    ignore: Option<Vec<String>>,
    cpu: Option<u32>,
    memory_mb: Option<u32>,
    sandbox: Option<SandboxMode>,
    network: Option<NetworkPolicy>,
    allow_hosts: Option<Vec<HostRule>>,
    key_injection: Option<KeyInjectionEntry>,
    max_processes: Option<u32>,
    cpu_secs: Option<u32>,
    disk_mb: Option<u32>,
    output_mb: Option<u32>,
    executor: Option<crate::domain::ExecutorKind>,
    enabled: Option<bool>,
    description: Option<String>,
}

/// `key_injection` in the agents file: a table, or `false` to turn a built-in's off.
#[derive(Deserialize)]
#[serde(untagged)]
enum KeyInjectionEntry {
    Off(bool),
    On(KeyInjection),
}

/// The agents this deployment knows, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRegistry {
    agents: BTreeMap<String, AgentSpec>,
}

impl AgentRegistry {
    /// The built-in agents (see [`builtin`]: each entry verified against its CLI's release) and
    /// `shell` (runs the task as a `sh -c` script), enabled only when `allow_shell` is set, as in
    /// embedded mode.
    pub fn builtin(allow_shell: bool) -> Self {
        let mut agents = BTreeMap::new();
        let mut add = |a: AgentSpec| {
            agents.insert(a.name.clone(), a);
        };
        for spec in builtin::all() {
            add(spec);
        }
        let mut shell = AgentSpec::new("shell", &["sh", "-c", "{prompt}"]);
        shell.description = "Runs the task text as a sh script (embedded mode)".into();
        shell.enabled = allow_shell;
        // A script needs no network; an operator may open it per entry.
        shell.network = NetworkPolicy::None;
        add(shell);
        Self { agents }
    }

    /// Applies an operator TOML file: `[agents.NAME]` tables add agents or override fields of a
    /// built-in one.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), AgentsFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentsFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.apply_toml(&text, &path.display().to_string())
    }

    /// Like [`apply_file`](Self::apply_file), from text; `origin` names it in errors.
    pub fn apply_toml(&mut self, text: &str, origin: &str) -> Result<(), AgentsFileError> {
        let file: AgentsFile = toml::from_str(text).map_err(|source| AgentsFileError::Parse {
            path: origin.to_owned(),
            source,
        })?;
        for (name, entry) in file.agents {
            let invalid = |problem: &str| AgentsFileError::Invalid {
                path: origin.to_owned(),
                name: name.clone(),
                problem: problem.to_owned(),
            };
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid("agent names are 1..=64 chars of letters, digits, '-' and '_'"));
            }
            let mut spec = match (self.agents.get(&name), entry.command.clone()) {
                (Some(existing), _) => existing.clone(),
                (None, Some(command)) => AgentSpec::new(&name, &[]).with_command(command),
                (None, None) => return Err(invalid("a new agent needs a command")),
            };
            if let Some(c) = entry.command {
                spec.command = c;
            }
            if spec.command.is_empty() || spec.command[0].is_empty() {
                return Err(invalid("command must name a program"));
            }
            if let Some(k) = entry.key_env {
                spec.key_env = Some(k);
            }
            if let Some(k) = entry.key_aliases {
                spec.key_aliases = k;
            }
            if let Some(p) = entry.pass_env {
                spec.pass_env = p;
            }
            if let Some(e) = entry.env {
                // Merged over the built-in's: an operator adds or changes variables.
                spec.env.extend(e);
            }
            if let Some(h) = entry.home_files {
                spec.home_files.extend(h);
            }
            if let Some(v) = entry.base_url_env {
                spec.base_url_env = Some(v);
            }
            if let Some(a) = entry.base_url_args {
                spec.base_url_args = a;
            }
            if let Some(u) = entry.base_url {
                check_base_url(&u).map_err(|p| invalid(&p))?;
                spec.base_url = Some(u);
            }
            if let Some(a) = entry.without_repo_args {
                spec.without_repo_args = a;
            }
            if let Some(o) = entry.output {
                spec.output = o;
            }
            if let Some(t) = entry.default_timeout_secs {
                spec.default_timeout_secs = t;
            }
            if let Some(t) = entry.idle_timeout_secs {
                // 0 turns the built-in's idle timeout off.
                spec.idle_timeout_secs = (t > 0).then_some(t);
            }
            if let Some(i) = entry.ignore {
                spec.ignore = i;
            }
            for var in spec.env.keys() {
                if !env_name_valid(var) {
                    return Err(invalid(&format!("env var name {var:?} is not valid")));
                }
            }
            for rel in spec.home_files.keys() {
                if !home_path_valid(rel) {
                    return Err(invalid(&format!(
                        "home_files path {rel:?} must be relative, without '..' or empty parts"
                    )));
                }
            }
            if let Some(c) = entry.cpu {
                spec.cpu = c;
            }
            if let Some(m) = entry.memory_mb {
                spec.memory_mb = m;
            }
            if let Some(m) = entry.sandbox {
                spec.sandbox = Some(m);
            }
            if let Some(n) = entry.network {
                spec.network = n;
            }
            if let Some(h) = entry.allow_hosts {
                spec.allow_hosts = h;
            }
            match entry.key_injection {
                None => {}
                Some(KeyInjectionEntry::Off(false)) => spec.key_injection = None,
                Some(KeyInjectionEntry::Off(true)) => {
                    return Err(invalid("key_injection = true needs a table (upstream, header, prefix)"))
                }
                Some(KeyInjectionEntry::On(k)) => {
                    let k = KeyInjection::new(&k.upstream, &k.header, &k.prefix);
                    k.check().map_err(|p| invalid(&p))?;
                    spec.key_injection = Some(k);
                }
            }
            if spec.key_injection.is_some() && spec.key_env.is_none() {
                return Err(invalid(
                    "key_injection needs key_env (the variable the placeholder key goes in)",
                ));
            }
            let limits = &mut spec.limits;
            for (value, slot, what) in [
                (entry.max_processes, &mut limits.max_processes, "max_processes"),
                (entry.cpu_secs, &mut limits.cpu_secs, "cpu_secs"),
                (entry.disk_mb, &mut limits.disk_mb, "disk_mb"),
                (entry.output_mb, &mut limits.output_mb, "output_mb"),
            ] {
                if let Some(v) = value {
                    if v == 0 {
                        return Err(invalid(&format!("{what} must be at least 1")));
                    }
                    *slot = v;
                }
            }
            if let Some(x) = entry.executor {
                spec.executor = x;
            }
            if spec.executor == crate::domain::ExecutorKind::Ssm && spec.network == NetworkPolicy::Open {
                return Err(invalid(
                    "executor = \"ssm\" needs network = \"allow\" or \"none\" (the default is \"open\"): on an SSM \
                     host an agent with open network reaches the host's metadata endpoint, whose instance credentials \
                     read every tenant's keys",
                ));
            }
            if spec.memory_mb < 16 {
                return Err(invalid("memory_mb must be at least 16"));
            }
            if let Some(e) = entry.enabled {
                spec.enabled = e;
            }
            if let Some(d) = entry.description {
                spec.description = d;
            }
            self.agents.insert(name, spec);
        }
        Ok(())
    }

    /// Adds or replaces one agent (tests and embedders).
    pub fn insert(&mut self, spec: AgentSpec) {
        self.agents.insert(spec.name.clone(), spec);
    }

    /// An enabled agent by name.
    pub fn get(&self, name: &str) -> Option<&AgentSpec> {
        self.agents.get(name).filter(|a| a.enabled)
    }

    /// Enabled agents, sorted by name.
    pub fn enabled(&self) -> impl Iterator<Item = &AgentSpec> {
        self.agents.values().filter(|a| a.enabled)
    }

    /// Names of enabled agents, for error messages.
    pub fn enabled_names(&self) -> Vec<&str> {
        self.enabled().map(|a| a.name.as_str()).collect()
    }
}

impl AgentSpec {
    fn with_command(mut self, command: Vec<String>) -> Self {
        self.command = command;
        self
    }
}

/// An http(s) URL with a host and no credentials.
fn check_base_url(u: &str) -> Result<(), String> {
    let parsed = url::Url::parse(u).map_err(|e| format!("base_url {u:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("base_url {u:?} must be an http:// or https:// URL with a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("base_url must not carry credentials".to_owned());
    }
    Ok(())
}

/// A name an environment can hold (`std::env` panics on `=` or NUL).
pub fn env_name_valid(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0'])
}

/// A relative path below HOME: no leading `/`, no `..`, no empty or `.` parts.
fn home_path_valid(rel: &str) -> bool {
    !rel.is_empty() && !rel.starts_with('/') && rel.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_name_their_executor() {
        let mut reg = AgentRegistry::builtin(false);
        assert!(reg
            .enabled()
            .all(|a| a.executor == crate::domain::ExecutorKind::Process));
        reg.apply_toml(
            "[agents.claude]\nexecutor = \"ecs\"\n[agents.hosted]\ncommand = [\"x\"]\nexecutor = \"ssm\"\nnetwork = \"none\"\n",
            "t.toml",
        )
        .expect("apply");
        assert_eq!(
            reg.get("claude").map(|a| a.executor),
            Some(crate::domain::ExecutorKind::Ecs)
        );
        assert_eq!(
            reg.get("hosted").map(|a| a.executor),
            Some(crate::domain::ExecutorKind::Ssm)
        );
        let err = reg
            .apply_toml("[agents.claude]\nexecutor = \"docker\"\n", "t.toml")
            .expect_err("unknown executor");
        assert!(err.to_string().contains("t.toml"), "{err}");
        // An SSM host's instance credentials are behind its metadata endpoint: open is refused.
        for open in ["", "network = \"open\"\n"] {
            let err = reg
                .apply_toml(
                    &format!("[agents.hosted2]\ncommand = [\"x\"]\nexecutor = \"ssm\"\n{open}"),
                    "t.toml",
                )
                .expect_err("ssm with open network");
            assert!(err.to_string().contains("executor = \"ssm\" needs network"), "{err}");
        }
        reg.apply_toml(
            "[agents.hosted3]\ncommand = [\"x\"]\nexecutor = \"ssm\"\nnetwork = \"allow\"\n",
            "t.toml",
        )
        .expect("ssm with allow");
    }

    #[test]
    fn entries_name_their_sandbox_network_and_limits() {
        let mut reg = AgentRegistry::builtin(true);
        assert_eq!(
            reg.get("shell").map(|a| a.network),
            Some(NetworkPolicy::None),
            "a script needs no network"
        );
        assert_eq!(
            reg.get("claude").map(|a| (a.sandbox, a.network)),
            Some((None, NetworkPolicy::Allow)),
            "the CLIs reach their vendor through the proxy and nothing else"
        );
        reg.apply_toml(
            "[agents.boxed]\ncommand = [\"x\"]\nsandbox = \"standard\"\nnetwork = \"none\"\nmax_processes = 32\ndisk_mb = 100\noutput_mb = 2\ncpu_secs = 60\nmemory_mb = 256\n",
            "t",
        )
        .expect("valid");
        let b = reg.get("boxed").expect("boxed");
        assert_eq!(
            (b.sandbox, b.network, b.memory_mb),
            (Some(SandboxMode::Standard), NetworkPolicy::None, 256)
        );
        assert_eq!(
            b.limits,
            RunLimits {
                max_processes: 32,
                cpu_secs: 60,
                disk_mb: 100,
                output_mb: 2
            }
        );
        for bad in [
            "sandbox = \"loose\"",
            "network = \"some\"",
            "max_processes = 0",
            "memory_mb = 1",
        ] {
            let text = format!("[agents.bad]\ncommand = [\"x\"]\n{bad}\n");
            assert!(AgentRegistry::builtin(true).apply_toml(&text, "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn entries_name_their_hosts_and_whether_the_proxy_holds_the_key() {
        let mut reg = AgentRegistry::builtin(false);
        reg.apply_toml(
            r#"
[agents.claude]
base_url = "https://127.0.0.1:8443"
allow_hosts = ["github.com", "*.githubusercontent.com:443"]

[agents.codex]
key_injection = false

[agents.mine]
command = ["my-agent"]
key_env = "MY_KEY"
network = "allow"
key_injection = { upstream = "https://api.mine.example/v1", header = "Authorization", prefix = "Bearer " }
"#,
            "t",
        )
        .expect("valid");
        let claude = reg.get("claude").expect("claude");
        assert_eq!(
            claude.injection_upstream(),
            Some("https://127.0.0.1:8443"),
            "base_url wins"
        );
        assert_eq!(
            claude.allow_hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["github.com", "*.githubusercontent.com:443"]
        );
        assert_eq!(reg.get("codex").and_then(|a| a.key_injection.as_ref()), None);
        let mine = reg.get("mine").expect("mine");
        assert_eq!(mine.injection_upstream(), Some("https://api.mine.example/v1"));
        assert_eq!(
            mine.key_injection
                .as_ref()
                .map(|k| (k.header.as_str(), k.prefix.as_str())),
            Some(("authorization", "Bearer "))
        );
        for (bad, why) in [
            ("allow_hosts = [\"10.0.0.1\"]", "IP addresses"),
            ("key_injection = true", "needs a table"),
            (
                "key_injection = { upstream = \"ftp://x.example\", header = \"x-api-key\" }",
                "http",
            ),
            (
                "key_injection = { upstream = \"https://x.example\", header = \"x api\" }",
                "header name",
            ),
        ] {
            let text = format!("[agents.bad]\ncommand = [\"x\"]\nkey_env = \"K\"\n{bad}\n");
            let err = AgentRegistry::builtin(true)
                .apply_toml(&text, "t")
                .expect_err(bad)
                .to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let err = AgentRegistry::builtin(true)
            .apply_toml(
                "[agents.bad]\ncommand = [\"x\"]\nkey_injection = { upstream = \"https://x.example\", header = \"x-api-key\" }\n",
                "t",
            )
            .expect_err("no key_env")
            .to_string();
        assert!(err.contains("key_env"), "{err}");
    }

    #[test]
    fn builtins_are_verified_entries_with_keys_and_base_urls() {
        let reg = AgentRegistry::builtin(false);
        for name in ["claude", "codex", "gemini", "aider", "grok"] {
            let a = reg.get(name).unwrap_or_else(|| panic!("{name}"));
            assert!(a.key_env.is_some(), "{name} names its key variable");
            assert!(
                a.base_url_env.is_some() || !a.base_url_args.is_empty(),
                "{name} can be pointed at a base URL"
            );
            assert!(
                a.verified_with.is_some(),
                "{name} records the release it was verified with"
            );
            assert_ne!(a.output, OutputReader::None, "{name} has an output reader");
            let k = a
                .key_injection
                .as_ref()
                .unwrap_or_else(|| panic!("{name} keeps its key in the proxy"));
            assert!(k.check().is_ok() && k.upstream.starts_with("https://"), "{name}: {k:?}");
            assert_eq!(a.network, NetworkPolicy::Allow, "{name}");
        }
        assert_eq!(
            reg.get("claude").and_then(|a| a.key_env.as_deref()),
            Some("ANTHROPIC_API_KEY")
        );
        let codex = reg.get("codex").expect("codex");
        assert_eq!(codex.key_env.as_deref(), Some("CODEX_API_KEY"));
        assert!(
            codex.key_names().any(|n| n == "OPENAI_API_KEY"),
            "OPENAI_API_KEY still works for codex"
        );
        let grok = reg.get("grok").expect("grok");
        assert_eq!(grok.key_env.as_deref(), Some("GROK_API_KEY"));
        assert!(grok.key_names().any(|n| n == "XAI_API_KEY"));
        assert!(reg.get("shell").is_none(), "shell is off unless allowed");
        assert!(AgentRegistry::builtin(true).get("shell").is_some());
    }

    #[test]
    fn base_url_goes_where_the_entry_says_only_when_set() {
        let mut a = AgentSpec::new("x", &["x", "run", BASE_URL_ARGS, "{prompt}"]);
        a.base_url_args = vec!["-c".into(), "base={base_url}".into()];
        a.base_url_env = Some("X_BASE".into());
        a.env.insert("X_HOME".into(), "{home}/.x".into());
        assert_eq!(a.argv("p", "run_1"), ["x", "run", "p"]);
        assert_eq!(a.fixed_env("/h"), [("X_HOME".to_owned(), "/h/.x".to_owned())]);
        a.base_url = Some("http://127.0.0.1:9/v1".into());
        assert_eq!(
            a.argv("p", "run_1"),
            ["x", "run", "-c", "base=http://127.0.0.1:9/v1", "p"]
        );
        let mut b = AgentSpec::new("y", &["y", WITHOUT_REPO_ARGS, "{prompt}"]);
        b.without_repo_args = vec!["--no-git".into()];
        assert_eq!(b.argv_for("p", "r", false), ["y", "--no-git", "p"]);
        assert_eq!(b.argv_for("p", "r", true), ["y", "p"]);
        assert!(a
            .fixed_env("/h")
            .contains(&("X_BASE".to_owned(), "http://127.0.0.1:9/v1".to_owned())));
    }

    #[test]
    fn ignore_patterns_are_anchored_globs_over_whole_components() {
        let mut a = AgentSpec::new("x", &["x"]);
        a.ignore = vec![".aider*".into(), ".grok/".into(), "out/*.tmp".into()];
        for hit in [
            ".aider.chat.history.md",
            ".aider.tags.cache.v4/x/y",
            ".grok/settings.json",
            "out/a.tmp",
        ] {
            assert!(a.ignores(hit), "{hit}");
        }
        for miss in [
            "src/.aider.md",
            "aider.md",
            ".grokker",
            "out/a.tmpx",
            "out",
            "x/.grok/settings.json",
        ] {
            assert!(!a.ignores(miss), "{miss}");
        }
    }

    #[test]
    fn prompt_inside_an_argument_stays_one_argument() {
        let a = AgentSpec::new("x", &["x", "--prompt={prompt}", "--id={run_id}"]);
        assert_eq!(
            a.argv("- fix {run_id} --version", "run_1"),
            ["x", "--prompt=- fix {run_id} --version", "--id=run_1"]
        );
    }

    #[test]
    fn prompt_is_one_argument_never_split() {
        let reg = AgentRegistry::builtin(true);
        let argv = reg.get("shell").expect("shell").argv("echo a; echo 'b c'", "run_1");
        assert_eq!(argv, ["sh", "-c", "echo a; echo 'b c'"]);
    }

    #[test]
    fn operator_file_adds_and_overrides() {
        let mut reg = AgentRegistry::builtin(false);
        reg.apply_toml(
            r#"
            [agents.fake]
            command = ["/bin/fake", "--prompt", "{prompt}", "--run", "{run_id}"]
            key_env = "FAKE_KEY"
            pass_env = ["FAKE_MODE"]
            default_timeout_secs = 60

            [agents.claude]
            command = ["/opt/claude", "-p", "{prompt}"]

            [agents.grok]
            enabled = false
            "#,
            "agents.toml",
        )
        .expect("valid file");
        let fake = reg.get("fake").expect("fake added");
        assert_eq!(
            fake.argv("p", "run_9"),
            ["/bin/fake", "--prompt", "p", "--run", "run_9"]
        );
        assert_eq!(fake.key_names().collect::<Vec<_>>(), ["FAKE_KEY"]);
        assert_eq!(fake.pass_env, ["FAKE_MODE"]);
        let claude = reg.get("claude").expect("claude kept");
        assert_eq!(claude.command[0], "/opt/claude");
        assert_eq!(
            claude.key_env.as_deref(),
            Some("ANTHROPIC_API_KEY"),
            "unset fields keep the built-in value"
        );
        assert!(reg.get("grok").is_none());
    }

    #[test]
    fn operator_file_sets_the_new_fields_and_checks_them() {
        let mut reg = AgentRegistry::builtin(false);
        reg.apply_toml(
            r#"
            [agents.gemini]
            base_url = "http://127.0.0.1:8080"
            idle_timeout_secs = 0
            env = { EXTRA = "1" }

            [agents.mine]
            command = ["mine", "{prompt}"]
            output = "claude"
            ignore = [".mine/"]
            home_files = { ".mine/config" = "home={home}" }
            key_aliases = ["OTHER_KEY"]
            "#,
            "agents.toml",
        )
        .expect("valid file");
        let g = reg.get("gemini").expect("gemini");
        assert_eq!(g.base_url.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(g.idle_timeout_secs, None, "0 turns the idle timeout off");
        assert_eq!(g.env.get("EXTRA").map(String::as_str), Some("1"));
        assert!(g.env.contains_key("TMPDIR"), "merged over the built-in's");
        let m = reg.get("mine").expect("mine");
        assert_eq!(m.output, OutputReader::Claude);
        assert!(m.ignores(".mine/state"));
        assert_eq!(m.key_names().collect::<Vec<_>>(), ["OTHER_KEY"]);
        for (bad, why) in [
            ("[agents.claude]\nbase_url = \"ftp://x\"\n", "http"),
            ("[agents.claude]\nbase_url = \"http://u:p@x\"\n", "credentials"),
            ("[agents.claude]\nhome_files = { \"../x\" = \"\" }\n", "home_files"),
            ("[agents.claude]\nenv = { \"A=B\" = \"\" }\n", "env var"),
            ("[agents.claude]\noutput = \"yaml\"\n", "agents.toml"),
        ] {
            let err = AgentRegistry::builtin(false)
                .apply_toml(bad, "agents.toml")
                .expect_err(bad);
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_operator_files_are_clear_errors() {
        let mut reg = AgentRegistry::builtin(false);
        let err = reg
            .apply_toml("[agents.new]\nkey_env = \"X\"\n", "a.toml")
            .expect_err("no command");
        assert!(err.to_string().contains("needs a command"), "{err}");
        let err = reg
            .apply_toml("[agents.x]\ncomand = [\"a\"]\n", "a.toml")
            .expect_err("typo");
        assert!(err.to_string().contains("a.toml"), "{err}");
        let err = reg
            .apply_toml("[agents.\"a b\"]\ncommand = [\"a\"]\n", "a.toml")
            .expect_err("bad name");
        assert!(err.to_string().contains("agent names"), "{err}");
    }
}
