//! `RunStore` on SQLite: one row per run. Every state change reads the row, lets the domain's
//! state machine ([`RunStatus::transition`]) decide the next state (for `claim`, the domain's
//! claim rule, [`decide_claim`]), and writes it back as a compare-and-set, all in one atomic
//! write on the single writer (so two workers, or two processes, can never both win).
//!
//! Choices the trait leaves open:
//! - `started_at` is the start of the latest attempt, so `duration_ms` measures the attempt that
//!   produced the outcome.
//! - A `running` run whose lease expired while a cancel was requested is not started again:
//!   `claim` and `fail_unfinished` see it as lost and `claim` records it `cancelled`.
//! - `heartbeat` and `finish` succeed for the lease owner even just after its lease expired, as
//!   long as no other worker has claimed the run since (so also after `release`).
//! - `release` is the heartbeat's one `UPDATE` with a lease ending now.
//! - Timestamps are kept to the millisecond; the `Run` returned by `create` is already truncated,
//!   so it equals what `get` returns later.
//! - List cursors are the hex of the last id returned.
//! - The run's remote task is one JSON column (NULL: none), written by `set_remote` and kept by
//!   every later change.
//! - The agent's report is one JSON column, NULL when the agent reported nothing; `finish` stores
//!   it capped ([`AgentReport::capped`]).

use super::db::{duration_ms, ms_to_time, now_ms, DbError};
use super::SqliteStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outpost_core::domain::{
    decide_claim, AgentReport, Artifact, ClaimDecision, FailureReason, NewRun, Outcome, RemoteTask, RepoSpec, Run,
    RunId, RunStatus, TenantId, TerminalStatus, TransitionError, WorkerId,
};
use outpost_core::ports::runs::{
    check_remote, ClaimOutcome, Cursor, HeartbeatOutcome, Page, RunFilter, RunStore, StoreError,
};
use rusqlite::types::ToSql;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::time::Duration;

/// The columns of a run, in the order [`decode_run`] reads them.
const RUN_COLUMNS: &str = "id, tenant, agent, task, repo, timeout_secs, status, attempts, created_at, started_at, \
     finished_at, exit_code, failure_reason, artifacts, worker_id, lease_expires_at, cancel_requested, \
     idle_timeout_secs, report, remote";

/// Largest page `list` returns.
const MAX_PAGE: u32 = 100;

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

fn time_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn opt_time_ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(time_ms)
}

/// A date truncated to the millisecond, as stored.
fn truncate_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> DbError {
    DbError::Corrupt(format!("{what}: {e}"))
}

/// Reads one row selected with [`RUN_COLUMNS`].
fn decode_run(row: &Row<'_>) -> Result<Run, DbError> {
    let id: String = row.get(0)?;
    let tenant: String = row.get(1)?;
    let repo: Option<String> = row.get(4)?;
    let status: String = row.get(6)?;
    let failure_reason: Option<String> = row.get(12)?;
    let artifacts: String = row.get(13)?;
    let worker_id: Option<String> = row.get(14)?;
    let report: Option<String> = row.get(18)?;
    let remote: Option<String> = row.get(19)?;
    let opt_time = |i: usize| -> Result<Option<DateTime<Utc>>, DbError> {
        row.get::<_, Option<i64>>(i)?.map(ms_to_time).transpose()
    };
    Ok(Run {
        id: id.parse().map_err(|e| corrupt("run id", e))?,
        tenant: tenant.parse().map_err(|e| corrupt("tenant", e))?,
        agent: row.get(2)?,
        task: row.get(3)?,
        repo: repo.map(|r| serde_json::from_str::<RepoSpec>(&r)).transpose()?,
        timeout_secs: row.get(5)?,
        status: status.parse().map_err(|e| corrupt("status", e))?,
        attempts: row.get(7)?,
        created_at: ms_to_time(row.get(8)?)?,
        started_at: opt_time(9)?,
        finished_at: opt_time(10)?,
        exit_code: row.get(11)?,
        failure_reason: failure_reason
            .map(|r| r.parse::<FailureReason>())
            .transpose()
            .map_err(|e| corrupt("failure reason", e))?,
        artifacts: serde_json::from_str::<Vec<Artifact>>(&artifacts)?,
        worker_id: worker_id.map(WorkerId),
        lease_expires_at: opt_time(15)?,
        cancel_requested: row.get(16)?,
        idle_timeout_secs: row.get(17)?,
        report: report
            .map(|r| serde_json::from_str::<AgentReport>(&r))
            .transpose()?
            .unwrap_or_default(),
        remote: remote.map(|r| serde_json::from_str(&r)).transpose()?,
    })
}

