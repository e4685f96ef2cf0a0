//! The executor abstraction: how the agent of one prepared run is started, supervised and
//! stopped (a local process group now; an ECS task or an SSM command later). Everything before
//! the agent starts (run folders, clone, HOME, environment) and after it ends (diff, artifacts,
//! `summary.json`) belongs to the run pipeline ([`crate::pipeline`]) and is the same for every
//! executor: a new executor implements only [`Executor`].
//!
//! The contract of [`Executor::run`]: the agent runs in the job's workspace (`dirs.ws`) with
//! exactly the job's environment, its output (stdout and stderr in order) goes scrubbed into
//! the job's `output` spool; when `run` returns, nothing of the agent is left running, its
//! changes are in the workspace and its output is in the spool, where the pipeline reads them.

pub mod group;
pub mod process;

use crate::identity::AgentUser;
use crate::output::{LiveLog, PumpReport};
use crate::sandbox::uids::UidLease;
use crate::scrub::Secrets;
use crate::workspace::RunDirs;
use async_trait::async_trait;
use outpost_core::domain::Run;
use outpost_core::domain::{NetworkPolicy, RunLimits, SandboxMode, SandboxRecord};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

pub use process::{ProcessConfig, ProcessExecutor};

/// What the loop asks of a running execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// Keep going.
    Continue,
    /// A client cancelled the run: stop the agent, store its artifacts, report `cancelled`.
    Cancel,
    /// The worker lost the lease or is shutting down: stop the agent and report nothing.
    Abandon,
}

/// The loop's side of a run's stop signal.
#[derive(Debug)]
pub struct StopHandle(watch::Sender<Stop>);

impl StopHandle {
    /// Raises the request to `stop` (a request never goes back down: abandon beats cancel).
    pub fn request(&self, stop: Stop) {
        self.0.send_if_modified(|cur| {
            if stop > *cur {
                *cur = stop;
                true
            } else {
                false
            }
        });
    }

    /// The strongest request made so far.
    pub fn current(&self) -> Stop {
        *self.0.borrow()
    }
}

/// The executor's side of a run's stop signal.
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Receiver<Stop>);

impl StopSignal {
    /// A signal that never fires (tests, and callers with nothing to stop).
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(Stop::Continue);
        // With the sender gone, `requested` pends forever.
        drop(tx);
        Self(rx)
    }

    /// The strongest request made so far.
    pub fn current(&self) -> Stop {
        *self.0.borrow()
    }

    /// Resolves once a stop other than `Continue` is requested; pends forever if none ever is.
    pub async fn requested(&mut self) -> Stop {
        loop {
            let cur = *self.0.borrow_and_update();
            if cur != Stop::Continue {
                return cur;
            }
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A fresh stop channel for one run.
pub fn stop_channel() -> (StopHandle, StopSignal) {
    let (tx, rx) = watch::channel(Stop::Continue);
    (StopHandle(tx), StopSignal(rx))
}

/// The agent's environment, as the pipeline prepared it: names in the order they were first set,
/// each with its last value. Values may be secrets (the agent's key, the tenant's secrets), so
/// `Debug` shows only the names.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AgentEnv(Vec<(String, OsString)>);

impl AgentEnv {
    /// Sets `name` to `value`, replacing an earlier value of that name.
    pub fn set(&mut self, name: impl Into<String>, value: impl AsRef<OsStr>) {
        let name = name.into();
        let value = value.as_ref().to_os_string();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&OsStr> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_os_str())
    }

    /// Every variable, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &OsStr)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_os_str()))
    }
}

impl std::fmt::Debug for AgentEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the values.
        f.debug_list().entries(self.0.iter().map(|(n, _)| n)).finish()
    }
}

/// One prepared run, ready for its agent to start.
pub struct AgentJob<'a> {
    pub run: &'a Run,
    /// The run's folders: the agent works in `ws`, with `home` as HOME.
    pub dirs: &'a RunDirs,
    /// The program (a bare name is looked up on the executor's PATH) and its arguments.
    pub program: &'a str,
    pub args: &'a [String],
    /// The agent's environment; the executor adds only what is its own (PATH) and nothing of
    /// the worker's.
    pub env: &'a AgentEnv,
    /// The spool (created, private to the worker): the agent's scrubbed output is appended here.
    pub output: &'a mut File,
    /// The values to scrub from the agent's output.
    pub secrets: &'a Secrets,
    /// Where to stream the output while the agent runs (`None`: no live log).
    pub live: Option<LiveLog>,
    /// When the run's timeout passes (it started counting before the workspace was prepared).
    pub deadline: Instant,
    /// Stop the agent after this long without output.
    pub idle: Option<Duration>,
    /// The run's own agent user (a root worker; see [`Executor::acquire_user`]).
    pub user: Option<AgentUser>,
    /// The entry's sandbox, network and limits.
    pub sandbox: SandboxAsk,
    /// Where the run's egress proxy listens (`network = "allow"`), for the sandbox to route the
    /// agent to it and nowhere else.
    pub egress: Option<&'a crate::sandbox::EgressPort>,
}

