//! RemoteLauncher: starts a run's agent entrypoint somewhere else than the worker (a per-run ECS
//! task, a command on an EC2 host through SSM), watches it to its end and stops it.
//!
//! The launcher knows nothing of the run's outcome: the entrypoint stores every artifact,
//! `summary.json` last, under the run's prefix, and the dispatching worker reads the outcome
//! there. What a launcher reports ([`RemoteEnd`]) is only the fallback when `summary.json` is
//! missing (the task died, the host vanished) and the notes that explain it.
//!
//! Semantics every adapter keeps:
//! - [`start`](RemoteLauncher::start) is idempotent per run attempt (ECS: `clientToken`
//!   `{run}-{attempt}`); it retries capacity and throttling answers itself, a bounded number of
//!   times with backoff, and answers [`LaunchError::Unavailable`] when it gave up (the run then
//!   fails `executor_unavailable`), never loops forever.
//! - [`wait`](RemoteLauncher::wait) returns only when the execution is over (or is gone:
//!   [`LaunchError::Gone`]); polling is the adapter's (ECS batches every watched task of a
//!   worker into one `DescribeTasks` of up to 100); transient API errors are retried inside with
//!   bounded backoff, and only a run of them longer than the adapter's patience becomes
//!   [`LaunchError::Api`].
//! - [`stop`](RemoteLauncher::stop) asks the execution to end (ECS `StopTask`, SSM
//!   `CancelCommand`); the entrypoint gets SIGTERM and stores what it has. `wait` then reports
//!   the end.
//! - Cost: every call is one or a few AWS requests; adapters count none of their waiting polls as
//!   start-up cost (the bench reports them per minute of run time).

use crate::domain::{AgentSpec, ExecutorKind, RemoteTask, Run};
use async_trait::async_trait;
use std::time::Duration;

/// What a launcher needs to start one attempt of a run.
#[derive(Debug, Clone, Copy)]
pub struct LaunchRequest<'a> {
    pub run: &'a Run,
    pub agent: &'a AgentSpec,
    /// A presigned GET URL of the run spec (the entrypoint's only input). It is the one value a
    /// launcher passes to the execution (ECS: the container override `OUTPOST_RUN_SPEC_URL`;
    /// SSM: an argument of the script), so it expires soon after the start.
    pub spec_url: &'a str,
    /// How long the execution may last in all before the executor itself ends it (the run's
    /// timeout plus the entrypoint's start and upload time): SSM's `executionTimeout`.
    pub max_duration: Duration,
}

/// How a remote execution ended, as its executor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndHow {
    /// The entrypoint exited on its own ([`RemoteEnd::exit_code`] says how).
    Exited,
    /// It was stopped on request ([`RemoteLauncher::stop`], ECS `StopTask`, SSM `Cancelled`).
    Stopped,
    /// The executor ended it for running too long (SSM `TimedOut`).
    TimedOut,
    /// It never ran or died with its machine (ECS task failed to start or its container vanished,
    /// SSM `Undeliverable`/`Terminated`/`Failed` without an exit code).
    Lost,
}

/// The end of a remote execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEnd {
    pub how: EndHow,
    /// The entrypoint's exit code (ECS container exit code, SSM `ResponseCode`), when known; see
    /// [`EntrypointExit`](crate::domain::EntrypointExit).
    pub exit_code: Option<i32>,
    /// What the executor said (ECS `stopCode: stoppedReason`, SSM status and details), for the
    /// run's notes. Never holds a secret.
    pub detail: String,
}

/// Whether an executor can take runs of an agent now, for `GET /v1/fleet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    pub available: bool,
    /// e.g. "task definition outpost-agent-claude:3 ACTIVE", "2 of 3 hosts online".
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    /// It cannot start now and the adapter's retries did not help (no capacity, no online host,
    /// no task definition, bad configuration): the run fails `executor_unavailable`.
    #[error("executor unavailable: {0}")]
    Unavailable(String),
    /// The executor does not know the execution (an adopted task that is gone).
    #[error("remote execution not found: {0}")]
    Gone(String),
    /// The executor's API kept failing past the adapter's patience.
    #[error("executor API error: {0}")]
    Api(String),
}

/// An execution the executor is still running, and the run it was started for (ECS: the task's
/// `outpost:run` tag; SSM: the command's comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveExecution {
    pub run_id: String,
    pub task: RemoteTask,
}

#[async_trait]
pub trait RemoteLauncher: Send + Sync + 'static {
    /// Which executor this is.
    fn kind(&self) -> ExecutorKind;

    /// Starts one attempt of a run (see the module docs).
    async fn start(&self, request: LaunchRequest<'_>) -> Result<RemoteTask, LaunchError>;

    /// Waits until `task` is over.
    async fn wait(&self, task: &RemoteTask) -> Result<RemoteEnd, LaunchError>;

    /// Asks `task` to stop (its entrypoint gets SIGTERM, then SIGKILL after the executor's grace).
    async fn stop(&self, task: &RemoteTask, reason: &str) -> Result<(), LaunchError>;

    /// Whether runs of `agent` can start now (cached by the adapter; cheap to call).
    async fn availability(&self, agent: &AgentSpec) -> Availability;

    /// Every execution of this deployment the executor still runs, for the reconciliation sweep
    /// (which stops those whose run is over or was taken over by another execution). The default
    /// lists none (an executor that cannot list).
    async fn active(&self) -> Result<Vec<ActiveExecution>, LaunchError> {
        Ok(Vec::new())
    }

    /// An execution still running for `run` that the run does not record (its worker died
    /// between the start and [`RunStore::set_remote`](super::RunStore::set_remote)), so that a
    /// later attempt adopts it instead of starting a second one. The default looks through
    /// [`active`](Self::active); ECS asks `ListTasks` by `startedBy`.
    async fn find(&self, run: &Run) -> Result<Option<RemoteTask>, LaunchError> {
        Ok(self
            .active()
            .await?
            .into_iter()
            .find(|a| a.run_id == run.id.as_str())
            .map(|a| a.task))
    }
}