/// The run with `id` (and `tenant`, when given).
fn select_run(conn: &Connection, id: &RunId, tenant: Option<&TenantId>) -> Result<Option<Run>, DbError> {
    let mut stmt = match tenant {
        Some(_) => conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1 AND tenant = ?2"))?,
        None => conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?,
    };
    let mut rows = match tenant {
        Some(t) => stmt.query(params![id.as_str(), t.as_str()])?,
        None => stmt.query(params![id.as_str()])?,
    };
    rows.next()?.map(decode_run).transpose()
}

/// Writes the mutable fields of `next` if the stored row still matches `prev` (compare-and-set
/// on status, attempts and worker). Inside a write transaction nothing else can have changed it,
/// so a mismatch means a bug or a foreign writer; it is reported as a conflict.
fn update_run(conn: &Connection, prev: &Run, next: &Run) -> Result<Result<(), StoreError>, DbError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE runs SET status = ?2, attempts = ?3, started_at = ?4, finished_at = ?5, exit_code = ?6, \
         failure_reason = ?7, artifacts = ?8, worker_id = ?9, lease_expires_at = ?10, cancel_requested = ?11, \
         report = ?15, remote = ?16 \
         WHERE id = ?1 AND status = ?12 AND attempts = ?13 AND worker_id IS ?14",
    )?;
    let changed = stmt.execute(params![
        next.id.as_str(),
        next.status.as_str(),
        next.attempts,
        opt_time_ms(next.started_at),
        opt_time_ms(next.finished_at),
        next.exit_code,
        next.failure_reason.map(FailureReason::as_str),
        serde_json::to_string(&next.artifacts)?,
        next.worker_id.as_ref().map(WorkerId::as_str),
        opt_time_ms(next.lease_expires_at),
        next.cancel_requested,
        prev.status.as_str(),
        prev.attempts,
        prev.worker_id.as_ref().map(WorkerId::as_str),
        next.report.to_stored_json()?,
        next.remote.as_ref().map(serde_json::to_string).transpose()?,
    ])?;
    if changed == 1 {
        Ok(Ok(()))
    } else {
        Ok(Err(StoreError::Conflict {
            id: prev.id.clone(),
            status: prev.status,
            message: "the run changed underneath this write".into(),
        }))
    }
}

/// The conflict of a move the state machine refused.
fn illegal(run: &Run, e: TransitionError) -> StoreError {
    StoreError::Conflict {
        id: run.id.clone(),
        status: run.status,
        message: e.to_string(),
    }
}

/// Applies `next` over `prev` and hands back `outcome(next)`, or the conflict.
fn commit_change<T>(
    conn: &Connection,
    prev: &Run,
    next: Result<Run, StoreError>,
    outcome: impl FnOnce(Run) -> T,
) -> Result<Result<T, StoreError>, DbError> {
    let next = match next {
        Ok(n) => n,
        Err(e) => return Ok(Err(e)),
    };
    Ok(update_run(conn, prev, &next)?.map(|()| outcome(next)))
}

