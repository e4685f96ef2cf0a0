//! `RunStore` on DynamoDB: one item per run, every state change one conditional `UpdateItem`.
//!
//! Each write states, as its condition, the states it may start from (the legal moves of
//! [`RunStatus::transition`], checked before the write is sent), and asks for the item as it was
//! when the condition fails (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), so the reason for a
//! refusal is read from the refusal itself. Writes that follow such a decision are conditional
//! too; if the run changed in between, the whole operation starts again (a few rounds at most).
//!
//! `claim` first sends the claim rule's ([`decide_claim`]) one common decision, *start an
//! attempt*, as one conditional `UpdateItem` whose condition is that decision's precondition
//! (not cancelled, and queued or running with an expired lease and attempts left): the usual
//! claim of a fresh run costs that one request. When it is refused, the refusal hands back the
//! run as it is, the rule decides on that (finished, held elsewhere, cancel, exhausted, or start
//! after all), and its decision is written as one `UpdateItem` of the attributes that change,
//! conditional on the item still holding what the rule looked at (status, attempts, worker,
//! lease end, cancel flag); a refusal of that write hands back the run again, and the rule
//! decides again (a few rounds at most). No claim reads before it writes.
//!
//! Choices the trait leaves open, as in the SQLite store:
//! - `started_at` is the start of the latest attempt.
//! - A `running` run whose lease expired while a cancel was requested is not started again:
//!   `claim` records it `cancelled` (`AlreadyFinished`).
//! - `heartbeat` and `finish` succeed for the lease owner even just after its lease expired, as
//!   long as no other worker has claimed the run since (so also after `release`).
//! - `release` is the heartbeat's one `UpdateItem` with a lease ending now.
//! - Times are kept to the millisecond; the `Run` returned by `create` is already truncated.
//! - Lease expiry is judged by the caller's clock (`claim`'s rule is given `now`; `fail_unfinished`
//!   sends it in its condition).
//! - `request_cancel` first tries to flag a running run (one write); a queued run takes a second
//!   write that cancels it.
//! - List cursors are base64url JSON of the tenant and the last run id returned.
//! - The agent's report is one string attribute (JSON), absent when the agent reported nothing;
//!   `finish` sets it, capped ([`AgentReport::capped`](outpost_core::domain::AgentReport::capped)), in
//!   its one `UpdateItem`.

use super::expr::{Placeholders, UpdateExpression};
use super::item::{
    artifacts_value, attr, expiry, n, now_ms, plus, remote_value, report_value, run_from_item, run_item, s, time,
    time_ms, truncate_ms, Item, RUNNING_MARKER, RUN_RETENTION,
};
use super::{DynamoStore, BY_TENANT_INDEX, RUNNING_INDEX};
use crate::sdk_error;
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure, Select};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use outpost_core::domain::{
    decide_claim, Artifact, ClaimDecision, FailureReason, NewRun, Outcome, RemoteTask, Run, RunId, RunStatus, TenantId,
    TransitionError, WorkerId,
};
use outpost_core::ports::runs::check_remote;
use outpost_core::ports::{ClaimOutcome, Cursor, HeartbeatOutcome, Page, RunFilter, RunStore, StoreError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Largest page `list` returns.
const MAX_PAGE: u32 = 100;
/// Items a filtered listing evaluates per `Query` (the filter applies after the limit).
const FILTERED_QUERY_BATCH: u32 = 200;
/// How many times an operation starts again when the run changed under it.
const MAX_ROUNDS: usize = 4;

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(sdk_error(e))
}

