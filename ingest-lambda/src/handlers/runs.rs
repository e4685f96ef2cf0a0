//! Runs: dispatch (`POST /v1/runs`), read, list and cancel.
//!
//! Dispatch is the hot path: one store write (`create`) and one queue write (`send`), nothing
//! else. The two writes run in a spawned task, so a client that hangs up mid-request cannot leave
//! a recorded run without its message.

use super::TAG_RUNS;
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::extract::{ApiQuery, JsonBody, RunPath};
use crate::state::AppState;
use crate::validate::{validate_dispatch, ValidDispatch};
use axum::extract::{FromRequestParts, State};
use axum::http::header::LOCATION;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use outpost_api::{DispatchAccepted, DispatchRequest, ErrorBody, ListRunsQuery, RunLinks, RunList, RunView};
use outpost_core::ports::{Backend, Cursor, RunFilter, TaskMessage};
use outpost_core::{FailureReason, NewRun, Run, RunId, TenantId};
use std::time::Duration;

/// Default and largest page of `GET /v1/runs`.
const LIST_DEFAULT_LIMIT: u32 = 20;
const LIST_MAX_LIMIT: u32 = 100;

/// How often marking an unqueued run failed is tried before giving up (and logging it).
const FAIL_UNQUEUED_ATTEMPTS: u32 = 3;