/// Reads the run, lets the claim rule ([`decide_claim`]) decide, and writes its decision.
fn claim_tx(
    conn: &Connection,
    id: &RunId,
    worker: &WorkerId,
    lease: Duration,
    max_attempts: u32,
) -> Result<Result<ClaimOutcome, StoreError>, DbError> {
    let Some(run) = select_run(conn, id, None)? else {
        return Ok(Err(StoreError::NotFound));
    };
    let now = ms_to_time(now_ms())?;
    let decision = match decide_claim(&run, worker, now, lease, max_attempts) {
        Ok(d) => d,
        Err(e) => return Ok(Err(illegal(&run, e))),
    };
    match decision {
        ClaimDecision::AlreadyFinished => Ok(Ok(ClaimOutcome::AlreadyFinished(run))),
        ClaimDecision::HeldElsewhere { lease_expires_at } => Ok(Ok(ClaimOutcome::HeldElsewhere { lease_expires_at })),
        ClaimDecision::Cancel { next } => commit_change(conn, &run, Ok(next), ClaimOutcome::AlreadyFinished),
        ClaimDecision::Exhaust { next } => {
            tracing::warn!(run_id = %run.id, attempts = run.attempts, "run lost its worker too often; failing it");
            commit_change(conn, &run, Ok(next), ClaimOutcome::Exhausted)
        }
        ClaimDecision::Start { next } => {
            if run.status == RunStatus::Running {
                tracing::info!(run_id = %run.id, attempt = run.attempts + 1, "lease expired; starting a new attempt");
            }
            commit_change(conn, &run, Ok(next), ClaimOutcome::Claimed)
        }
    }
}

fn finish_tx(
    conn: &Connection,
    id: &RunId,
    worker: &WorkerId,
    outcome: Outcome,
    artifacts: Vec<Artifact>,
) -> Result<Result<Run, StoreError>, DbError> {
    let Some(run) = select_run(conn, id, None)? else {
        return Ok(Err(StoreError::NotFound));
    };
    if run.status != RunStatus::Running || run.worker_id.as_ref() != Some(worker) {
        return Ok(Err(StoreError::LeaseLost(run.id)));
    }
    let next = run
        .moved(outcome.status.into())
        .map_err(|e| illegal(&run, e))
        .and_then(|mut next| {
            next.exit_code = outcome.exit_code;
            next.failure_reason = outcome.reason;
            next.artifacts = artifacts;
            next.report = outcome.report.capped();
            next.finished_at = Some(ms_to_time(now_ms()).map_err(StoreError::from)?);
            next.lease_expires_at = None;
            Ok(next)
        });
    commit_change(conn, &run, next, |r| r)
}

fn set_remote_tx(
    conn: &Connection,
    id: &RunId,
    worker: &WorkerId,
    remote: RemoteTask,
) -> Result<Result<(), StoreError>, DbError> {
    let Some(run) = select_run(conn, id, None)? else {
        return Ok(Err(StoreError::LeaseLost(id.clone())));
    };
    if run.status != RunStatus::Running || run.worker_id.as_ref() != Some(worker) {
        return Ok(Err(StoreError::LeaseLost(run.id)));
    }
    let next = Run {
        remote: Some(remote),
        ..run.clone()
    };
    commit_change(conn, &run, Ok(next), |_| ())
}

fn cancel_tx(conn: &Connection, tenant: &TenantId, id: &RunId) -> Result<Result<Run, StoreError>, DbError> {
    let Some(run) = select_run(conn, id, Some(tenant))? else {
        return Ok(Err(StoreError::NotFound));
    };
    match run.status {
        RunStatus::Queued => {
            let next = run
                .ended(
                    TerminalStatus::Cancelled,
                    FailureReason::Cancelled,
                    ms_to_time(now_ms())?,
                )
                .map(|mut n| {
                    n.cancel_requested = true;
                    n
                })
                .map_err(|e| illegal(&run, e));
            commit_change(conn, &run, next, |r| r)
        }
        RunStatus::Running if !run.cancel_requested => {
            let next = Run {
                cancel_requested: true,
                ..run.clone()
            };
            commit_change(conn, &run, Ok(next), |r| r)
        }
        _ => Ok(Ok(run)),
    }
}

