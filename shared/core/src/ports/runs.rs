//! RunStore: the durable record of runs. Every state change is a conditional write so that two
//! workers, or a worker and a cancelling client, can never both win.

use super::BackendError;
use crate::domain::{Artifact, NewRun, Outcome, Run, RunId, RunStatus, TenantId, WorkerId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// What went wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such run (for this tenant).
    #[error("run not found")]
    NotFound,
    /// A run with this id already exists (create is idempotent only for the same content).
    #[error("run {0} already exists")]
    AlreadyExists(RunId),
    /// The caller does not hold the run's lease any more (another worker took it, or it finished).
    #[error("lease on run {0} is not held by this worker")]
    LeaseLost(RunId),
    /// The run is in a state that does not allow this change.
    #[error("run {id} is {status}: {message}")]
    Conflict {
        id: RunId,
        status: RunStatus,
        message: String,
    },
    /// A list cursor that this store did not hand out.
    #[error("invalid cursor")]
    BadCursor,
    #[error("store backend error: {0}")]
    Backend(#[source] BackendError),
}

/// Filters of `GET /v1/runs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub agent: Option<String>,
}

/// An opaque position in a listing, handed back to get the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(pub String);

/// One page of a newest-first listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Present when more items may follow.
    pub next: Option<Cursor>,
}

/// The result of trying to claim a delivered run.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// This worker now holds the run (status `running`, attempts incremented, lease set).
    Claimed(Run),
    /// The run already ended; the delivery is a duplicate and can be deleted.
    AlreadyFinished(Run),
    /// Another worker holds a live lease until `lease_expires_at`; leave the message to come back
    /// after then (it is a duplicate while that worker lives, a recovery if it dies).
    HeldElsewhere { lease_expires_at: DateTime<Utc> },
    /// The run was claimed `max_attempts` times already and its last worker was lost: the store
    /// has marked it `failed` with reason `worker_lost`.
    Exhausted(Run),
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    pub cancel_requested: bool,
    pub lease_expires_at: DateTime<Utc>,
}

/// `Conflict` unless `remote` passes [`RemoteTask::check`](crate::domain::RemoteTask::check):
/// what every store's [`RunStore::set_remote`] does first.
pub fn check_remote(id: &RunId, remote: &crate::domain::RemoteTask) -> Result<(), StoreError> {
    remote.check().map_err(|message| StoreError::Conflict {
        id: id.clone(),
        status: RunStatus::Running,
        message,
    })
}

/// The durable record of runs.
#[async_trait]
pub trait RunStore: Send + Sync + 'static {
    /// Records a new run as `queued`. Fails with `AlreadyExists` if the id is taken.
    async fn create(&self, run: NewRun) -> Result<Run, StoreError>;

    /// A run of `tenant`, or `None` (also when it belongs to another tenant).
    async fn get(&self, tenant: &TenantId, id: &RunId) -> Result<Option<Run>, StoreError>;

    /// A run by id alone, for workers.
    async fn get_by_id(&self, id: &RunId) -> Result<Option<Run>, StoreError>;

    /// The tenant's runs, newest first, `limit` at most (1..=100), from `cursor` on.
    async fn list(
        &self,
        tenant: &TenantId,
        filter: &RunFilter,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Run>, StoreError>;

    /// Claims a delivered run for `worker` with a lease of `lease`. Succeeds from `queued`, or from
    /// `running` whose lease has expired (a new attempt after a lost worker) while
    /// `attempts < max_attempts`. See [`ClaimOutcome`] for the rest. A queued run with
    /// `cancel_requested` is not claimable: it is already `cancelled` (`AlreadyFinished`).
    /// Stores decide with the one claim rule, [`decide_claim`](crate::domain::decide_claim), and
    /// write its decision conditionally on the run they read.
    async fn claim(
        &self,
        id: &RunId,
        worker: &WorkerId,
        lease: Duration,
        max_attempts: u32,
    ) -> Result<ClaimOutcome, StoreError>;

    /// Extends the lease of a run `worker` holds and reports whether a cancel was requested.
    /// `LeaseLost` if the worker no longer holds it.
    async fn heartbeat(&self, id: &RunId, worker: &WorkerId, lease: Duration) -> Result<HeartbeatOutcome, StoreError>;

    /// Ends `worker`'s lease on a run it holds, now, so that the next delivery of the run's
    /// message may claim it at once (a new attempt) instead of waiting for the lease to run out.
    /// The run stays `running`, with its worker and attempts, until then. This is how a worker
    /// gives back a run it will not carry out; it is the same write as a heartbeat with a lease of
    /// zero, and costs one write. `LeaseLost` if the worker does not hold the run (another worker
    /// claimed it, it is not running, or there is no such run); nothing changes then.
    async fn release(&self, id: &RunId, worker: &WorkerId) -> Result<(), StoreError>;

    /// Writes the final state of a run `worker` holds, with its artifact manifest. `LeaseLost` if
    /// the worker no longer holds it; a run already terminal is never changed.
    async fn finish(
        &self,
        id: &RunId,
        worker: &WorkerId,
        outcome: Outcome,
        artifacts: Vec<Artifact>,
    ) -> Result<Run, StoreError>;

    /// Records the remote execution (ECS task, SSM command) the lease holder `worker` started
    /// for the run, so that a later attempt adopts it instead of starting another. `LeaseLost`
    /// if `worker` does not hold the run (nothing changes then); `Conflict` if `remote` is not
    /// valid ([`RemoteTask::check`](crate::domain::RemoteTask::check)). One conditional write;
    /// every later change of the run (heartbeat, release, a new claim, finish) keeps it.
    async fn set_remote(
        &self,
        id: &RunId,
        worker: &WorkerId,
        remote: &crate::domain::RemoteTask,
    ) -> Result<(), StoreError>;

    /// A client's cancel: a queued run becomes `cancelled` at once; a running run gets its cancel
    /// flag set (the worker stops it at its next heartbeat); a terminal run is returned unchanged.
    async fn request_cancel(&self, tenant: &TenantId, id: &RunId) -> Result<Run, StoreError>;

    /// Marks a run that is not yet terminal as `failed` with `reason` (dead-lettered message, or a
    /// run that could not be queued). Returns the run as it is afterwards. Terminal runs, and
    /// `running` runs whose lease is still live (their worker holds another copy of the message),
    /// are returned unchanged.
    async fn fail_unfinished(&self, id: &RunId, reason: crate::domain::FailureReason) -> Result<Run, StoreError>;

    /// How many runs are `running` now (all tenants).
    async fn count_running(&self) -> Result<u64, StoreError>;
}
