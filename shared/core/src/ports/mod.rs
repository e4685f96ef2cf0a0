//! Ports: the traits every backend implements (embedded: SQLite + folder; AWS: DynamoDB, SQS, S3,
//! SSM Parameter Store).
//!
//! The semantics are written down here once, and the contract suite (`outpost_testkit::contract`,
//! run by each adapter crate's `tests/contract.rs`) checks every adapter against them.

pub mod artifacts;
pub mod keys;
pub mod launcher;
pub mod queue;
pub mod runs;
pub mod secrets;
pub mod workers;

pub use artifacts::{ArtifactBody, ArtifactError, ArtifactStore, LogChunk, RunKey};
pub use keys::{ApiKeyStore, CreatedKey, KeyError};
pub use launcher::{ActiveExecution, Availability, EndHow, LaunchError, LaunchRequest, RemoteEnd, RemoteLauncher};
pub use queue::{Delivery, QueueDepth, QueueError, Receipt, TaskMessage, TaskQueue};
pub use runs::{ClaimOutcome, Cursor, HeartbeatOutcome, Page, RunFilter, RunStore, StoreError};
pub use secrets::{SecretError, SecretInfo, SecretName, SecretStore};
pub use workers::{WorkerInfo, WorkerRegistry};

/// A boxed error from a backend (SQLite, an AWS SDK call, the file system).
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

use std::sync::Arc;

/// One deployment's set of adapters, as the API and the worker use them.
#[derive(Clone)]
pub struct Backend {
    pub runs: Arc<dyn RunStore>,
    pub queue: Arc<dyn TaskQueue>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub keys: Arc<dyn ApiKeyStore>,
    pub workers: Arc<dyn WorkerRegistry>,
    pub secrets: Arc<dyn SecretStore>,
}
