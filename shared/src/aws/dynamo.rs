//! RunStore, ApiKeyStore and WorkerRegistry on one DynamoDB table (skeleton: being written).

use super::AwsSetupError;
use crate::domain::{Artifact, FailureReason, NewRun, Outcome, Run, RunId, TenantId, WorkerId};
use crate::ports::{
    ApiKeyStore, ClaimOutcome, CreatedKey, Cursor, HeartbeatOutcome, KeyError, Page, RunFilter, RunStore, StoreError,
    WorkerInfo, WorkerRegistry,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Runs, keys and workers in the DynamoDB table `table`.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        Self { client, table }
    }
}

/// Creates the table with its indexes and TTL (for tests, emulators and `outpost aws provision`).
pub async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), AwsSetupError> {
    let _ = (client, table);
    Err(AwsSetupError::MissingSetting("dynamo::create_table is not written yet"))
}

fn pending() -> StoreError {
    StoreError::Backend("DynamoStore is not written yet".into())
}

#[async_trait]
impl RunStore for DynamoStore {
    async fn create(&self, _run: NewRun) -> Result<Run, StoreError> {
        Err(pending())
    }
    async fn get(&self, _tenant: &TenantId, _id: &RunId) -> Result<Option<Run>, StoreError> {
        Err(pending())
    }
    async fn get_by_id(&self, _id: &RunId) -> Result<Option<Run>, StoreError> {
        Err(pending())
    }
    async fn list(
        &self,
        _tenant: &TenantId,
        _filter: &RunFilter,
        _limit: u32,
        _cursor: Option<&Cursor>,
    ) -> Result<Page<Run>, StoreError> {
        Err(pending())
    }
    async fn claim(
        &self,
        _id: &RunId,
        _worker: &WorkerId,
        _lease: Duration,
        _max_attempts: u32,
    ) -> Result<ClaimOutcome, StoreError> {
        Err(pending())
    }
    async fn heartbeat(&self, _id: &RunId, _worker: &WorkerId, _lease: Duration) -> Result<HeartbeatOutcome, StoreError> {
        Err(pending())
    }
    async fn finish(
        &self,
        _id: &RunId,
        _worker: &WorkerId,
        _outcome: Outcome,
        _artifacts: Vec<Artifact>,
    ) -> Result<Run, StoreError> {
        Err(pending())
    }
    async fn request_cancel(&self, _tenant: &TenantId, _id: &RunId) -> Result<Run, StoreError> {
        Err(pending())
    }
    async fn fail_unfinished(&self, _id: &RunId, _reason: FailureReason) -> Result<Run, StoreError> {
        Err(pending())
    }
    async fn count_running(&self) -> Result<u64, StoreError> {
        Err(pending())
    }
}

#[async_trait]
impl ApiKeyStore for DynamoStore {
    async fn insert_key(&self, _key: &CreatedKey) -> Result<(), KeyError> {
        Err(KeyError::Backend("DynamoStore is not written yet".into()))
    }
    async fn tenant_for_key_hash(&self, _hash: &str) -> Result<Option<TenantId>, KeyError> {
        Err(KeyError::Backend("DynamoStore is not written yet".into()))
    }
    async fn tenant_has_keys(&self, _tenant: &TenantId) -> Result<bool, KeyError> {
        Err(KeyError::Backend("DynamoStore is not written yet".into()))
    }
}

#[async_trait]
impl WorkerRegistry for DynamoStore {
    async fn report_worker(&self, _info: &WorkerInfo) -> Result<(), StoreError> {
        Err(pending())
    }
    async fn live_workers(&self, _since: DateTime<Utc>) -> Result<Vec<WorkerInfo>, StoreError> {
        Err(pending())
    }
    async fn remove_worker(&self, _id: &WorkerId) -> Result<(), StoreError> {
        Err(pending())
    }
}
