//! WorkerRegistry: workers report their slots so `GET /v1/fleet` can show the fleet.

use super::runs::StoreError;
use crate::domain::WorkerId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// One worker process as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub id: WorkerId,
    pub hostname: String,
    pub slots: u32,
    pub busy: u32,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

#[async_trait]
pub trait WorkerRegistry: Send + Sync + 'static {
    /// Records (or refreshes) a worker's report.
    async fn report_worker(&self, info: &WorkerInfo) -> Result<(), StoreError>;

    /// Workers seen since `since`.
    async fn live_workers(&self, since: DateTime<Utc>) -> Result<Vec<WorkerInfo>, StoreError>;

    /// Removes a worker that is shutting down cleanly.
    async fn remove_worker(&self, id: &WorkerId) -> Result<(), StoreError>;
}
