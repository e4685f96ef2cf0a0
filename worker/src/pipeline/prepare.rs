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
//! workspace and HOME given to the agents' user, the entry's HOME files, the run's egress proxy
//! ([`crate::egress`]: for `network = "allow"`, and for an entry whose key the proxy holds, which
//! then gets a per-run placeholder as its key and the proxy as its base URL), the command line and
//! the agent's whole environment. Each failure is recorded as a note and ends the run with
//! `workspace_failed`, `unknown_agent`, `sandbox_unavailable` (no proxy) or `spawn_failed`
//! (nothing is started); a failing spool ends it with nothing stored. Opening a proxy costs two
//! listening sockets and one task; the pipeline closes it when the agent is over.

use super::{Attempt, Launch, Notes, RunPipeline};
use crate::egress::{Injection, Listen, RunProxy, RunProxySpec};
use crate::executor::{AgentEnv, Stop, StopSignal};
use crate::identity::AgentUser;
use crate::sandbox::EgressPort;
use crate::scrub::Secrets;
use crate::tenant_secrets::SecretSet;
use crate::workspace::{self, RunDirs};
use outpost_core::domain::agents::env_name_valid;
use outpost_core::domain::{AgentSpec, FailureReason, NetworkPolicy, Outcome, Run};
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
    /// The agent runs on a remote executor this worker has ([`super::RemoteRuns`]).
    Remote(Attempt<'a>, Box<AgentSpec>),
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
            egress: None,
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
        if agent.executor.is_remote() && self.remote.as_ref().is_some_and(|r| r.handles(agent.executor)) {
            return Prepared::Remote(a, Box::new(agent.clone()));
        }
        if agent.executor.is_remote() {
            // Never run an entry meant for its own ECS task or SSM host as a local process.
            a.notes.push(format!(
                "agent {:?} asks for the {} executor, which this worker does not have; the agent was not started",
                run.agent, agent.executor
            ));
            return Prepared::Ended(a, Outcome::failed(FailureReason::ExecutorUnavailable, None));
        }
        let timeout_secs = agent.timeout_secs_for(run);
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

        // The egress proxy: the only way out of `allow`, and the keeper of an injected key.
        let injected = agent.key_injection.is_some() && key.is_some();
        if agent.key_injection.is_some() && key.is_none() {
            a.notes.push(format!(
                "no vendor key for agent {:?}: the tenant has no secret {} (and the worker's environment none)",
                agent.name,
                agent.key_names().collect::<Vec<_>>().join(" or ")
            ));
        }
        let wants_proxy = match agent.network {
            NetworkPolicy::Allow => true,
            NetworkPolicy::Open => injected,
            NetworkPolicy::None => false,
        };
        let placeholder = (injected && wants_proxy).then(Injection::new_placeholder);
        // The vendor the proxy forwards to (checked when the agents file was read).
        let upstream = match agent.injection_upstream().map(url::Url::parse).transpose() {
            Ok(u) => u.filter(|_| placeholder.is_some()),
            Err(e) => {
                a.notes.push(format!(
                    "cannot start the run's egress proxy: the vendor URL is not a URL: {e}"
                ));
                return Prepared::Ended(a, Outcome::failed(FailureReason::SandboxUnavailable, None));
            }
        };
        let mut egress = None;
        if wants_proxy {
            match self
                .open_proxy(
                    agent,
                    dirs,
                    user,
                    key.as_ref(),
                    placeholder.as_deref(),
                    upstream.as_ref(),
                )
                .await
            {
                Ok(open) => egress = Some(open),
                Err(why) => {
                    a.notes.push(format!("cannot start the run's egress proxy: {why}"));
                    return Prepared::Ended(a, Outcome::failed(FailureReason::SandboxUnavailable, None));
                }
            }
        }
        // With the key in the proxy, the agent's base URL is the proxy (the vendor's path kept).
        let agent: std::borrow::Cow<'_, AgentSpec> = match (&egress, &upstream) {
            (Some(open), Some(upstream)) => {
                let mut spec = agent.clone();
                spec.base_url = Some(agent_base_url(open.port.port, upstream));
                std::borrow::Cow::Owned(spec)
            }
            _ => std::borrow::Cow::Borrowed(agent),
        };
        let agent = agent.as_ref();
        let given_key = match &placeholder {
            Some(p) => Some(OsString::from(p)),
            // No network: no proxy, and a key-injecting agent gets no key at all.
            None if agent.key_injection.is_some() => None,
            None => key.clone(),
        };

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
            env: {
                let mut env = agent_env(agent, run, dirs, &self.env, &tenant_env, given_key.as_ref());
                if let (Some(open), NetworkPolicy::Allow) = (&egress, agent.network) {
                    proxy_env(&mut env, open.port.port);
                }
                env
            },
            deadline,
            timeout_secs,
            idle_secs,
            output_reader: agent.output,
            sandbox: crate::executor::SandboxAsk::of(agent),
            egress,
        };
        Prepared::Ready(a, launch)
    }

    /// Opens the run's egress proxy: on the worker's loopback, and for `allow` also on a Unix
    /// socket in the run's root (owned by the run's uid) that a network namespace reaches
    /// through its relay.
    async fn open_proxy(
        &self,
        agent: &AgentSpec,
        dirs: &RunDirs,
        user: Option<AgentUser>,
        key: Option<&OsString>,
        placeholder: Option<&str>,
        upstream: Option<&url::Url>,
    ) -> Result<OpenProxy, String> {
        let service = self.egress().map_err(str::to_owned)?;
        let inject = match (placeholder, key, &agent.key_injection, upstream) {
            (Some(placeholder), Some(key), Some(k), Some(upstream)) => Some(Injection {
                upstream: upstream.clone(),
                header: k.header.clone(),
                prefix: k.prefix.clone(),
                real_key: SecretString::from(key.to_string_lossy().into_owned()),
                placeholder: placeholder.to_owned(),
            }),
            _ => None,
        };
        let socket = dirs.root.join(EGRESS_SOCKET);
        let mut listen = vec![Listen::Loopback];
        let allow = agent.network == NetworkPolicy::Allow;
        if allow {
            listen.push(Listen::Unix {
                path: socket.clone(),
                owner: user.map(|u| (u.uid, u.gid)),
            });
        }
        let proxy = service
            .open(RunProxySpec {
                listen,
                allow: if allow { agent.allow_hosts.clone() } else { Vec::new() },
                inject,
                // The worker's own ports, on every address (loopback and private ones are
                // refused anyway).
                refuse_addrs: self
                    .config
                    .refuse_ports
                    .iter()
                    .map(|p| std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, *p)))
                    .collect(),
            })
            .await
            .map_err(|e| e.to_string())?;
        let port = proxy
            .local_addr()
            .map(|a| a.port())
            .ok_or_else(|| "the proxy has no loopback port".to_owned())?;
        Ok(OpenProxy {
            proxy,
            port: EgressPort { port, socket },
        })
    }
}