fn changed_too_often(run: &Run) -> StoreError {
    StoreError::Conflict {
        id: run.id.clone(),
        status: run.status,
        message: "the run kept changing during this write; try again".into(),
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

/// Fails with a conflict unless every move `from → to` is legal.
fn check_moves(id: &RunId, from: &[RunStatus], to: RunStatus) -> Result<(), StoreError> {
    for &status in from {
        status.transition(to).map_err(|e| StoreError::Conflict {
            id: id.clone(),
            status,
            message: e.to_string(),
        })?;
    }
    Ok(())
}

/// How a conditional update ended.
#[derive(Debug)]
enum Write {
    /// Written; the run as it is now.
    Done(Run),
    /// The condition failed; the run as it was (`None`: no such run).
    Refused(Option<Run>),
}

/// A listing position: the tenant and the last run id handed out.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct CursorPosition {
    #[serde(rename = "t")]
    tenant: String,
    #[serde(rename = "r")]
    after: String,
}

fn encode_cursor(last: &Run) -> Cursor {
    let position = CursorPosition {
        tenant: last.tenant.as_str().to_owned(),
        after: last.id.as_str().to_owned(),
    };
    // Serialising two strings cannot fail; an empty cursor would be refused on the way back.
    let json = serde_json::to_vec(&position).unwrap_or_default();
    Cursor(URL_SAFE_NO_PAD.encode(json))
}

/// The run id a cursor of `tenant` continues after.
fn decode_cursor(cursor: &Cursor, tenant: &TenantId) -> Result<RunId, StoreError> {
    let json = URL_SAFE_NO_PAD.decode(&cursor.0).map_err(|_| StoreError::BadCursor)?;
    let position: CursorPosition = serde_json::from_slice(&json).map_err(|_| StoreError::BadCursor)?;
    if position.tenant != tenant.as_str() {
        return Err(StoreError::BadCursor);
    }
    position.after.parse().map_err(|_| StoreError::BadCursor)
}

/// `(lease_expires_ms <= now OR no lease)`: nobody holds a running run.
fn lease_expired(p: &mut Placeholders, now: DateTime<Utc>) -> String {
    let lease = p.name(attr::LEASE_EXPIRES_MS);
    let now = p.value("now_ms", time_ms(now));
    format!("({lease} <= {now} OR attribute_not_exists({lease}))")
}

/// `status = value`.
fn status_is(p: &mut Placeholders, status: RunStatus) -> String {
    let name = p.name(attr::STATUS);
    let value = p.value(status.as_str(), s(status.as_str()));
    format!("{name} = {value}")
}

/// `(queued OR running with an expired lease)`: a run no worker holds.
fn unheld(p: &mut Placeholders, now: DateTime<Utc>) -> String {
    let queued = status_is(p, RunStatus::Queued);
    let running = status_is(p, RunStatus::Running);
    let expired = lease_expired(p, now);
    format!("({queued} OR ({running} AND {expired}))")
}

/// `status = running AND worker_id = worker`: a run `worker` holds (its lease may have run out,
/// as long as nobody claimed the run since).
fn held_by(p: &mut Placeholders, worker: &WorkerId) -> String {
    let running = status_is(p, RunStatus::Running);
    let owner = p.name(attr::WORKER_ID);
    let worker = p.value("worker", s(worker.as_str()));
    format!("{running} AND {owner} = {worker}")
}

/// `cancel_requested = value`.
fn cancel_is(p: &mut Placeholders, value: bool) -> String {
    let name = p.name(attr::CANCEL_REQUESTED);
    let value = p.value(if value { "true" } else { "false" }, AttributeValue::Bool(value));
    format!("{name} = {value}")
}

/// The clauses of a run ending now as `to`: finished, lease released, out of the running index,
/// TTL set.
fn ended(u: &mut UpdateExpression, p: &mut Placeholders, to: RunStatus, now: DateTime<Utc>) {
    u.set(p, attr::STATUS, s(to.as_str()));
    u.set(p, attr::FINISHED_AT, time(now));
    u.set(p, attr::EXPIRES_AT, expiry(now, RUN_RETENTION));
    u.remove(p, attr::LEASE_EXPIRES_AT);
    u.remove(p, attr::LEASE_EXPIRES_MS);
    u.remove(p, attr::RUNNING);
}

/// The clauses that turn the item of `prev` into the item of `next` ([`run_item`], with its
/// markers and TTL): `SET` of every attribute that differs, `REMOVE` of those `next` lacks, in
/// attribute-name order.
fn changes(u: &mut UpdateExpression, p: &mut Placeholders, prev: &Run, next: &Run) {
    let (before, after) = (run_item(prev), run_item(next));
    let mut names: Vec<&String> = before.keys().chain(after.keys()).filter(|n| *n != attr::PK).collect();
    names.sort();
    names.dedup();
    for name in names {
        match (before.get(name), after.get(name)) {
            (old, Some(new)) if old != Some(new) => u.set(p, name, new.clone()),
            (Some(_), None) => u.remove(p, name),
            _ => {}
        }
    }
}

/// The item still holds what the claim rule looked at in `prev`: its status, attempts, worker,
/// lease end and cancel flag.
fn unchanged(p: &mut Placeholders, prev: &Run) -> String {
    let status = format!(
        "{} = {}",
        p.name(attr::STATUS),
        p.value("was_status", s(prev.status.as_str()))
    );
    let attempts = format!(
        "{} = {}",
        p.name(attr::ATTEMPTS),
        p.value("was_attempts", n(prev.attempts))
    );
    let cancel = format!(
        "{} = {}",
        p.name(attr::CANCEL_REQUESTED),
        p.value("was_cancel", AttributeValue::Bool(prev.cancel_requested))
    );
    let worker = match &prev.worker_id {
        Some(w) => format!("{} = {}", p.name(attr::WORKER_ID), p.value("was_worker", s(w.as_str()))),
        None => format!("attribute_not_exists({})", p.name(attr::WORKER_ID)),
    };
    let lease = match prev.lease_expires_at {
        Some(t) => format!(
            "{} = {}",
            p.name(attr::LEASE_EXPIRES_MS),
            p.value("was_lease_ms", time_ms(t))
        ),
        None => format!("attribute_not_exists({})", p.name(attr::LEASE_EXPIRES_MS)),
    };
    format!("{status} AND {attempts} AND {cancel} AND {worker} AND {lease}")
}

impl DynamoStore {
    /// One conditional `UpdateItem` of the run `id`.
    async fn update_run(
        &self,
        id: &RunId,
        update: &UpdateExpression,
        condition: String,
        placeholders: Placeholders,
    ) -> Result<Write, StoreError> {
        let (names, values) = placeholders.into_maps();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, s(id.as_str()))
            .update_expression(update.render())
            .condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes().ok_or_else(|| {
                    StoreError::Backend(format!("UpdateItem of run {id} returned no attributes").into())
                })?;
                Ok(Write::Done(run_from_item(item)?))
            }
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(refusal)) => {
                    Ok(Write::Refused(refusal.item().map(run_from_item).transpose()?))
                }
                _ => Err(backend(e)),
            },
        }
    }

    /// Writes `next` over the run `prev` as one `UpdateItem` of the attributes that change, if
    /// the item still holds `prev` as far as the claim rule looks ([`unchanged`]).
    async fn replace_run(&self, prev: &Run, next: &Run) -> Result<Write, StoreError> {
        let (mut p, mut u) = (Placeholders::default(), UpdateExpression::default());
        changes(&mut u, &mut p, prev, next);
        let condition = unchanged(&mut p, prev);
        self.update_run(&prev.id, &u, condition, p).await
    }

    /// The claim rule's `Start` decision as one conditional write: `worker` starts an attempt of
    /// a run that is not cancelled and is queued, or running with an expired lease and attempts
    /// left — exactly the states in which [`decide_claim`] answers `Start` (its unit tests pin
    /// them) — with the attempt count raised in the write itself. Refused otherwise, with the
    /// run as it is.
    async fn try_start_attempt(
        &self,
        id: &RunId,
        worker: &WorkerId,
        lease: Duration,
        max_attempts: u32,
    ) -> Result<Write, StoreError> {
        check_moves(id, &[RunStatus::Queued, RunStatus::Running], RunStatus::Running)?;
        let now = now_ms();
        let lease_end = truncate_ms(plus(now, lease));
        let (mut p, mut u) = (Placeholders::default(), UpdateExpression::default());
        u.set(&mut p, attr::STATUS, s(RunStatus::Running.as_str()));
        let attempts = p.name(attr::ATTEMPTS);
        let one = p.value("one", n(1));
        u.set_clause(format!("{attempts} = {attempts} + {one}"));
        u.set(&mut p, attr::WORKER_ID, s(worker.as_str()));
        u.set(&mut p, attr::STARTED_AT, time(now));
        u.set(&mut p, attr::LEASE_EXPIRES_AT, time(lease_end));
        u.set(&mut p, attr::LEASE_EXPIRES_MS, time_ms(lease_end));
        u.set(&mut p, attr::RUNNING, s(RUNNING_MARKER));
        u.remove(&mut p, attr::FINISHED_AT);
        let not_cancelled = cancel_is(&mut p, false);
        let queued = status_is(&mut p, RunStatus::Queued);
        let running = status_is(&mut p, RunStatus::Running);
        let expired = lease_expired(&mut p, now);
        let max = p.value("max_attempts", n(max_attempts));
        let condition = format!("{not_cancelled} AND ({queued} OR ({running} AND {expired} AND {attempts} < {max}))");
        self.update_run(id, &u, condition, p).await
    }

    /// Sets the lease of a run `worker` holds to end `lease` from now (`heartbeat`, and `release`
    /// with zero); `LeaseLost` if it does not hold the run.
    async fn set_lease(&self, id: &RunId, worker: &WorkerId, lease: Duration) -> Result<HeartbeatOutcome, StoreError> {
        let lease_end = truncate_ms(plus(now_ms(), lease));
        let (mut p, mut u) = (Placeholders::default(), UpdateExpression::default());
        u.set(&mut p, attr::LEASE_EXPIRES_AT, time(lease_end));
        u.set(&mut p, attr::LEASE_EXPIRES_MS, time_ms(lease_end));
        let condition = held_by(&mut p, worker);
        match self.update_run(id, &u, condition, p).await? {
            Write::Done(run) => Ok(HeartbeatOutcome {
                cancel_requested: run.cancel_requested,
                lease_expires_at: lease_end,
            }),
            Write::Refused(_) => Err(StoreError::LeaseLost(id.clone())),
        }
    }

    /// Ends a run nobody holds as `to` with `reason`.
    async fn end_unheld(
        &self,
        id: &RunId,
        to: RunStatus,
        reason: FailureReason,
        now: DateTime<Utc>,
    ) -> Result<Write, StoreError> {
        check_moves(id, &[RunStatus::Queued, RunStatus::Running], to)?;
        let (mut p, mut u) = (Placeholders::default(), UpdateExpression::default());
        ended(&mut u, &mut p, to, now);
        u.set(&mut p, attr::FAILURE_REASON, s(reason.as_str()));
        let condition = unheld(&mut p, now);
        self.update_run(id, &u, condition, p).await
    }

    /// The run `id`, read consistently.
    async fn read_run(&self, id: &RunId) -> Result<Option<Run>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(id.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        out.item().map(run_from_item).transpose().map_err(Into::into)
    }
}

