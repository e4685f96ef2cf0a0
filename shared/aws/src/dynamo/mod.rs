//! `RunStore`, `ApiKeyStore` and `WorkerRegistry` on one DynamoDB table.
//!
//! # Table design
//!
//! One table, partition key `pk` (S) only, billing `PAY_PER_REQUEST`, TTL on `expires_at`.
//!
//! | Item    | `pk`             | Other attributes                                                                 |
//! |---------|------------------|----------------------------------------------------------------------------------|
//! | Run     | `run_<ULID>`     | `tenant_id` S, `agent` S, `task` S, `repo` M {`url` S, `branch` S?}, `timeout_secs` N, `status` S, `attempts` N, `created_at` S, `started_at` S?, `finished_at` S?, `exit_code` N?, `failure_reason` S?, `artifacts` L of M {`name` S, `size` N, `sha256` S, `content_type` S}, `worker_id` S?, `lease_expires_at` S?, `lease_expires_ms` N?, `cancel_requested` BOOL, `running` S? (`"1"` while `status = running`, removed otherwise), `expires_at` N? (TTL, set when terminal: `finished_at` + 30 days) |
//! | API key | `key#<sha256>`   | `key_tenant` S, `display_prefix` S, `created_at` S, `revoked_at` S? (a revoked key does not authenticate) |
//! | Tenant  | `tenant#<slug>`  | `created_at` S (written with the tenant's first key, so `tenant_has_keys` is one GetItem) |
//! | Worker  | `worker#<id>`    | `worker_id` S, `hostname` S, `slots` N, `busy` N, `started_at` S, `last_seen` S, `fleet` S (always `"workers"`), `expires_at` N (TTL: `last_seen` + 1 day) |
//!
//! | Global secondary index | Hash key        | Range key       | Projection | Holds                                       |
//! |------------------------|-----------------|-----------------|------------|---------------------------------------------|
//! | `by_tenant`            | `tenant_id` (S) | `pk` (S)        | ALL        | runs only (keys use `key_tenant`)           |
//! | `running`              | `running` (S)   | —               | KEYS_ONLY  | runs while `running` (sparse)               |
//! | `fleet`                | `fleet` (S)     | `last_seen` (S) | ALL        | workers only                                |
//!
//! `by_tenant` sorts on the run id, not on `created_at`: run ids are ULIDs (creation time to the
//! millisecond, then randomness), so the id order is the creation order the listing promises, it
//! is unique (a `created_at` range key ties on runs created in the same millisecond, which makes a
//! cursor ambiguous), and it is the order the other backends list in even when runs are recorded
//! out of order.
//!
//! Times are UTC RFC 3339 strings with milliseconds (`2024-05-01T12:00:00.000Z`): fixed width, so
//! string order is time order. The lease expiry is also kept as epoch milliseconds
//! (`lease_expires_ms`) so that conditions can compare it with the caller's clock.
//!
//! # Requests per operation
//!
//! Every state change is one conditional `UpdateItem` (`ReturnValues=ALL_NEW`,
//! `ReturnValuesOnConditionCheckFailure=ALL_OLD`). When its condition fails, the item as it was is
//! in the error, so deciding why costs no extra read; a second write happens only when that
//! decision is itself a change (a claim that ends an exhausted or cancelled run, a cancel of a
//! queued run). Reads are `GetItem` with `ConsistentRead`; listings are `Query` on an index, never
//! `Scan`.

mod expr;
mod item;
mod keys;
mod runs;
mod workers;

pub use item::{RUN_RETENTION, WORKER_RETENTION};

