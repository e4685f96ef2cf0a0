//! A run and its state machine.
//!
//! `queued → running → succeeded | failed | timed_out | cancelled`, and `queued → cancelled`.
//! A running run whose lease expired may be claimed again (`running → running`, a new attempt);
//! what a claim does is the claim rule's ([`super::claim`]).
//! Terminal states never change: every transition goes through [`RunStatus::transition`], and
//! finishing takes a [`TerminalStatus`], so a store cannot write a non-terminal outcome.

use super::ids::{RunId, TenantId, WorkerId};
use super::report::AgentReport;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

/// A transition the state machine forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a run cannot go from {from} to {to}")]
pub struct TransitionError {
    pub from: RunStatus,
    pub to: RunStatus,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::TimedOut,
        RunStatus::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }

    /// The one place that says which moves are legal.
    pub fn transition(self, to: RunStatus) -> Result<RunStatus, TransitionError> {
        use RunStatus::*;
        let legal = match (self, to) {
            (Queued, Running) | (Queued, Cancelled) => true,
            // A new attempt after a lost lease, and a lost run's final failure from the queue.
            (Queued, Failed) => true,
            (Running, Running) => true,
            (Running, to) => to.is_terminal(),
            _ => false,
        };
        if legal {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            format!(
                "unknown run status {s:?} (expected one of queued, running, succeeded, failed, timed_out, cancelled)"
            )
        })
    }
}

/// The statuses a run can finish in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalStatus {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl From<TerminalStatus> for RunStatus {
    fn from(t: TerminalStatus) -> Self {
        match t {
            TerminalStatus::Succeeded => RunStatus::Succeeded,
            TerminalStatus::Failed => RunStatus::Failed,
            TerminalStatus::TimedOut => RunStatus::TimedOut,
            TerminalStatus::Cancelled => RunStatus::Cancelled,
        }
    }
}

/// Why a run did not succeed, machine-readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The agent exited with a non-zero code.
    NonZeroExit,
    /// The agent ran past its timeout and was killed.
    Timeout,
    /// A client cancelled the run.
    Cancelled,
    /// The worker holding the run disappeared too many times.
    WorkerLost,
    /// The agent could not be started (missing binary, bad command line).
    SpawnFailed,
    /// The workspace could not be prepared (clone failed, bad branch).
    WorkspaceFailed,
    /// The agent's artifacts could not be stored.
    ArtifactUploadFailed,
    /// The run could not be queued after it was recorded.
    EnqueueFailed,
    /// The run names an agent this worker does not know.
    UnknownAgent,
    /// The agent reported a failure in its own output (e.g. its vendor refused the key), whatever
    /// its exit code; the agent's message is the run's `error`.
    AgentError,
    /// The agent printed nothing for its idle timeout and was stopped (status `timed_out`).
    Idle,
    /// The run went over its memory limit and was stopped (status `failed`, artifacts kept).
    MemoryLimit,
    /// The workspace and HOME grew past the run's disk limit; the agent was stopped.
    DiskLimit,
    /// The agent printed more than the run's output limit; the agent was stopped.
    OutputLimit,
    /// The run used up its CPU seconds; the agent was stopped.
    CpuLimit,
    /// The agent's sandbox could not be set up as its entry asks (a layer this machine lacks,
    /// or `sandbox = "none"` where it is refused); nothing was started.
    SandboxUnavailable,
    /// The entry's remote executor could not take the run: no ECS capacity, no SSM host online,
    /// or its task definition missing, after bounded retries; nothing was started.
    ExecutorUnavailable,
    /// The run's ECS task or SSM command ended without storing its `summary.json` (it failed to
    /// start, its host or container died); the executor's own account is in the notes.
    ExecutorLost,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::NonZeroExit => "non_zero_exit",
            FailureReason::Timeout => "timeout",
            FailureReason::Cancelled => "cancelled",
            FailureReason::WorkerLost => "worker_lost",
            FailureReason::SpawnFailed => "spawn_failed",
            FailureReason::WorkspaceFailed => "workspace_failed",
            FailureReason::ArtifactUploadFailed => "artifact_upload_failed",
            FailureReason::EnqueueFailed => "enqueue_failed",
            FailureReason::UnknownAgent => "unknown_agent",
            FailureReason::AgentError => "agent_error",
            FailureReason::Idle => "idle",
            FailureReason::MemoryLimit => "memory_limit",
            FailureReason::DiskLimit => "disk_limit",
            FailureReason::OutputLimit => "output_limit",
            FailureReason::CpuLimit => "cpu_limit",
            FailureReason::SandboxUnavailable => "sandbox_unavailable",
            FailureReason::ExecutorUnavailable => "executor_unavailable",
            FailureReason::ExecutorLost => "executor_lost",
        }
    }
}

