//! The process executor: runs the agent as a child process group in a fresh workspace on this
//! machine, with a clean environment, its output spooled and streamed, then stores its artifacts.
//!
//! Per run: `{work_dir}/{run_id}/` with `ws/` (cwd), `home/` (HOME) and the spool `output.log`.
//! The fast path (no repository) makes a handful of syscalls around one spawn: no git, no timers
//! that fire unless something is slow, no fsync.

use super::group::{self, Activity, Ended};
use super::{Execution, Executor, Stop, StopSignal};
use crate::agent_output;
use crate::artifacts::{self, Limits, Summary, Uploader};
use crate::dirpool::DirPool;
use crate::identity::{self, AgentUser};
use crate::output::{self, LiveLog, PumpReport, OUTPUT_LOG};
use crate::scrub::{scrub_file, Scrubber, Secrets};
use crate::tenant_secrets::{SecretSet, TenantSecrets};
use crate::workspace::{self, RunDirs};
use async_trait::async_trait;
use nix::fcntl::OFlag;
use nix::unistd::Pid;
use outpost_core::domain::agents::{env_name_valid, ignore_matches};
use outpost_core::domain::{
    AgentRegistry, AgentReport, AgentSpec, Artifact, FailureReason, Outcome, Run, TerminalStatus,
};
use outpost_core::ports::{ArtifactStore, RunKey, SecretName};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// PATH for agents when the worker itself has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long the output pump may keep draining after the agent's group is gone (a process that
/// left the group could hold the pipe open forever).
const PUMP_DRAIN: Duration = Duration::from_secs(3);
const LOG_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// Most empty run trees kept for reuse.
const MAX_IDLE_TREES: usize = 256;

/// Settings of the process executor.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// Runs get `{work_dir}/{run_id}/`.
    pub work_dir: PathBuf,
    /// SIGTERM → SIGKILL grace when stopping an agent.
    pub kill_grace: Duration,
    /// Caps on `files/...` artifacts.
    pub limits: Limits,
    /// Stream output to the store's live log while the agent runs.
    pub live_log: bool,
    /// The user agents run as (see [`crate::identity`]); by default `nobody` when the worker is
    /// root, else the worker's own user.
    pub agent_user: Option<AgentUser>,
}

impl ProcessConfig {
    pub fn new(work_dir: PathBuf) -> Self {
        Self {
            work_dir,
            kill_grace: Duration::from_secs(5),
            limits: Limits::default(),
            live_log: true,
            agent_user: AgentUser::default_for_this_process(),
        }
    }
}

/// Runs agents as local process groups.
pub struct ProcessExecutor {
    store: Arc<dyn ArtifactStore>,
    agents: Arc<AgentRegistry>,
    config: ProcessConfig,
    path: OsString,
    pool: DirPool,
    /// Program names resolved on `path`.
    resolved: Mutex<HashMap<String, PathBuf>>,
    /// `setpriv` (util-linux), which starts agents as `config.agent_user`; see [`Self::spawn`].
    setpriv: Option<PathBuf>,
    env: EnvLookup,
    /// The tenants' own secrets, given to their agents; `None` gives agents only `env`'s values.
    tenant_secrets: Option<Arc<TenantSecrets>>,
}

/// Where the values of an agent's `key_env` and `pass_env` variables come from when the run's
/// tenant has no secret of that name (by default the worker's own environment).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<OsString> + Send + Sync>;

impl ProcessExecutor {
    pub fn new(store: Arc<dyn ArtifactStore>, agents: Arc<AgentRegistry>, config: ProcessConfig) -> Self {
        let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        let pool = DirPool::new(&config.work_dir, MAX_IDLE_TREES).with_owner(config.agent_user);
        if config.agent_user.is_some() {
            // Agents pass through the work dir to their own run but never list the other runs.
            let made =
                std::fs::create_dir_all(&config.work_dir).and_then(|()| identity::pass_through_only(&config.work_dir));
            if let Err(e) = made {
                tracing::warn!(path = %config.work_dir.display(), error = %e, "cannot make the work dir pass-through only");
            }
        }
        let setpriv = config.agent_user.and_then(|_| identity::find_setpriv(&path));
        if config.agent_user.is_some() && setpriv.is_none() {
            tracing::warn!(
                "no setpriv on this machine: agents start through a fork of the worker (slower, no no_new_privs)"
            );
        }
        Self {
            store,
            agents,
            config,
            path,
            pool,
            setpriv,
            resolved: Mutex::new(HashMap::new()),
            env: Arc::new(|name: &str| std::env::var_os(name)),
            tenant_secrets: None,
        }
    }