/// How an agent that ran ended. Exit codes of a death by signal are 128 + the signal, as shells
/// report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited by itself (`None`: its exit status could not be read).
    Exited(Option<i32>),
    /// It ran past its deadline and was stopped.
    TimedOut(Option<i32>),
    /// It printed nothing for its idle timeout and was stopped.
    Idle(Option<i32>),
    /// It was stopped on request (`Cancel` or `Abandon`).
    Stopped(Stop, Option<i32>),
    /// It went past one of the run's caps and was stopped (or, for memory, the kernel killed
    /// one of its processes).
    Limit(Limit, Option<i32>),
}

/// A per-run cap (see [`outpost_core::domain::RunLimits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Memory,
    Disk,
    Output,
    Cpu,
}

impl Limit {
    /// The failure reason of a run that went past this cap.
    pub fn reason(self) -> outpost_core::domain::FailureReason {
        use outpost_core::domain::FailureReason;
        match self {
            Limit::Memory => FailureReason::MemoryLimit,
            Limit::Disk => FailureReason::DiskLimit,
            Limit::Output => FailureReason::OutputLimit,
            Limit::Cpu => FailureReason::CpuLimit,
        }
    }
}

/// What the run's agent entry asks of the sandbox (see [`crate::sandbox`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxAsk {
    pub mode: Option<SandboxMode>,
    pub network: NetworkPolicy,
    pub limits: RunLimits,
    pub memory_mb: u32,
}

impl SandboxAsk {
    pub fn of(spec: &outpost_core::domain::AgentSpec) -> Self {
        Self {
            mode: spec.sandbox,
            network: spec.network,
            limits: spec.limits,
            memory_mb: spec.memory_mb,
        }
    }
}

/// What an executor reports once the agent is over.
#[derive(Debug)]
pub enum AgentExit {
    /// The agent could not be started; the message says why (for output.log).
    NotStarted(String),
    /// The sandbox the entry asks for cannot be set up here; the message says why.
    Refused(String),
    /// The agent ran and ended.
    Ran {
        ended: Ended,
        /// What the output pump did: bytes spooled, secrets replaced, a read or write error.
        /// `None` when the pump was cut off (a process that left the agent's group kept the
        /// output open): the spool then holds what arrived, but its counts are unknown.
        output: Option<PumpReport>,
        /// How it was confined.
        sandbox: Option<SandboxRecord>,
    },
}

/// Starts, supervises and stops the agents of prepared runs.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Whether agents run as users other than the worker's (then the work dir is
    /// pass-through only); the user of any one run comes from [`Executor::acquire_user`].
    fn agent_user(&self) -> Option<AgentUser>;

    /// A user of its own for the next run, held until the lease is dropped (after the run's
    /// agent is over); the pipeline gives the run's folders to it. `Ok(None)`: agents run as
    /// the worker's user or remotely. `Err`: no user is free.
    fn acquire_user(&self) -> Result<Option<UidLease>, String> {
        Ok(None)
    }

    /// Stops what an earlier attempt of the run in `dirs` may have left running (its worker died
    /// without stopping its agent); called before a retried attempt prepares its workspace.
    /// Returns how many it stopped.
    async fn stop_leftovers(&self, dirs: &RunDirs) -> usize;

    /// Starts the job's agent and supervises it until it exits, its deadline or idle timeout
    /// passes, or `stop` asks (then it stops the agent: politely, then for good). Never panics
    /// on bad data: a failure to start is [`AgentExit::NotStarted`].
    async fn run(&self, job: AgentJob<'_>, stop: &mut StopSignal) -> AgentExit;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stop_requests_only_go_up() {
        let (h, mut s) = stop_channel();
        assert_eq!(s.current(), Stop::Continue);
        h.request(Stop::Abandon);
        h.request(Stop::Cancel);
        assert_eq!(h.current(), Stop::Abandon);
        assert_eq!(s.requested().await, Stop::Abandon);
        let never = StopSignal::never();
        // On the paused clock an hour passes at once.
        let waited = tokio::time::timeout(std::time::Duration::from_secs(3600), never.clone().requested()).await;
        assert!(waited.is_err(), "never() must not fire");
    }

    #[test]
    fn agent_env_keeps_first_order_and_last_value_and_hides_values() {
        let mut env = AgentEnv::default();
        env.set("A", "1");
        env.set("B", "secret-value");
        env.set("A", "2");
        let got: Vec<_> = env.iter().collect();
        assert_eq!(got, [("A", OsStr::new("2")), ("B", OsStr::new("secret-value"))]);
        assert_eq!(env.get("B"), Some(OsStr::new("secret-value")));
        assert_eq!(format!("{env:?}"), r#"["A", "B"]"#);
    }
}
