//! Outpost's worker: receives run messages, claims runs under a lease, keeps the lease alive with
//! heartbeats, runs the agent through an [`Executor`] (a local process group for now), stores the
//! run's artifacts, then records the outcome and acknowledges the message.
//!
//! Layout: [`config`] (settings), [`pool`] (the [`Worker`] and its receive loop), [`lease`] (claim
//! handling and heartbeats of one delivery), [`dead_letters`] (the DLQ drain), [`presence`]
//! (fleet reports), [`executor`] (the `Executor` trait and the process executor), [`workspace`]
//! (run folders and git), [`dirpool`] (reused empty run trees), [`output`] (the output pump), [`scrub`] (secret scrubbing), [`tenant_secrets`] (tenants' BYOK keys for their agents) and
//! [`artifacts`] (collection and upload).

pub mod agent_output;
pub mod artifacts;
pub mod config;
pub mod dead_letters;
pub mod dirpool;
pub mod error;
pub mod executor;
pub mod identity;
pub mod lease;
pub mod output;
pub mod pool;
pub mod presence;
pub mod scrub;
pub mod tenant_secrets;
pub mod workspace;

pub use config::WorkerConfig;
pub use error::WorkerError;
pub use executor::{Execution, Executor, ProcessConfig, ProcessExecutor, Stop, StopSignal};
pub use pool::Worker;
