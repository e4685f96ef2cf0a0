//! The OpenAPI 3.1 document: [`ApiDoc`] gives the info, tags, `ToSchema` wire types of `outpost_api` and a
//! bearer security scheme required by every operation except health and the document itself; the
//! operations come from the routes themselves ([`crate::routes::rest_routes`], one `routes!` per handler
//! with its `#[utoipa::path]`), so the document lists exactly what the router serves.
//!
//! Rendered once per [`crate::AppState`] (at start-up), never per request.

use crate::handlers::{TAG_FLEET, TAG_RUNS, TAG_SECRETS, TAG_SYSTEM};
use outpost_api::{
    AgentView, ArtifactView, DispatchAccepted, DispatchRequest, ErrorBody, ErrorDetail, FleetStatus, Health,
    PromoteRequest, PromoteResult, PutSecretRequest, QueueView, RemoteView, RunLinks, RunList, RunView, SecretList,
    SecretView, WorkerAgentView, WorkerView,
};

use outpost_core::{ExecutorKind, FailureReason, RepoSpec, RunStatus, Usage};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::Modify;

/// Name of the security scheme in the document (also spelled out in `#[openapi(security)]`).
pub const SECURITY_SCHEME: &str = "bearer";

/// The document without its operations (those are added by the routes): info, schemas, security, tags.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Outpost API",
        description = "Dispatch AI coding agent runs to a worker fleet, follow their logs and fetch \
                       their artifacts. Every error has the shape `{\"error\": {\"code\", \"message\", \"field\"?}}`."
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
        WorkerAgentView,
        ExecutorKind,
        RemoteView,
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

/// The whole document: [`ApiDoc`] with every operation of the REST routes, at this crate's version.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = crate::routes::rest_routes().into_openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    // OpenAPI has no catch-all parameter: axum's `{*name}` (a name that may contain `/`) is `{name}` here.
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    doc
}

/// The document as JSON bytes, rendered once at start-up.
pub fn document_json() -> bytes::Bytes {
    match serde_json::to_vec(&document()) {
        Ok(json) => bytes::Bytes::from(json),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the OpenAPI document");
            bytes::Bytes::from_static(b"{}")
        }
    }
}
