//! Step 2 of a run: everything the agent needs before it starts, and the state finalize needs
//! whatever happens next.
//!
//! [`RunPipeline::run`] acquires the run's folders before and gives them back after (to the
//! pool, or removed). Then, in order: the private output spool (`{root}/output.log`, 0600: only the worker reads it), the
//! agent's registry entry, the tenant's secrets (a cached read, [`crate::tenant_secrets`]) and
//! from them the values to scrub (the agent's key, every tenant secret, a password in the
//! repository URL), the run's timeout (it counts from here, so a slow clone eats into it), the
//! clone of the repository (hardened git, with the tenant's `GIT_TOKEN` as a header, within
//! the timeout and stopped by a cancel) and its base commit, `ws/outpost-artifacts/`, the
//! workspace and HOME given to the agents' user, the entry's HOME files, the command line and
//! the agent's whole environment. Each failure is recorded as a note and ends the run with
//! `workspace_failed`, `unknown_agent` or `spawn_failed` (nothing is started); a failing spool
//! ends it with nothing stored.

use super::{Attempt, Launch, Notes, RunPipeline};
use crate::executor::{AgentEnv, Stop, StopSignal};
use crate::identity::AgentUser;
use crate::scrub::Secrets;
use crate::tenant_secrets::SecretSet;
use crate::workspace::{self, RunDirs};
use outpost_core::domain::agents::env_name_valid;
use outpost_core::domain::{AgentSpec, FailureReason, Outcome, Run};
use outpost_core::ports::SecretName;
use secrecy::{ExposeSecret, SecretString};
use std::ffi::OsString;
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Where the values of an agent's `key_env` and `pass_env` variables come from when the run's
/// tenant has no secret of that name (by default the worker's own environment).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<OsString> + Send + Sync>;

/// How preparing a run ended.
pub(super) enum Prepared<'a> {
    /// The agent can start.
    Ready(Attempt<'a>, Launch),
    /// The run is over before its agent started: finalize it with this outcome.
    Ended(Attempt<'a>, Outcome),
    /// Stopped on [`Stop::Abandon`]: nothing is reported.
    Abandoned,
    /// Not even the spool could be made: the outcome, with nothing stored.
    Unrecorded(Outcome),
}

impl RunPipeline {
    /// Prepares `run` in `dirs` (acquired, with `ws/` unless the run has a repository).
    pub(super) async fn prepare<'a>(
        &self,
        run: &'a Run,
        dirs: &'a RunDirs,
        stop: &mut StopSignal,
        user: Option<AgentUser>,
    ) -> Prepared<'a> {
        let started = Instant::now();
        let spool = match create_private(&dirs.spool) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot create the output spool");
                return Prepared::Unrecorded(Outcome::failed(FailureReason::WorkspaceFailed, None));
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
        let key = agent.and_then(|a| key_value(a, &self.env, &tenant_env));
        let mut a = Attempt {
            run,
            dirs,
            spool,
            notes: Notes::new(run_secrets(run, key.as_ref(), &tenant_env)),
            base: None,
            ws_ready: false,
            pump: Default::default(),
            started,
            ignore: agent.map(|a| a.ignore.clone()).unwrap_or_default(),
            sandbox: None,
        };
        if let Some(e) = tenant_env_error {
            // Running without the tenant's own keys could bill the operator's instead: fail.
            tracing::warn!(tenant = %run.tenant, error = %e, "cannot read the tenant's secrets");
            a.notes.push(format!("cannot read the tenant's secrets: {e}"));
            return Prepared::Ended(a, Outcome::failed(FailureReason::WorkspaceFailed, None));
        }
        let Some(agent) = agent else {
            a.notes.push(format!(
                "unknown or disabled agent {:?}; this worker runs: {}",
                run.agent,
                self.agents.enabled_names().join(", ")
            ));
            return Prepared::Ended(a, Outcome::failed(FailureReason::UnknownAgent, None));
        };
        let timeout_secs = if run.timeout_secs == 0 {
            agent.default_timeout_secs
        } else {
            run.timeout_secs
        };
        let deadline = started + Duration::from_secs(u64::from(timeout_secs));
        let idle_secs = run.idle_timeout_secs.or(agent.idle_timeout_secs).filter(|s| *s > 0);

        // The workspace.
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
                        return Prepared::Abandoned;
                    }
                    a.notes.push("cancelled while the repository was being cloned");
                    return Prepared::Ended(a, Outcome::cancelled(None));
                }
            };
            match cloned {
                Ok(base) => a.base = base,
                Err(msg) => {
                    a.notes.push(msg);
                    return Prepared::Ended(a, Outcome::failed(FailureReason::WorkspaceFailed, None));
                }
            }
            if let Err(e) = dirs.create_artifacts_dir() {
                a.notes.push(format!("cannot create {}: {e}", workspace::ARTIFACTS_DIR));
            }
            if let Some(user) = user {
                let ws = dirs.ws.clone();
                let owned = tokio::task::spawn_blocking(move || user.own_tree(&ws).and_then(|()| user.own_folder(&ws)))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                if let Err(e) = owned {
                    a.notes
                        .push(format!("cannot give the workspace to the agent's user: {e}"));
                    return Prepared::Ended(a, Outcome::failed(FailureReason::WorkspaceFailed, None));
                }
            }
        }
        a.ws_ready = true;
        if let Err(e) = write_home_files(agent, dirs, user) {
            a.notes.push(format!("cannot prepare the agent's HOME: {e}"));
            return Prepared::Ended(a, Outcome::failed(FailureReason::WorkspaceFailed, None));
        }

        // The command line and the environment.
        let mut argv = agent.argv_for(&run.task, run.id.as_str(), run.repo.is_some());
        if argv.is_empty() {
            a.notes.push(format!("agent {:?} has an empty command", agent.name));
            return Prepared::Ended(a, Outcome::failed(FailureReason::SpawnFailed, None));
        }
        let program = argv.remove(0);
        let launch = Launch {
            program,
            args: argv,
            env: agent_env(agent, run, dirs, &self.env, &tenant_env, key.as_ref()),
            deadline,
            timeout_secs,
            idle_secs,
            output_reader: agent.output,
            sandbox: crate::executor::SandboxAsk::of(agent),
        };
        Prepared::Ready(a, launch)
    }
}

