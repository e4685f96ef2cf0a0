//! Remote executors (AWS only): a run whose agent entry says `executor = "ecs"` or `"ssm"` is
//! run by the agent entrypoint ([`entrypoint`], `outpost-worker agent-run`) in a per-run ECS task
//! or on an EC2 host, started and watched through a
//! [`RemoteLauncher`](outpost_core::ports::RemoteLauncher) (`outpost_aws::ecs`,
//! `outpost_aws::ssm_exec`). The entrypoint runs the same [`RunPipeline`](crate::RunPipeline)
//! as a worker (prepare, sandbox, finalize) with a write-only store of presigned POSTs; the
//! dispatching worker reads the outcome from the run's `summary.json`.

pub mod config;
mod dispatch;
pub mod entrypoint;
pub mod spec;

pub use config::{dispatcher, launchers, RemoteConfigError};
pub use dispatch::{DispatchConfig, DispatchProbe, Dispatcher};
