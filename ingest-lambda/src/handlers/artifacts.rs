//! A run's stored files: the manifest (`GET /v1/runs/{id}/artifacts`) and each file's content,
//! streamed (`GET /v1/runs/{id}/artifacts/{name}`, where `name` may contain `/`).
//!
//! Only what the manifest names is served (plus the live `output.log` of an unfinished run), so
//! files left by a failed upload or an earlier attempt never leak out.

use super::TAG_RUNS;
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::extract::{ArtifactPath, RunPath};
use crate::handlers::logs::LOG_NAME;
use crate::handlers::runs::load_run;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use outpost_api::{ArtifactView, ErrorBody};
use outpost_core::ports::artifacts::check_artifact_name;
use outpost_core::ports::RunKey;
use outpost_core::Run;

#[utoipa::path(
    get,
    path = "/v1/runs/{id}/artifacts",
    tag = TAG_RUNS,
    summary = "List a run's artifacts",
    description = "The manifest the worker wrote when the run finished (empty before then). Each `url` is a \
                   presigned object-store URL on AWS (valid for the configured expiry) or this API's own \
                   download path on the embedded backend.",
    params(("id" = String, Path, description = "Run id (`run_<ULID>`)")),
    responses(
        (status = 200, description = "The manifest", body = Vec<ArtifactView>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such run for this tenant", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
pub async fn list_artifacts(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RunPath(id): RunPath,
) -> Result<Json<Vec<ArtifactView>>, ApiError> {
    let run = load_run(&state, &tenant, &id).await?;
    Ok(Json(artifact_views(&state, &run).await))
}

/// The manifest of `run` as the API shows it: each entry links a presigned URL when the store
/// makes them (S3), else the API's own download route. A store that fails to presign one entry
/// costs that entry its presigned link, not the answer.
pub(crate) async fn artifact_views(state: &AppState, run: &Run) -> Vec<ArtifactView> {
    let key = RunKey {
        tenant: run.tenant.clone(),
        run: run.id.clone(),
    };
    let expiry = state.config().presign_expiry;
    let mut views = Vec::with_capacity(run.artifacts.len());
    for artifact in &run.artifacts {
        let mut view = ArtifactView::from_artifact(run.id.as_str(), artifact);
        match state
            .backend()
            .artifacts
            .presigned_url(&key, &artifact.name, expiry)
            .await
        {
            Ok(Some(url)) => view.url = url,
            Ok(None) => {}
            Err(e) => tracing::warn!(run_id = %run.id, error = %e, "could not presign an artifact URL"),
        }
        views.push(view);
    }
    views
}

#[utoipa::path(
    get,
    path = "/v1/runs/{id}/artifacts/{*name}",
    tag = TAG_RUNS,
    summary = "Download one artifact",
    description = "The stored content, streamed with its content type and length. `name` is the \
                   artifact's relative path and may contain `/` (e.g. `files/report.md`). Only names \
                   in the run's manifest are served, and `output.log` while the run is not finished.",
    params(
        ("id" = String, Path, description = "Run id (`run_<ULID>`)"),
        ("name" = String, Path, description = "Artifact name, may contain `/`"),
    ),
    responses(
        (status = 200, description = "The content", body = [u8], content_type = "application/octet-stream"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such run or artifact", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
pub async fn get_artifact(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    ArtifactPath(id, name): ArtifactPath,
) -> Result<Response, ApiError> {
    check_artifact_name(&name)?;
    let run = load_run(&state, &tenant, &id).await?;
    // The manifest is the list of a run's artifacts; before it exists, only the live log is.
    let listed = run.artifacts.iter().any(|a| a.name == name) || (!run.status.is_terminal() && name == LOG_NAME);
    if !listed {
        return Err(ApiError::not_found("no such artifact"));
    }
    let key = RunKey { tenant, run: run.id };
    let body = state
        .backend()
        .artifacts
        .open(&key, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("no such artifact"))?;
    let content_type = HeaderValue::from_str(&body.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let headers = [
        (CONTENT_TYPE, content_type),
        (CONTENT_LENGTH, HeaderValue::from(body.size)),
        // Agent output is untrusted: never let a browser sniff or run it.
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (
            HeaderName::from_static("content-security-policy"),
            HeaderValue::from_static("default-src 'none'; sandbox"),
        ),
    ];
    Ok((StatusCode::OK, headers, Body::from_stream(body.stream)).into_response())
}
