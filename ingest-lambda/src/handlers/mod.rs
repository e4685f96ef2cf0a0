//! HTTP handlers, one module per resource. Each carries its `#[utoipa::path]` so the OpenAPI
//! document is generated from the code that serves it.

pub mod artifacts;
pub mod fleet;
pub mod logs;
pub mod promote;
pub mod runs;
pub mod secrets;
pub mod system;

/// Tag of the run endpoints in the OpenAPI document.
pub const TAG_RUNS: &str = "runs";
/// Tag of the tenant's secrets (BYOK).
pub const TAG_SECRETS: &str = "secrets";
/// Tag of the fleet endpoint.
pub const TAG_FLEET: &str = "fleet";
/// Tag of health and the document itself.
pub const TAG_SYSTEM: &str = "system";