    /// Gives each run's agent its tenant's secrets as environment variables (see
    /// [`crate::tenant_secrets`]).
    pub fn with_tenant_secrets(mut self, secrets: Arc<TenantSecrets>) -> Self {
        self.tenant_secrets = Some(secrets);
        self
    }

    /// Takes the agents' key and pass-through variables from `lookup` instead of the worker's
    /// environment.
    pub fn with_env_lookup(mut self, lookup: EnvLookup) -> Self {
        self.env = lookup;
        self
    }

    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }
}

#[async_trait]
impl Executor for ProcessExecutor {
    async fn execute(&self, run: &Run, stop: StopSignal) -> Execution {
        let span = tracing::debug_span!("execute", run_id = %run.id, agent = %run.agent);
        async {
            let dirs = RunDirs::new(&self.config.work_dir, run.id.as_str());
            // A repository run's `ws` is made by the clone; others get a pooled empty tree.
            let with_ws = run.repo.is_none();
            if run.attempts > 1 && dirs.root.symlink_metadata().is_ok() {
                // An earlier attempt ran here and its worker died without stopping its agent.
                let root = dirs.root.clone();
                let stopped = tokio::task::spawn_blocking(move || group::stop_leftover_agents(&root))
                    .await
                    .unwrap_or(0);
                if stopped > 0 {
                    tracing::warn!(groups = stopped, "stopped agents left running by an earlier attempt");
                }
            }
            if let Err(e) = self.pool.acquire(&dirs, with_ws) {
                tracing::error!(path = %dirs.root.display(), error = %e, "cannot create the run directory");
                workspace::remove_run_dir(&dirs.root);
                return Execution::Finished {
                    outcome: Outcome::failed(FailureReason::WorkspaceFailed, None),
                    artifacts: Vec::new(),
                };
            }
            let result = self.execute_in(run, stop, &dirs).await;
            if with_ws {
                self.pool.release(&dirs);
            } else {
                // A clone can be large: remove it off the async threads.
                let root = dirs.root.clone();
                let _ = tokio::task::spawn_blocking(move || workspace::remove_run_dir(&root)).await;
            }
            result
        }
        .instrument(span)
        .await
    }
}

/// The secret values of a run: its agent's key, its tenant's secrets and a password in its
/// repository URL.
fn run_secrets(
    run: &Run,
    agent: Option<&AgentSpec>,
    env: &EnvLookup,
    tenant: &[(SecretName, SecretString)],
) -> Secrets {
    let key = agent.and_then(|a| key_value(a, env, tenant));
    let url_pass = run
        .repo
        .as_ref()
        .and_then(|r| workspace::url_password(&r.url))
        .map(|p| p.as_bytes().to_vec());
    let tenant_values = tenant.iter().map(|(_, v)| v.expose_secret().as_bytes().to_vec());
    Secrets::new(
        key.map(|k| k.as_bytes().to_vec())
            .into_iter()
            .chain(url_pass)
            .chain(tenant_values),
    )
}

/// The agent's key: the first of its [`key_names`](AgentSpec::key_names) the tenant has a secret
/// of, else the first the worker's environment has.
fn key_value(agent: &AgentSpec, env: &EnvLookup, tenant: &[(SecretName, SecretString)]) -> Option<OsString> {
    let names = || agent.key_names().filter(|n| env_name_valid(n));
    names()
        .find_map(|n| tenant_value(tenant, n))
        .or_else(|| names().find_map(|n| env(n)))
}

/// The tenant's value of the variable `name`, if it set one.
fn tenant_value(tenant: &[(SecretName, SecretString)], name: &str) -> Option<OsString> {
    tenant
        .iter()
        .find(|(n, _)| n.as_str() == name)
        .map(|(_, v)| OsString::from(v.expose_secret()))
}