impl FromStr for FailureReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("unknown failure reason {s:?}"))
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ended, as the worker reports it to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: TerminalStatus,
    pub exit_code: Option<i32>,
    pub reason: Option<FailureReason>,
    /// What the agent said of its run (empty when it said nothing readable).
    pub report: AgentReport,
}

impl Outcome {
    pub fn succeeded() -> Self {
        Self {
            status: TerminalStatus::Succeeded,
            exit_code: Some(0),
            reason: None,
            report: AgentReport::default(),
        }
    }

    pub fn failed(reason: FailureReason, exit_code: Option<i32>) -> Self {
        Self {
            status: TerminalStatus::Failed,
            exit_code,
            reason: Some(reason),
            report: AgentReport::default(),
        }
    }

    pub fn timed_out(exit_code: Option<i32>) -> Self {
        Self {
            status: TerminalStatus::TimedOut,
            exit_code,
            reason: Some(FailureReason::Timeout),
            report: AgentReport::default(),
        }
    }

    pub fn cancelled(exit_code: Option<i32>) -> Self {
        Self {
            status: TerminalStatus::Cancelled,
            exit_code,
            reason: Some(FailureReason::Cancelled),
            report: AgentReport::default(),
        }
    }

    /// A run stopped because the agent printed nothing for its idle timeout.
    pub fn idle(exit_code: Option<i32>) -> Self {
        Self {
            status: TerminalStatus::TimedOut,
            exit_code,
            reason: Some(FailureReason::Idle),
            report: AgentReport::default(),
        }
    }

    /// A failure with `reason` instead of this outcome, keeping its exit code and report.
    pub fn failed_as(self, reason: FailureReason) -> Self {
        Self::failed(reason, self.exit_code).with_report(self.report)
    }

    /// This outcome carrying the agent's report.
    pub fn with_report(mut self, report: AgentReport) -> Self {
        self.report = report;
        self
    }

    /// The outcome of an agent that exited by itself with `code`.
    pub fn from_exit_code(code: i32) -> Self {
        if code == 0 {
            Self::succeeded()
        } else {
            Self::failed(FailureReason::NonZeroExit, Some(code))
        }
    }
}

/// A git repository and branch the run's workspace starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepoSpec {
    /// `https://`, `ssh://`, `git@host:path` or `file://` URL.
    pub url: String,
    /// Branch to check out; the remote's default branch when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// One stored file of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Artifact {
    /// Path relative to the run, e.g. `output.log`, `files/report.md`.
    pub name: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
    pub content_type: String,
}

/// What a client asked for, validated, ready to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    pub id: RunId,
    pub tenant: TenantId,
    pub agent: String,
    pub task: String,
    pub repo: Option<RepoSpec>,
    pub timeout_secs: u32,
    /// Seconds without output before the agent is stopped; the agent's default when `None`.
    pub idle_timeout_secs: Option<u32>,
    pub created_at: DateTime<Utc>,
}

/// The record of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub tenant: TenantId,
    pub agent: String,
    pub task: String,
    pub repo: Option<RepoSpec>,
    pub timeout_secs: u32,
    /// Seconds without output before the agent is stopped; the agent's default when `None`.
    #[serde(default)]
    pub idle_timeout_secs: Option<u32>,
    pub status: RunStatus,
    /// How many times a worker has claimed the run.
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub failure_reason: Option<FailureReason>,
    pub artifacts: Vec<Artifact>,
    pub worker_id: Option<WorkerId>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
    /// What the agent said of its run (final answer, error, usage, session), capped; set when
    /// the run finishes.
    #[serde(default)]
    pub report: AgentReport,
    /// The run's ECS task or SSM command, once an attempt started one (see
    /// [`RemoteTask`](super::RemoteTask)); kept when the run ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<super::RemoteTask>,
}

impl Run {
    /// The record of a run that was just accepted.
    pub fn queued(new: NewRun) -> Self {
        Self {
            id: new.id,
            tenant: new.tenant,
            agent: new.agent,
            task: new.task,
            repo: new.repo,
            timeout_secs: new.timeout_secs,
            idle_timeout_secs: new.idle_timeout_secs,
            status: RunStatus::Queued,
            attempts: 0,
            created_at: new.created_at,
            started_at: None,
            finished_at: None,
            exit_code: None,
            failure_reason: None,
            artifacts: Vec::new(),
            worker_id: None,
            lease_expires_at: None,
            cancel_requested: false,
            report: AgentReport::default(),
            remote: None,
        }
    }

    /// Wall-clock duration from start to finish, when both are known.
    pub fn duration_ms(&self) -> Option<i64> {
        match (self.started_at, self.finished_at) {
            (Some(s), Some(f)) => Some((f - s).num_milliseconds()),
            _ => None,
        }
    }

    /// Whether another worker's lease on this run is still live at `now`.
    pub fn lease_live(&self, now: DateTime<Utc>) -> bool {
        self.status == RunStatus::Running && self.lease_expires_at.is_some_and(|t| t > now)
    }