/// The W3C `traceparent` of a request, if it has a well-formed one; carried to the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for TraceParent {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_traceparent(v))
            .map(str::to_owned);
        Ok(TraceParent(value))
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>` (version 00 of W3C Trace Context).
fn is_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4 && parts[0] == "00" && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2)
}

#[utoipa::path(
    post,
    path = "/v1/runs",
    tag = TAG_RUNS,
    summary = "Dispatch a run",
    description = "Records the run as `queued` and queues it for a worker. Unknown fields are \
                   refused with 422 `validation_failed` naming the field.",
    request_body = DispatchRequest,
    params(("traceparent" = Option<String>, Header, description = "W3C trace context, carried to the worker")),
    responses(
        (status = 202, description = "Accepted and queued", body = DispatchAccepted,
            headers(("location" = String, description = "Path of the new run"))),
        (status = 400, description = "Body is not JSON (`invalid_json`)", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 413, description = "Body larger than 256 KiB", body = ErrorBody),
        (status = 415, description = "Body is not `application/json`", body = ErrorBody),
        (status = 422, description = "`validation_failed` (with `field`) or `unknown_agent`", body = ErrorBody),
        (status = 503, description = "Store or queue unavailable; nothing was queued", body = ErrorBody),
    )
)]
pub async fn dispatch(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    TraceParent(trace_context): TraceParent,
    JsonBody(req): JsonBody<DispatchRequest>,
) -> Result<Response, ApiError> {
    let valid = validate_dispatch(req, state.agents(), &state.config().limits)?;
    let backend = state.backend().clone();
    // Spawned so that the create/send pair completes even if the client goes away.
    let run = tokio::spawn(record_and_queue(backend, tenant, valid, trace_context))
        .await
        .map_err(|e| ApiError::internal(&e))??;
    let id = run.id.as_str();
    let location = HeaderValue::from_str(&format!("/v1/runs/{id}")).map_err(|e| ApiError::internal(&e))?;
    let accepted = DispatchAccepted {
        id: id.to_owned(),
        status: run.status,
        created_at: run.created_at,
        links: RunLinks::for_run(id),
    };
    Ok((StatusCode::ACCEPTED, [(LOCATION, location)], Json(accepted)).into_response())
}

/// Records the run, then queues its message; if queueing fails the run is marked failed
/// (`enqueue_failed`) so no queued run waits for a message that will never come.
async fn record_and_queue(
    backend: Backend,
    tenant: TenantId,
    valid: ValidDispatch,
    trace_context: Option<String>,
) -> Result<Run, ApiError> {
    let new = NewRun {
        id: RunId::generate(),
        tenant: tenant.clone(),
        agent: valid.agent,
        task: valid.task,
        repo: valid.repo,
        timeout_secs: valid.timeout_secs,
        idle_timeout_secs: valid.idle_timeout_secs,
        created_at: Utc::now(),
    };
    let run = backend.runs.create(new).await?;
    let message = TaskMessage {
        run_id: run.id.clone(),
        tenant,
        trace_context,
    };
    if let Err(e) = backend.queue.send(&message).await {
        tracing::error!(run_id = %run.id, error = %e, "could not queue a recorded run; marking it failed");
        fail_unqueued(&backend, &run.id).await;
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the task queue is unavailable; the run was not accepted, try again shortly",
        ));
    }
    tracing::debug!(run_id = %run.id, agent = %run.agent, "run queued");
    Ok(run)
}

async fn fail_unqueued(backend: &Backend, id: &RunId) {
    for attempt in 1..=FAIL_UNQUEUED_ATTEMPTS {
        match backend.runs.fail_unfinished(id, FailureReason::EnqueueFailed).await {
            Ok(_) => return,
            Err(e) if attempt < FAIL_UNQUEUED_ATTEMPTS => {
                tracing::warn!(run_id = %id, attempt, error = %e, "could not mark an unqueued run failed; retrying");
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(e) => {
                tracing::error!(run_id = %id, error = %e, "could not mark an unqueued run failed; it stays queued");
            }
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/runs/{id}",
    tag = TAG_RUNS,
    summary = "Get a run",
    params(("id" = String, Path, description = "Run id (`run_<ULID>`)")),
    responses(
        (status = 200, description = "The run", body = RunView),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such run for this tenant", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
pub async fn get_run(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RunPath(id): RunPath,
) -> Result<Json<RunView>, ApiError> {
    let run = load_run(&state, &tenant, &id).await?;
    let mut view = RunView::from(&run);
    view.artifacts = crate::handlers::artifacts::artifact_views(&state, &run).await;
    Ok(Json(view))
}

/// A run of `tenant`, or 404 (also when another tenant owns it).
pub(crate) async fn load_run(state: &AppState, tenant: &TenantId, id: &RunId) -> Result<Run, ApiError> {
    state
        .backend()
        .runs
        .get(tenant, id)
        .await?
        .ok_or_else(ApiError::run_not_found)
}

#[utoipa::path(
    get,
    path = "/v1/runs",
    tag = TAG_RUNS,
    summary = "List runs, newest first",
    params(ListRunsQuery),
    responses(
        (status = 200, description = "One page of runs", body = RunList),
        (status = 400, description = "`invalid_query` (bad status or limit) or `invalid_cursor`", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
pub async fn list_runs(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    ApiQuery(q): ApiQuery<ListRunsQuery>,
) -> Result<Json<RunList>, ApiError> {
    let limit = q.limit.unwrap_or(LIST_DEFAULT_LIMIT);
    if !(1..=LIST_MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_query(format!(
            "limit: is {limit}; it must be between 1 and {LIST_MAX_LIMIT}"
        )));
    }
    let filter = RunFilter {
        status: q.status,
        agent: q.agent.filter(|a| !a.is_empty()),
    };
    let cursor = q.cursor.filter(|c| !c.is_empty()).map(Cursor);
    let page = state
        .backend()
        .runs
        .list(&tenant, &filter, limit, cursor.as_ref())
        .await?;
    Ok(Json(RunList {
        runs: page.items.iter().map(RunView::from).collect(),
        next_cursor: page.next.map(|c| c.0),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/runs/{id}/cancel",
    tag = TAG_RUNS,
    summary = "Cancel a run",
    description = "A queued run becomes `cancelled` at once; a running run gets \
                   `cancel_requested: true` and its worker stops it within a heartbeat. A run that \
                   already finished (including one already cancelled) is a 409 `conflict`.",
    params(("id" = String, Path, description = "Run id (`run_<ULID>`)")),
    responses(
        (status = 200, description = "The run after the request", body = RunView),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such run for this tenant", body = ErrorBody),
        (status = 409, description = "The run already finished", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
pub async fn cancel_run(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RunPath(id): RunPath,
) -> Result<Json<RunView>, ApiError> {
    let before = load_run(&state, &tenant, &id).await?;
    if before.status.is_terminal() {
        return Err(already_finished(&before));
    }
    let after = state.backend().runs.request_cancel(&tenant, &id).await?;
    // It may have finished by itself between the read and the cancel.
    if after.status.is_terminal() && after.status != outpost_core::RunStatus::Cancelled {
        return Err(already_finished(&after));
    }
    tracing::info!(run_id = %id, status = %after.status, "cancel requested");
    Ok(Json(RunView::from(&after)))
}

fn already_finished(run: &Run) -> ApiError {
    ApiError::conflict(format!(
        "run {} already finished ({}); there is nothing to cancel",
        run.id, run.status
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_checked() {
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-xyz-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(!is_traceparent(bad), "{bad}");
        }
    }
}