use super::{sdk_error, AwsSetupError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use item::attr;
use std::time::{Duration, Instant};

/// The index of runs by tenant, newest first by run id.
pub const BY_TENANT_INDEX: &str = "by_tenant";
/// The sparse index of running runs.
pub const RUNNING_INDEX: &str = "running";
/// The index of worker reports by last report time.
pub const FLEET_INDEX: &str = "fleet";

/// How long `create_table` waits for a new table to become `ACTIVE`.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

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

fn setup_error(what: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> AwsSetupError {
    AwsSetupError::Call {
        what: what.into(),
        source: sdk_error(source),
    }
}

/// The table's attribute definitions, key and indexes, as `create_table` sends them.
struct TableShape {
    definitions: Vec<AttributeDefinition>,
    table_key: Vec<KeySchemaElement>,
    indexes: Vec<GlobalSecondaryIndex>,
}

fn table_shape() -> Result<TableShape, aws_sdk_dynamodb::error::BuildError> {
    let string_attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let key = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
    };
    let index = |name: &str, keys: Vec<KeySchemaElement>, projection: ProjectionType| {
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .set_key_schema(Some(keys))
            .projection(Projection::builder().projection_type(projection).build())
            .build()
    };
    let definitions = vec![
        string_attr(attr::PK)?,
        string_attr(attr::TENANT_ID)?,
        string_attr(attr::RUNNING)?,
        string_attr(attr::FLEET)?,
        string_attr(attr::LAST_SEEN)?,
    ];
    let table_key = vec![key(attr::PK, KeyType::Hash)?];
    let indexes = vec![
        index(
            BY_TENANT_INDEX,
            vec![key(attr::TENANT_ID, KeyType::Hash)?, key(attr::PK, KeyType::Range)?],
            ProjectionType::All,
        )?,
        index(
            RUNNING_INDEX,
            vec![key(attr::RUNNING, KeyType::Hash)?],
            ProjectionType::KeysOnly,
        )?,
        index(
            FLEET_INDEX,
            vec![key(attr::FLEET, KeyType::Hash)?, key(attr::LAST_SEEN, KeyType::Range)?],
            ProjectionType::All,
        )?,
    ];
    Ok(TableShape {
        definitions,
        table_key,
        indexes,
    })
}

/// Creates the table with its indexes and TTL (for tests, emulators and `outpost aws provision`).
/// A table that already exists is accepted as it is; the call returns once it is `ACTIVE` with
/// TTL on `expires_at`.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), AwsSetupError> {
    let shape = table_shape().map_err(|e| setup_error(format!("describing table {table}"), e))?;
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(shape.definitions))
        .set_key_schema(Some(shape.table_key))
        .set_global_secondary_indexes(Some(shape.indexes))
        .send()
        .await;
    match created {
        Ok(out) => {
            let status = out.table_description().and_then(|d| d.table_status().cloned());
            tracing::info!(table, ?status, "DynamoDB table created");
            if status != Some(TableStatus::Active) {
                wait_until_active(client, table).await?;
            }
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {
            tracing::info!(table, "DynamoDB table already exists");
            wait_until_active(client, table).await?;
        }
        Err(e) => return Err(setup_error(format!("creating table {table}"), e)),
    }
    enable_ttl(client, table).await
}

/// Polls `DescribeTable` until the table is `ACTIVE`.
async fn wait_until_active(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), AwsSetupError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| setup_error(format!("describing table {table}"), e))?;
        let status = out.table().and_then(|t| t.table_status().cloned());
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        if start.elapsed() > TABLE_ACTIVE_TIMEOUT {
            return Err(AwsSetupError::Call {
                what: format!("waiting for table {table}"),
                source: format!("still {status:?} after {TABLE_ACTIVE_TIMEOUT:?}").into(),
            });
        }
        tracing::debug!(table, ?status, "waiting for the DynamoDB table to become ACTIVE");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Turns TTL on for `expires_at`, unless it is on (or being turned on) already.
async fn enable_ttl(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), AwsSetupError> {
    let current = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| setup_error(format!("reading the TTL of table {table}"), e))?;
    let ttl = current.time_to_live_description();
    let status = ttl.and_then(|d| d.time_to_live_status());
    let on = matches!(status, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling));
    if on && ttl.and_then(|d| d.attribute_name()) == Some(attr::EXPIRES_AT) {
        return Ok(());
    }
    let spec = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(attr::EXPIRES_AT)
        .build()
        .map_err(|e| setup_error(format!("describing the TTL of table {table}"), e))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await
        .map_err(|e| setup_error(format!("enabling TTL on table {table}"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shape_builds_and_defines_every_key_attribute() {
        let TableShape {
            definitions,
            table_key,
            indexes,
        } = table_shape().expect("shape");
        assert_eq!(table_key.len(), 1);
        let defined: Vec<&str> = definitions.iter().map(|d| d.attribute_name()).collect();
        for index in &indexes {
            for key in index.key_schema() {
                assert!(
                    defined.contains(&key.attribute_name()),
                    "{} undefined",
                    key.attribute_name()
                );
            }
        }
        assert_eq!(defined.len(), 5, "every definition is used by a key");
    }
}
