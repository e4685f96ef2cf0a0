//! The process executor: runs the agent as a child process group on this machine, in the run's
//! prepared workspace, with exactly the prepared environment (plus PATH), as the agents' user
//! (see [`crate::identity`]), its stdout and stderr on one pipe pumped into the spool (and the
//! live log) by [`crate::output`], supervised by [`super::group`].
//!
//! Cost per run: one pipe, one spawn (posix_spawn, also through `setpriv`: a resolved absolute
//! program path keeps std off fork), no timers that fire unless something is slow.

use super::group::{self, Activity};
use super::{AgentExit, AgentJob, Executor, StopSignal};
use crate::identity::{self, AgentUser};
use crate::output;
use crate::workspace::RunDirs;
use async_trait::async_trait;
use nix::fcntl::OFlag;
use nix::unistd::Pid;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

/// PATH for agents when the worker itself has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long the output pump may keep draining after the agent's group is gone (a process that
/// left the group could hold the pipe open forever).
const PUMP_DRAIN: Duration = Duration::from_secs(3);

/// Settings of the process executor.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// SIGTERM → SIGKILL grace when stopping an agent.
    pub kill_grace: Duration,
    /// The user agents run as (see [`crate::identity`]); by default `nobody` when the worker is
    /// root, else the worker's own user.
    pub agent_user: Option<AgentUser>,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            kill_grace: Duration::from_secs(5),
            agent_user: AgentUser::default_for_this_process(),
        }
    }
}

/// Runs agents as local process groups.
pub struct ProcessExecutor {
    config: ProcessConfig,
    /// The agents' PATH: the worker's own.
    path: OsString,
    /// Program names resolved on `path`.
    resolved: Mutex<HashMap<String, PathBuf>>,
    /// `setpriv` (util-linux), which starts agents as `config.agent_user`; see [`Self::spawn`].
    setpriv: Option<PathBuf>,
}

impl ProcessExecutor {
    pub fn new(config: ProcessConfig) -> Self {
        let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        let setpriv = config.agent_user.and_then(|_| identity::find_setpriv(&path));
        if config.agent_user.is_some() && setpriv.is_none() {
            tracing::warn!(
                "no setpriv on this machine: agents start through a fork of the worker (slower, no no_new_privs)"
            );
        }
        Self {
            config,
            path,
            setpriv,
            resolved: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }
}

#[async_trait]
impl Executor for ProcessExecutor {
    fn agent_user(&self) -> Option<AgentUser> {
        self.config.agent_user
    }

    async fn stop_leftovers(&self, dirs: &RunDirs) -> usize {
        if dirs.root.symlink_metadata().is_err() {
            return 0;
        }
        let root = dirs.root.clone();
        tokio::task::spawn_blocking(move || group::stop_leftover_agents(&root))
            .await
            .unwrap_or(0)
    }

    async fn run(&self, job: AgentJob<'_>, stop: &mut StopSignal) -> AgentExit {
        let (reader, mut child) = match self.spawn(&job) {
            Ok(x) => x,
            Err(e) => return AgentExit::NotStarted(format!("cannot start the agent {:?}: {e}", job.program)),
        };
        let Some(pgid) = child.id().and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw) else {
            return AgentExit::NotStarted("the agent exited before it could be supervised".to_owned());
        };
        tracing::debug!(pid = pgid.as_raw(), "agent started");

        // Supervise while pumping output.
        let activity = Activity::new();
        let idle = job.idle.map(|span| (span, &activity));
        let pump = output::pump(reader, job.output, job.secrets.clone(), job.live, &activity);
        tokio::pin!(pump);
        let sup = group::supervise(&mut child, pgid, job.deadline, idle, stop, self.config.kill_grace);
        tokio::pin!(sup);
        let mut report = None;
        let ended = loop {
            tokio::select! {
                e = &mut sup => break e,
                r = &mut pump, if report.is_none() => report = Some(r),
            }
        };
        let output = match report {
            Some(r) => Some(r),
            None => tokio::time::timeout(PUMP_DRAIN, &mut pump).await.ok(),
        };
        AgentExit::Ran { ended, output }
    }
}

impl ProcessExecutor {
    /// Spawns the agent in its own process group with the job's environment and nothing else
    /// but PATH, stdout and stderr on one pipe. Returns the async read end and the child.
    fn spawn(&self, job: &AgentJob<'_>) -> std::io::Result<(tokio::net::unix::pipe::Receiver, tokio::process::Child)> {
        let program = job.program;
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
        cmd.args(job.args).env_clear();
        for (name, value) in job.env.iter() {
            cmd.env(name, value);
        }
        if let (Some(user), None) = (self.config.agent_user, &self.setpriv) {
            // No setpriv on this machine: std sets the ids in the forked child (and drops the
            // supplementary groups too when a root parent sets a uid).
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd.env("PATH", &self.path)
            .current_dir(&job.dirs.ws)
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
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