/// Writes the entry's `home_files` into the run's HOME (owned by the agent's user).
fn write_home_files(agent: &AgentSpec, dirs: &RunDirs, user: Option<AgentUser>) -> std::io::Result<()> {
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
    match user {
        Some(user) => user.own_tree(&dirs.home).and_then(|()| user.own_folder(&dirs.home)),
        None => Ok(()),
    }
}

/// The agent's whole environment, later entries winning: its `pass_env` variables from the
/// worker, the tenant's secrets (which win over the worker's values), its key as `key_env`, the
/// entry's fixed variables, then HOME, LANG, TERM, `OUTPOST_RUN_ID` and `OUTPOST_ARTIFACTS_DIR`.
/// Invalid names are left out. PATH is the executor's.
fn agent_env(
    agent: &AgentSpec,
    run: &Run,
    dirs: &RunDirs,
    lookup: &EnvLookup,
    tenant: &[(SecretName, SecretString)],
    key: Option<&OsString>,
) -> AgentEnv {
    let mut env = AgentEnv::default();
    for name in agent.pass_env.iter().filter(|n| env_name_valid(n)) {
        if let Some(v) = lookup(name) {
            env.set(name.as_str(), v);
        }
    }
    for (name, value) in tenant {
        env.set(name.as_str(), value.expose_secret());
    }
    if let Some(var) = agent.key_env.as_deref().filter(|n| env_name_valid(n)) {
        if let Some(key) = key {
            env.set(var, key);
        }
    }
    for (name, value) in agent.fixed_env(&dirs.home.to_string_lossy()) {
        if env_name_valid(&name) {
            env.set(name, value);
        }
    }
    env.set("HOME", &dirs.home);
    env.set("LANG", "C.UTF-8");
    env.set("TERM", "dumb");
    env.set("OUTPOST_RUN_ID", run.id.as_str());
    env.set("OUTPOST_ARTIFACTS_DIR", &dirs.artifacts);
    env
}

/// The secret values of a run: its agent's key, its tenant's secrets and a password in its
/// repository URL.
fn run_secrets(run: &Run, key: Option<&OsString>, tenant: &[(SecretName, SecretString)]) -> Secrets {
    use std::os::unix::ffi::OsStrExt;
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
