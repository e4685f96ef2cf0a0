//! What every handler shares: the backend's ports, the agent registry, the limits, the key cache
//! and the OpenAPI document (rendered once).

use crate::auth::KeyCache;
use outpost_core::ports::Backend;
use outpost_core::{AgentRegistry, DispatchLimits};
use outpost_git::promote::PromoteOptions;
use std::sync::Arc;
use std::time::Duration;

/// How long a key lookup is trusted before the store is asked again.
const KEY_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most keys remembered at once.
const KEY_CACHE_CAPACITY: usize = 10_000;

/// Settings of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Bounds of a dispatch (task size, timeout range, body size).
    pub limits: DispatchLimits,
    /// `GET /v1/fleet` lists workers that reported within this window.
    pub worker_seen_within: Duration,
    /// Lifetime of the presigned artifact URLs in `GET /v1/runs/{id}` (on stores that make them).
    pub presign_expiry: Duration,
    /// Longest an MCP `dispatch` with `wait: true` waits at `/mcp` (inside Lambda: under API
    /// Gateway's 30 s integration timeout).
    pub mcp_max_wait: Duration,
    /// Settings of `POST /v1/runs/{id}/promote` (GitHub API, pull requests), read by whoever builds
    /// the config (e.g. [`PromoteOptions::from_env`]) rather than by each request.
    pub promote: PromoteOptions,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            limits: DispatchLimits::default(),
            worker_seen_within: Duration::from_secs(30),
            presign_expiry: Duration::from_secs(15 * 60),
            mcp_max_wait: Duration::from_secs(600),
            promote: PromoteOptions::default(),
        }
    }
}

/// Shared state of the router; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    agents: Arc<AgentRegistry>,
    config: ApiConfig,
    key_cache: KeyCache,
    openapi_json: bytes::Bytes,
}

impl AppState {
    pub fn new(backend: Backend, agents: Arc<AgentRegistry>, config: ApiConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                agents,
                config,
                key_cache: KeyCache::new(KEY_CACHE_TTL, KEY_CACHE_CAPACITY),
                openapi_json: crate::openapi::document_json(),
            }),
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    pub fn agents(&self) -> &AgentRegistry {
        &self.inner.agents
    }

    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    pub(crate) fn key_cache(&self) -> &KeyCache {
        &self.inner.key_cache
    }

    pub(crate) fn openapi_json(&self) -> bytes::Bytes {
        self.inner.openapi_json.clone()
    }
}
