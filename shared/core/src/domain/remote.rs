//! Where an agent runs: in the worker's own container or machine (`process`), in a per-run ECS
//! task (`ecs`) or on an EC2 host through SSM `SendCommand` (`ssm`), and what a run records of a
//! remote execution so that a later attempt adopts it instead of starting a second one.
//!
//! A remote execution runs the worker's agent entrypoint (`outpost-worker agent-run`): the same
//! prepare, sandbox and finalize as the process executor, with the artifacts written straight to
//! the run's prefix in object storage. The dispatching worker records the outcome from the
//! `summary.json` found there, never from what the task or command printed.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which executor runs an agent entry's runs (`executor = "…"` in the agents file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// A sandboxed process of the worker (the default; the only one of the embedded backend).
    #[default]
    Process,
    /// One ECS (Fargate) task per run, on the entry's task definition (AWS backend).
    Ecs,
    /// A command on an EC2 host with the SSM agent (AWS backend).
    Ssm,
}

impl ExecutorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Process => "process",
            ExecutorKind::Ecs => "ecs",
            ExecutorKind::Ssm => "ssm",
        }
    }

    /// Whether the agent runs somewhere else than the worker.
    pub fn is_remote(self) -> bool {
        self != ExecutorKind::Process
    }
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run's remote execution, recorded on the run as soon as it was started (one conditional
/// write by the lease holder): a later attempt of the run (its worker died or released it)
/// watches this one instead of starting another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RemoteTask {
    pub executor: ExecutorKind,
    /// The ECS task ARN, or the SSM command id.
    pub id: String,
    /// The EC2 instance of an SSM command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The attempt of the run that started it.
    pub attempt: u32,
}

impl RemoteTask {
    /// Longest id or host a store keeps (ECS task ARNs are well under this).
    pub const MAX_LEN: usize = 512;

    /// Checks the lengths a store relies on.
    pub fn check(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > Self::MAX_LEN {
            return Err(format!("a remote task id must be 1..={} bytes", Self::MAX_LEN));
        }
        if self
            .host
            .as_ref()
            .is_some_and(|h| h.is_empty() || h.len() > Self::MAX_LEN)
        {
            return Err(format!("a remote host must be 1..={} bytes", Self::MAX_LEN));
        }
        Ok(())
    }
}

/// How the agent entrypoint's process ends, so that an executor that sees only an exit code
/// (ECS's container exit code, SSM's `ResponseCode`) still knows how the run ended when its
/// `summary.json` is missing. `summary.json` is the record; this is the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntrypointExit {
    /// The run succeeded and its artifacts are stored.
    Succeeded = 0,
    /// The run failed (any reason) and its artifacts are stored.
    Failed = 10,
    /// The run timed out (deadline or idle) and its artifacts are stored.
    TimedOut = 11,
    /// The run was cancelled (the entrypoint got SIGTERM) and its artifacts are stored.
    Cancelled = 12,
    /// The entrypoint could not start the run (bad spec, spec not readable, no uploads): nothing
    /// is stored.
    BadSpec = 20,
    /// The entrypoint stopped without an outcome (abandoned): nothing is recorded.
    Abandoned = 21,
}

impl EntrypointExit {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The exit of `code`, if it is one of the entrypoint's.
    pub fn from_code(code: i32) -> Option<Self> {
        [
            Self::Succeeded,
            Self::Failed,
            Self::TimedOut,
            Self::Cancelled,
            Self::BadSpec,
            Self::Abandoned,
        ]
        .into_iter()
        .find(|e| e.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print_in_snake_case() {
        for k in [ExecutorKind::Process, ExecutorKind::Ecs, ExecutorKind::Ssm] {
            let json = serde_json::to_string(&k).expect("json");
            assert_eq!(json, format!("\"{k}\""));
            assert_eq!(serde_json::from_str::<ExecutorKind>(&json).expect("back"), k);
        }
        assert!(!ExecutorKind::Process.is_remote());
        assert!(ExecutorKind::Ecs.is_remote() && ExecutorKind::Ssm.is_remote());
        assert!(serde_json::from_str::<ExecutorKind>("\"docker\"").is_err());
    }

    #[test]
    fn remote_tasks_are_checked_and_round_trip() {
        let t = RemoteTask {
            executor: ExecutorKind::Ssm,
            id: "c0ffee".into(),
            host: Some("i-0123".into()),
            attempt: 2,
        };
        assert!(t.check().is_ok());
        let back: RemoteTask = serde_json::from_str(&serde_json::to_string(&t).expect("json")).expect("back");
        assert_eq!(back, t);
        let empty = RemoteTask {
            id: String::new(),
            ..t.clone()
        };
        assert!(empty.check().is_err());
        let long = RemoteTask {
            host: Some("h".repeat(RemoteTask::MAX_LEN + 1)),
            ..t
        };
        assert!(long.check().is_err());
    }

    #[test]
    fn entrypoint_exit_codes_are_distinct_and_parse_back() {
        let all = [
            EntrypointExit::Succeeded,
            EntrypointExit::Failed,
            EntrypointExit::TimedOut,
            EntrypointExit::Cancelled,
            EntrypointExit::BadSpec,
            EntrypointExit::Abandoned,
        ];
        for e in all {
            assert_eq!(EntrypointExit::from_code(e.code()), Some(e));
        }
        assert_eq!(EntrypointExit::from_code(1), None);
        assert_eq!(EntrypointExit::from_code(137), None);
    }
}
