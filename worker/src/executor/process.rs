//! The process executor: runs the agent as a child process group on this machine, in the run's
//! prepared workspace, with exactly the prepared environment (plus PATH), confined by
//! [`crate::sandbox`] (the run's own uid, namespaces, Landlock, limits), its stdout and stderr
//! on one pipe pumped into the spool (and the live log) by [`crate::output`], supervised by
//! [`super::group`], with the output, disk and CPU caps watched beside it.
//!
//! Cost per run: one pipe, one spawn (posix_spawn: a resolved absolute program path keeps std
//! off fork) of the sandbox chain, one disk walk a second while the agent runs.

use super::group::{self, Activity};
use super::{AgentExit, AgentJob, Ended, Executor, Limit, StopSignal};
use crate::identity::{self, AgentUser};
use crate::output;
use crate::sandbox::uids::UidLease;
use crate::sandbox::{cgroup, Plan, Request, Sandbox, SandboxConfig};
use crate::workspace::RunDirs;
use async_trait::async_trait;
use nix::fcntl::OFlag;
use nix::unistd::Pid;
use outpost_core::domain::SandboxMode;
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
/// How often the disk and CPU caps are looked at (at least).
const LIMIT_CHECK: Duration = Duration::from_secs(1);

/// Settings of the process executor.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// SIGTERM → SIGKILL grace when stopping an agent.
    pub kill_grace: Duration,
    /// The agents' sandbox (see [`crate::sandbox`]).
    pub sandbox: SandboxConfig,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            kill_grace: Duration::from_secs(5),
            sandbox: SandboxConfig::default(),
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
    /// `setpriv` (util-linux): the uid change of `sandbox = "none"` runs of a root worker when
    /// there is no `outpost-confine`.
    setpriv: Option<PathBuf>,
    sandbox: Sandbox,
}

impl ProcessExecutor {
    pub fn new(config: ProcessConfig) -> Self {
        let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        let sandbox = Sandbox::new(config.sandbox.clone(), &path);
        let setpriv = sandbox.any_user().and_then(|_| identity::find_setpriv(&path));
        Self {
            config,
            path,
            setpriv,
            sandbox,
            resolved: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }

    /// What this machine's sandbox supports (probed when the executor was made).
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }
}

#[async_trait]
impl Executor for ProcessExecutor {
    fn agent_user(&self) -> Option<AgentUser> {
        self.sandbox.any_user()
    }

    fn acquire_user(&self) -> Result<Option<UidLease>, String> {
        self.sandbox.acquire_user().transpose()
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
        let resolved = self.resolve(job.program);
        if !identity::is_executable(&resolved) {
            self.forget(job.program);
            return AgentExit::NotStarted(format!(
                "cannot start the agent {:?}: {} is not an executable file",
                job.program,
                resolved.display()
            ));
        }
        let request = Request {
            mode: job.sandbox.mode,
            network: job.sandbox.network,
            limits: job.sandbox.limits,
            memory_mb: job.sandbox.memory_mb,
            user: job.user,
            ws: &job.dirs.ws,
            home: &job.dirs.home,
            program: &resolved,
            args: job.args,
            run_name: job.run.id.as_str(),
            egress: job.egress,
        };
        let mut plan = match self.sandbox.plan(&request) {
            Ok(p) => p,
            Err(why) => return AgentExit::Refused(why),
        };
        if plan.record.mode == SandboxMode::None {
            tracing::warn!(agent = %job.run.agent, "agent runs without a sandbox (sandbox = \"none\")");
        }
        let (reader, mut child) = match self.spawn(&job, &plan, &resolved) {
            Ok(x) => x,
            Err(e) => {
                if let Some(cg) = plan.cgroup.take() {
                    cg.remove();
                }
                return AgentExit::NotStarted(format!("cannot start the agent {:?}: {e}", job.program));
            }
        };
        let Some(pgid) = child.id().and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw) else {
            return AgentExit::NotStarted("the agent exited before it could be supervised".to_owned());
        };
        tracing::debug!(pid = pgid.as_raw(), "agent started");

