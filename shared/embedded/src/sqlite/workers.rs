//! `WorkerRegistry` on SQLite: one row per worker process, refreshed by its reports. Its agent
//! loads are one JSON column (`agents`, schema version 4; NULL in older rows: no loads).

use super::db::{ms_to_time, DbError};
use super::SqliteStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outpost_core::domain::WorkerId;
use outpost_core::ports::runs::StoreError;
use outpost_core::ports::workers::{cap_agent_loads, AgentLoad, WorkerInfo, WorkerRegistry};
use rusqlite::params;

#[async_trait]
impl WorkerRegistry for SqliteStore {
    async fn report_worker(&self, info: &WorkerInfo) -> Result<(), StoreError> {
        let info = info.clone();
        let agents = serde_json::to_string(&cap_agent_loads(&info.agents)).map_err(DbError::from)?;
        self.db
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO workers (id, hostname, slots, busy, started_at, last_seen, agents) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                     ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, slots = excluded.slots, \
                     busy = excluded.busy, started_at = excluded.started_at, last_seen = excluded.last_seen, \
                     agents = excluded.agents",
                )?
                .execute(params![
                    info.id.as_str(),
                    info.hostname,
                    info.slots,
                    info.busy,
                    info.started_at.timestamp_millis(),
                    info.last_seen.timestamp_millis(),
                    agents,
                ])?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    async fn live_workers(&self, since: DateTime<Utc>) -> Result<Vec<WorkerInfo>, StoreError> {
        let since = since.timestamp_millis();
        Ok(self
            .db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, hostname, slots, busy, started_at, last_seen, agents FROM workers WHERE last_seen >= ?1 \
                     ORDER BY id",
                )?;
                let mut rows = stmt.query(params![since])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let agents: Option<String> = row.get(6)?;
                    out.push(WorkerInfo {
                        id: WorkerId(row.get(0)?),
                        hostname: row.get(1)?,
                        slots: row.get(2)?,
                        busy: row.get(3)?,
                        started_at: ms_to_time(row.get(4)?)?,
                        last_seen: ms_to_time(row.get(5)?)?,
                        agents: agents
                            .map(|a| serde_json::from_str::<Vec<AgentLoad>>(&a))
                            .transpose()?
                            .unwrap_or_default(),
                    });
                }
                Ok::<_, DbError>(out)
            })
            .await?)
    }

    async fn remove_worker(&self, id: &WorkerId) -> Result<(), StoreError> {
        let id = id.clone();
        self.db
            .write(move |c| {
                c.prepare_cached("DELETE FROM workers WHERE id = ?1")?
                    .execute(params![id.as_str()])?;
                Ok(())
            })
            .await?;
        Ok(())
    }
}