    /// This run moved to `to`, if the state machine allows it; nothing else changes.
    pub fn moved(&self, to: RunStatus) -> Result<Run, TransitionError> {
        let status = self.status.transition(to)?;
        Ok(Run { status, ..self.clone() })
    }

    /// This run ended at `now` as `status` with `reason`, its lease released (the worker that
    /// held it, its attempts, exit code, artifacts and report are kept).
    pub fn ended(
        &self,
        status: TerminalStatus,
        reason: FailureReason,
        now: DateTime<Utc>,
    ) -> Result<Run, TransitionError> {
        let mut next = self.moved(status.into())?;
        next.failure_reason = Some(reason);
        next.finished_at = Some(now);
        next.lease_expires_at = None;
        Ok(next)
    }

    /// A new attempt of this run by `worker`, started at `now` and holding the lease until
    /// `lease_until`: `running`, one more attempt.
    pub fn start_attempt(
        &self,
        worker: &WorkerId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Run, TransitionError> {
        let mut next = self.moved(RunStatus::Running)?;
        next.attempts = self.attempts.saturating_add(1);
        next.worker_id = Some(worker.clone());
        next.started_at = Some(now);
        next.finished_at = None;
        next.lease_expires_at = Some(lease_until);
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunStatus::*;

    #[test]
    fn terminal_states_never_change() {
        for from in [Succeeded, Failed, TimedOut, Cancelled] {
            for to in RunStatus::ALL {
                assert!(from.transition(to).is_err(), "{from} -> {to} allowed");
            }
        }
    }

    #[test]
    fn legal_moves() {
        assert_eq!(Queued.transition(Running), Ok(Running));
        assert_eq!(Queued.transition(Cancelled), Ok(Cancelled));
        assert_eq!(Running.transition(Running), Ok(Running));
        for to in [Succeeded, Failed, TimedOut, Cancelled] {
            assert_eq!(Running.transition(to), Ok(to));
        }
        assert!(Queued.transition(Succeeded).is_err());
        assert!(Running.transition(Queued).is_err());
    }

    #[test]
    fn runs_move_only_through_the_state_machine() {
        let at = DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000).expect("time");
        let queued = Run::queued(NewRun {
            id: RunId::generate(),
            tenant: "acme".parse().expect("tenant"),
            agent: "fake".into(),
            task: "t".into(),
            repo: None,
            timeout_secs: 60,
            idle_timeout_secs: None,
            created_at: at,
        });
        let w = WorkerId("w".into());
        let lease = at + chrono::Duration::seconds(30);
        let running = queued.start_attempt(&w, at, lease).expect("queued -> running");
        assert_eq!(
            (
                running.status,
                running.attempts,
                running.worker_id.clone(),
                running.lease_expires_at
            ),
            (Running, 1, Some(w.clone()), Some(lease))
        );
        let failed = running
            .ended(TerminalStatus::Failed, FailureReason::WorkerLost, at)
            .expect("running -> failed");
        assert_eq!(
            (
                failed.status,
                failed.failure_reason,
                failed.finished_at,
                failed.lease_expires_at
            ),
            (Failed, Some(FailureReason::WorkerLost), Some(at), None)
        );
        assert_eq!(failed.worker_id, Some(w.clone()));
        assert!(failed.start_attempt(&w, at, lease).is_err());
        assert!(failed
            .ended(TerminalStatus::Cancelled, FailureReason::Cancelled, at)
            .is_err());
        assert_eq!(
            queued.moved(Succeeded),
            Err(TransitionError {
                from: Queued,
                to: Succeeded
            })
        );
    }

    #[test]
    fn statuses_parse_and_print() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>(), Ok(s));
            assert_eq!(serde_json::to_value(s).ok(), Some(serde_json::json!(s.as_str())));
        }
        assert!("done".parse::<RunStatus>().is_err());
    }

    #[test]
    fn failure_reasons_round_trip() {
        let r: FailureReason = "worker_lost".parse().expect("parses");
        assert_eq!(r, FailureReason::WorkerLost);
        assert_eq!(r.to_string(), "worker_lost");
    }

    #[test]
    fn exit_codes_map_to_outcomes() {
        assert_eq!(Outcome::from_exit_code(0).status, TerminalStatus::Succeeded);
        let o = Outcome::from_exit_code(3);
        assert_eq!(
            (o.status, o.exit_code, o.reason),
            (TerminalStatus::Failed, Some(3), Some(FailureReason::NonZeroExit))
        );
        let report = AgentReport {
            result: Some("done".into()),
            ..AgentReport::default()
        };
        let f = Outcome::succeeded()
            .with_report(report.clone())
            .failed_as(FailureReason::ArtifactUploadFailed);
        assert_eq!(
            (f.status, f.exit_code, f.reason, f.report),
            (
                TerminalStatus::Failed,
                Some(0),
                Some(FailureReason::ArtifactUploadFailed),
                report
            )
        );
    }
}