        // Supervise while pumping output and watching the caps.
        let activity = Activity::with_output_limit(plan.output_bytes);
        let (mut ended, output) = {
            let idle = job.idle.map(|span| (span, &activity));
            let pump = output::pump(reader, job.output, job.secrets.clone(), job.live, &activity);
            tokio::pin!(pump);
            let watch = watch_limits(&activity, job.dirs, &plan);
            let sup = group::supervise(
                &mut child,
                pgid,
                job.deadline,
                idle,
                watch,
                stop,
                self.config.kill_grace,
            );
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
            (ended, output)
        };
        // What the caps say of an agent that ended by itself.
        if let Ended::Exited(code) = ended {
            let oom = plan.cgroup.as_ref().is_some_and(cgroup::RunCgroup::oom_killed);
            if oom {
                ended = Ended::Limit(Limit::Memory, code);
            } else if disk_used(job.dirs).await >= plan.disk_bytes {
                ended = Ended::Limit(Limit::Disk, code);
            } else if activity.over_output_limit() {
                ended = Ended::Limit(Limit::Output, code);
            }
        }
        if let Some(cg) = plan.cgroup.take() {
            let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
        }
        AgentExit::Ran {
            ended,
            output,
            sandbox: Some(plan.record),
        }
    }
}

/// Resolves when the run goes past its output, disk or CPU cap. Output is signalled by the
/// pump at once; disk (the size of `ws/` and `home/`) and CPU (the cgroup's total) are looked
/// at every second, or less often when one look at the disk takes long (a walk of a large clone
/// must not cost more than 5% of a core).
async fn watch_limits(activity: &Activity, dirs: &RunDirs, plan: &Plan) -> Limit {
    let mut every = LIMIT_CHECK;
    loop {
        tokio::select! {
            () = activity.output_exceeded() => return Limit::Output,
            () = tokio::time::sleep(every) => {}
        }
        if plan
            .cgroup
            .as_ref()
            .and_then(cgroup::RunCgroup::cpu_usec)
            .is_some_and(|u| u >= plan.cpu_usec)
        {
            return Limit::Cpu;
        }
        let started = std::time::Instant::now();
        if disk_used(dirs).await >= plan.disk_bytes {
            return Limit::Disk;
        }
        every = LIMIT_CHECK.max(started.elapsed() * 20);
    }
}

/// Bytes on disk under the run's `ws/` and `home/` (allocated blocks: a sparse file counts
/// what it holds).
async fn disk_used(dirs: &RunDirs) -> u64 {
    let roots = [dirs.ws.clone(), dirs.home.clone()];
    tokio::task::spawn_blocking(move || roots.iter().map(|r| tree_bytes(r)).sum())
        .await
        .unwrap_or(0)
}

/// Bytes allocated under `path`, walked with an explicit stack (an agent may nest folders deeper
/// than any thread's stack), never following symlinks.
fn tree_bytes(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut todo = vec![path.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                todo.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

impl ProcessExecutor {
    /// Spawns the plan's program (the agent, or the chain that confines it) in its own process
    /// group with the job's environment and nothing else but PATH (and the sandbox's TMPDIR),
    /// stdout and stderr on one pipe. Returns the async read end and the child.
    fn spawn(
        &self,
        job: &AgentJob<'_>,
        plan: &Plan,
        resolved: &std::path::Path,
    ) -> std::io::Result<(tokio::net::unix::pipe::Receiver, tokio::process::Child)> {
        let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        let write_end2 = write_end.try_clone()?;
        let reader = output::async_reader(read_end)?;
        // An absolute program path keeps std on posix_spawn (vfork-fast); with a bare name and our
        // own PATH in the child's env it would fall back to fork. `sandbox = "none"` of a root
        // worker without outpost-confine: through `setpriv`, for the same reason (a uid set on
        // the command makes std fork the whole worker instead) and for no_new_privs.
        let unwrapped = plan.program == resolved;
        let mut cmd = match (job.user, &self.setpriv) {
            (Some(user), Some(setpriv)) if unwrapped => {
                let mut c = tokio::process::Command::new(setpriv);
                c.args(identity::setpriv_args(user)).arg(resolved);
                c
            }
            _ => tokio::process::Command::new(&plan.program),
        };
        cmd.args(&plan.args).env_clear();
        for (name, value) in job.env.iter() {
            cmd.env(name, value);
        }
        for (name, value) in &plan.env {
            cmd.env(name, value);
        }
        if let (Some(user), None, true) = (job.user, &self.setpriv, unwrapped) {
            // Neither outpost-confine nor setpriv: std sets the ids in the forked child.
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
            self.forget(job.program);
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
