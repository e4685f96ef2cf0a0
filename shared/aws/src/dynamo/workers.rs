//! `WorkerRegistry` on DynamoDB: one item per worker process (`worker#<id>`), replaced by each
//! report, listed through the `fleet` index by `last_seen`. TTL removes the items of workers that
//! died without saying so, a day after their last report.

use super::expr::Placeholders;
use super::item::{attr, format_time, s, worker_from_item, worker_item, worker_pk, Item, FLEET_MARKER};
use super::{DynamoStore, FLEET_INDEX};
use crate::sdk_error;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outpost_core::domain::WorkerId;
use outpost_core::ports::{StoreError, WorkerInfo, WorkerRegistry};

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(sdk_error(e))
}

#[async_trait]
impl WorkerRegistry for DynamoStore {
    async fn report_worker(&self, info: &WorkerInfo) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(worker_item(info)))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn live_workers(&self, since: DateTime<Utc>) -> Result<Vec<WorkerInfo>, StoreError> {
        let mut workers = Vec::new();
        let mut start_key: Option<Item> = None;
        loop {
            let mut p = Placeholders::default();
            let key_condition = format!(
                "{} = {} AND {} >= {}",
                p.name(attr::FLEET),
                p.value("fleet", s(FLEET_MARKER)),
                p.name(attr::LAST_SEEN),
                p.value("since", s(format_time(since)))
            );
            let (names, values) = p.into_maps();
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(FLEET_INDEX)
                .key_condition_expression(key_condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(backend)?;
            for item in out.items() {
                workers.push(worker_from_item(item)?);
            }
            match out.last_evaluated_key() {
                Some(next) if !next.is_empty() => start_key = Some(next.clone()),
                _ => break,
            }
        }
        workers.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        Ok(workers)
    }

    async fn remove_worker(&self, id: &WorkerId) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(attr::PK, s(worker_pk(id)))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}
