//! The API's configuration from the process settings (`outpost_config::Settings`), for every
//! process that serves the API: `ingest-lambda` (in Lambda or over HTTP) and `outpost dev`.

use crate::state::ApiConfig;
use outpost_config::deployment::OpenedBackend;
use outpost_config::Settings;
use std::time::Duration;

/// API Gateway ends an integration after 30 s: a waited MCP `dispatch` answers before that.
const LAMBDA_MCP_MAX_WAIT: Duration = Duration::from_secs(25);

/// The API configuration of a process with `settings` over `opened`; `in_lambda` caps waits
/// under API Gateway's integration timeout.
pub fn api_config(settings: &Settings, opened: &OpenedBackend, in_lambda: bool) -> ApiConfig {
    let mut config = ApiConfig::default();
    config.limits.allow_local_repos = settings.allow_local_repos;
    if let Some(expiry) = opened.presign_expiry {
        config.presign_expiry = expiry;
    }
    if in_lambda {
        config.mcp_max_wait = LAMBDA_MCP_MAX_WAIT;
    }
    if let Some(url) = &settings.github_api_url {
        config.promote.github_api = url.clone();
    }
    config
}