/// Messages of the worker about a run, scrubbed, for output.log and summary.json.
struct Notes {
    secrets: Secrets,
    list: Vec<String>,
}

impl Notes {
    fn push(&mut self, msg: impl AsRef<str>) {
        let mut s = Scrubber::new(self.secrets.clone());
        let mut out = Vec::new();
        let mut clean = s.push(msg.as_ref().as_bytes(), &mut out).to_vec();
        clean.extend_from_slice(&s.finish());
        self.list.push(String::from_utf8_lossy(&clean).into_owned());
    }
}

/// The state of one run on its way to `finalize`.
struct Attempt<'a> {
    run: &'a Run,
    dirs: &'a RunDirs,
    spool: File,
    notes: Notes,
    base: Option<String>,
    /// Whether `ws` holds a workspace worth collecting from.
    ws_ready: bool,
    pump: PumpReport,
    started: Instant,
    /// The agent CLI's own files in the workspace (never its change).
    ignore: Vec<String>,
}

impl ProcessExecutor {
    async fn execute_in(&self, run: &Run, mut stop: StopSignal, dirs: &RunDirs) -> Execution {
        let started = Instant::now();
        let spool = match create_private(&dirs.spool) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot create the output spool");
                return Execution::Finished {
                    outcome: Outcome::failed(FailureReason::WorkspaceFailed, None),
                    artifacts: Vec::new(),
                };
            }
        };
        let agent = self.agents.get(&run.agent);
        let (tenant_env, tenant_env_error) = match &self.tenant_secrets {
            None => (SecretSet::default(), None),
            Some(ts) => match ts.for_tenant(&run.tenant).await {
                Ok(set) => (set, None),
                Err(e) => (SecretSet::default(), Some(e)),
            },
        };
        let secrets = run_secrets(run, agent, &self.env, &tenant_env);
        let mut a = Attempt {
            run,
            dirs,
            spool,
            notes: Notes {
                secrets,
                list: Vec::new(),
            },
            base: None,
            ws_ready: false,
            pump: PumpReport::default(),
            started,
            ignore: agent.map(|a| a.ignore.clone()).unwrap_or_default(),
        };
        if let Some(e) = tenant_env_error {
            // Running without the tenant's own keys could bill the operator's instead: fail.
            tracing::warn!(tenant = %run.tenant, error = %e, "cannot read the tenant's secrets");
            a.notes.push(format!("cannot read the tenant's secrets: {e}"));
            return self
                .finalize(a, Outcome::failed(FailureReason::WorkspaceFailed, None))
                .await;
        }
        let Some(agent) = agent else {
            a.notes.push(format!(
                "unknown or disabled agent {:?}; this worker runs: {}",
                run.agent,
                self.agents.enabled_names().join(", ")
            ));
            return self
                .finalize(a, Outcome::failed(FailureReason::UnknownAgent, None))
                .await;
        };
        let timeout_secs = if run.timeout_secs == 0 {
            agent.default_timeout_secs
        } else {
            run.timeout_secs
        };
        let deadline = started + Duration::from_secs(u64::from(timeout_secs));
        let idle_secs = run.idle_timeout_secs.or(agent.idle_timeout_secs).filter(|s| *s > 0);

        // Workspace.
        if let Some(repo) = &run.repo {
            let token = tenant_env
                .iter()
                .find(|(n, _)| n.as_str() == outpost_git::promote::GIT_TOKEN_SECRET)
                .map(|(_, v)| v);
            let cloned = tokio::select! {
                r = tokio::time::timeout_at(deadline, workspace::clone_with_token(repo, &dirs.ws, token)) => match r {
                    Ok(r) => r,
                    Err(_) => Err("git clone did not finish within the run's timeout".to_owned()),
                },
                s = stop.requested() => {
                    if s == Stop::Abandon {
                        return Execution::Abandoned;
                    }
                    a.notes.push("cancelled while the repository was being cloned");
                    return self.finalize(a, Outcome::cancelled(None)).await;
                }
            };
            match cloned {
                Ok(base) => a.base = base,
                Err(msg) => {
                    a.notes.push(msg);
                    return self
                        .finalize(a, Outcome::failed(FailureReason::WorkspaceFailed, None))
                        .await;
                }
            }
            if let Err(e) = dirs.create_artifacts_dir() {
                a.notes.push(format!("cannot create {}: {e}", workspace::ARTIFACTS_DIR));
            }
            if let Some(user) = self.config.agent_user {
                let ws = dirs.ws.clone();
                let owned = tokio::task::spawn_blocking(move || user.own_tree(&ws))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                if let Err(e) = owned {
                    a.notes
                        .push(format!("cannot give the workspace to the agent's user: {e}"));
                    return self
                        .finalize(a, Outcome::failed(FailureReason::WorkspaceFailed, None))
                        .await;
                }
            }
        }
        a.ws_ready = true;
        if let Err(e) = self.write_home_files(agent, dirs) {
            a.notes.push(format!("cannot prepare the agent's HOME: {e}"));
            return self
                .finalize(a, Outcome::failed(FailureReason::WorkspaceFailed, None))
                .await;
        }

        // Spawn.
        let argv = agent.argv_for(&run.task, run.id.as_str(), run.repo.is_some());
        let Some((program, args)) = argv.split_first() else {
            a.notes.push(format!("agent {:?} has an empty command", agent.name));
            return self
                .finalize(a, Outcome::failed(FailureReason::SpawnFailed, None))
                .await;
        };
        let (reader, mut child) = match self.spawn(program, args, agent, run, dirs, &tenant_env) {
            Ok(x) => x,
            Err(e) => {
                a.notes.push(format!("cannot start the agent {program:?}: {e}"));
                return self
                    .finalize(a, Outcome::failed(FailureReason::SpawnFailed, None))
                    .await;
            }
        };
        let Some(pgid) = child.id().and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw) else {
            a.notes.push("the agent exited before it could be supervised");
            return self
                .finalize(a, Outcome::failed(FailureReason::SpawnFailed, None))
                .await;
        };
        tracing::debug!(pid = pgid.as_raw(), "agent started");

        // Supervise while pumping output.
        let live = self.config.live_log.then(|| LiveLog {
            store: Arc::clone(&self.store),
            key: run_key(run),
        });
        let activity = Activity::new();
        let idle = idle_secs.map(|s| (Duration::from_secs(u64::from(s)), &activity));
        let (ended, report) = {
            let pump = output::pump(reader, &mut a.spool, a.notes.secrets.clone(), live, &activity);
            tokio::pin!(pump);
            let sup = group::supervise(&mut child, pgid, deadline, idle, &mut stop, self.config.kill_grace);
            tokio::pin!(sup);
            let mut report = None;
            let ended = loop {
                tokio::select! {
                    e = &mut sup => break e,
                    r = &mut pump, if report.is_none() => report = Some(r),
                }
            };
            let report = match report {
                Some(r) => Some(r),
                None => tokio::time::timeout(PUMP_DRAIN, &mut pump).await.ok(),
            };
            (ended, report)
        };
        match report {
            Some(r) => {
                if let Some(e) = &r.error {
                    a.notes.push(format!("output.log is incomplete: {e}"));
                }
                a.pump = r;
            }
            None => a.notes.push(
                "output.log may be incomplete: a process that left the agent's process group kept its output open",
            ),
        }
        let outcome = match ended {
            Ended::Exited(Some(code)) => Outcome::from_exit_code(code),
            Ended::Exited(None) => {
                a.notes.push("the agent's exit status could not be read");
                Outcome::failed(FailureReason::NonZeroExit, None)
            }
            Ended::TimedOut(code) => {
                a.notes
                    .push(format!("timed out after {timeout_secs} s; the agent was stopped"));
                Outcome::timed_out(code)
            }
            Ended::Idle(code) => {
                a.notes.push(format!(
                    "no output for {} s (idle timeout); the agent was stopped",
                    idle_secs.unwrap_or_default()
                ));
                Outcome::idle(code)
            }
            Ended::Stopped(Stop::Abandon, _) => {
                tracing::info!("agent stopped: run abandoned");
                return Execution::Abandoned;
            }
            Ended::Stopped(_, code) => {
                a.notes.push("cancelled on request; the agent was stopped");
                Outcome::cancelled(code)
            }
        };
        let reader = agent.output;
        let spool_path = dirs.spool.clone();
        let report = tokio::task::spawn_blocking(move || agent_output::read_spool(reader, &spool_path))
            .await
            .unwrap_or_default();
        let outcome = judge(outcome, report, &mut a.notes);
        self.finalize(a, outcome).await
    }

    /// Writes the entry's `home_files` into the run's HOME (owned by the agent's user).
    fn write_home_files(&self, agent: &AgentSpec, dirs: &RunDirs) -> std::io::Result<()> {
        if agent.home_files.is_empty() {
            return Ok(());
        }
        let home = dirs.home.to_string_lossy();
        for (rel, content) in &agent.home_files {
            let path = dirs.home.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, content.replace("{home}", &home))?;
        }
        match self.config.agent_user {
            Some(user) => user.own_tree(&dirs.home),
            None => Ok(()),
        }
    }

    /// Spawns the agent in its own process group with a clean environment, stdout and stderr on one
    /// pipe. Returns the async read end and the child.
    fn spawn(
        &self,
        program: &str,
        args: &[String],
        agent: &AgentSpec,
        run: &Run,
        dirs: &RunDirs,
        tenant_env: &[(SecretName, SecretString)],
    ) -> std::io::Result<(tokio::net::unix::pipe::Receiver, tokio::process::Child)> {
        let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        let write_end2 = write_end.try_clone()?;
        let reader = output::async_reader(read_end)?;
        // An absolute program path keeps std on posix_spawn (vfork-fast); with a bare name and our
        // own PATH in the child's env it would fall back to fork.
        let resolved = self.resolve(program);
        // As another user: through `setpriv`, so the spawn stays on posix_spawn (a uid set on the
        // command makes std fork the whole worker instead, about 2 ms more per run), and with
        // no_new_privs (no setuid binary gives the agent more than it has).
        let mut cmd = match (self.config.agent_user, &self.setpriv) {
            (Some(user), Some(setpriv)) => {
                // setpriv would start and then fail to exec: report a missing program as the
                // spawn failure it is.
                if !identity::is_executable(&resolved) {
                    self.forget(program);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("{} is not an executable file", resolved.display()),
                    ));
                }
                let mut c = tokio::process::Command::new(setpriv);
                c.args(identity::setpriv_args(user)).arg(&resolved);
                c
            }
            _ => tokio::process::Command::new(&resolved),
        };
        cmd.args(args).env_clear();
        for name in agent.pass_env.iter().filter(|n| env_name_valid(n)) {
            if let Some(v) = (self.env)(name) {
                cmd.env(name, v);
            }
        }
        // The tenant's own values win over the worker's.
        for (name, value) in tenant_env {
            cmd.env(name.as_str(), value.expose_secret());
        }
        if let Some(var) = agent.key_env.as_deref().filter(|n| env_name_valid(n)) {
            if let Some(key) = key_value(agent, &self.env, tenant_env) {
                cmd.env(var, key);
            }
        }
        for (name, value) in agent.fixed_env(&dirs.home.to_string_lossy()) {
            if env_name_valid(&name) {
                cmd.env(name, value);
            }
        }
        if let (Some(user), None) = (self.config.agent_user, &self.setpriv) {
            // No setpriv on this machine: std sets the ids in the forked child (and drops the
            // supplementary groups too when a root parent sets a uid).
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd.env("PATH", &self.path)
            .env("HOME", &dirs.home)
            .env("LANG", "C.UTF-8")
            .env("TERM", "dumb")
            .env("OUTPOST_RUN_ID", run.id.as_str())
            .env("OUTPOST_ARTIFACTS_DIR", &dirs.artifacts)
            .current_dir(&dirs.ws)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::from(write_end2))
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd.spawn();
        // The command holds our copies of the write end: drop them so EOF comes when the agent's
        // group is done with the pipe.
        drop(cmd);
        if child.is_err() {
            self.forget(program);
        }
        Ok((reader, child?))
    }

    /// `program` as an absolute path found on the agents' PATH (cached), or as given when it has
    /// a `/` or is not found (then the spawn fails and says so).
    fn resolve(&self, program: &str) -> PathBuf {
        if program.contains('/') {
            return PathBuf::from(program);
        }
        if let Some(p) = self.resolved.lock().ok().and_then(|m| m.get(program).cloned()) {
            return p;
        }
        let found = std::env::split_paths(&self.path)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(program))
            .find(|p| identity::is_executable(p));
        match found {
            Some(p) => {
                if let Ok(mut m) = self.resolved.lock() {
                    m.insert(program.to_owned(), p.clone());
                }
                p
            }
            None => PathBuf::from(program),
        }
    }

    /// Drops a cached resolution (the binary may have moved).
    fn forget(&self, program: &str) {
        if let Ok(mut m) = self.resolved.lock() {
            m.remove(program);
        }
    }

    /// Artifact-first: stores files/..., diff.patch, output.log and summary.json, then returns the
    /// outcome (turned into `artifact_upload_failed` if a put failed) and the manifest.
    async fn finalize(&self, mut a: Attempt<'_>, mut outcome: Outcome) -> Execution {
        let run = a.run;
        let dirs = a.dirs;
        let key = run_key(run);
        let secrets = a.notes.secrets.clone();
        let mut changed: Vec<String> = Vec::new();

        let patch = dirs.side_file("diff.patch");
        let mut have_patch = false;
        if run.repo.is_some() && a.ws_ready {
            match workspace::diff(&dirs.ws, a.base.as_deref(), &patch, &a.ignore).await {
                Ok(ch) => {
                    changed = ch.files;
                    have_patch = ch.has_patch;
                }
                Err(msg) => a.notes.push(format!("could not compute the diff: {msg}")),
            }
        } else if a.ws_ready {
            // The workspace started empty: everything in it is the agent's.
            changed = workspace::list_created_files(&dirs.ws);
            changed.retain(|f| !a.ignore.iter().any(|p| ignore_matches(p, f)));
        }
        let mut collected = if a.ws_ready {
            artifacts::collect(&dirs.artifacts, self.config.limits)
        } else {
            artifacts::Collected::default()
        };
        if !a.ignore.is_empty() {
            collected.files.retain(|f| {
                let rel = f.name.strip_prefix("files/").unwrap_or(&f.name);
                let in_ws = format!("{}/{rel}", workspace::ARTIFACTS_DIR);
                !a.ignore.iter().any(|p| ignore_matches(p, &in_ws))
            });
        }
        for n in &collected.notes {
            a.notes.push(n);
        }

        if !secrets.is_empty() && (have_patch || !collected.files.is_empty()) {
            let mut paths: Vec<PathBuf> = collected.files.iter().map(|f| f.path.clone()).collect();
            if have_patch {
                paths.push(patch.clone());
            }
            let s = secrets.clone();
            let scrubbed = tokio::task::spawn_blocking(move || {
                paths
                    .iter()
                    .filter_map(|p| {
                        scrub_file(p, &s)
                            .err()
                            .map(|e| format!("scrubbing {}: {e}", p.display()))
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_else(|e| vec![format!("scrubbing artifacts: {e}")]);
            if !scrubbed.is_empty() {
                // A file that could not be scrubbed must not be stored as it is.
                for msg in scrubbed {
                    a.notes.push(msg);
                }
                return self.finish_failed_scrub(a, key).await;
            }
        }

        let mut up = Uploader::new(&*self.store, &key);
        for f in &collected.files {
            up.put(&f.name, &f.path, artifacts::content_type(&f.name)).await;
        }
        if have_patch {
            up.put("diff.patch", &patch, "text/x-diff; charset=utf-8").await;
        }
        if let Some(result) = &outcome.report.result {
            // The agent's whole final answer (the record keeps a capped copy). It was read from
            // the scrubbed spool, so it holds no secret.
            let path = dirs.side_file(RESULT_MD);
            match std::fs::write(&path, result) {
                Ok(()) => {
                    up.put(RESULT_MD, &path, "text/markdown; charset=utf-8").await;
                }
                Err(e) => a.notes.push(format!("cannot write {RESULT_MD}: {e}")),
            }
        }
        let early_failure = !up.failures.is_empty();
        for msg in std::mem::take(&mut up.failures) {
            a.notes.push(msg);
        }

        write_notes(&mut a.spool, &a.notes.list, a.pump.bytes > 0);
        drop(a.spool);
        let log_ok = up.put(OUTPUT_LOG, &dirs.spool, LOG_CONTENT_TYPE).await;
        if early_failure || !log_ok {
            outcome = outcome.failed_as(FailureReason::ArtifactUploadFailed);
        }
        let notes: Vec<String> = a
            .notes
            .list
            .iter()
            .cloned()
            .chain(up.failures.iter().cloned())
            .collect();

        let summary = Summary {
            run_id: run.id.as_str(),
            agent: &run.agent,
            status: outcome.status,
            exit_code: outcome.exit_code,
            failure_reason: outcome.reason,
            duration_ms: u64::try_from(a.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            attempts: run.attempts,
            changed_files: &changed,
            base_commit: a.base.as_deref(),
            output_bytes: a.pump.bytes,
            redactions: a.pump.redactions,
            notes: &notes,
            agent_report: outcome.report.capped(),
        };
        let summary_path = dirs.side_file("summary.json");
        let summary_ok = match serde_json::to_vec_pretty(&summary) {
            Ok(bytes) => match std::fs::write(&summary_path, bytes) {
                Ok(()) => up.put("summary.json", &summary_path, "application/json").await,
                Err(e) => {
                    tracing::warn!(error = %e, "writing summary.json failed");
                    false
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "serialising summary.json failed");
                false
            }
        };
        if !summary_ok {
            outcome = outcome.failed_as(FailureReason::ArtifactUploadFailed);
        }
        Execution::Finished {
            outcome,
            artifacts: manifest_order(up.stored),
        }
    }

    /// Artifacts could not be scrubbed: store only output.log (which the pump scrubbed) and fail.
    async fn finish_failed_scrub(&self, mut a: Attempt<'_>, key: RunKey) -> Execution {
        write_notes(&mut a.spool, &a.notes.list, a.pump.bytes > 0);
        drop(a.spool);
        let mut up = Uploader::new(&*self.store, &key);
        up.put(OUTPUT_LOG, &a.dirs.spool, LOG_CONTENT_TYPE).await;
        Execution::Finished {
            outcome: Outcome::failed(FailureReason::ArtifactUploadFailed, None),
            artifacts: up.stored,
        }
    }
}

/// The artifact holding the agent's whole final answer.
pub const RESULT_MD: &str = "result.md";

/// The outcome once the agent's own report is known: an agent that reported a failure failed
/// (`agent_error`) even when it exited 0; stops by timeout, idle timeout or cancel stay as they
/// are. The report travels with the outcome (the store keeps a capped copy).
fn judge(outcome: Outcome, report: AgentReport, notes: &mut Notes) -> Outcome {
    let ran_to_end = outcome.status == TerminalStatus::Succeeded || outcome.reason == Some(FailureReason::NonZeroExit);
    let outcome = match &report.error {
        Some(err) if ran_to_end => {
            notes.push(format!("the agent reported a failure: {err}"));
            Outcome::failed(FailureReason::AgentError, outcome.exit_code)
        }
        _ => outcome,
    };
    outcome.with_report(report)
}

/// A file only the worker may read (the agent's output spool).
fn create_private(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

fn run_key(run: &Run) -> RunKey {
    RunKey {
        tenant: run.tenant.clone(),
        run: run.id.clone(),
    }
}

/// Appends the worker's notes to the spool as `[outpost] ...` lines (after a blank line when the
/// agent wrote something).
fn write_notes(spool: &mut File, notes: &[String], after_output: bool) {
    if notes.is_empty() {
        return;
    }
    let mut text = String::from(if after_output { "\n" } else { "" });
    for n in notes {
        for line in n.lines() {
            text.push_str("[outpost] ");
            text.push_str(line);
            text.push('\n');
        }
    }
    if let Err(e) = spool.write_all(text.as_bytes()) {
        tracing::warn!(error = %e, "writing notes to output.log failed");
    }
}

/// output.log, summary.json, diff.patch, then files/... in the order they were stored.
fn manifest_order(mut stored: Vec<Artifact>) -> Vec<Artifact> {
    let rank = |a: &Artifact| match a.name.as_str() {
        OUTPUT_LOG => 0,
        "summary.json" => 1,
        RESULT_MD => 2,
        "diff.patch" => 3,
        _ => 4,
    };
    stored.sort_by_key(rank);
    stored
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
