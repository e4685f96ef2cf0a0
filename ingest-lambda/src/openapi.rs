//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes and the
//! `ToSchema` wire types of `outpost_api`, with a bearer security scheme required by
//! every operation except health and the document itself.

use crate::handlers::{
    artifacts, fleet, logs, promote, runs, secrets, system, TAG_FLEET, TAG_RUNS, TAG_SECRETS, TAG_SYSTEM,
};
use outpost_api::{
    AgentView, ArtifactView, DispatchAccepted, DispatchRequest, ErrorBody, ErrorDetail, FleetStatus, Health,
    PromoteRequest, PromoteResult, PutSecretRequest, QueueView, RunLinks, RunList, RunView, SecretList, SecretView,
    WorkerView,
};

use outpost_core::{FailureReason, RepoSpec, RunStatus, Usage};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Name of the security scheme in the document (also spelled out in `#[openapi(security)]`).
pub const SECURITY_SCHEME: &str = "bearer";

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Outpost API",
        description = "Dispatch AI coding agent runs to a worker fleet, follow their logs and fetch \
                       their artifacts. Every error has the shape `{\"error\": {\"code\", \"message\", \"field\"?}}`."
    ),
    paths(
        runs::dispatch,
        runs::list_runs,
        runs::get_run,
        runs::cancel_run,
        promote::promote_run,
        logs::logs,
        artifacts::list_artifacts,
        artifacts::get_artifact,
        secrets::put_secret,
        secrets::list_secrets,
        secrets::delete_secret,
        fleet::fleet,
        system::health,
        system::openapi_json,
    ),
    components(schemas(
        DispatchRequest,
        DispatchAccepted,
        RunView,
        RunList,
        RunLinks,
        RunStatus,
        FailureReason,
        RepoSpec,
        Usage,
        ArtifactView,
        FleetStatus,
        AgentView,
        QueueView,
        WorkerView,
        PromoteRequest,
        PromoteResult,
        PutSecretRequest,
        SecretList,
        SecretView,
        Health,
        ErrorBody,
        ErrorDetail,
    )),
    modifiers(&BearerScheme),
    security(("bearer" = [])),
    tags(
        (name = TAG_RUNS, description = "Dispatch runs and follow them"),
        (name = TAG_SECRETS, description = "The tenant's own keys (BYOK), handed to its agents; values never come back"),
        (name = TAG_FLEET, description = "Agents, queue and workers"),
        (name = TAG_SYSTEM, description = "Health and this document"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` HTTP security scheme.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECURITY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("op_live_… / op_test_… API key")
                    .build(),
            ),
        );
    }
}

/// The document as JSON bytes, rendered once at start-up.
pub fn document_json() -> bytes::Bytes {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    match serde_json::to_vec(&doc) {
        Ok(json) => bytes::Bytes::from(json),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the OpenAPI document");
            bytes::Bytes::from_static(b"{}")
        }
    }
}