/// A run's open egress proxy and where the sandbox finds it.
pub(super) struct OpenProxy {
    pub proxy: RunProxy,
    pub port: EgressPort,
}

/// The run's egress socket in its root folder.
const EGRESS_SOCKET: &str = "egress.sock";

/// The base URL an agent whose key the proxy holds is given: the proxy's loopback origin with the
/// vendor URL's path (`https://api.openai.com/v1` → `http://127.0.0.1:PORT/v1`).
fn agent_base_url(port: u16, upstream: &url::Url) -> String {
    format!("http://127.0.0.1:{port}{}", upstream.path().trim_end_matches('/'))
}

/// The variables that send an agent's HTTP(S) clients through its proxy (`network = "allow"`);
/// the proxy's own loopback address is reached directly (an injected base URL).
fn proxy_env(env: &mut AgentEnv, port: u16) {
    let url = format!("http://127.0.0.1:{port}");
    for name in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        env.set(name, &url);
    }
    for name in ["NO_PROXY", "no_proxy"] {
        env.set(name, "127.0.0.1,localhost");
    }
    // Node's own fetch honours the variables above only with this (Node 24+).
    env.set("NODE_USE_ENV_PROXY", "1");
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
/// Invalid names are left out. PATH is the executor's. Never given: the tenant's `GIT_TOKEN`
/// (the worker clones, the API pushes) and, for an entry whose key the proxy holds, any
/// variable under one of its key's names (`key` is then the placeholder).
pub(super) fn agent_env(
    agent: &AgentSpec,
    run: &Run,
    dirs: &RunDirs,
    lookup: &EnvLookup,
    tenant: &[(SecretName, SecretString)],
    key: Option<&OsString>,
) -> AgentEnv {
    let mut env = AgentEnv::default();
    let held = |name: &str| {
        name == outpost_git::promote::GIT_TOKEN_SECRET
            || (agent.key_injection.is_some() && agent.key_names().any(|k| k == name))
    };
    for name in agent.pass_env.iter().filter(|n| env_name_valid(n) && !held(n)) {
        if let Some(v) = lookup(name) {
            env.set(name.as_str(), v);
        }
    }
    for (name, value) in tenant.iter().filter(|(n, _)| !held(n.as_str())) {
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
