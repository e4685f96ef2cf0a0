//! `GET /v1/runs/{id}/logs`: raw bytes of a run's `output.log` from an offset, live while the
//! run goes on and final after, with the next offset, the size so far and the run's status in
//! headers.

use super::TAG_RUNS;
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::extract::{ApiQuery, RunPath};
use crate::handlers::runs::load_run;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use outpost_api::{ErrorBody, HEADER_LOG_SIZE, HEADER_NEXT_OFFSET, HEADER_RUN_STATUS};
use outpost_core::ports::RunKey;
use serde::Deserialize;
use utoipa::IntoParams;

/// The log every run writes.
pub const LOG_NAME: &str = "output.log";
/// Bytes returned when `limit` is absent.
pub const LOG_DEFAULT_LIMIT: u64 = 1024 * 1024;
/// Largest `limit` accepted.
pub const LOG_MAX_LIMIT: u64 = 8 * 1024 * 1024;

/// Query of a log read.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Byte offset to read from (default 0): the `outpost-next-offset` of the previous read.
    pub offset: Option<u64>,
    /// Most bytes to return, 1..=8,388,608 (default 1,048,576).
    pub limit: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/v1/runs/{id}/logs",
    tag = TAG_RUNS,
    summary = "Read a run's output log from an offset",
    description = "Raw bytes of `output.log`. Poll with the returned `outpost-next-offset` to tail a \
                   running run; once `outpost-run-status` is terminal, `outpost-log-size` is final. \
                   Before anything is stored the body is empty and the size 0.",
    params(("id" = String, Path, description = "Run id (`run_<ULID>`)"), LogsQuery),
    responses(
        (status = 200, description = "Log bytes", body = [u8], content_type = "text/plain; charset=utf-8",
            headers(
                ("outpost-next-offset" = u64, description = "Offset to read from next"),
                ("outpost-log-size" = u64, description = "Bytes stored so far"),
                ("outpost-run-status" = String, description = "Run status when read"),
            )),
        (status = 400, description = "Bad offset or limit (`invalid_query`)", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such run for this tenant", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
pub async fn logs(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RunPath(id): RunPath,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(LOG_DEFAULT_LIMIT);
    if !(1..=LOG_MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_query(format!(
            "limit: is {limit}; it must be between 1 and {LOG_MAX_LIMIT}"
        )));
    }
    // The status is read before the log: the worker stores the log before it writes a terminal
    // status, so a terminal status here means the bytes below are complete.
    let run = load_run(&state, &tenant, &id).await?;
    let key = RunKey {
        tenant,
        run: run.id.clone(),
    };
    let chunk = state
        .backend()
        .artifacts
        .read_range(&key, LOG_NAME, offset, limit)
        .await?;
    let (data, next_offset, size) = match chunk {
        Some(c) => (c.data, c.next_offset, c.size),
        None => (bytes::Bytes::new(), offset, 0),
    };
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8")),
        (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            HeaderName::from_static(HEADER_NEXT_OFFSET),
            HeaderValue::from(next_offset),
        ),
        (HeaderName::from_static(HEADER_LOG_SIZE), HeaderValue::from(size)),
        (
            HeaderName::from_static(HEADER_RUN_STATUS),
            HeaderValue::from_static(run.status.as_str()),
        ),
    ];
    Ok((StatusCode::OK, headers, data).into_response())
}