#[async_trait]
impl RunStore for DynamoStore {
    async fn create(&self, new: NewRun) -> Result<Run, StoreError> {
        let run = Run::queued(NewRun {
            created_at: truncate_ms(new.created_at),
            ..new
        });
        let mut p = Placeholders::default();
        let condition = format!("attribute_not_exists({})", p.name(attr::PK));
        let (names, _) = p.into_maps();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(run_item(&run)))
            .condition_expression(condition)
            .set_expression_attribute_names(names)
            .send()
            .await;
        match result {
            Ok(_) => Ok(run),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => Err(StoreError::AlreadyExists(run.id)),
                _ => Err(backend(e)),
            },
        }
    }

    async fn get(&self, tenant: &TenantId, id: &RunId) -> Result<Option<Run>, StoreError> {
        Ok(self.read_run(id).await?.filter(|run| &run.tenant == tenant))
    }

    async fn get_by_id(&self, id: &RunId) -> Result<Option<Run>, StoreError> {
        self.read_run(id).await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        filter: &RunFilter,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Run>, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        let after = cursor.map(|c| decode_cursor(c, tenant)).transpose()?;
        let mut start_key: Option<Item> = after.map(|id| {
            Item::from([
                (attr::PK.to_owned(), s(id.as_str())),
                (attr::TENANT_ID.to_owned(), s(tenant.as_str())),
            ])
        });
        let filtered = filter.status.is_some() || filter.agent.is_some();
        // One more than asked, to know whether another page follows.
        let mut runs: Vec<Run> = Vec::with_capacity(limit + 1);
        loop {
            let wanted = u32::try_from(limit + 1 - runs.len()).unwrap_or(MAX_PAGE + 1);
            let batch = if filtered {
                wanted.max(FILTERED_QUERY_BATCH)
            } else {
                wanted
            };
            let mut p = Placeholders::default();
            let key_condition = format!(
                "{} = {}",
                p.name(attr::TENANT_ID),
                p.value("tenant", s(tenant.as_str()))
            );
            let mut filters = Vec::new();
            if let Some(status) = filter.status {
                filters.push(status_is(&mut p, status));
            }
            if let Some(agent) = &filter.agent {
                filters.push(format!("{} = {}", p.name(attr::AGENT), p.value("agent", s(agent))));
            }
            let (names, values) = p.into_maps();
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_TENANT_INDEX)
                .key_condition_expression(key_condition)
                .set_filter_expression((!filters.is_empty()).then(|| filters.join(" AND ")))
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .scan_index_forward(false)
                .limit(i32::try_from(batch).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(backend)?;
            for item in out.items() {
                runs.push(run_from_item(item)?);
                if runs.len() > limit {
                    break;
                }
            }
            match out.last_evaluated_key() {
                Some(next) if runs.len() <= limit && !next.is_empty() => start_key = Some(next.clone()),
                _ => break,
            }
        }
        let next = if runs.len() > limit {
            runs.truncate(limit);
            runs.last().map(encode_cursor)
        } else {
            None
        };
        Ok(Page { items: runs, next })
    }

    async fn claim(
        &self,
        id: &RunId,
        worker: &WorkerId,
        lease: Duration,
        max_attempts: u32,
    ) -> Result<ClaimOutcome, StoreError> {
        let mut stored = match self.try_start_attempt(id, worker, lease, max_attempts).await? {
            Write::Done(run) => {
                if run.attempts > 1 {
                    tracing::info!(run_id = %run.id, attempt = run.attempts, "lease expired; started a new attempt");
                }
                return Ok(ClaimOutcome::Claimed(run));
            }
            Write::Refused(None) => return Err(StoreError::NotFound),
            Write::Refused(Some(run)) => run,
        };
        for _ in 0..MAX_ROUNDS {
            let now = now_ms();
            let decision = decide_claim(&stored, worker, now, lease, max_attempts).map_err(|e| illegal(&stored, e))?;
            let (next, answer): (Run, fn(Run) -> ClaimOutcome) = match decision {
                ClaimDecision::AlreadyFinished => return Ok(ClaimOutcome::AlreadyFinished(stored)),
                ClaimDecision::HeldElsewhere { lease_expires_at } => {
                    return Ok(ClaimOutcome::HeldElsewhere { lease_expires_at })
                }
                ClaimDecision::Cancel { next } => (next, ClaimOutcome::AlreadyFinished),
                ClaimDecision::Exhaust { next } => (next, ClaimOutcome::Exhausted),
                ClaimDecision::Start { next } => (next, ClaimOutcome::Claimed),
            };
            match self.replace_run(&stored, &next).await? {
                Write::Done(run) => {
                    let outcome = answer(run);
                    match &outcome {
                        ClaimOutcome::Claimed(run) if run.attempts > 1 => {
                            tracing::info!(run_id = %run.id, attempt = run.attempts, "lease expired; started a new attempt");
                        }
                        ClaimOutcome::Exhausted(failed) => {
                            let attempts = failed.attempts;
                            tracing::warn!(run_id = %failed.id, attempts, "run lost its worker too often; failed it");
                        }
                        _ => {}
                    }
                    return Ok(outcome);
                }
                Write::Refused(None) => return Err(StoreError::NotFound),
                Write::Refused(Some(run)) => {
                    tracing::debug!(run_id = %id, "run changed during a claim; trying again");
                    stored = run;
                }
            }
        }
        Err(changed_too_often(&stored))
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
        let to = RunStatus::from(outcome.status);
        check_moves(id, &[RunStatus::Running], to)?;
        let (mut p, mut u) = (Placeholders::default(), UpdateExpression::default());
        ended(&mut u, &mut p, to, now_ms());
        u.set_or_remove(&mut p, attr::EXIT_CODE, outcome.exit_code.map(n));
        u.set_or_remove(&mut p, attr::FAILURE_REASON, outcome.reason.map(|r| s(r.as_str())));
        u.set(&mut p, attr::ARTIFACTS, artifacts_value(&artifacts));
        u.set_or_remove(&mut p, attr::REPORT, report_value(&outcome.report.capped()));
        let condition = held_by(&mut p, worker);
        match self.update_run(id, &u, condition, p).await? {
            Write::Done(run) => Ok(run),
            Write::Refused(None) => Err(StoreError::NotFound),
            Write::Refused(Some(_)) => Err(StoreError::LeaseLost(id.clone())),
        }
    }

    async fn set_remote(&self, id: &RunId, worker: &WorkerId, remote: &RemoteTask) -> Result<(), StoreError> {
        check_remote(id, remote)?;
        let value = remote_value(remote)
            .ok_or_else(|| StoreError::Backend(format!("cannot serialise the remote task of run {id}").into()))?;
        let (mut p, mut u) = (Placeholders::default(), UpdateExpression::default());
        u.set(&mut p, attr::REMOTE, value);
        let condition = held_by(&mut p, worker);
        match self.update_run(id, &u, condition, p).await? {
            Write::Done(_) => Ok(()),
            Write::Refused(_) => Err(StoreError::LeaseLost(id.clone())),
        }
    }

    async fn request_cancel(&self, tenant: &TenantId, id: &RunId) -> Result<Run, StoreError> {
        let tenant_is = |p: &mut Placeholders| {
            format!(
                "{} = {}",
                p.name(attr::TENANT_ID),
                p.value("tenant", s(tenant.as_str()))
            )
        };
        let mut last_seen = None;
        for _ in 0..MAX_ROUNDS {
            // A running run gets its flag.
            let (mut p, mut u) = (Placeholders::default(), UpdateExpression::default());
            u.set(&mut p, attr::CANCEL_REQUESTED, AttributeValue::Bool(true));
            let condition = format!(
                "{} AND {} AND {}",
                tenant_is(&mut p),
                status_is(&mut p, RunStatus::Running),
                cancel_is(&mut p, false)
            );
            let run = match self.update_run(id, &u, condition, p).await? {
                Write::Done(run) => {
                    tracing::info!(run_id = %run.id, "cancel requested of a running run");
                    return Ok(run);
                }
                Write::Refused(Some(run)) if &run.tenant == tenant => run,
                Write::Refused(_) => return Err(StoreError::NotFound),
            };
            if run.status != RunStatus::Queued {
                // Already flagged, or terminal: unchanged.
                return Ok(run);
            }
            // A queued run is cancelled at once.
            check_moves(id, &[RunStatus::Queued], RunStatus::Cancelled)?;
            let now = now_ms();
            let (mut p, mut u) = (Placeholders::default(), UpdateExpression::default());
            ended(&mut u, &mut p, RunStatus::Cancelled, now);
            u.set(&mut p, attr::FAILURE_REASON, s(FailureReason::Cancelled.as_str()));
            u.set(&mut p, attr::CANCEL_REQUESTED, AttributeValue::Bool(true));
            let condition = format!("{} AND {}", tenant_is(&mut p), status_is(&mut p, RunStatus::Queued));
            match self.update_run(id, &u, condition, p).await? {
                Write::Done(run) => {
                    tracing::info!(run_id = %run.id, "queued run cancelled");
                    return Ok(run);
                }
                Write::Refused(None) => return Err(StoreError::NotFound),
                Write::Refused(Some(run)) => last_seen = Some(run),
            }
        }
        Err(last_seen.as_ref().map_or(StoreError::NotFound, changed_too_often))
    }

    async fn fail_unfinished(&self, id: &RunId, reason: FailureReason) -> Result<Run, StoreError> {
        let mut last_seen = None;
        for _ in 0..MAX_ROUNDS {
            let now = now_ms();
            match self.end_unheld(id, RunStatus::Failed, reason, now).await? {
                Write::Done(run) => {
                    tracing::warn!(run_id = %run.id, %reason, "failed an unfinished run");
                    return Ok(run);
                }
                Write::Refused(None) => return Err(StoreError::NotFound),
                Write::Refused(Some(run)) if run.status.is_terminal() || run.lease_live(now) => return Ok(run),
                Write::Refused(Some(run)) => last_seen = Some(run),
            }
        }
        Err(last_seen.as_ref().map_or(StoreError::NotFound, changed_too_often))
    }

    async fn count_running(&self) -> Result<u64, StoreError> {
        let mut total: u64 = 0;
        let mut start_key: Option<Item> = None;
        loop {
            let mut p = Placeholders::default();
            let key_condition = format!("{} = {}", p.name(attr::RUNNING), p.value("marker", s(RUNNING_MARKER)));
            let (names, values) = p.into_maps();
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(RUNNING_INDEX)
                .key_condition_expression(key_condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .select(Select::Count)
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(backend)?;
            total += u64::try_from(out.count()).unwrap_or(0);
            match out.last_evaluated_key() {
                Some(next) if !next.is_empty() => start_key = Some(next.clone()),
                _ => return Ok(total),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: RunStatus) -> Run {
        Run {
            status,
            ..Run::queued(NewRun {
                id: RunId::generate(),
                tenant: "acme".parse().expect("tenant"),
                agent: "fake".into(),
                task: "t".into(),
                repo: None,
                timeout_secs: 60,
                idle_timeout_secs: None,
                created_at: now_ms(),
            })
        }
    }

    #[test]
    fn cursors_round_trip_for_their_tenant_only() {
        let last = run(RunStatus::Queued);
        let cursor = encode_cursor(&last);
        assert!(cursor
            .0
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(decode_cursor(&cursor, &last.tenant).expect("decodes"), last.id);
        let other: TenantId = "globex".parse().expect("tenant");
        assert!(matches!(decode_cursor(&cursor, &other), Err(StoreError::BadCursor)));
    }

    #[test]
    fn bad_cursors_are_refused() {
        let acme: TenantId = "acme".parse().expect("tenant");
        let not_a_run = URL_SAFE_NO_PAD.encode(br#"{"t":"acme","r":"run_nope"}"#);
        for junk in [
            "",
            "junk!",
            "../../etc/passwd",
            "%%%",
            "run_not_a_cursor",
            "e30",
            not_a_run.as_str(),
        ] {
            assert!(
                matches!(decode_cursor(&Cursor(junk.into()), &acme), Err(StoreError::BadCursor)),
                "{junk:?} accepted"
            );
        }
    }

    #[test]
    fn a_claim_writes_only_what_changes_on_the_run_as_read() {
        let now = now_ms();
        let queued = run(RunStatus::Queued);
        let w = WorkerId("wrk_b".into());
        let Ok(ClaimDecision::Start { next }) = decide_claim(&queued, &w, now, Duration::from_secs(30), 3) else {
            panic!("a queued run is claimable");
        };
        let (mut p, mut u) = (Placeholders::default(), UpdateExpression::default());
        changes(&mut u, &mut p, &queued, &next);
        assert_eq!(
            u.render(),
            "SET #attempts = :set_attempts, #lease_expires_at = :set_lease_expires_at, \
             #lease_expires_ms = :set_lease_expires_ms, #running = :set_running, #started_at = :set_started_at, \
             #status = :set_status, #worker_id = :set_worker_id"
        );
        assert_eq!(
            unchanged(&mut p, &queued),
            "#status = :was_status AND #attempts = :was_attempts AND #cancel_requested = :was_cancel AND \
             attribute_not_exists(#worker_id) AND attribute_not_exists(#lease_expires_ms)"
        );
        let (_, values) = p.into_maps();
        let values = values.expect("values");
        assert_eq!(values.get(":set_attempts"), Some(&n(1)));
        assert_eq!(values.get(":was_status"), Some(&s("queued")));
        assert_eq!(values.get(":set_running"), Some(&s(RUNNING_MARKER)));

        // The exhausted run ends: its lease and running marker go, its TTL comes; the rest stays.
        let lost = Run {
            lease_expires_at: Some(now - chrono::Duration::seconds(1)),
            ..next
        };
        let Ok(ClaimDecision::Exhaust { next: failed }) = decide_claim(&lost, &w, now, Duration::from_secs(30), 1)
        else {
            panic!("an exhausted run fails");
        };
        let (mut p, mut u) = (Placeholders::default(), UpdateExpression::default());
        changes(&mut u, &mut p, &lost, &failed);
        assert_eq!(
            u.render(),
            "SET #expires_at = :set_expires_at, #failure_reason = :set_failure_reason, \
             #finished_at = :set_finished_at, #status = :set_status \
             REMOVE #lease_expires_at, #lease_expires_ms, #running"
        );
        assert_eq!(
            unchanged(&mut p, &lost),
            "#status = :was_status AND #attempts = :was_attempts AND #cancel_requested = :was_cancel AND \
             #worker_id = :was_worker AND #lease_expires_ms = :was_lease_ms"
        );
    }

    #[test]
    fn the_writes_only_make_legal_moves() {
        let id = RunId::generate();
        let unheld = [RunStatus::Queued, RunStatus::Running];
        check_moves(&id, &unheld, RunStatus::Running).expect("claim");
        check_moves(&id, &unheld, RunStatus::Failed).expect("fail_unfinished, exhausted");
        check_moves(&id, &unheld, RunStatus::Cancelled).expect("cancel");
        for to in [
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::TimedOut,
            RunStatus::Cancelled,
        ] {
            check_moves(&id, &[RunStatus::Running], to).expect("finish");
        }
        assert!(matches!(
            check_moves(&id, &[RunStatus::Queued], RunStatus::Succeeded),
            Err(StoreError::Conflict { .. })
        ));
    }

    #[test]
    fn conditions_name_only_the_placeholders_they_use() {
        let mut p = Placeholders::default();
        let condition = unheld(&mut p, now_ms());
        assert_eq!(
            condition,
            "(#status = :queued OR (#status = :running AND (#lease_expires_ms <= :now_ms OR \
             attribute_not_exists(#lease_expires_ms))))"
        );
        let (names, values) = p.into_maps();
        assert_eq!(names.expect("names").len(), 2);
        assert_eq!(values.expect("values").len(), 3);
    }
}
