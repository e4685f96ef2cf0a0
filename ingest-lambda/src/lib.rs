//! The Outpost API: an axum router over the ports of `outpost_core` (auth, runs, logs,
//! artifacts, fleet, OpenAPI), served by the `ingest-lambda` binary locally, inside `outpost dev`,
//! and later as an AWS Lambda.
//!
//! ```no_run
//! # async fn demo(backend: outpost_core::ports::Backend) {
//! use std::sync::Arc;
//! let agents = Arc::new(outpost_core::AgentRegistry::builtin(false));
//! let state = ingest_lambda::AppState::new(backend, agents, ingest_lambda::ApiConfig::default());
//! let app = ingest_lambda::router(state);
//! # let _ = app;
//! # }
//! ```

pub mod auth;
pub mod error;
pub mod extract;
pub mod handlers;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod mcp;
pub mod openapi;
pub mod routes;
pub mod settings;
pub mod state;
pub mod validate;

pub use error::ApiError;
pub use openapi::ApiDoc;
pub use routes::router;
pub use state::{ApiConfig, AppState};
