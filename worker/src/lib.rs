//! Outpost's worker: receives run messages, claims runs under a lease, keeps the lease alive with
//! heartbeats, prepares each run's workspace, has an [`Executor`] run the agent (a local process
//! group for now), stores the run's artifacts, then records the outcome and acknowledges the
//! message. [`pipeline`] shows one run's whole flow, top to bottom.
//!
//! Layout: [`config`] (settings), [`pool`] (the [`Worker`] and its receive loop), [`pipeline`]
//! (one run: claim → prepare → run the agent → finalize → finish → ack; [`pipeline::finalize`]
//! stores the artifacts), [`lease`] (claim, heartbeats, finish, release), [`dead_letters`] (the
//! DLQ drain), [`presence`] (fleet reports), [`executor`] (the `Executor` trait: start, supervise,
//! stop; and the process executor), [`workspace`] (run folders and git), [`dirpool`] (reused
//! empty run trees), [`output`] (the output pump), [`scrub`] (secret scrubbing),
//! [`tenant_secrets`] (tenants' BYOK keys for their agents), [`agent_output`] (the agent's own
//! report, read from its output), [`identity`] (the user agents run as) and [`artifacts`]
//! (collection and upload).

pub mod agent_output;
pub mod artifacts;
pub mod config;
pub mod dead_letters;
pub mod dirpool;
pub mod egress;
pub mod error;
pub mod executor;
pub mod identity;
pub mod lease;
pub mod output;
pub mod pipeline;
pub mod pool;
pub mod presence;
#[cfg(feature = "aws")]
pub mod remote;
pub mod sandbox;
pub mod scrub;
pub mod tenant_secrets;
#[cfg(test)]
mod testing;
pub mod workspace;

pub use config::WorkerConfig;
pub use error::WorkerError;
pub use executor::{AgentExit, AgentJob, Ended, Executor, ProcessConfig, ProcessExecutor, Stop, StopSignal};
pub use pipeline::{Execution, PipelineConfig, RunPipeline};
pub use pool::Worker;