fn fail_unfinished_tx(
    conn: &Connection,
    id: &RunId,
    reason: FailureReason,
) -> Result<Result<Run, StoreError>, DbError> {
    let Some(run) = select_run(conn, id, None)? else {
        return Ok(Err(StoreError::NotFound));
    };
    let now = ms_to_time(now_ms())?;
    if run.status.is_terminal() || run.lease_live(now) {
        return Ok(Ok(run));
    }
    tracing::warn!(run_id = %run.id, %reason, "failing an unfinished run");
    let next = run
        .ended(TerminalStatus::Failed, reason, now)
        .map_err(|e| illegal(&run, e));
    commit_change(conn, &run, next, |r| r)
}

/// The cursor after `id`.
fn encode_cursor(id: &RunId) -> Cursor {
    Cursor(hex::encode(id.as_str()))
}

pub(super) fn decode_cursor(cursor: &Cursor) -> Result<RunId, StoreError> {
    let bytes = hex::decode(&cursor.0).map_err(|_| StoreError::BadCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::BadCursor)?;
    text.parse().map_err(|_| StoreError::BadCursor)
}

/// The listing query for a combination of filters (each variant is prepared once and cached).
pub(super) fn list_sql(status: bool, agent: bool, before: bool) -> String {
    let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE tenant = :tenant");
    if status {
        sql.push_str(" AND status = :status");
    }
    if agent {
        sql.push_str(" AND agent = :agent");
    }
    if before {
        sql.push_str(" AND id < :before");
    }
    sql.push_str(" ORDER BY id DESC LIMIT :limit");
    sql
}

fn list_tx(
    conn: &Connection,
    tenant: &TenantId,
    filter: &RunFilter,
    limit: u32,
    before: Option<&RunId>,
) -> Result<Page<Run>, DbError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let tenant = tenant.as_str();
    let status = filter.status.map(RunStatus::as_str);
    let before = before.map(RunId::as_str);
    // One more than asked, to know whether another page follows.
    let fetch = i64::from(limit) + 1;
    let mut args: Vec<(&str, &dyn ToSql)> = vec![(":tenant", &tenant), (":limit", &fetch)];
    if let Some(s) = &status {
        args.push((":status", s));
    }
    if let Some(a) = &filter.agent {
        args.push((":agent", a));
    }
    if let Some(b) = &before {
        args.push((":before", b));
    }
    let sql = list_sql(status.is_some(), filter.agent.is_some(), before.is_some());
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(args.as_slice())?;
    let mut items = Vec::with_capacity(limit as usize + 1);
    while let Some(row) = rows.next()? {
        items.push(decode_run(row)?);
    }
    let next = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|r| encode_cursor(&r.id))
    } else {
        None
    };
    Ok(Page { items, next })
}

