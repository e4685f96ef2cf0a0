//! Promote (`POST /v1/runs/{id}/promote`): pushes a succeeded run's changes (`diff.patch`, applied
//! to the base commit in `summary.json`) to a new branch of the run's repository, authenticated
//! with the tenant's `GIT_TOKEN` secret when it has one. The git work is
//! [`outpost_git::promote`]; this module reads the run, its artifacts and the token, and maps
//! the outcome onto the API's error shape. Its settings (GitHub API, pull requests) are
//! [`crate::ApiConfig::promote`], fixed when the state is built: nothing is read from the
//! environment per request.
//!
//! The API process needs the `git` binary on its PATH (true for `outpost dev`; on Lambda a git
//! layer or a container image, see `infra/README.md`).

use super::TAG_RUNS;
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::extract::{OptionalJsonBody, RunPath};
use crate::handlers::runs::load_run;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use outpost_api::{ErrorBody, PromoteRequest, PromoteResult};
use outpost_core::ports::{RunKey, SecretName};
use outpost_git::promote::{self, PromoteError, PromoteInput, Promoted, GIT_TOKEN_SECRET};
use std::time::Duration;

/// Largest `diff.patch` promoted.
const MAX_PATCH_BYTES: u64 = 256 << 20;
/// Largest `summary.json` read.
const MAX_SUMMARY_BYTES: u64 = 1 << 20;
/// How long the git work may take (fetch, apply, push).
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(300);

impl From<PromoteError> for ApiError {
    fn from(e: PromoteError) -> Self {
        match e {
            PromoteError::NotPromotable(m) => ApiError::new(StatusCode::CONFLICT, "not_promotable", m),
            PromoteError::BadBranch(v) => ApiError::from(v),
            PromoteError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "promote_conflict", m),
            PromoteError::BaseMoved(m) => ApiError::new(StatusCode::CONFLICT, "base_moved", m),
            PromoteError::RemoteUnavailable(m) => {
                tracing::warn!(error = %m, "promote: remote unavailable");
                ApiError::new(StatusCode::BAD_GATEWAY, "remote_unavailable", m)
            }
            PromoteError::Local(m) => {
                tracing::error!(error = %m, "promote failed locally");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "promote is unavailable on this server; try again shortly",
                )
            }
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/runs/{id}/promote",
    tag = TAG_RUNS,
    summary = "Push a run's changes to a new branch",
    description = "Applies the run's `diff.patch` to the commit the agent started from and pushes the result \
                   as one commit to a new branch (default `outpost/{id}`) of the run's repository, \
                   authenticated with the tenant's `GIT_TOKEN` secret on `https://` remotes. The commit is \
                   deterministic: promoting again answers the same commit with `pushed: false`. A branch that \
                   exists with another commit is never overwritten. On GitHub, with a token, a pull request \
                   is opened too. The body may be empty.",
    params(("id" = String, Path, description = "Run id (`run_<ULID>`)")),
    request_body(content = Option<PromoteRequest>, description = "Optional; `{}` or empty for the default branch"),
    responses(
        (status = 200, description = "The branch holds the run's commit", body = PromoteResult),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such run for this tenant", body = ErrorBody),
        (status = 409, description = "`not_promotable` (not succeeded, no repository, no changes), \
                                      `promote_conflict` (patch does not apply, branch exists with another \
                                      commit) or `base_moved` (base commit gone from the remote)", body = ErrorBody),
        (status = 422, description = "`validation_failed`: bad branch name", body = ErrorBody),
        (status = 502, description = "`remote_unavailable`: the remote cannot be reached, refuses the \
                                      credentials or the push", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
pub async fn promote_run(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RunPath(id): RunPath,
    OptionalJsonBody(req): OptionalJsonBody<PromoteRequest>,
) -> Result<Json<PromoteResult>, ApiError> {
    let run = load_run(&state, &tenant, &id).await?;
    let branch = promote::branch_name(run.id.as_str(), req.branch.as_deref())?;
    promote::check_promotable(&run)?;
    let has = |name: &str| run.artifacts.iter().any(|a| a.name == name);
    if !has("diff.patch") {
        return Err(PromoteError::NotPromotable(format!("run {id} changed nothing in its repository")).into());
    }
    if !has("summary.json") {
        return Err(PromoteError::NotPromotable(format!("run {id} has no summary.json")).into());
    }
    let key = RunKey {
        tenant: tenant.clone(),
        run: run.id.clone(),
    };
    let summary = read_artifact(&state, &key, "summary.json", MAX_SUMMARY_BYTES).await?;
    let base = promote::base_commit_from_summary(&summary)?;
    let patch = read_artifact(&state, &key, "diff.patch", MAX_PATCH_BYTES).await?;
    let name: SecretName = GIT_TOKEN_SECRET.parse().map_err(|e| ApiError::internal(&e))?;
    let token = state.backend().secrets.get_secret(&tenant, &name).await?;

    let input = PromoteInput {
        run: &run,
        patch: &patch,
        base_commit: &base,
        branch: Some(&branch),
        token: token.as_ref(),
    };
    let promoted = tokio::time::timeout(PROMOTE_TIMEOUT, promote::promote(input, &state.config().promote))
        .await
        .map_err(|_| {
            PromoteError::RemoteUnavailable(format!(
                "the remote did not answer within {} s",
                PROMOTE_TIMEOUT.as_secs()
            ))
        })??;
    Ok(Json(promote_result(promoted)))
}

/// The wire answer for what [`promote::promote`] did.
fn promote_result(p: Promoted) -> PromoteResult {
    PromoteResult {
        run_id: p.run_id,
        branch: p.branch,
        commit: p.commit,
        base_commit: p.base_commit,
        compare_url: p.compare_url,
        pushed: p.pushed,
        pull_request_url: p.pull_request_url,
    }
}

/// A whole stored artifact of at most `max` bytes; a missing or larger one is `not_promotable`.
async fn read_artifact(state: &AppState, key: &RunKey, name: &str, max: u64) -> Result<Vec<u8>, ApiError> {
    let chunk = state
        .backend()
        .artifacts
        .read_range(key, name, 0, max + 1)
        .await?
        .ok_or_else(|| ApiError::from(PromoteError::NotPromotable(format!("the run's {name} is not stored"))))?;
    if chunk.data.len() as u64 > max || chunk.size > max {
        return Err(PromoteError::NotPromotable(format!("the run's {name} is larger than {max} bytes")).into());
    }
    Ok(chunk.data.to_vec())
}