impl SqliteStore {
    /// Sets the lease of a run `worker` holds to end `lease` from now (`heartbeat`, and `release`
    /// with zero), in one `UPDATE … RETURNING`; `LeaseLost` if it does not hold the run.
    async fn set_lease(&self, id: &RunId, worker: &WorkerId, lease: Duration) -> Result<HeartbeatOutcome, StoreError> {
        let (id_owned, worker) = (id.clone(), worker.clone());
        let expires_ms = now_ms().saturating_add(duration_ms(lease));
        let cancel: Option<bool> = self
            .db
            .write(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "UPDATE runs SET lease_expires_at = ?3 \
                     WHERE id = ?1 AND status = 'running' AND worker_id = ?2 RETURNING cancel_requested",
                )?;
                Ok(stmt
                    .query_row(params![id_owned.as_str(), worker.as_str(), expires_ms], |row| {
                        row.get(0)
                    })
                    .optional()?)
            })
            .await?;
        match cancel {
            Some(cancel_requested) => Ok(HeartbeatOutcome {
                cancel_requested,
                lease_expires_at: ms_to_time(expires_ms)?,
            }),
            None => Err(StoreError::LeaseLost(id.clone())),
        }
    }
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn create(&self, new: NewRun) -> Result<Run, StoreError> {
        let run = Run::queued(NewRun {
            created_at: truncate_ms(new.created_at),
            ..new
        });
        let repo = run
            .repo
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(DbError::from)?;
        let inserted = run.clone();
        let changed = self
            .db
            .write(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "INSERT INTO runs ({RUN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, \
                     '[]', NULL, NULL, 0, ?14, NULL, NULL) ON CONFLICT (id) DO NOTHING"
                ))?;
                Ok(stmt.execute(params![
                    inserted.id.as_str(),
                    inserted.tenant.as_str(),
                    inserted.agent,
                    inserted.task,
                    repo,
                    inserted.timeout_secs,
                    inserted.status.as_str(),
                    inserted.attempts,
                    time_ms(inserted.created_at),
                    Option::<i64>::None,
                    Option::<i64>::None,
                    Option::<i32>::None,
                    Option::<&str>::None,
                    inserted.idle_timeout_secs,
                ])?)
            })
            .await?;
        if changed == 0 {
            return Err(StoreError::AlreadyExists(run.id));
        }
        Ok(run)
    }

    async fn get(&self, tenant: &TenantId, id: &RunId) -> Result<Option<Run>, StoreError> {
        let (tenant, id) = (tenant.clone(), id.clone());
        Ok(self.db.read(move |c| select_run(c, &id, Some(&tenant))).await?)
    }

    async fn get_by_id(&self, id: &RunId) -> Result<Option<Run>, StoreError> {
        let id = id.clone();
        Ok(self.db.read(move |c| select_run(c, &id, None)).await?)
    }

    async fn list(
        &self,
        tenant: &TenantId,
        filter: &RunFilter,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Run>, StoreError> {
        let before = cursor.map(decode_cursor).transpose()?;
        let (tenant, filter) = (tenant.clone(), filter.clone());
        Ok(self
            .db
            .read(move |c| list_tx(c, &tenant, &filter, limit, before.as_ref()))
            .await?)
    }

    async fn claim(
        &self,
        id: &RunId,
        worker: &WorkerId,
        lease: Duration,
        max_attempts: u32,
    ) -> Result<ClaimOutcome, StoreError> {
        let (id, worker) = (id.clone(), worker.clone());
        self.db
            .write(move |tx| claim_tx(tx, &id, &worker, lease, max_attempts))
            .await?
    }

    async fn heartbeat(&self, id: &RunId, worker: &WorkerId, lease: Duration) -> Result<HeartbeatOutcome, StoreError> {
        self.set_lease(id, worker, lease).await
    }

    async fn release(&self, id: &RunId, worker: &WorkerId) -> Result<(), StoreError> {
        self.set_lease(id, worker, Duration::ZERO).await.map(|_| ())
    }

    async fn finish(
        &self,
        id: &RunId,
        worker: &WorkerId,
        outcome: Outcome,
        artifacts: Vec<Artifact>,
    ) -> Result<Run, StoreError> {
        let (id, worker) = (id.clone(), worker.clone());
        self.db
            .write(move |tx| finish_tx(tx, &id, &worker, outcome, artifacts))
            .await?
    }

    async fn set_remote(&self, id: &RunId, worker: &WorkerId, remote: &RemoteTask) -> Result<(), StoreError> {
        check_remote(id, remote)?;
        let (id, worker, remote) = (id.clone(), worker.clone(), remote.clone());
        self.db.write(move |tx| set_remote_tx(tx, &id, &worker, remote)).await?
    }

    async fn request_cancel(&self, tenant: &TenantId, id: &RunId) -> Result<Run, StoreError> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.db.write(move |tx| cancel_tx(tx, &tenant, &id)).await?
    }

    async fn fail_unfinished(&self, id: &RunId, reason: FailureReason) -> Result<Run, StoreError> {
        let id = id.clone();
        self.db.write(move |tx| fail_unfinished_tx(tx, &id, reason)).await?
    }

    async fn count_running(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .db
            .read(|c| {
                Ok(c.prepare_cached("SELECT COUNT(*) FROM runs WHERE status = 'running'")?
                    .query_row([], |row| row.get(0))?)
            })
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
